"""The data directory cannot be written, or fills up: the operator is told, nothing is corrupted.

- Before the run: a data directory that is read-only, full, or a file in the way stops
  `station run` before any phase runs (no instrument powered), exit 2, with a message that names
  the directory and says what to do.
- During the run: when the disk fills mid-run the run still finishes and teardown still runs. The
  space the journal set aside at the start of the run is given back to record the rest of it:
  the record is whole and the operator is told the disk is full. When the rest of the run does
  not fit even so, the operator is told that the record could not be fully written and what its
  journal lacks; run.json is complete or absent, never half-written; every line the journal
  holds is a whole JSON event, and once space is freed the run is recovered from it.

- Uploading: from a read-only data directory every run is reported as not uploaded because the
  directory is read-only (never "busy in another process"), and the exit code says runs are left.

The full and read-only disks are small tmpfs mounts (we run as root in CI; chmod does not stop
root); where the machine refuses to mount one, those tests skip and say so. The same logic is
covered without a mount in tests/tofupilot/test_outbox.py (a lock file or upload.json that
cannot be created).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from fuzz_fixtures import (
    fill,
    journal_events,
    no_temp_files,
    only_run_dir,
    remount_read_only,
    station_cli,
    tmpfs,
)
from reporting_fixtures import emulator_fixture, record_runs  # noqa: F401 - fixture

from sim.tofupilot import TofuPilotEmulator
from station.storage.journal import RUN_JSON, check_writable, read_record, recover, write_atomic
from station.storage.reserve import RESERVE_BYTES, Reserve

# Phase 1 passes; phase 2 fills the disk the runs are recorded on; phase 3 still measures and logs;
# the teardown leaves a mark outside that disk, to prove it ran.
PROCEDURE = """
    from pathlib import Path

    from station import measure, phase

    DATA = Path({data!r})
    MARKS = Path({marks!r})
    LOUD = {loud}  # lines of 5 kB that phase `after` logs once the disk is full


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
        for _ in range(LOUD):
            log.info("still measuring " + "x" * 5000)
        measurements.w = 1.5


    @phase(teardown=True)
    def power_down():
        (MARKS / "teardown ran").touch()
