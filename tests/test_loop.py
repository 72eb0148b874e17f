"""The production loop (`station.line.session.Line`, `station run --loop`): one bench for many
units, each recorded and uploaded on its own; scans checked; counters; an instrument lost between
units reopened, or the loop stopped naming it; uploads in the background."""

from __future__ import annotations

import contextlib
import json
import re
import socket
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import sim
from sim.bench import SimulatedClock
from station.config.model import load_config
from station.line import session
from station.line.events import EventBus
from station.line.prompts import PagePrompts
from station.line.session import Line, LineBusy, LineStopped, ScanRefused
from station.tofupilot.claim import held_elsewhere

PROCEDURE = """
    from station import measure, phase

    @phase(timeout_s=10)
    @measure("rail_3v3", unit="V", low=3.2, high=3.4)
    def rail(psu, dmm, measurements):
        psu.set_current_limit(1, 0.25)
        psu.set_voltage(1, 5.0)
        psu.enable(1)  # left on: only the safe state switches it off
        dmm.measure_dc_voltage(range=10, nplc=1)  # bench time moves on by it: the rail settles
        measurements.rail_3v3 = dmm.measure_dc_voltage(range=10, nplc=1)
"""

RETEST = """
    from station import measure, phase

    SEEN = set()

    @phase
    @measure("fixed", equals=True)
    def retest(dut, measurements):
        # A unit passes once reworked (its second run), or when its serial says it is good.
        measurements.fixed = dut.serial_number in SEEN or dut.serial_number.endswith("GOOD")
        SEEN.add(dut.serial_number)
"""

HOLD = """
    @phase
    def hold(psu):
        HELD[:] = [psu]
"""

ASKING = """
    from station import phase

    @phase
    def ask(psu, run):
        psu.set_voltage(1, 5.0)
        psu.enable(1)
        run.prompt("Press the button", kind="confirm")

    @phase(teardown=True)
    def tidy(run):
        run.state["teardown"] = True
"""


def write_station(root: Path, procedures: dict[str, str], extra: str = "") -> Path:
    for name, source in procedures.items():
        (root / f"{name.lower()}.py").write_text(textwrap.dedent(source))
    listed = "".join(
        f"  {name}:\n    module: {name.lower()}.py\n    part_number: PCBA01\n{extra}"
        for name in procedures
    )
    path = root / "station.yaml"
    path.write_text(
        "station: {name: Loop bench}\n"
        "instruments:\n"
        "  dmm: {driver: keysight-34461a, resource: 'USB0::1::2::3::INSTR'}\n"
        "  psu: {driver: rigol-dp832, resource: 'USB0::4::5::6::INSTR'}\n"
        f"procedures:\n{listed}"
    )
    return path


class FastBench:
    """`bench=` for Line: the simulated bench with instant DMM readings (SimulatedClock).
    `.current` is the running SimBench, for the tests to break its wires."""

    def __init__(self) -> None:
        self.current: Any = None
        self.started = 0

    @contextlib.contextmanager
    def __call__(self, config, enabled, fault=None) -> Iterator[tuple[Any, dict[str, str]]]:
        bench = sim.start_bench(
            {name: inst.driver for name, inst in config.instruments.items()},
            board=config.sim.board,
            fault=fault,
            seed=1,
            clock=SimulatedClock(),
        )
        self.current, self.started = bench, self.started + 1
        try:
            yield bench, bench.resources
        finally:
            bench.close()


def psu_output(resource: str) -> str:
    """The simulated PSU's channel 1, asked over a raw socket (a probe, not the station)."""
    match = re.match(r"TCPIP0?::([\d.]+)::(\d+)::SOCKET", resource)
    assert match is not None
    with socket.create_connection((match[1], int(match[2])), timeout=5) as probe:
        probe.sendall(b":OUTP? CH1\n")
        return probe.makefile().readline().strip()


