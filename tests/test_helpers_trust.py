"""The injected helpers keep what the phase did, and only that: the unit's identity as the phase
set it, sub-units a run can upload, attachments under unique names, and its own run's log lines,
bounded.
"""

from __future__ import annotations

import threading
import time

import pytest

from station.authoring.helpers import (
    MAX_LOG_LINES,
    MAX_LOG_MESSAGE,
    Dut,
    LogCapture,
    run_logger,
)
from station.engine.runner import Runner

# ------------------------------------------------------------------------------------------------
# 7. The unit's identity as the phase set it


def test_record_keeps_the_identity_a_phase_set(bench):
    record = bench.run(
        """
        from station import phase

        @phase
        def read_label(dut):
            dut.part_number = "PCBA-01"
            dut.revision = "B"
            dut.batch_number = "2026-W07"

        @phase(run_if=lambda dut: dut.revision == "B")
        def rev_b_only():
            pass
    """,
        procedure_yaml="part_number: PCBA-00\nrevision: A\nbatch_number: old\n",
    )
    assert (record.part_number, record.revision, record.batch_number) == (
        "PCBA-01",
        "B",
        "2026-W07",
    )
    assert [p.outcome for p in record.phases] == ["PASS", "PASS"]


@pytest.mark.parametrize(
    "statement",
    [
        "dut.sub_units.append(42)",
        "dut.sub_units.append('')",
        "dut.sub_units.append('   ')",
        "dut.sub_units.append(None)",
        "dut.sub_units.extend(['PSU-1', 7])",
        "dut.sub_units.insert(0, b'PSU-1')",
        "dut.sub_units += [3.5]",
        "dut.sub_units[0:0] = [42]",
        "dut.sub_units = [42]",
        "dut.revision = 5",
    ],
)
def test_a_value_the_record_cannot_hold_is_refused_where_the_phase_sets_it(bench, statement):
    record = bench.run(f"""
        from station import phase

        @phase
        def fit(dut):
            {statement}
    """)
    (ph,) = record.phases
    assert ph.outcome == "ERROR" and ph.error.type == "TypeError"
    assert ph.error.line_number == 6  # the phase's own line, not the framework's
    assert record.sub_units == []


def test_sub_units_accept_serial_numbers_in_every_list_way():
    dut = Dut("SN-1")
    dut.sub_units.append("PSU-1")
    dut.sub_units.extend(("FAN-2",))
    dut.sub_units += ["CAB-3"]
    dut.sub_units.insert(0, "BRD-0")
    dut.sub_units[0] = "BRD-9"
    assert dut.sub_units == ["BRD-9", "PSU-1", "FAN-2", "CAB-3"]
    dut.sub_units = ["X-1"]
    dut.sub_units.append("X-2")
    assert dut.sub_units == ["X-1", "X-2"]
    with pytest.raises(TypeError, match=r"sub_units takes serial numbers.*got 42"):
        dut.sub_units.append(42)
    with pytest.raises(TypeError, match=r"serial number"):
        Dut("SN-1", sub_units=[1])


# ------------------------------------------------------------------------------------------------
# 8. Attachments of one name: unique names, linear time


def test_two_thousand_attachments_of_one_name_are_fast_and_unique(bench):
    (bench.root / "data.txt").write_text("x")
    started = time.monotonic()
    record = bench.run(
        """
        from pathlib import Path
        from station import phase

        DATA = Path(__file__).with_name("data.txt")

        @phase
        def many(run):
            for _ in range(2000):
                run.attach(DATA)
            run.attach(DATA, name="data-1.txt")  # collides with a generated name
    """,
        journal=True,
    )
    elapsed = time.monotonic() - started
    assert record.outcome == "PASS", record.outcome_reason
    names = [a.name for a in record.attachments]
    assert len(names) == 2001 and len(set(names)) == 2001
    assert names[:3] == ["data.txt", "data-1.txt", "data-2.txt"]
    # Stored under the names given: the journal never had to search for a free file name.
    assert [a.path for a in record.attachments] == [f"attachments/{name}" for name in names]
    # Linear: about 2 s on a quiet machine (the quadratic search took 19 s to 80 s); the bound is
    # generous because the journal's fsync per attachment slows down under a parallel test run.
    assert elapsed < 30, f"2,000 attachments took {elapsed:.1f} s"