"""


def write_station(root: Path, data_dir: Path, marks: Path, loud: int = 1) -> None:
    marks.mkdir(exist_ok=True)
    source = textwrap.dedent(PROCEDURE).format(data=str(data_dir), marks=str(marks), loud=loud)
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


def test_a_disk_that_fills_mid_run_records_the_whole_run_in_the_space_set_aside(
    tmp_path: Path,
) -> None:
    marks = tmp_path / "marks"
    with tmpfs(tmp_path / "disk", "256k") as mount:
        write_station(tmp_path, mount, marks)
        seen = run_station(tmp_path)

        seen.assert_no_traceback()
        assert (marks / "phase ran").exists() and (marks / "teardown ran").exists()
        # Nothing was lost: the unit's PASS stands, and the operator is told the disk is full.
        assert seen.code == 0, seen.err
        assert "the space set aside for this run was used" in seen.err, seen.err
        assert "free some space before the next run" in seen.err
        run_dir = only_run_dir(mount)
        record = read_record(run_dir)
        assert [(p.name, p.outcome.value) for p in record.phases] == [
            ("before", "PASS"),
            ("fill_the_disk", "PASS"),
            ("after", "PASS"),
            ("power_down", "PASS"),
        ]
        assert [e["event"] for e in journal_events(run_dir)][-1] == "run_ended"
        assert no_temp_files(run_dir) == [] and not (run_dir / ".reserve").exists()


def test_a_disk_that_fills_beyond_the_reserve_keeps_the_run_going_and_never_leaves_half_a_record(
    tmp_path: Path,
) -> None:
    marks = tmp_path / "marks"
    with tmpfs(tmp_path / "disk", "256k") as mount:
        write_station(tmp_path, mount, marks, loud=100)  # 500 kB of logs: more than the reserve
        seen = run_station(tmp_path)

        seen.assert_no_traceback()
        # The run went on to the end: every phase, then teardown.
        assert (marks / "phase ran").exists() and (marks / "teardown ran").exists()
        assert "[PASS]    after" in seen.out and "power_down [teardown]" in seen.out
        # The operator is told, in words, that the record is incomplete, what is missing and
        # what to do.
        assert "the record of this run could not be fully written" in seen.err, seen.err
        assert "No space left on device" in seen.err and "Free some space" in seen.err
        assert "its journal lacks 4 event(s), from the end of phase 'after' on" in seen.err
        # A passing unit with an incomplete record is not a clean PASS for the line.
        assert seen.code == 3 and "its record is incomplete: exit 3" in seen.err, seen.err

        run_dir = only_run_dir(mount)
        assert not (run_dir / RUN_JSON).exists(), "run.json can only be complete or absent"
        assert no_temp_files(run_dir) == []
        events = journal_events(run_dir)  # every line a whole event
        assert events[0]["event"] == "run_started"
        ended = [e["phase"]["name"] for e in events if e["event"] == "phase_ended"]
        assert ended == ["before", "fill_the_disk"]  # the reserve held the phase that filled it

        # Space comes back: the run is recovered from what its journal holds, as an ERROR run.
        (mount / "hog").unlink()
        recovered = recover(run_dir)
        assert recovered.outcome == "ERROR"
        assert [p.name for p in recovered.phases][:2] == ["before", "fill_the_disk"]
        assert recovered.phases[0].outcome == "PASS"
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


# ------------------------------------------------------------------------------------------------
# Uploading from a read-only data directory


def test_upload_from_a_read_only_data_directory_says_so_and_exits_non_zero(
    tmp_path: Path, emulator: TofuPilotEmulator
) -> None:
    with tmpfs(tmp_path / "runs", "4m") as mount:
        record_runs(tmp_path, 2)
        with (tmp_path / "station.yaml").open("a", encoding="utf-8") as config:
            config.write(f"tofupilot: {{url: {emulator.url!r}}}\n")
        remount_read_only(mount)
        key = {"TOFUPILOT_API_KEY": emulator.station_key}

        seen = station_cli(tmp_path, "upload", env_extra=key)
        seen.assert_no_traceback()
        assert seen.code == 6, seen.out  # nothing was uploaded: the disk needs a person
        lines = [line for line in seen.out.splitlines() if "_T1_SN-" in line]
        assert len(lines) == 2, seen.out
        for line in lines:
            assert "Read-only file system" in line and "another process" not in line, line
            assert "uploading needs a writable data directory" in line
        listing = station_cli(tmp_path, "runs", env_extra=key)
        listing.assert_no_traceback()
        assert "another process" not in listing.out, listing.out
        assert emulator.requests == []


# ------------------------------------------------------------------------------------------------
# The reserve itself: space held by a file with no name, freed by giving it back or by dying


def free_bytes(directory: Path) -> int:
    stats = os.statvfs(directory)
    return stats.f_bavail * stats.f_frsize


def test_the_reserve_holds_space_without_a_name_until_given_back(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "disk", "8m") as mount:
        before = free_bytes(mount)
        reserve = Reserve(mount)
        reserve.ensure()
        assert reserve.held
        assert before - free_bytes(mount) >= RESERVE_BYTES  # the space is taken...
        assert os.listdir(mount) == []  # ...by no file anyone can see or must clean up
        reserve.ensure()  # held already: nothing more is taken
        assert before - free_bytes(mount) < 2 * RESERVE_BYTES
        assert reserve.give_back() and not reserve.held
        assert free_bytes(mount) == before
        assert not reserve.give_back()


def test_a_nearly_full_disk_gets_a_smaller_reserve_and_a_full_one_none(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "disk", "256k") as mount:
        reserve = Reserve(mount)
        reserve.ensure()  # a quarter of the free space at most
        assert reserve.held and free_bytes(mount) >= 3 * (256 * 1024) // 4 - 8192
        reserve.give_back()
        fill(mount)
        reserve.ensure()
        assert not reserve.held


def test_a_station_killed_while_holding_the_reserve_leaves_nothing_behind(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "disk", "8m") as mount:
        before = free_bytes(mount)
        holder = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "import sys, time\n"
                "from pathlib import Path\n"
                "from station.storage.reserve import Reserve\n"
                "r = Reserve(Path(sys.argv[1]))\n"
                "r.ensure()\n"
                "print(r.held, flush=True)\n"
                "time.sleep(60)\n",
                str(mount),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert holder.stdout is not None and holder.stdout.readline().strip() == "True"
            assert before - free_bytes(mount) >= RESERVE_BYTES
        finally:
            holder.kill()
            holder.wait(10)
        assert free_bytes(mount) == before
        assert os.listdir(mount) == []


def test_the_loop_sets_the_reserve_aside_once_not_per_unit(tmp_path: Path, monkeypatch) -> None:
    from station.authoring.helpers import Dut
    from station.config.model import load_config
    from station.config.procedure_loader import load_procedure
    from station.engine.runner import Runner
    from station.storage.journal import Journal

    allocations: list[int] = []
    real_fallocate = os.posix_fallocate

    def fallocate(fd: int, offset: int, length: int) -> None:
        allocations.append(length)
        real_fallocate(fd, offset, length)

    monkeypatch.setattr(os, "posix_fallocate", fallocate)
    (tmp_path / "proc_t.py").write_text(
        "from station import phase\n\n@phase\ndef one():\n    pass\n", encoding="utf-8"
    )
    (tmp_path / "station.yaml").write_text(
        "station: {name: Test bench}\ninstruments: {}\nprocedures:\n  T1:\n    module: proc_t.py\n",
        encoding="utf-8",
    )
    procedure = load_procedure("T1", load_config(tmp_path / "station.yaml"))

    def units(reserve: Reserve | None) -> None:
        for n in range(3):
            journal = Journal(tmp_path / "runs", reserve=reserve)
            Runner(procedure, Dut(f"SN-{n}"), listeners=[journal], handle_signals=False).execute()
            assert journal.failures == []

    shared = Reserve(tmp_path / "runs")
    units(shared)
    assert len(allocations) == 1 and shared.held  # kept for the next unit
    shared.give_back()
    allocations.clear()
    units(None)  # a journal of its own: one reserve per run, freed at its end
    assert len(allocations) == 3