@pytest.fixture
def make_line(tmp_path):
    lines: list[Line] = []

    def make(procedures=None, extra: str = "", **kw) -> tuple[Line, FastBench, EventBus]:
        config = load_config(write_station(tmp_path, procedures or {"Q1": PROCEDURE}, extra))
        bench, bus = FastBench(), EventBus()
        events = bus.subscribe()
        kw.setdefault("prompts", None)
        line = Line(config, sim=True, bus=bus, bench=bench, handle_signals=False, **kw)
        line.events = events  # type: ignore[attr-defined]  # for the tests
        lines.append(line)
        return line, bench, bus

    yield make
    for line in lines:
        line.close()


def drain(line: Line) -> list[dict[str, Any]]:
    events = []
    while (event := line.events.get(0)) is not None:  # type: ignore[attr-defined]
        events.append(event)
    return events


def test_units_share_one_open_bench_and_each_gets_its_own_record(make_line, tmp_path):
    line, bench, _ = make_line()
    outcomes = [line.run_unit("Q1", serial).outcome.value for serial in ("SN-1", "SN-2-F", "SN-2")]
    assert outcomes == ["PASS", "FAIL", "PASS"]
    events = drain(line)
    # Opened once, before the first unit; never again between units.
    assert [e["instruments"] for e in events if e["type"] == "instrument_status"] == [
        {"dmm": "ok", "psu": "ok"}
    ]
    assert bench.started == 1
    # Safe state between units: the phase left the supply on; it is off now.
    assert psu_output(bench.current.resources["psu"]) == "OFF"
    run_dirs = sorted(d for d in (tmp_path / "runs").iterdir() if (d / "run.json").is_file())
    records = [json.loads((d / "run.json").read_text()) for d in run_dirs]
    assert sorted(r["serial_number"] for r in records) == ["SN-1", "SN-2", "SN-2-F"]
    assert all(r["simulated"] for r in records)
    assert [u.serial for u in line.recent] == ["SN-1", "SN-2-F", "SN-2"]
    assert [u.run_dir for u in line.recent] == [
        next(d for d, r in zip(run_dirs, records, strict=True) if r["serial_number"] == s)
        for s in ("SN-1", "SN-2-F", "SN-2")
    ]
    counters = line.counters
    assert (counters.tested, counters.passed, counters.failed, counters.units) == (3, 2, 1, 3)
    assert counters.first_pass_yield == pytest.approx(2 / 3)
    assert counters.mean_cycle_s is not None and counters.mean_cycle_s > 0
    (last,) = [e for e in events if e["type"] == "counters"][-1:]
    assert last["tested"] == 3 and last["first_pass_yield"] == pytest.approx(2 / 3)
    # Without an outbox nothing is sent, and each run's claim was let go (stays queued).
    assert all(u.upload == "queued" for u in line.recent)
    assert not any(held_elsewhere(d) for d in run_dirs)


def test_first_pass_yield_counts_a_unit_by_its_first_run(make_line):
    line, _, _ = make_line({"RETEST": RETEST})
    outcomes = [line.run_unit("RETEST", s).outcome.value for s in ("SN-A", "SN-A", "SN-B")]
    assert outcomes == ["FAIL", "PASS", "FAIL"]  # SN-A passes its retest; SN-B fails first
    c = line.counters
    assert (c.tested, c.passed, c.failed, c.units, c.first_pass) == (3, 1, 2, 2, 0)
    assert c.first_pass_yield == 0.0  # a retest that passes is not a first pass
    line.run_unit("RETEST", "SN-C-GOOD")
    assert line.counters.first_pass_yield == pytest.approx(1 / 3)
    assert "first-pass yield 33.3%" in line.counters.summary()


def test_a_bad_scan_is_refused_before_anything_runs_and_says_the_pattern(make_line, tmp_path):
    line, _, _ = make_line(extra="    serial_pattern: 'SN-\\d{4}'\n")
    with pytest.raises(ScanRefused, match=r"does not match Q1's serial pattern SN-\\d\{4\}"):
        line.run_unit("Q1", "SN-12")
    events = drain(line)
    (refused,) = [e for e in events if e["type"] == "unit_refused"]
    assert (refused["serial"], refused["pattern"]) == ("SN-12", "SN-\\d{4}")
    assert not [e for e in events if e["type"] == "run_started"]
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").glob("*/run.json"))
    assert line.run_unit("Q1", "SN-1234").outcome.value == "PASS"  # the next scan goes on
    assert line.counters.tested == 1


