"""The run directory keeps what can be kept, and a damaged one never stops the others.

- A journal whose lines are valid JSON but not events (`{}`, `[]`, a number, an event without
  `at`, a phase that is not a phase) is recovered from the lines that are events; the damage is
  stated in the recovered record, which is never a PASS.
- The journal is split on `\\n` bytes only: U+0085, U+2028 and U+2029 are written raw inside JSON
  strings and are data, not line ends.
- A disk that fills mid-run: a reserve set aside at the start keeps every event of the run in the
  journal. A run directory removed mid-run is re-created with the record the runner held.
- Non-finite values are stored as an explicit fact; records written the old way still read back.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from station.records.model import MeasurementRecord, RunRecord
from station.storage import journal as journal_module
from station.storage.journal import (
    JOURNAL,
    RUN_JSON,
    JournalError,
    read_record,
    recover,
)
from station.storage.reserve import Reserve

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


def recorded_run(bench, source: str = PROCEDURE, **kw) -> Path:
    bench.run(source, journal=True, **kw)
    (run_dir,) = (bench.root / "runs").glob("[!.]*")
    return run_dir


def journal_lines(run_dir: Path) -> list[bytes]:
    return (run_dir / JOURNAL).read_bytes().split(b"\n")[:-1]


def interrupt(run_dir: Path, lines: list[bytes]) -> None:
    """Leave `run_dir` as a process that died would: these journal lines, no run.json."""
    (run_dir / JOURNAL).write_bytes(b"".join(line + b"\n" for line in lines))
    (run_dir / RUN_JSON).unlink(missing_ok=True)


# -- malformed journal lines -------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad",
    [
        b"{}",
        b"[]",
        b"42",
        b'"text"',
        b"null",
        b'{"event":"phase_ended","phase":{"name":"x"}}',  # no `at`
        b'{"event":"phase_ended","at":17,"phase":{}}',  # `at` not a time
        b'{"event":"phase_ended","at":"not a time","phase":{}}',
        b'{"event":"phase_ended","at":"2025-01-01T00:00:00Z","phase":[1]}',
        b'{"event":"phase_ended","at":"2025-01-01T00:00:00Z","phase":{"name":"x"}}',
        b'{"event":"phase_started","at":"2025-01-01T00:00:00Z","phase":"x"}',
        b'{"event":"log","at":"2025-01-01T00:00:00Z","log":{"level":3}}',
        b'{"event":["run_ended"],"at":"2025-01-01T00:00:00Z"}',
    ],
)
def test_a_valid_json_line_that_is_not_an_event_is_skipped_and_stated(bench, bad):
    run_dir = recorded_run(bench)
    lines = journal_lines(run_dir)  # started, first started+ended, second started+ended, ended
    interrupt(run_dir, [lines[0], bad, *lines[1:5]])
    record = recover(run_dir)
    # Every phase the journal holds is kept; the unreadable line is stated, not ignored.
    assert [(p.name, p.outcome.value) for p in record.phases] == [
        ("first", "PASS"),
        ("second", "PASS"),
    ]
    assert record.outcome == "ERROR"
    assert "1 journal line could not be read (line 2:" in record.outcome_reason
    assert read_record(run_dir) == record


def test_a_damaged_line_before_run_ended_makes_the_recovered_run_error_not_pass(bench):
    run_dir = recorded_run(bench)
    lines = journal_lines(run_dir)
    interrupt(run_dir, [lines[0], lines[1], b"[]", *lines[3:]])  # first's phase_ended is damaged
    record = recover(run_dir)
    assert [p.name for p in record.phases] == ["second"]
    assert record.outcome == "ERROR"  # the run said PASS, but a phase of it cannot be read
    assert record.outcome_reason.startswith("the run ended PASS but 1 journal line")


@pytest.mark.parametrize("first", [b"{}", b"[]", b"7", b'{"event":"run_started","at":"x"}'])
def test_a_journal_without_a_readable_start_is_a_clear_journal_error(bench, first):
    run_dir = recorded_run(bench)
    interrupt(run_dir, [first])
    with pytest.raises(JournalError, match=r"journal\.jsonl holds no readable run_started event"):
        recover(run_dir)
    assert not (run_dir / RUN_JSON).exists()


def test_a_run_started_whose_run_is_not_a_run_is_a_clear_journal_error(bench):
    run_dir = recorded_run(bench)
    header = json.loads(journal_lines(run_dir)[0])
    header["run"]["started_at"] = "yesterday"
    interrupt(run_dir, [json.dumps(header).encode()])
    with pytest.raises(JournalError, match=r"line 1: .*started_at"):
        recover(run_dir)


def test_a_journal_that_is_not_utf8_is_recovered(bench):
    run_dir = recorded_run(bench)
    lines = journal_lines(run_dir)
    interrupt(run_dir, [lines[0], b"\xff\xfe garbage \x85", *lines[1:3]])
    record = recover(run_dir)
    assert [p.name for p in record.phases] == ["first"]


# -- line ends inside JSON strings -------------------------------------------------------------

LOGS_A_NEL = """
    from station import phase

    @phase
    def talks(log):
        log.info("instrument said " + bytes([0x85]).decode("latin-1") + " and "
                 + chr(0x2028) + chr(0x2029) + " then stopped")

    @phase
    def after():
        pass
