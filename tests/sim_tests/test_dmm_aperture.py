"""The DMM twins integrate like real meters: a DC reading is the rail averaged over the aperture
(NPLC power-line cycles at the bench's line frequency) and comes back when the aperture is over.

Physics and timing on simulated time (exact, no waiting); one end-to-end check over pyvisa-py in
wall time, which only asserts what holds however slow the machine is.
"""

from __future__ import annotations

import math
import threading
import time

import pytest

import sim
from drivers import create_driver
from sim.bench import Bench, SimulatedClock
from sim.boards.pcba01 import RAIL_NOMINAL, SETTLE_TAU_S, Pcba01
from sim.instruments import SimKeithleyDMM6500, SimKeysight34461A, SimKeysight34465A


def bench_on_simulated_time(line_frequency_hz: float = 50.0, fault: str | None = None) -> Bench:
    return Bench(
        Pcba01(fault=fault), seed=4, line_frequency_hz=line_frequency_hz, clock=SimulatedClock()
    )


def power_on(bench: Bench) -> None:
    bench.configure(1, voltage=5.0, current_limit=0.5, enabled=True)


def mean_of_rise(aperture_s: float, delay_s: float = 0.0) -> float:
    """The 3.3 V rail averaged over [delay, delay + aperture] after power-on (closed form)."""
    a, b = delay_s, delay_s + aperture_s
    tau = SETTLE_TAU_S
    return RAIL_NOMINAL * (1 - tau * (math.exp(-a / tau) - math.exp(-b / tau)) / (b - a))


# -- the bench: the value is the mean over the aperture ----------------------------------------


def test_a_10_plc_reading_at_power_on_averages_the_rise_over_200_ms():
    bench = bench_on_simulated_time()
    power_on(bench)
    started = bench.clock.now()
    reading = bench.dmm_dc_volts(nplc=10)
    assert bench.clock.now() - started == pytest.approx(0.200)  # 10 cycles of 50 Hz
    assert reading == pytest.approx(mean_of_rise(0.200), abs=0.002)
    assert 3.25 < reading < 3.30  # a 2 ms rise is 1 % of a 200 ms aperture


def test_a_short_aperture_at_power_on_sees_the_rail_still_rising():
    bench = bench_on_simulated_time()
    power_on(bench)
    reading = bench.dmm_dc_volts(nplc=0.02)  # 0.4 ms
    assert reading == pytest.approx(mean_of_rise(0.0004), abs=0.02)
    assert reading < 1.0


def test_the_line_frequency_sets_the_aperture():
    bench = bench_on_simulated_time(line_frequency_hz=60.0)
    power_on(bench)
    started = bench.clock.now()
    reading = bench.dmm_dc_volts(nplc=1)
    assert bench.clock.now() - started == pytest.approx(1 / 60)
    assert reading == pytest.approx(mean_of_rise(1 / 60), abs=0.005)
    with pytest.raises(ValueError, match="use one of 50, 60"):
        Bench(Pcba01(), line_frequency_hz=400.0)


def test_the_mean_follows_the_supply_through_the_window():
    bench = bench_on_simulated_time()
    power_on(bench)
    bench.clock.sleep(1.0)  # settled at 3.3 V
    switched_off_at = bench.clock.now()
    bench.configure(1, enabled=False)
    bench.clock.sleep(1.0)
    # Half of a 200 ms window before the switch-off, half after: half the rail.
    window = (switched_off_at - 0.1, switched_off_at + 0.1)
    assert bench.rail_mean(*window) == pytest.approx(RAIL_NOMINAL / 2, abs=0.001)
    assert bench.rail_mean(switched_off_at - 0.5, switched_off_at - 0.3) == pytest.approx(3.3)
    assert bench.rail_mean(switched_off_at + 0.1, switched_off_at + 0.3) == 0.0


def test_a_fault_board_reads_low_whatever_the_aperture():
    bench = bench_on_simulated_time(fault="low_rail")
    power_on(bench)
    assert bench.dmm_dc_volts(nplc=10) < 3.10