def test_an_instrument_lost_while_the_bench_sat_idle_is_found_and_reopened(make_line, monkeypatch):
    monkeypatch.setattr(session, "RECHECK_IDLE_S", 0.0)  # every gap counts as idle
    line, _, _ = make_line({"LOSE": PROCEDURE + "\n    HELD = []\n" + HOLD})
    assert line.run_unit("LOSE", "SN-1").outcome.value == "PASS"
    drain(line)
    (psu,) = sys.modules["station_procedure_lose"].HELD
    psu.close()  # its session is gone for good, as if unplugged while the units were swapped
    record = line.run_unit("LOSE", "SN-2")
    assert record.outcome.value == "PASS", record.outcome_reason
    statuses = [e["instruments"]["psu"] for e in drain(line) if e["type"] == "instrument_status"]
    assert statuses[0].startswith(("lost", "failed"))
    assert statuses[-1] == "reopened"
    assert line.instrument_status()["psu"] == "reopened"


def test_an_instrument_lost_during_a_unit_is_reopened_for_the_next(make_line, monkeypatch):
    monkeypatch.setattr(session, "RECHECK_IDLE_S", 3600.0)  # back-to-back units: no recheck
    line, _, _ = make_line({"LOSE": PROCEDURE + "\n    HELD = []\n" + HOLD})
    assert line.run_unit("LOSE", "SN-1").outcome.value == "PASS"
    (psu,) = sys.modules["station_procedure_lose"].HELD
    psu.close()  # lost: the next unit meets it in its first phase
    lost = line.run_unit("LOSE", "SN-2")
    assert lost.outcome.value == "ERROR" and "psu" in lost.outcome_reason
    assert line.instrument_status()["psu"] != "ok"
    record = line.run_unit("LOSE", "SN-3")
    assert record.outcome.value == "PASS", record.outcome_reason
    assert line.instrument_status()["psu"] == "reopened"


def test_an_instrument_that_cannot_be_reopened_stops_the_line_naming_it(make_line, monkeypatch,
                                                                         tmp_path):  # fmt: skip
    monkeypatch.setattr(session, "RECHECK_IDLE_S", 0.0)
    line, bench, _ = make_line()
    line.run_unit("Q1", "SN-1")
    faults = bench.current.twins["psu"].server.faults
    faults.drop_on, faults.refuse = "OUTP", True  # gone for good
    with pytest.raises(LineStopped, match=r"psu"):
        line.run_unit("Q1", "SN-2")
    assert line.instrument_status()["psu"].startswith("failed")
    runs = list((tmp_path / "runs").glob("*/run.json"))
    assert len(runs) == 1  # nothing ran for SN-2


def test_abort_stops_the_unit_not_the_line(make_line):
    page = PagePrompts()
    line, bench, _ = make_line({"ASK": ASKING}, prompts=page)
    result: dict[str, Any] = {}
    worker = threading.Thread(
        target=lambda: result.setdefault("record", line.run_unit("ASK", "SN-1")), daemon=True
    )
    worker.start()
    deadline = time.monotonic() + 10
    while not page.pending() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert line.busy and line.current is not None and line.current.serial == "SN-1"
    with pytest.raises(LineBusy):
        line.run_unit("ASK", "SN-2")
    assert line.abort("aborted from the page") is True
    worker.join(10)
    record = result["record"]
    assert record.outcome.value == "ABORTED" and record.outcome_reason == "aborted from the page"
    assert [p.name for p in record.phases] == ["ask", "tidy"]  # teardown ran
    assert psu_output(bench.current.resources["psu"]) == "OFF"
    assert line.abort() is False  # nothing running
    assert line.counters.aborted == 1
    events = drain(line)
    (asked,) = [e for e in events if e["type"] == "prompt"]
    assert asked["prompt"]["text"] == "Press the button" and asked["run_id"] == record.run_id
    (closed,) = [e for e in events if e["type"] == "prompt_answered"]
    assert closed["answer"] is None and "PhaseCancelled" not in (closed["error"] or "x")


