"""The run directory: journal per phase, atomic run.json, recovery of interrupted runs."""

from __future__ import annotations

import json
import re

import pytest

from station.storage.journal import (
    JOURNAL,
    RUN_JSON,
    JournalError,
    check_writable,
    read_record,
    recover,
    write_atomic,
)

PROCEDURE = """
    from station import phase, measure

    @phase
    @measure("v", unit="V", low=1, high=2)
    def first(measurements):
        measurements.v = 1.5

    @phase
    def second(log):
        log.info("second ran")
"""


def lines_of(run_dir):
    """The journal's lines: split on \\n only (JSON strings may hold other line separators)."""
    return (run_dir / JOURNAL).read_bytes().decode().split("\n")[:-1]


def events(run_dir):
    return [json.loads(line) for line in lines_of(run_dir)]


def test_run_directory_holds_journal_and_run_json(bench):
    record = bench.run(PROCEDURE, journal=True, serial="SN/7 x")
    (run_dir,) = (bench.root / "runs").glob("[!.]*")
    assert run_dir.name.endswith(f"_T1_SN_7_x_{record.run_id[:8]}")
    kinds = [e["event"] for e in events(run_dir)]
    assert kinds == [
        "run_started",
        "phase_started",
        "phase_ended",
        "phase_started",
        "phase_ended",
        "run_ended",
    ]
    assert all(e["at"].endswith("Z") for e in events(run_dir))
    stored = read_record(run_dir)
    assert stored == record
    text = (run_dir / RUN_JSON).read_text()
    assert re.search(r'"started_at":"[^"]+Z"', text)  # UTC timestamps with Z
    assert not list(run_dir.glob(".*.tmp"))


def test_recover_keeps_finished_phases_and_names_the_interrupted_one(bench):
    bench.run(PROCEDURE, journal=True)
    (run_dir,) = (bench.root / "runs").glob("[!.]*")
    lines = lines_of(run_dir)
    # Keep run_started, first phase started+ended, second phase started; then a torn line.
    (run_dir / JOURNAL).write_text("\n".join(lines[:4]) + '\n{"event":"phase_en')
    (run_dir / RUN_JSON).unlink()
    record = recover(run_dir)
    assert record.outcome == "ERROR"
    assert record.outcome_reason == "station process ended during phase 'second'"
    assert [(p.name, p.outcome.value) for p in record.phases] == [
        ("first", "PASS"),
        ("second", "ERROR"),
    ]
    assert record.phases[0].measurements[0].measured_value == 1.5
    assert read_record(run_dir) == record


def test_recover_when_killed_while_writing_run_json_keeps_the_real_outcome(bench):
    bench.run(PROCEDURE, journal=True)
    (run_dir,) = (bench.root / "runs").glob("[!.]*")
    (run_dir / RUN_JSON).unlink()
    record = recover(run_dir)
    assert record.outcome == "PASS" and len(record.phases) == 2


def test_recover_before_first_phase(bench):
    bench.run(PROCEDURE, journal=True)
    (run_dir,) = (bench.root / "runs").glob("[!.]*")
    first_line = lines_of(run_dir)[0]
    (run_dir / JOURNAL).write_text(first_line + "\n")
    (run_dir / RUN_JSON).unlink()
    assert recover(run_dir).outcome_reason == "station process ended before the first phase"


def test_write_atomic_replaces_whole_file(tmp_path):
    target = tmp_path / "run.json"
    write_atomic(target, b"old")
    write_atomic(target, b"new contents")
    assert target.read_bytes() == b"new contents"
    assert [p.name for p in tmp_path.iterdir()] == ["run.json"]


def test_unwritable_data_dir_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(JournalError, match=r"cannot record runs in .*file"):
        check_writable(blocker / "runs")


def test_recover_keeps_the_unit_identity_a_phase_set(bench):
    procedure = """
    from station import phase

    @phase
    def identify(dut):
        dut.revision = "C"
        dut.part_number = "PCBA01-X"
        dut.batch_number = "B42"
    """
    record = bench.run(procedure, journal=True)
    assert (record.part_number, record.revision, record.batch_number) == ("PCBA01-X", "C", "B42")
    (run_dir,) = (bench.root / "runs").glob("[!.]*")
    (run_dir / RUN_JSON).unlink()  # killed while writing run.json: recovered from the journal
    recovered = recover(run_dir)
    assert (recovered.part_number, recovered.revision, recovered.batch_number) == (
        "PCBA01-X",
        "C",
        "B42",
    )
