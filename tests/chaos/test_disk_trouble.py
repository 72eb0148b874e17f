"""The data directory cannot be written, or fills up: the operator is told, nothing is corrupted.

- Before the run: a data directory that is read-only, full, or a file in the way stops
  `station run` before any phase runs (no instrument powered), exit 2, with a message that names
  the directory and says what to do.
- During the run: when the disk fills mid-run the run still finishes and teardown still runs; the
  operator is told that the record could not be fully written; run.json is complete or absent,
  never half-written; every line the journal holds is a whole JSON event, and once space is freed
  the run is recovered from it.

The full and read-only disks are small tmpfs mounts (we run as root in CI); where the machine
refuses to mount one, those tests skip and say so.
"""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest
from fuzz_fixtures import (
    fill,
    journal_events,
    no_temp_files,
    only_run_dir,
    station_cli,
    tmpfs,
)

from station.storage.journal import RUN_JSON, check_writable, read_record, recover, write_atomic

# Phase 1 passes; phase 2 fills the disk the runs are recorded on; phase 3 still measures and logs;
# the teardown leaves a mark outside that disk, to prove it ran.
PROCEDURE = """
    from pathlib import Path

    from station import measure, phase

    DATA = Path({data!r})
    MARKS = Path({marks!r})


    @phase
    @measure("v", low=1, high=2)
    def before(measurements):
        measurements.v = 1.5
        (MARKS / "phase ran").touch()


    @phase
    def fill_the_disk(log):
        with open(DATA / "hog", "ab", buffering=0) as hog:
            try:
                while True:
                    hog.write(b"\\0" * 4096)
            except OSError:
                pass
            try:
                while True:
                    hog.write(b"\\0")
            except OSError:
                pass
        log.info("the disk is full now")


    @phase
    @measure("w", low=1, high=2)
    def after(measurements, log):
        log.info("still measuring " + "x" * 2000)
        measurements.w = 1.5


    @phase(teardown=True)
    def power_down():
        (MARKS / "teardown ran").touch()
"""


def write_station(root: Path, data_dir: Path, marks: Path) -> None:
    marks.mkdir(exist_ok=True)
    source = textwrap.dedent(PROCEDURE).format(data=str(data_dir), marks=str(marks))
    (root / "proc_t.py").write_text(source, encoding="utf-8")
    (root / "station.yaml").write_text(
        "station: {name: Disk bench}\n"
        f"data_dir: {str(data_dir)!r}\n"
        "procedures:\n"
        "  T1: {module: proc_t.py}\n",
        encoding="utf-8",
    )


def run_station(root: Path):
    return station_cli(root, "run", "T1", "--serial", "SN-1", "--no-upload", timeout=60)


def assert_refused_before_any_phase(root: Path, marks: Path, data_dir: Path, reason: str) -> None:
    seen = run_station(root)
    seen.assert_no_traceback()
    assert seen.code == 2, seen.err
    assert seen.err.startswith(f"station: cannot record runs in {data_dir}: {reason}"), seen.err
    assert "set data_dir in station.yaml" in seen.err
    assert not (marks / "phase ran").exists(), "a phase ran although nothing could be recorded"
    assert not (marks / "teardown ran").exists()


# ------------------------------------------------------------------------------------------------
# Before the run


def test_a_file_where_the_data_directory_should_be_stops_the_run_before_any_phase(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "runs"
    data_dir.write_text("not a directory")
    write_station(tmp_path, data_dir, tmp_path / "marks")
    assert_refused_before_any_phase(tmp_path, tmp_path / "marks", data_dir, "File exists")


def test_a_read_only_data_directory_stops_the_run_before_any_phase(tmp_path: Path) -> None:
    # chmod does not stop root: a read-only mount does.
    with tmpfs(tmp_path / "ro", "64k", read_only=True) as mount:
        write_station(tmp_path, mount, tmp_path / "marks")
        assert_refused_before_any_phase(
            tmp_path, tmp_path / "marks", mount, "Read-only file system"
        )


def test_a_full_data_directory_stops_the_run_before_any_phase(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "full", "64k") as mount:
        fill(mount)
        write_station(tmp_path, mount, tmp_path / "marks")
        assert_refused_before_any_phase(
            tmp_path, tmp_path / "marks", mount, "No space left on device"
        )


# ------------------------------------------------------------------------------------------------
# During the run


def test_a_disk_that_fills_mid_run_keeps_the_run_going_and_never_leaves_half_a_record(
    tmp_path: Path,
) -> None:
    marks = tmp_path / "marks"
    with tmpfs(tmp_path / "disk", "256k") as mount:
        write_station(tmp_path, mount, marks)
        seen = run_station(tmp_path)

        seen.assert_no_traceback()
        # The run went on to the end: every phase, then teardown.
        assert (marks / "phase ran").exists() and (marks / "teardown ran").exists()
        assert "[PASS]    after" in seen.out and "power_down [teardown]" in seen.out
        # The operator is told, in words, that the record is incomplete and what to do.
        assert "the record of this run could not be fully written" in seen.err, seen.err
        assert "No space left on device" in seen.err and "free some space" in seen.err
        # A passing unit with an incomplete record is not a clean PASS for the line.
        assert seen.code == 3 and "its record is incomplete: exit 3" in seen.err, seen.err

        run_dir = only_run_dir(mount)
        assert not (run_dir / RUN_JSON).exists(), "run.json can only be complete or absent"
        assert no_temp_files(run_dir) == []
        events = journal_events(run_dir)  # every line a whole event
        assert events[0]["event"] == "run_started"
        assert [e["phase"]["name"] for e in events if e["event"] == "phase_ended"][:1] == ["before"]

        # Space comes back: the run is recovered from what its journal holds, with the outcome
        # the journal recorded for it (ERROR if the run's end never reached the disk).
        (mount / "hog").unlink()
        recovered = recover(run_dir)
        ended = [e["run"]["outcome"] for e in events if e["event"] == "run_ended"]
        assert recovered.outcome == (ended[0] if ended else "ERROR")
        assert recovered.phases[0].name == "before" and recovered.phases[0].outcome == "PASS"
        assert read_record(run_dir) == recovered


def test_run_json_is_complete_or_absent_when_the_disk_is_full(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "disk", "64k") as mount:
        earlier = b'{"complete": "an earlier record"}'
        write_atomic(mount / RUN_JSON, earlier)
        fill(mount)

        with pytest.raises(OSError):
            write_atomic(mount / RUN_JSON, b"x" * 200_000)

        assert (mount / RUN_JSON).read_bytes() == earlier  # the old file, whole
        assert no_temp_files(mount) == []
        with pytest.raises(OSError):
            write_atomic(mount / "fresh.json", b"y" * 200_000)
        assert not (mount / "fresh.json").exists()


def test_check_writable_names_the_directory_and_what_to_do(tmp_path: Path) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("")
    with pytest.raises(OSError) as caught:
        check_writable(blocker / "runs")
    message = str(caught.value)
    assert str(blocker / "runs") in message
    assert "fix the permissions or free some space, or set data_dir in station.yaml" in message
    assert not os.path.exists(blocker / "runs")
