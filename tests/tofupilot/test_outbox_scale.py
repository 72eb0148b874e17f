"""An upload pass costs what is pending, not what was ever recorded: it reads only the runs in
the pending index (checked by recording every file this process opens, never by timing), and
the index survives being deleted, damaged or out of date.

The uploaded runs are copies of one real run whose upload finished (its upload.json says so);
the pending ones are real runs recorded by the journal; uploads go to the emulator over HTTP.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

from station.authoring.helpers import Dut
from station.cli.main import main
from station.engine.runner import Runner
from station.storage.journal import RUN_JSON, Journal
from station.storage.pending import COMPLETE, PENDING_DIR
from station.tofupilot.client import TofuPilotClient
from station.tofupilot.outbox import PARKED, QUEUED, UPLOADED, Outbox

UPLOADED_RUNS = 300
PENDING_RUNS = 5

PROC = """
from station import phase

@phase
def only(log):
    log.info("fine")
"""


class Station:
    def __init__(self, bench, emulator) -> None:
        self.bench, self.emulator = bench, emulator
        bench.write(PROC)
        self.procedure = bench.load()
        self.data_dir = bench.root / "runs"

    def record(self, serial: str) -> Path:
        journal = Journal(self.data_dir)
        Runner(
            self.procedure,
            Dut(serial, self.procedure.part_number, self.procedure.revision),
            listeners=[journal],
            handle_signals=False,
        ).execute()
        assert journal.run_dir is not None
        return journal.run_dir

    def outbox(self) -> Outbox:
        return Outbox(
            self.data_dir,
            lambda: TofuPilotClient(self.emulator.url, self.emulator.station_key, timeout_s=10),
        )

    def uploaded_history(self, count: int) -> list[Path]:
        """`count` uploaded runs, older than anything recorded after: copies of one real run
        whose upload finished, named like run directories of last year."""
        model = self.record("SN-MODEL")
        with self.outbox() as outbox:
            assert outbox.upload(model).state == UPLOADED
        copies = []
        for n in range(count):
            started = f"20250101T{n // 3600:02}{n // 60 % 60:02}{n % 60:02}Z"
            copy = self.data_dir / f"{started}_T1_OLD_{n:08x}"
            shutil.copytree(model, copy)
            copies.append(copy)
        # Named older than anything recorded next (run directories sort by their start time,
        # to the second: the model's own name could tie with the next run's).
        oldest = self.data_dir / "20241231T235959Z_T1_OLD_model"
        model.rename(oldest)
        copies.append(oldest)
        return copies


@pytest.fixture
def station(bench, emulator) -> Station:
    return Station(bench, emulator)


@pytest.fixture
def opened():
    """Paths this process opens or lists while `on` is set (audit events)."""
    seen: dict[str, list[str]] = {"open": [], "list": []}
    state = {"on": False}

    def hook(event: str, args: tuple) -> None:
        if not state["on"]:
            return
        if event == "open" and isinstance(args[0], (str, Path)):
            seen["open"].append(os.path.abspath(args[0]))
        elif event in ("os.listdir", "os.scandir") and isinstance(args[0], (str, Path)):
            seen["list"].append(os.path.abspath(args[0]))

    sys.addaudithook(hook)
    return seen, state


def inside(path: str, run_dirs: list[Path]) -> bool:
    return any(path == str(d) or path.startswith(f"{d}{os.sep}") for d in run_dirs)


def test_an_upload_pass_reads_only_the_pending_runs(station, emulator, opened):
    history = station.uploaded_history(UPLOADED_RUNS)
    pending = [station.record(f"SN-{n}") for n in range(PENDING_RUNS)]
    assert len(station.outbox().run_dirs()) == UPLOADED_RUNS + 1 + PENDING_RUNS
    seen, state = opened
    state["on"] = True
    try:
        with station.outbox() as outbox:
            statuses = outbox.drain()
            assert outbox.drain() == []  # the next pass: nothing pending, nothing read
    finally:
        state["on"] = False
    assert [s.state for s in statuses] == [UPLOADED] * PENDING_RUNS
    assert sorted(s.run_dir for s in statuses) == pending
    touched = [p for p in seen["open"] if inside(p, history)]
    assert touched == [], touched[:5]  # not one file of an uploaded run was opened
    assert str(station.data_dir) not in seen["list"]  # nor the data directory listed
    assert any(inside(p, pending) for p in seen["open"])  # (the hook does see opens)
    assert len(emulator.runs) == 1 + PENDING_RUNS


def test_runs_with_a_limit_reads_only_the_runs_it_shows(station, opened, capsys):
    history = station.uploaded_history(50)
    newest = [station.record(f"SN-{n}") for n in range(3)]
    seen, state = opened
    state["on"] = True
    try:
        assert (
            main(["runs", "--limit", "3", "--config", str(station.bench.root / "station.yaml")])
            == 0
        )
    finally:
        state["on"] = False
    out = capsys.readouterr().out
    assert [line.split()[3] for line in out.splitlines()[1:]] == ["SN-2", "SN-1", "SN-0"]
    assert not [p for p in seen["open"] if inside(p, history)]
    assert all(inside(p, newest) for p in seen["open"] if p.startswith(str(station.data_dir)))


def test_a_missing_index_is_found_by_a_read_only_scan_and_rebuilt_by_the_next_pass(
    station, emulator
):
    history = station.uploaded_history(20)
    pending = [station.record(f"SN-{n}") for n in range(2)]
    shutil.rmtree(station.data_dir / PENDING_DIR)  # deleted, or a data dir of an older version
    outbox = station.outbox()
    assert outbox.index.names() is None
    assert [s.run_dir for s in outbox.pending()] == pending  # found by reading every run
    assert not (station.data_dir / PENDING_DIR).exists()  # a status probe wrote nothing
    statuses = outbox.drain()
    assert [s.state for s in statuses] == [UPLOADED, UPLOADED]
    assert outbox.index.complete() and outbox.index.names() == []
    assert len(emulator.runs) == 3  # the history was never sent again
    outbox.close()
    later = station.record("SN-LATER")
    assert station.outbox().index.names() == [later.name]
    assert history[0].is_dir()


def test_a_damaged_index_is_moved_aside_and_rebuilt(station, emulator):
    station.uploaded_history(5)
    run_dir = station.record("SN-1")
    shutil.rmtree(station.data_dir / PENDING_DIR)
    (station.data_dir / PENDING_DIR).write_text("not a directory")
    with station.outbox() as outbox:
        assert [s.state for s in outbox.drain()] == [UPLOADED]
        assert outbox.index.complete() and outbox.index.names() == []
    assert [p.name for p in station.data_dir.glob(f"{PENDING_DIR}.damaged-*")]
    assert run_dir.name not in (outbox.index.names() or [])
    assert len(emulator.runs) == 2  # the history's one real run, and this one


def test_markers_out_of_date_are_dropped_and_a_damaged_run_blocks_no_other(station, emulator):
    good = station.record("SN-GOOD")
    bad = station.record("SN-BAD")
    record = (bad / RUN_JSON).read_text().replace('"serial_number"', '"serial_number_x"')
    (bad / RUN_JSON).write_text(record)
    already = station.record("SN-ALREADY")
    with station.outbox() as outbox:
        assert outbox.upload(already).state == UPLOADED
    index = station.data_dir / PENDING_DIR
    (index / already.name).touch()  # a process died between upload.json and the marker
    (index / "20240101T000000Z_T1_GONE_00000000").touch()  # its directory was deleted
    posts = len(emulator.requests_to("POST", "/api/v2/runs"))
    with station.outbox() as outbox:
        statuses = {s.run_dir.name: s.state for s in outbox.drain()}
        assert statuses == {good.name: UPLOADED, bad.name: PARKED}
        assert outbox.index.names() == [bad.name]  # parked: still pending, still listed
        assert [s.state for s in outbox.pending()] == [PARKED]
    assert len(emulator.requests_to("POST", "/api/v2/runs")) == posts + 1  # only SN-GOOD
    assert (index / COMPLETE).is_file()


def test_a_run_recorded_while_the_server_is_down_stays_indexed_until_uploaded(station, emulator):
    emulator.stop()
    run_dir = station.record("SN-1")
    with station.outbox() as outbox:
        (status,) = outbox.drain()
        assert status.state == QUEUED
        assert outbox.index.names() == [run_dir.name]
        emulator.start()
        (status,) = outbox.drain()
        assert status.state == UPLOADED and outbox.index.names() == []
