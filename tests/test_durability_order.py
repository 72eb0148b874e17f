"""What reaches the disk, in which order: the protocol that lets a power cut never lose a run.

A power cut keeps what was fsynced, and nothing else is promised. So the order of the fsyncs is
what makes a run findable and whole after one:
- the run's pending marker is durable before its journal holds a byte (a journal the outbox
  cannot find would never be uploaded), and the run directory's entry before the verdict;
- run.json is fsynced, renamed into place and its directory fsynced before the run is reported:
  from then on the run is durable, and the journal's tail needs no fsync of its own (the loop's
  per-unit budget is mostly fsyncs);
- when run.json cannot be written, the journal is fsynced instead before the error is reported:
  it is then the only record of the run.

The calls are observed (os.open/write/fsync/replace, each file named through /proc), not
replaced: the real journal writes the real files.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from station.storage.journal import JOURNAL, RUN_JSON, recover

pytestmark = pytest.mark.skipif(
    not Path("/proc/self/fd").is_dir(), reason="names descriptors through /proc (Linux)"
)

ONE_PHASE = """
    from station import phase, measure

    @phase
    @measure("v", unit="V", low=1, high=2)
    def rail(measurements):
        measurements.v = 1.5
"""

BLOCKS_RUN_JSON = """
    import os
    from pathlib import Path
    from station import phase, measure

    @phase
    @measure("v", unit="V", low=1, high=2)
    def rail(measurements):
        measurements.v = 1.5

    @phase
    def block_the_record():
        # run.json is written through a temp file of this name: a directory there makes it fail.
        runs = Path(__file__).parent / "runs"
        for run_dir in runs.glob("[!.]*"):
            (run_dir / f".run.json.{os.getpid()}.tmp").mkdir()
"""


class DiskCalls:
    """Records (call, file name, thread name) for every write, fsync and rename, in order."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[tuple[str, str, str]] = []
        real_write, real_fsync, real_replace = os.write, os.fsync, os.replace

        def write(fd: int, data: bytes) -> int:
            self._note("write", self._name(fd))
            return real_write(fd, data)

        def fsync(fd: int) -> None:
            name = self._name(fd)
            real_fsync(fd)
            self._note("fsync", name)

        def replace(src: os.PathLike[str] | str, dst: os.PathLike[str] | str) -> None:
            real_replace(src, dst)
            self._note("replace", str(dst))

        monkeypatch.setattr(os, "write", write)
        monkeypatch.setattr(os, "fsync", fsync)
        monkeypatch.setattr(os, "replace", replace)

    @staticmethod
    def _name(fd: int) -> str:
        try:
            return os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            return f"<fd {fd}>"

    def _note(self, call: str, name: str) -> None:
        self.calls.append((call, name, threading.current_thread().name))

    def first(self, call: str, name_ends: str, thread: str | None = None) -> int:
        for index, (c, name, who) in enumerate(self.calls):
            if c == call and name.endswith(name_ends) and (thread is None or who == thread):
                return index
        raise AssertionError(f"no {call} of *{name_ends}: {self.calls}")

    def count(self, call: str, name_ends: str, thread: str) -> int:
        return sum(
            1
            for c, name, who in self.calls
            if c == call and name.endswith(name_ends) and who == thread
        )


def run_dir_of(bench) -> Path:
    (run_dir,) = (bench.root / "runs").glob("[!.]*")
    return run_dir


def test_the_marker_is_durable_before_the_journal_and_run_json_before_the_verdict(
    bench, monkeypatch
):
    disk = DiskCalls(monkeypatch)
    record = bench.run(ONE_PHASE, journal=True)
    at_the_verdict = list(disk.calls)
    assert record.outcome == "PASS"
    run_dir = run_dir_of(bench)
    main = threading.main_thread().name
    marker_synced = disk.first("fsync", "/.pending", main)
    journal_written = disk.first("write", f"{run_dir.name}/{JOURNAL}")
    assert marker_synced < journal_written
    # The run directory's own entry: synced on the fsync thread, finished before the verdict.
    data_dir = str(run_dir.parent)
    assert ("fsync", data_dir, "station-fsync") in at_the_verdict
    # run.json: the temp file fsynced, renamed into place, then its directory fsynced, all
    # before the runner returned the record.
    temp_synced = disk.first("fsync", ".tmp", main)
    renamed = disk.first("replace", f"{run_dir.name}/{RUN_JSON}")
    dir_synced = next(
        i
        for i, (c, name, who) in enumerate(disk.calls)
        if c == "fsync" and name == str(run_dir) and who == main and i > renamed
    )
    assert temp_synced < renamed < dir_synced
    # The end of the run does not wait for a journal fsync: run.json is the durable record.
    assert disk.count("fsync", f"{run_dir.name}/{JOURNAL}", main) == 0
    assert (run_dir / RUN_JSON).is_file()


def test_when_run_json_cannot_be_written_the_journal_is_made_durable_instead(bench, monkeypatch):
    disk = DiskCalls(monkeypatch)
    record = bench.run(BLOCKS_RUN_JSON, journal=True)
    journal = bench.last_journal
    run_dir = run_dir_of(bench)
    assert not (run_dir / RUN_JSON).is_file()
    main = threading.main_thread().name
    # The failed attempt, then the journal fsynced on the runner's thread.
    assert disk.count("fsync", f"{run_dir.name}/{JOURNAL}", main) == 1
    assert disk.first("fsync", f"{run_dir.name}/{JOURNAL}", main) > disk.first(
        "write", f"{run_dir.name}/{JOURNAL}"
    )
    assert any("its journal holds the whole run" in failure for failure in journal.failures)
    # And the journal is the whole run: recovered, it is the run that ended.
    (run_dir / f".run.json.{os.getpid()}.tmp").rmdir()
    recovered = recover(run_dir)
    assert recovered.outcome == record.outcome == "PASS"
    assert [p.name for p in recovered.phases] == ["rail", "block_the_record"]


def test_the_verdict_waits_for_the_run_directory_entry_to_reach_the_disk(bench, monkeypatch):
    bench.run(ONE_PHASE, journal=True)  # the data directory and its pending index exist now
    data_dir = str(bench.root / "runs")
    gate = threading.Event()
    real_fsync = os.fsync

    def slow_data_dir_fsync(fd: int) -> None:
        if DiskCalls._name(fd) == data_dir:
            gate.wait(30)  # a disk that takes its time
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", slow_data_dir_fsync)
    done: list[object] = []
    thread = threading.Thread(target=lambda: done.append(bench.run(journal=True, serial="SN-2")))
    thread.start()
    try:
        thread.join(0.5)
        assert done == []  # run.json is written, but the verdict waits for the directory
        (second,) = (bench.root / "runs").glob("*_SN-2_*")
        assert (second / RUN_JSON).is_file()
    finally:
        gate.set()
        thread.join(10)
    assert len(done) == 1