"""


def test_unicode_line_separators_in_a_log_do_not_split_journal_lines(bench):
    run_dir = recorded_run(bench, LOGS_A_NEL)
    raw = (run_dir / JOURNAL).read_bytes()
    assert "\u2028".encode() in raw  # written raw: JSON allows it
    lines = journal_lines(run_dir)
    interrupt(run_dir, lines[:-1])  # died before run_ended
    record = recover(run_dir)
    assert [(p.name, p.outcome.value) for p in record.phases] == [
        ("talks", "PASS"),
        ("after", "PASS"),
    ]
    assert "\x85" in record.phases[0].logs[0].message
    assert "could not be read" not in (record.outcome_reason or "")


def test_an_operator_name_with_a_line_separator_is_recovered(bench):
    def name_the_operator(runner):
        runner.record.operator = "A\u2028B\x85C\u2029"

    run_dir = recorded_run(bench, runner_hook=name_the_operator)
    record = read_record(run_dir)
    assert record.operator == "A\u2028B\x85C\u2029"
    interrupt(run_dir, journal_lines(run_dir)[:-1])
    recovered = recover(run_dir)
    assert recovered.run_id == record.run_id and recovered.operator == record.operator
    assert [p.name for p in recovered.phases] == ["first", "second"]


# -- disk trouble ------------------------------------------------------------------------------


class FullDisk:
    """os.write fails with ENOSPC for the journal until the reserve is given back (its space is
    then free). tests/chaos/test_disk_trouble.py fills a real (tmpfs) disk."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.full = False
        self.real_write = journal_module.os.write
        self.monkeypatch = monkeypatch
        monkeypatch.setattr(journal_module.os, "write", self.write)
        real_give_back = Reserve.give_back

        def give_back(reserve: Reserve) -> bool:
            given = real_give_back(reserve)
            if given:
                self.full = False  # the reserve's space is free again
            return given

        monkeypatch.setattr(Reserve, "give_back", give_back)

    def write(self, fd: int, data: bytes) -> int:
        if self.full:
            raise OSError(28, "No space left on device")
        return self.real_write(fd, data)


FILLS = """
    from station import phase, measure

    @phase
    @measure("v", low=1, high=2)
    def before(measurements):
        measurements.v = 1.5

    @phase
    def fill_the_disk():
        import station_disk
        station_disk.FULL.full = True

    @phase
    @measure("w", low=1, high=2)
    def after(measurements):
        measurements.w = 1.5
"""


def test_a_disk_filling_mid_run_keeps_every_phase_in_the_journal(bench, monkeypatch):
    import sys
    import types

    full = FullDisk(monkeypatch)
    module = types.ModuleType("station_disk")
    module.FULL = full  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "station_disk", module)
    record = bench.run(FILLS, journal=True)
    assert record.outcome == "PASS"
    (run_dir,) = (bench.root / "runs").glob("[!.]*")
    # The reserve was given up to hold the rest of the run: nothing is missing from the journal.
    assert not (run_dir / journal_module.RESERVE).exists()
    (run_dir / RUN_JSON).unlink(missing_ok=True)
    recovered = recover(run_dir)
    assert [(p.name, p.outcome.value) for p in recovered.phases] == [
        ("before", "PASS"),
        ("fill_the_disk", "PASS"),
        ("after", "PASS"),
    ]
    assert recovered.outcome == "PASS"