# -- the twins: NPLC and SYST:LFR? honoured, the reply waits for the aperture -----------------


@pytest.mark.parametrize(
    ("twin", "select", "default_s"),
    [
        (SimKeysight34461A, "CONF:VOLT:DC", 0.200),  # CONF presets 10 PLC
        (SimKeysight34465A, "CONF:VOLT:DC", 0.200),
        (SimKeithleyDMM6500, ':SENS:FUNC "VOLT:DC"', 0.020),  # 1 PLC out of the box
    ],
)
def test_a_reading_takes_its_aperture_of_bench_time(twin, select, default_s):
    bench = bench_on_simulated_time()
    dmm = twin(bench)
    dmm.handle(select)

    def took(message: str) -> float:
        started = bench.clock.now()
        dmm.handle(message)
        return bench.clock.now() - started

    assert took("READ?") == pytest.approx(default_s)
    dmm.handle("SENS:VOLT:DC:NPLC 1" if twin is not SimKeithleyDMM6500 else ":SENS:VOLT:NPLC 1")
    assert took("READ?") == pytest.approx(0.020)
    assert took("*IDN?") == 0.0  # only readings integrate


@pytest.mark.parametrize("twin", [SimKeysight34461A, SimKeysight34465A, SimKeithleyDMM6500])
@pytest.mark.parametrize("hertz", [50.0, 60.0])
def test_the_meter_reports_the_line_frequency_it_integrates_over(twin, hertz):
    bench = bench_on_simulated_time(line_frequency_hz=hertz)
    dmm = twin(bench)
    assert dmm.handle("SYST:LFR?") == f"{hertz:.0f}"
    assert dmm.handle(":SYSTem:LFRequency?") == f"{hertz:.0f}"
    dmm.handle("SYST:LFR 60")  # the mains is measured at power-on, not set
    assert dmm.errors[0][0] == -113


def test_measure_presets_10_plc_so_the_reading_after_power_on_is_settled():
    """The README's example: enable, then MEAS at the default integration time."""
    bench = bench_on_simulated_time()
    dmm = SimKeysight34461A(bench)
    power_on(bench)
    assert float(dmm.handle("MEAS:VOLT:DC?")) == pytest.approx(mean_of_rise(0.2), abs=0.002)


def test_closing_the_bench_ends_a_reading_that_is_still_integrating():
    bench = Bench(Pcba01())  # wall time: a 100 PLC reading would take 2 s
    done = threading.Event()
    reader = threading.Thread(target=lambda: (bench.dmm_dc_volts(100), done.set()), daemon=True)
    started = time.monotonic()
    reader.start()
    bench.close()
    assert done.wait(5.0)
    assert time.monotonic() - started < 1.5


# -- over the wire: the driver at its default integration time, right after power-on ----------


def test_a_default_reading_right_after_enable_is_the_settled_rail_over_visa():
    with sim.start_bench({"dmm": "keysight-34461a", "psu": "rigol-dp832"}, seed=6) as bench:
        bench.insert_dut("SN-0001")
        psu = create_driver("rigol-dp832", bench.resources["psu"], name="psu")
        dmm = create_driver("keysight-34461a", bench.resources["dmm"], name="dmm")
        psu.connect()
        dmm.connect()
        try:
            psu.set_voltage(1, 5.0)
            psu.set_current_limit(1, 0.5)
            psu.enable(1)
            started = time.monotonic()
            reading = dmm.measure_dc_voltage()
            took = time.monotonic() - started
            # However late the reading started, its 200 ms mean is at least that from power-on.
            assert mean_of_rise(0.2) - 0.005 < reading < RAIL_NOMINAL + 0.005
            assert took >= 0.2 - 0.005  # the meter answered after its aperture, as a real one
            assert psu.measure_current(1) < 0.150
        finally:
            psu.disable_all()
            psu.close()
            dmm.close()
