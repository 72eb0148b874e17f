"""A station directory with a real procedure, run against simulated twins with wire faults.

The procedure, station.yaml and run go through the real parts: `station.loader`, `Runner`,
`InstrumentSet`, the drivers, pyvisa-py (TCP twins of SCPI models) and pyserial (the pty twin of
the Korad KA3005P). Only the twins misbehave, through `server.faults` (sim/server.py WireFaults).
"""

from __future__ import annotations

import os
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

import sim
from station.authoring.helpers import Dut
from station.bench.instruments import InstrumentSet
from station.config.model import load_config
from station.config.procedure_loader import load_procedure
from station.engine.runner import Runner
from station.records.model import PhaseRecord, RunRecord

# The two benches: a SCPI supply on TCP, and a raw-serial supply on a pty. The DMM is on TCP.
BENCHES = {
    "rigol": {"dmm": "keysight-34461a", "psu": "rigol-dp832"},
    "korad": {"dmm": "keysight-34461a", "psu": "korad-ka3005p"},
}

INSTRUMENT_TIMEOUT_MS = 300
INSTRUMENT_TIMEOUT_S = INSTRUMENT_TIMEOUT_MS / 1000
PHASE_TIMEOUT_S = 5.0
SLACK_S = 1.5  # what "nothing hangs" allows beyond a configured timeout

# Powers channel 1, reads the rail, then talks to the supply again. Each fault targets one of
# these commands (see `TARGETS`).
PROCEDURE = """
    from station import measure, phase

    @phase(timeout_s={phase_timeout_s})
    @measure("rail", unit="V", low=3.2, high=3.4)
    @measure("input_current", unit="A", high=0.15)
    def powered(psu, dmm, measurements, run):
        psu.set_current_limit(1, 0.25)
        psu.set_voltage(1, 5.0)
        psu.enable(1)
        run.sleep(0.05)  # the rail settles
        measurements.rail = dmm.measure_dc_voltage(nplc=1)  # 20 ms: well inside the timeouts
        psu.set_ovp(1, 6.0)
        measurements.input_current = psu.measure_current(1)

    @phase
    def later():
        pass

    @phase(teardown=True, timeout_s=5)
    def power_down(psu):
        psu.disable_all()
"""

# (driver, fault) -> (regex of the message the twin misbehaves on, the command the driver sent)
TARGETS = {
    ("keysight-34461a", "query"): (r"^READ\?", "READ?"),
    ("keysight-34461a", "error"): (r"^CONF:VOLT:DC", "CONF:VOLT:DC AUTO"),
    ("rigol-dp832", "query"): (r"^:MEAS:CURR\?", ":MEAS:CURR? CH1"),
    ("rigol-dp832", "error"): (r"^:OUTP:OVP:VAL", ":OUTP:OVP:VAL CH1,6"),
    ("korad-ka3005p", "query"): (r"^IOUT1\?", "IOUT1?"),
}


@dataclass
class Outcome:
    record: RunRecord
    elapsed_s: float  # the run, teardown included (not the opening and closing)
    psu_on_after_teardown: bool  # read back from the twin before the station closes anything
    psu_on_after_close: bool

    def phase(self, name: str) -> PhaseRecord:
        (rec,) = [p for p in self.record.phases if p.name == name]
        return rec

    @property
    def duration_s(self) -> dict[str, float]:
        return {p.name: (p.ended_at - p.started_at).total_seconds() for p in self.record.phases}


class FaultyBench:
    """A station directory (procedure + station.yaml) and a running simulated bench."""

    def __init__(self, root: Path, kind: str) -> None:
        self.root = root
        self.kind = kind
        self.drivers = BENCHES[kind]
        self.sim = sim.start_bench(dict(self.drivers), seed=3)
        self.sim.insert_dut("SN-1")

    @property
    def psu_on(self) -> bool:
        return self.sim.bench.channel(1).enabled

    def link(self, name: str) -> str:
        """How `name` is reached: "tcp" (pyvisa-py ::SOCKET) or "pty" (pyserial)."""
        return "pty" if self.sim.resources[name].startswith("/dev/") else "tcp"

    def faults(self, name: str):
        return self.sim.twins[name].server.faults

    def target(self, name: str, fault: str = "query") -> tuple[str, str]:
        return TARGETS[(self.drivers[name], fault)]

    def write(self, *, timeout_ms: int = INSTRUMENT_TIMEOUT_MS, phase_timeout_s: float) -> None:
        (self.root / "proc_faulty.py").write_text(
            textwrap.dedent(PROCEDURE.format(phase_timeout_s=phase_timeout_s)), encoding="utf-8"
        )
        instruments = "".join(
            f"  {name}: {{driver: {driver}, resource: 'TCPIP::192.0.2.1::{5025 + index}::SOCKET', "
            f"timeout_ms: {timeout_ms}}}\n"
            for index, (name, driver) in enumerate(self.drivers.items())
        )
        (self.root / "station.yaml").write_text(
            "station: {name: Chaos bench}\n"
            f"instruments:\n{instruments}"
            "procedures:\n"
            "  T1: {module: proc_faulty.py}\n",
            encoding="utf-8",
        )

    def instruments(self) -> InstrumentSet:
        config = load_config(self.root / "station.yaml")
        procedure = load_procedure("T1", config)
        return InstrumentSet(config, procedure.instrument_names, self.sim.resources)

    def run(self, inject, *, timeout_ms: int = INSTRUMENT_TIMEOUT_MS,
            phase_timeout_s: float = PHASE_TIMEOUT_S) -> Outcome:  # fmt: skip
        """Open the instruments, call `inject()` to break a twin, run T1, close everything."""
        self.write(timeout_ms=timeout_ms, phase_timeout_s=phase_timeout_s)
        config = load_config(self.root / "station.yaml")
        procedure = load_procedure("T1", config)
        with InstrumentSet(config, procedure.instrument_names, self.sim.resources) as opened:
            inject()
            runner = Runner(
                procedure,
                Dut("SN-1"),
                instruments=opened,
                interrupt_io=opened.interrupt,
                describe_io=opened.in_flight,
                handle_signals=False,
            )
            started = time.monotonic()
            record = runner.execute()
            elapsed = time.monotonic() - started
            on_after_teardown = self.psu_on
        return Outcome(record, elapsed, on_after_teardown, self.psu_on)

    def close(self) -> None:
        self.sim.close()


def open_fds_on(path: str) -> int:
    """How many file descriptors of this process are open on `path` (e.g. a pty)."""
    real = os.path.realpath(path)
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            count += os.path.realpath(f"/proc/self/fd/{fd}") == real
        except OSError:
            continue
    return count


def wait_until(condition, timeout_s: float = 2.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.005)
    return True


@pytest.fixture(name="faulty_bench", params=sorted(BENCHES))
def faulty_bench_fixture(request, tmp_path):
    """A FaultyBench for each bench kind (rigol: every twin on TCP; korad: the PSU on a pty)."""
    bench = FaultyBench(tmp_path, request.param)
    try:
        yield bench
    finally:
        bench.close()
