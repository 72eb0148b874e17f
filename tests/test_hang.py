"""A phase stuck in instrument I/O is stopped by its timeout, and teardown still reaches the bench.

Real parts only: simulated twins on loopback TCP, reached by the real drivers through pyvisa-py.
"""

from __future__ import annotations

import time

import pytest

import sim
from station.authoring.helpers import Dut
from station.bench.instruments import InstrumentSet
from station.engine.runner import Runner

INSTRUMENTS = (
    "{dmm: {driver: keysight-34461a, resource: 'USB0::1::2::3::INSTR', timeout_ms: 30000}, "
    "psu: {driver: rigol-dp832, resource: 'USB0::4::5::6::INSTR', timeout_ms: 30000}}"
)

PROCEDURE = """
    from station import phase, measure

    @phase(timeout_s=0.5)
    @measure("rail", unit="V")
    @measure("current", unit="A")
    def powered(psu, dmm, measurements):
        psu.set_current_limit(1, 0.25)
        psu.set_voltage(1, 5.0)
        psu.enable(1)
        measurements.current = psu.measure_current(1)
        measurements.rail = dmm.measure_dc_voltage()

    @phase
    def later():
        pass

    @phase(teardown=True, timeout_s=5)
    def power_down(psu):
        psu.disable_all()
"""


@pytest.fixture
def sim_bench():
    with sim.start_bench({"dmm": "keysight-34461a", "psu": "rigol-dp832"}, seed=3) as simulated:
        simulated.insert_dut("SN-1")
        yield simulated


def run_on_sim(bench, simulated):
    bench.write(PROCEDURE, instruments=INSTRUMENTS)
    config = bench.config()
    procedure = bench.load()
    with InstrumentSet(config, procedure.instrument_names, simulated.resources) as instruments:
        runner = Runner(
            procedure,
            Dut("SN-1"),
            instruments=instruments,
            interrupt_io=instruments.interrupt,
            describe_io=instruments.in_flight,
            handle_signals=False,
        )
        started = time.monotonic()
        record = runner.execute()
        elapsed = time.monotonic() - started
        output_on_after_teardown = simulated.bench.channel(1).enabled
    return record, elapsed, output_on_after_teardown


def test_phase_blocked_on_a_silent_dmm_times_out_and_psu_ends_off(bench, sim_bench):
    sim_bench.twins["dmm"].server.faults.no_reply_to = r"MEAS|READ"
    record, elapsed, output_on = run_on_sim(bench, sim_bench)
    phases = {p.name: p for p in record.phases}
    assert phases["powered"].outcome == "TIMEOUT"
    assert phases["later"].outcome == "SKIP"
    assert phases["power_down"].outcome == "PASS"
    assert record.outcome == "TIMEOUT"
    assert sim_bench.twins["dmm"].server.faults.swallowed >= 1
    # Stopped within its timeout + 1 s although the instrument timeout is 30 s; teardown included.
    assert elapsed < 0.5 + 1.0
    assert output_on is False  # read back from the simulated PSU
    assert sim_bench.bench.channel(1).enabled is False


def test_teardown_reaches_the_psu_the_stuck_phase_was_talking_to(bench, sim_bench):
    # The phase hangs inside a PSU query, holding that connection: teardown must reconnect.
    sim_bench.twins["psu"].server.faults.no_reply_to = r"MEAS:CURR"
    sim_bench.twins["psu"].server.faults.count = 1
    record, elapsed, output_on = run_on_sim(bench, sim_bench)
    phases = {p.name: p for p in record.phases}
    assert phases["powered"].outcome == "TIMEOUT"
    assert phases["power_down"].outcome == "PASS"
    assert elapsed < 0.5 + 1.0
    assert output_on is False
