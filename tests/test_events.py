"""Events: a thread-safe bus, the runner's callbacks as event dicts, and `station run --events`
writing them as NDJSON for launchers and CI (stdout carries only events with `-`)."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from station import measure, phase
from station.authoring.helpers import Dut
from station.authoring.procedure import Procedure
from station.engine.runner import Runner
from station.line.events import EventBus, EventListener, NdjsonWriter, make_event

REPO = Path(__file__).resolve().parents[1]
TS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def test_every_subscriber_gets_every_event_in_order_across_threads():
    bus = EventBus()
    first, second = bus.subscribe(), bus.subscribe()
    sunk = []
    bus.add_sink(sunk.append)

    def publish(worker: int) -> None:
        for n in range(200):
            bus.emit("log", f"run-{worker}", n=n)

    threads = [threading.Thread(target=publish, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    got = [first.get(0) for _ in range(800)]
    assert first.get(0) is None
    assert len(sunk) == 800 and all(e is not None for e in got)
    for worker in range(4):  # each publisher's events in its own order
        assert [e["n"] for e in got if e["run_id"] == f"run-{worker}"] == list(range(200))
    assert [second.get(0) for _ in range(800)] == got
    first.close()
    bus.emit("log", "later")
    assert first.get(0) is None and bus.subscribers == 1


def test_a_stalled_reader_loses_the_oldest_never_blocks_the_publisher():
    bus = EventBus(queue_size=10)
    slow = bus.subscribe()
    for n in range(25):
        bus.emit("log", n=n)
    assert slow.dropped == 15
    assert [slow.get(0)["n"] for _ in range(10)] == list(range(15, 25))


def test_a_sink_that_fails_is_dropped_and_said_the_others_go_on():
    bus = EventBus()
    good = []

    def broken(event):
        raise OSError("disk full")

    bus.add_sink(broken)
    bus.add_sink(good.append)
    bus.emit("log")
    bus.emit("log")
    assert len(good) == 2 and len(bus.failures) == 1 and "disk full" in bus.failures[0]


def test_events_are_json_with_non_finite_values_tagged_as_in_run_json(tmp_path):
    event = make_event("measurement", "r1", value=math.nan, limits=(1.0, math.inf))
    assert TS.match(event["ts"])
    assert event["value"] == {"$non_finite": "NaN"}
    assert event["limits"] == [1.0, {"$non_finite": "Infinity"}]
    path = tmp_path / "events.ndjson"
    writer = NdjsonWriter(path)
    writer(event)
    writer.close()
    assert json.loads(path.read_text()) == event


def test_the_runner_callbacks_become_events():
    bus = EventBus()
    seen = bus.subscribe()

    @phase
    @measure("ripple", unit="V", high=0.02)
    @measure("rail", unit="V", low=3.22, high=3.38, marginal=(3.25, 3.35))
    def check(measurements, log):
        log.info("checking")
        measurements.ripple = 0.00194757
        measurements.rail = 3.10213

    listener = EventListener(bus, phases=["check"])
    procedure = Procedure(
        id="P", phases=[check], teardown=[], module_name=__name__, source_file=__file__
    )
    record = Runner(procedure, Dut("SN-1"), listeners=[listener], handle_signals=False).execute()
    events = []
    while (e := seen.get(0)) is not None:
        events.append(e)
    assert [e["type"] for e in events] == [
        "run_started",
        "phase_started",
        "log",
        "measurement",
        "measurement",
        "phase_ended",
        "run_ended",
    ]
    assert all(e["run_id"] == record.run_id for e in events)
    started, _, log, ripple, rail, ended, run_ended = events
    assert started["phases"] == ["check"] and started["serial"] == "SN-1"
    assert (log["phase"], log["message"]) == ("check", "checking")
    assert (ripple["display"], ripple["outcome"], ripple["failed"]) == ("1.95 mV", "PASS", None)
    assert rail["value"] == 3.10213  # full precision; the display is for screens
    assert (rail["display"], rail["failed"]) == ("3.102 V", "rail = 3.102 V < 3.22 V")
    assert (ended["outcome"], ended["phase"]) == ("FAIL", "check")
    assert run_ended["outcome"] == "FAIL" and run_ended["failures"] == ["rail = 3.102 V < 3.22 V"]


def station(*args: str, cwd: Path, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "station", *args],
        cwd=cwd,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, "NO_COLOR": "1", "PYTHONPATH": str(REPO)},
    )


def example(tmp_path: Path) -> Path:
    text = (REPO / "station.yaml").read_text()
    pattern = "    serial_pattern: 'SN-\\d+(-F)?'\n"
    text = text.replace("    part_number: PCBA01\n", "    part_number: PCBA01\n" + pattern)
    (tmp_path / "station.yaml").write_text(text)
    return tmp_path


@pytest.mark.slow
def test_events_dash_puts_only_events_on_stdout(tmp_path):
    result = station(
        "run", "FVT1", "--sim", "--serial", "SN-1", "--no-upload", "--events", "-",
        cwd=example(tmp_path),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]  # every line is an event
    types = [e["type"] for e in events]
    assert types[0] == "run_started" and types[-1] == "run_ended"
    assert {"phase_started", "measurement", "log", "phase_ended"} <= set(types)
    assert "== FVT1 PASS  SN-1" in result.stderr  # the console went to stderr
    run_ended = events[-1]
    assert run_ended["outcome"] == "PASS" and Path(run_ended["run_dir"]).is_dir()
    assert all(TS.match(e["ts"]) for e in events)


@pytest.mark.slow
def test_events_of_a_loop_go_to_a_file_with_refusals_and_counters(tmp_path):
    root = example(tmp_path)
    result = station(
        "run", "FVT1", "--sim", "--loop", "--no-upload", "--events", "events.ndjson",
        cwd=root, stdin="SN-1\nnot-a-serial\nSN-2-F\n",
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    events = [json.loads(line) for line in (root / "events.ndjson").read_text().splitlines()]
    types = [e["type"] for e in events]
    assert types.count("run_started") == 2 and types.count("run_ended") == 2
    (refused,) = [e for e in events if e["type"] == "unit_refused"]
    assert refused["serial"] == "not-a-serial" and refused["pattern"] == "SN-\\d+(-F)?"
    counters = [e for e in events if e["type"] == "counters"]
    assert [(c["tested"], c["passed"], c["failed"]) for c in counters] == [(1, 1, 0), (2, 1, 1)]
    assert [e["outcome"] for e in events if e["type"] == "run_ended"] == ["PASS", "FAIL"]
    failed = [e for e in events if e["type"] == "run_ended"][1]["failures"]
    assert failed and failed[0].startswith("rail_3v3 = 3.1") and failed[0].endswith("< 3.22 V")