# ------------------------------------------------------------------------------------------------
# 9. Each run captures its own log lines, and a bounded number of them

TWO_RUNS = """
    import threading
    import time
    from station import phase

    @phase
    def chatter(log, dut):
        for i in range(200):
            log.info("%s line %d", dut.serial_number, i)
            if i % 20 == 0:
                time.sleep(0.001)
        helper = threading.Thread(target=lambda: log.warning("%s helper", dut.serial_number))
        helper.start()
        helper.join()
"""


def test_two_runners_in_one_process_never_mix_their_log_lines(bench):
    bench.write(TWO_RUNS)
    procedure = bench.load()
    records = {}
    start = threading.Barrier(2)

    def run(serial: str) -> None:
        runner = Runner(procedure, Dut(serial), handle_signals=False)
        start.wait()
        records[serial] = runner.execute()

    threads = [threading.Thread(target=run, args=(serial,)) for serial in ("SN-A", "SN-B")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    for serial, record in records.items():
        phase_lines = [e.message for e in record.phases[0].logs]
        run_lines = [e.message for e in record.logs]
        assert len(phase_lines) == 200 and all(m.startswith(serial) for m in phase_lines)
        assert run_lines == [f"{serial} helper"]
    assert set(records) == {"SN-A", "SN-B"}


def test_a_phase_keeps_a_bounded_number_of_log_lines_and_says_how_many_it_dropped(bench):
    record = bench.run(f"""
        from station import phase

        @phase
        def flood(log):
            for i in range({MAX_LOG_LINES} + 1234):
                log.info("line %d", i)
            log.info("x" * {MAX_LOG_MESSAGE * 3})
    """)
    logs = record.phases[0].logs
    assert len(logs) == MAX_LOG_LINES + 1
    assert logs[MAX_LOG_LINES - 1].message == f"line {MAX_LOG_LINES - 1}"
    assert logs[-1].level == "WARNING" and logs[-1].message.startswith("1235 log lines dropped")


def test_long_messages_are_cut_with_a_visible_marker(bench):
    record = bench.run(f"""
        from station import phase

        @phase
        def long(log):
            log.info("x" * {MAX_LOG_MESSAGE * 3})
    """)
    (entry,) = record.phases[0].logs
    assert entry.message.startswith("x" * MAX_LOG_MESSAGE)
    assert entry.message.endswith("(truncated)") and len(entry.message) < MAX_LOG_MESSAGE + 100


def test_run_level_lines_are_bounded_too(tmp_path):
    seen = []
    capture = LogCapture(tmp_path, lambda entry, in_phase: seen.append((entry, in_phase)))
    logger = run_logger("T1")
    logger.addHandler(capture)
    logger.setLevel("DEBUG")
    for i in range(MAX_LOG_LINES + 5):
        logger.info("outside %d", i)
    logs = capture.finish()
    assert len(logs) == MAX_LOG_LINES + 1 and logs[-1].message.startswith("5 log lines dropped")
    assert len(seen) == MAX_LOG_LINES + 1 and seen[-1] == (logs[-1], False)


def test_run_loggers_are_private_to_their_run():
    import logging

    first, second = run_logger("T1"), run_logger("T1")
    assert first is not second
    assert logging.getLogger("station.procedure.T1") not in (first, second)
    assert not first.propagate


# ------------------------------------------------------------------------------------------------
# 12. One repr that never raises


class Hostile:
    def __repr__(self) -> str:
        raise KeyboardInterrupt

    def __str__(self) -> str:
        raise SystemExit(1)


def test_one_safe_repr_for_every_layer():
    import station.authoring.helpers as helpers
    import station.config.procedure_loader as loader
    import station.engine.evaluate as evaluate
    from station.records import text

    assert evaluate.safe_repr is text.safe_repr and evaluate.safe_str is text.safe_str
    assert not hasattr(helpers, "_safe_repr") and not hasattr(loader, "_short_repr")
    assert text.safe_repr(Hostile()) == "<Hostile>"
    assert text.safe_str(Hostile()) == "<Hostile: str() raised>"
    assert text.safe_repr("y" * 500, limit=10) == repr("y" * 500)[:10] + "... (truncated)"
    assert text.safe_str("z" * 20_000).endswith("... (truncated)")