def test_a_run_directory_removed_mid_run_is_re_created_with_the_record(bench):
    runs = bench.root / "runs"
    removes = f"""
        import pathlib, shutil
        from station import phase

        @phase
        def first():
            pass

        @phase
        def remove_the_run_directory():
            shutil.rmtree(next(pathlib.Path({str(runs)!r}).glob("[!.]*")))

        @phase
        def last():
            pass
    """
    record = bench.run(removes, journal=True)
    journal = bench.last_runner._listeners[0]
    (run_dir,) = runs.glob("[!.]*")
    assert read_record(run_dir) == record  # what the runner held, whole
    (failure,) = journal.failures  # said once, truly
    assert "was removed during the run" in failure and "re-created" in failure
    assert "holds this run's record" in failure
    assert "recovers the run from what its journal holds" not in failure


def test_a_run_directory_that_cannot_be_re_created_says_the_run_is_lost(bench, tmp_path):
    removes = f"""
        import pathlib, shutil
        from station import phase

        @phase
        def remove_everything():
            shutil.rmtree({str(bench.root / "runs")!r})
            pathlib.Path({str(bench.root / "runs")!r}).write_text("a file in the way")
    """
    bench.run(removes, journal=True)
    journal = bench.last_runner._listeners[0]
    (failure,) = journal.failures
    assert "was removed during the run and cannot be re-created" in failure
    assert "station upload" not in failure  # no promise of a recovery that cannot happen
    assert "this run is lost" in failure


# -- non-finite values -------------------------------------------------------------------------

NON_FINITE = """
    from station import phase, measure

    @phase
    @measure("nan", low=1)
    @measure("inf", low=1)
    @measure("trace")
    @measure("text", equals="NaN")
    def values(measurements, run):
        measurements.nan = float("nan")
        measurements.inf = float("inf")
        measurements.trace = [1.0, float("-inf"), float("nan")]
        measurements.text = "NaN"
        run.metadata["bound"] = float("inf")
"""


def test_non_finite_values_are_stored_as_an_explicit_fact(bench):
    run_dir = recorded_run(bench, NON_FINITE)
    raw = json.loads((run_dir / RUN_JSON).read_text())
    by_name = {m["name"]: m for m in raw["phases"][0]["measurements"]}
    assert by_name["nan"]["measured_value"] == {"$non_finite": "NaN"}
    assert by_name["inf"]["measured_value"] == {"$non_finite": "Infinity"}
    assert by_name["trace"]["measured_value"] == [
        1.0,
        {"$non_finite": "-Infinity"},
        {"$non_finite": "NaN"},
    ]
    assert by_name["text"]["measured_value"] == "NaN"  # text stays text
    assert raw["metadata"]["bound"] == {"$non_finite": "Infinity"}
    stored = read_record(run_dir)
    values = {m.name: m.measured_value for m in stored.phases[0].measurements}
    assert math.isnan(values["nan"]) and values["inf"] == math.inf
    assert values["trace"][1] == -math.inf and math.isnan(values["trace"][2])
    assert values["text"] == "NaN"
    assert stored.metadata["bound"] == math.inf
    # The journal holds the same explicit form.
    ended = [json.loads(line) for line in journal_lines(run_dir) if b'"phase_ended"' in line]
    assert ended[0]["phase"]["measurements"][0]["measured_value"] == {"$non_finite": "NaN"}


def test_a_record_written_the_old_way_reads_back_with_its_numbers(bench):
    run_dir = recorded_run(bench, NON_FINITE)
    raw = json.loads((run_dir / RUN_JSON).read_text())
    # How version 1 wrote them: non-finite numbers as bare strings.
    raw["schema_version"] = 1
    old = {"nan": "NaN", "inf": "Infinity", "trace": [1.0, "-Infinity", "NaN"], "text": "NaN"}
    for m in raw["phases"][0]["measurements"]:
        m["measured_value"] = old[m["name"]]
    raw["metadata"]["bound"] = "Infinity"
    (run_dir / RUN_JSON).write_text(json.dumps(raw))
    stored = read_record(run_dir)
    values = {m.name: m.measured_value for m in stored.phases[0].measurements}
    assert math.isnan(values["nan"]) and values["inf"] == math.inf
    assert values["trace"][1] == -math.inf and math.isnan(values["trace"][2])
    assert values["text"] == "NaN"  # it met a text limit: it was text
    assert stored.schema_version == 2


def test_a_text_value_spelled_like_a_tag_round_trips_as_text():
    m = MeasurementRecord(name="m", outcome="PASS", measured_value={"$non_finite": "NaN", "x": 1})
    again = MeasurementRecord.from_json(m.to_json())
    assert again.measured_value == {"$non_finite": "NaN", "x": 1}


def test_dead_code_is_gone():
    assert not hasattr(RunRecord, "to_dict")
    assert not hasattr(journal_module, "find_interrupted")