def test_close_leaves_the_bench_safe_and_closed(make_line):
    line, bench, _ = make_line()
    line.run_unit("Q1", "SN-1")
    resource = bench.current.resources["psu"]
    line.close()
    assert line.instrument_status() == {"dmm": "closed", "psu": "closed"}
    with pytest.raises(LineStopped):
        line.run_unit("Q1", "SN-2")
    assert line.close() == []  # idempotent
    with pytest.raises(OSError):  # the simulated bench itself was stopped with the line
        psu_output(resource)


def test_uploads_go_in_the_background_and_never_hold_the_next_unit(make_line, tmp_path):
    from sim.tofupilot import TofuPilotEmulator
    from station.tofupilot.client import TofuPilotClient
    from station.tofupilot.outbox import Outbox

    with TofuPilotEmulator(port=0) as tp:
        tp.faults.retry_after_s = 0
        config_path = write_station(tmp_path, {"FVT1": PROCEDURE})
        config = load_config(config_path)
        outbox = Outbox(
            config.data_path, lambda: TofuPilotClient(tp.url, tp.station_key, timeout_s=10)
        )
        bench = FastBench()
        line = Line(config, sim=True, prompts=None, bench=bench, outbox=outbox,
                    handle_signals=False)  # fmt: skip
        try:
            tp.faults.plan(["slow:3"])  # the first request (SN-1's upload) takes 3 s
            line.run_unit("FVT1", "SN-1")
            line.run_unit("FVT1", "SN-2")
            # The second unit was tested while the first one's upload was still going on.
            assert line.recent[0].upload == "pending"
            assert line.wait_uploads(60)
            assert [u.upload for u in line.recent] == ["uploaded", "uploaded"]
            serials = sorted(run.body["serial_number"] for run in tp.runs.values())
            assert serials == ["SN-1", "SN-2"]
            assert not any(held_elsewhere(u.run_dir) for u in line.recent)  # claims let go
        finally:
            line.close()
            outbox.close()


def test_with_the_background_uploader_each_unit_is_sent_and_reported(tmp_path):
    from sim.tofupilot import TofuPilotEmulator
    from station.cli.upload import BackgroundUploader
    from station.tofupilot.client import TofuPilotClient
    from station.tofupilot.outbox import Outbox

    with TofuPilotEmulator(port=0) as tp:
        tp.faults.retry_after_s = 0
        config = load_config(write_station(tmp_path, {"FVT1": PROCEDURE}))

        def uploader(on_status):
            outbox = Outbox(
                config.data_path, lambda: TofuPilotClient(tp.url, tp.station_key, timeout_s=10)
            )
            return BackgroundUploader(outbox, on_status=on_status)

        bus = EventBus()
        events = bus.subscribe()
        line = Line(config, sim=True, prompts=None, bus=bus, bench=FastBench(),
                    uploader=uploader, handle_signals=False)  # fmt: skip
        try:
            tp.faults.plan(["slow:3"])
            line.run_unit("FVT1", "SN-1")
            line.run_unit("FVT1", "SN-2")
            assert line.recent[0].upload == "pending"  # SN-2 did not wait for SN-1's upload
            assert line.wait_uploads(60)
            assert [u.upload for u in line.recent] == ["uploaded", "uploaded"]
            assert sorted(run.body["serial_number"] for run in tp.runs.values()) == [
                "SN-1",
                "SN-2",
            ]
        finally:
            line.close()
        uploads = []
        while (event := events.get(0)) is not None:
            if event["type"] == "upload":
                uploads.append((event["run_id"], event["state"]))
        assert sorted(uploads) == sorted((u.run_id, "uploaded") for u in line.recent)
