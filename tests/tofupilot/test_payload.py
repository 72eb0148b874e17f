"""The v2 run-create body, built from records of real runs: schema-valid and strict JSON always."""

from __future__ import annotations

import json
import math
import re
import threading
from datetime import UTC, datetime, timedelta

import pytest

from station.records.model import RunRecord
from station.storage.journal import read_record
from station.tofupilot.payload import MAX_METADATA_KEYS, build_run_body

Z_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
T1_ID = "6f871b13-43a6-4c88-87c7-9fad606c1a58"  # TofuPilot's id of procedure T1 (resolved)


@pytest.fixture
def body_of(run_validator, same_verdicts):
    """Build the body, and check it against the vendored schema and as strict JSON; the
    emulator's fast validator agrees on it and on a sample of mutations of it."""

    def build(record: RunRecord, ref: str = "station-1_0001") -> dict:
        body = build_run_body(record, client_run_ref=ref, procedure_id=T1_ID)
        errors = [f"{list(e.absolute_path)}: {e.message}" for e in run_validator.iter_errors(body)]
        assert not errors, errors
        same_verdicts(body, limit=60)
        json.dumps(body, allow_nan=False)
        return body

    return build


def test_pass_run_maps_identity_phases_and_validators(bench, body_of):
    def hook(runner):
        runner.record.operator = "alice@example.com"
        runner.dut.batch_number = "B-7"  # the unit as a phase would set it

    record = bench.run(
        '''
        """Functional test of the PCBA."""
        from station import phase, measure

        __version__ = "1.4.0"

        @phase
        @measure("v", unit="V", low=3.2, high=3.4, marginal=(3.25, 3.35), description="3V3 rail")
        @measure("mode", one_of=["A", "B"])
        @measure("fw", matches=r"1\\.\\d+")
        @measure("count", equals=3)
        def rails(measurements):
            """Check the rails."""
            measurements.v = 3.21
            measurements.mode = "B"
            measurements.fw = "1.7"
            measurements.count = 3
        ''',
        procedure_yaml="part_number: PCBA-01\nrevision: C\n",
        runner_hook=hook,
    )
    assert record.outcome == "PASS" and record.marginal
    body = body_of(record, "ref-1")
    assert {k: body[k] for k in body if k not in ("phases", "logs", "started_at", "ended_at")} == {
        "outcome": "PASS",
        "procedure_id": T1_ID,  # TofuPilot's id; the record keeps its key, T1
        "serial_number": "SN-1",
        "part_number": "PCBA-01",
        "revision_number": "C",
        "batch_number": "B-7",
        "procedure_version": "1.4.0",
        "operated_by": "alice@example.com",
        "docstring": "Functional test of the PCBA.",
        "client_run_ref": "ref-1",
    }
    assert Z_MS.match(body["started_at"]) and Z_MS.match(body["ended_at"])
    (phase,) = body["phases"]
    assert phase["name"] == "rails" and phase["outcome"] == "PASS"
    assert phase["retry_count"] == 0 and phase["docstring"] == "Check the rails."
    assert Z_MS.match(phase["started_at"]) and Z_MS.match(phase["ended_at"])
    v = phase["measurements"][0]
    assert v == {
        "name": "v",
        "outcome": "PASS",
        "measured_value": 3.21,
        "units": "V",
        "docstring": "3V3 rail",
        "validators": [
            {"operator": ">=", "expected_value": 3.2, "outcome": "PASS", "is_decisive": True},
            {"operator": "<=", "expected_value": 3.4, "outcome": "PASS", "is_decisive": True},
            {"operator": ">=", "expected_value": 3.25, "outcome": "FAIL", "is_decisive": False},
            {"operator": "<=", "expected_value": 3.35, "outcome": "PASS", "is_decisive": False},
        ],
    }
    others = {m["name"]: m["validators"][0] for m in phase["measurements"][1:]}
    assert others["mode"] == {
        "operator": "in",
        "expected_value": ["A", "B"],
        "outcome": "PASS",
        "is_decisive": True,
    }
    assert others["fw"]["operator"] == "matches" and others["fw"]["expected_value"] == r"1\.\d+"
    assert others["count"]["operator"] == "==" and others["count"]["expected_value"] == 3
    assert "sub_units" not in body and "metadata" not in body and body["logs"] == []


def test_fail_and_unset_measurements_and_the_reason_in_the_docstring(bench, body_of):
    record = bench.run("""
        from station import phase, measure

        @phase
        @measure("a", unit="A", high=1)
        @measure("b", high=1)
        @measure("free")
        def p(measurements):
            measurements.a = 2
    """)
    body = body_of(record)
    assert body["outcome"] == "FAIL"
    assert body["docstring"] == "FAIL: p failed: a, b, free"
    (phase,) = body["phases"]
    assert phase["outcome"] == "FAIL" and "docstring" not in phase
    a, b, free = phase["measurements"]
    assert (a["outcome"], a["measured_value"], a["validators"][0]["outcome"]) == ("FAIL", 2, "FAIL")
    assert (b["outcome"], b["measured_value"]) == ("UNSET", None)
    assert b["validators"] == [
        {"operator": "<=", "expected_value": 1, "outcome": "UNSET", "is_decisive": True}
    ]
    assert free == {"name": "free", "outcome": "UNSET", "measured_value": None}


def test_error_phase_carries_the_exception_and_skipped_phases_their_reason(bench, body_of):
    record = bench.run("""
        from station import phase, SKIP

        @phase
        def maybe():
            return SKIP

        @phase
        def boom():
            raise RuntimeError("regulator on fire")

        @phase
        def later():
            pass

        @phase(teardown=True)
        def cleanup():
            pass
    """)
    body = body_of(record)
    assert body["outcome"] == "ERROR"
    assert body["docstring"] == ("ERROR: phase 'boom' ended ERROR: RuntimeError: regulator on fire")
    phases = {p["name"]: p for p in body["phases"]}
    assert phases["maybe"]["outcome"] == "SKIP"
    assert phases["maybe"]["docstring"] == "the phase returned SKIP"
    assert phases["boom"]["outcome"] == "ERROR"
    assert phases["boom"]["docstring"] == "RuntimeError: regulator on fire (proc_t.py:10)"
    assert phases["later"]["outcome"] == "SKIP"
    assert phases["later"]["docstring"] == "not run: phase 'boom' ended ERROR"
    assert phases["cleanup"]["outcome"] == "PASS"


def test_timeout_phase_goes_out_as_error_and_the_run_as_timeout(bench, body_of):
    record = bench.run("""
        from station import phase

        @phase(timeout_s=0.2)
        def slow(run):
            '''Waits for the DUT to boot.'''
            run.sleep(5)
    """)
    assert record.phases[0].outcome == "TIMEOUT"
    body = body_of(record)
    assert body["outcome"] == "TIMEOUT"
    assert (
        body["docstring"]
        == "TIMEOUT: phase 'slow' ended TIMEOUT: phase 'slow' timed out after 0.2 s"
    )
    (phase,) = body["phases"]
    assert phase["outcome"] == "ERROR"
    assert phase["docstring"] == (
        "Waits for the DUT to boot.\n\nTIMEOUT: phase 'slow' timed out after 0.2 s"
    )


def test_aborted_phase_goes_out_as_error_with_the_reason(bench, body_of):
    def hook(runner):
        threading.Timer(0.2, runner.abort).start()

    record = bench.run(
        """
        from station import phase

        @phase
        def wait(run):
            run.sleep(5)
        """,
        runner_hook=hook,
    )
    body = body_of(record)
    assert body["outcome"] == "ABORTED"
    assert body["phases"][0]["outcome"] == "ERROR"
    assert body["phases"][0]["docstring"] == "ABORTED: aborted by the operator (Ctrl-C)"


def test_retries_count_up_per_attempt(bench, body_of):
    record = bench.run("""
        from station import phase, measure

        @phase(retries=2)
        @measure("v", low=3)
        def flaky(measurements, run):
            run.state["n"] = run.state.get("n", 0) + 1
            measurements.v = run.state["n"]
    """)
    body = body_of(record)
    assert [(p["name"], p["outcome"], p["retry_count"]) for p in body["phases"]] == [
        ("flaky", "FAIL", 0),
        ("flaky", "FAIL", 1),
        ("flaky", "PASS", 2),
    ]
    assert body["outcome"] == "PASS"


NON_FINITE = """
    from station import phase, measure

    @phase
    @measure("nan", unit="V", low=0, high=1, description="rail")
    @measure("inf", marginal=(0, 1))
    @measure("neg", description=None)
    @measure("trace", unit="V")
    @measure("ok", low=0)
    @measure("hot", low=0)
    def p(measurements):
        measurements.nan = float("nan")
        measurements.inf = float("inf")
        measurements.neg = float("-inf")
        measurements.trace = [1.0, float("nan"), 2, float("inf")]
        measurements.ok = 1.5
        measurements.hot = float("inf")
"""


def test_non_finite_values_go_out_as_null_with_the_value_in_the_docstring(bench, body_of):
    record = bench.run(NON_FINITE)
    body = body_of(record)
    m = {x["name"]: x for x in body["phases"][0]["measurements"]}
    assert m["nan"]["measured_value"] is None and m["nan"]["outcome"] == "FAIL"
    assert m["nan"]["docstring"] == "rail\n\nmeasured value was NaN"
    assert [v["outcome"] for v in m["nan"]["validators"]] == ["FAIL", "FAIL"]
    assert (m["inf"]["measured_value"], m["inf"]["outcome"]) == (None, "UNSET")  # marginal only
    assert m["inf"]["docstring"] == "measured value was Infinity"
    assert (m["neg"]["measured_value"], m["neg"]["outcome"]) == (None, "UNSET")
    assert m["neg"]["docstring"] == "measured value was -Infinity"
    assert m["trace"]["measured_value"] == [1.0, None, 2, None]
    assert m["trace"]["docstring"] == "measured value was NaN at index 1, Infinity at index 3"
    assert m["ok"]["measured_value"] == 1.5 and "docstring" not in m["ok"]
    # +inf meets a lone low limit: the runner's PASS stands, the value still goes out as null
    assert (m["hot"]["measured_value"], m["hot"]["outcome"]) == (None, "PASS")
    assert m["hot"]["docstring"] == "measured value was Infinity"


def test_round_trip_through_run_json_gives_the_same_body(bench, body_of):
    record = bench.run(
        NON_FINITE.replace("def p(measurements):", "def p(measurements, log, dut, run):")
        + """
        log.warning("trace captured")
        dut.sub_units.append("PSU-42")
        run.metadata["fixture"] = "F7"
        run.metadata["gain"] = float("nan")
""",
        journal=True,
    )
    (run_dir,) = (bench.root / "runs").glob("[!.]*")
    text = (run_dir / "run.json").read_text()
    # Stored as an explicit fact, read back as the number it was.
    assert '{"$non_finite":"NaN"}' in text and '{"$non_finite":"Infinity"}' in text
    stored = read_record(run_dir)
    assert math.isnan(stored.phases[0].measurements[0].measured_value)
    assert body_of(stored) == body_of(record)
    assert body_of(stored)["metadata"] == {"fixture": "F7", "gain": "NaN"}


def test_text_value_nan_that_met_its_limit_stays_text(bench, body_of):
    record = bench.run("""
        from station import phase, measure

        @phase
        @measure("label", equals="NaN")
        def p(measurements):
            measurements.label = "NaN"
    """)
    (m,) = body_of(record)["phases"][0]["measurements"]
    assert (m["measured_value"], m["outcome"]) == ("NaN", "PASS")


def test_logs_are_flattened_in_time_order_with_long_messages_truncated(bench, body_of):
    record = bench.run("""
        import threading
        from station import phase

        @phase
        def first(log):
            log.info("hello %s", "bench")
            worker = threading.Thread(target=lambda: log.error("from a helper thread"))
            worker.start()
            worker.join()

        @phase
        def second(log):
            log.debug("x" * 12000)
    """)
    assert [e.message for e in record.logs] == ["from a helper thread"]  # a run-level log
    logs = body_of(record)["logs"]
    assert [(e["level"], e["message"][:20]) for e in logs] == [
        ("INFO", "hello bench"),
        ("ERROR", "from a helper thread"),
        ("DEBUG", "x" * 20),
    ]
    assert logs[0]["source_file"] == "proc_t.py" and logs[0]["line_number"] == 7
    assert all(Z_MS.match(e["timestamp"]) for e in logs)
    assert len(logs[2]["message"]) == 10_000 and logs[2]["message"].endswith("(truncated)")


def test_sub_units_and_metadata_scalars_json_text_and_truncation(bench, body_of):
    record = bench.run("""
        from station import phase

        @phase
        def p(dut, run):
            dut.sub_units.extend(["PSU-1", "FAN-2"])
            run.metadata["fixture"] = "F7"
            run.metadata["slot"] = 3
            run.metadata["hot"] = True
            run.metadata["temps"] = [21.5, 22]
            run.metadata["cal"] = {"b": 1, "a": None}
            run.metadata["none"] = None
            for i in range(60):
                run.metadata[f"k{i:02d}"] = i
    """)
    body = body_of(record)
    assert body["sub_units"] == ["PSU-1", "FAN-2"]
    metadata = body["metadata"]
    assert len(metadata) == MAX_METADATA_KEYS
    assert list(metadata)[:7] == ["fixture", "slot", "hot", "temps", "cal", "none", "k00"]
    assert metadata["fixture"] == "F7" and metadata["slot"] == 3 and metadata["hot"] is True
    assert metadata["temps"] == "[21.5, 22]" and metadata["cal"] == '{"a": null, "b": 1}'
    assert metadata["none"] == "null"
    assert list(metadata)[-1] == "k43"
    dropped = ", ".join(f"k{i:02d}" for i in range(44, 60))
    assert body["docstring"] == (
        f"metadata: 16 keys not sent (TofuPilot keeps at most 50): {dropped}"
    )


def test_an_unfinished_record_goes_out_as_error(bench, body_of):
    record = bench.run("""
        from station import phase

        @phase
        def p():
            pass
    """)
    unfinished = record.replace(outcome=None, ended_at=None, started_at=datetime(2025, 1, 1, 12))
    body = body_of(unfinished)
    assert body["outcome"] == "ERROR"
    assert body["started_at"] == "2025-01-01T12:00:00.000Z"  # naive is taken as UTC
    assert body["ended_at"] == body["phases"][0]["ended_at"]
    assert body["docstring"] == "ERROR: the run has no outcome (it never finished)"


def test_client_run_ref_is_required(bench):
    record = bench.run("""
        from station import phase

        @phase
        def p():
            pass
    """)
    with pytest.raises(ValueError, match="client_run_ref"):
        build_run_body(record, client_run_ref="", procedure_id=T1_ID)
    with pytest.raises(ValueError, match="procedure_id"):
        build_run_body(record, client_run_ref="x", procedure_id="")


# -- a body is bounded whatever the record holds ------------------------------------------------


def _record_with_logs(counts: list[int], size: int = 20) -> RunRecord:
    """A record (as read from disk) whose phases logged `counts` lines of `size` characters."""
    from station.records.model import LogEntry, PhaseRecord

    start = datetime(2025, 1, 1, 12, tzinfo=UTC)
    phases = []
    for n, count in enumerate(counts):
        logs = [
            LogEntry(
                level="INFO",
                timestamp=start + timedelta(seconds=n, microseconds=i),
                message=f"{n}:{i}:".ljust(size, "x"),
                source_file="proc_t.py",
                line_number=7,
            )
            for i in range(count)
        ]
        at = start + timedelta(seconds=n)
        phases.append(
            PhaseRecord(name=f"p{n}", outcome="PASS", started_at=at, ended_at=at, logs=logs)
        )
    return RunRecord(
        run_id="r" * 32,
        procedure_id="T1",
        serial_number="SN-1",
        started_at=start,
        ended_at=start + timedelta(seconds=len(counts)),
        outcome="PASS",
        phases=phases,
    )


def test_a_phase_with_too_many_log_lines_sends_its_first_and_last_with_an_explicit_gap(
    body_of, monkeypatch
):
    from station.tofupilot import payload

    monkeypatch.setattr(payload, "MAX_LOGS_PER_PHASE", 10)  # the mechanism, at a test's size
    record = _record_with_logs([30, 5])
    logs = body_of(record)["logs"]
    assert len(logs) == 10 + 1 + 5
    assert [e["message"][:5] for e in logs[:5]] == ["0:0:x", "0:1:x", "0:2:x", "0:3:x", "0:4:x"]
    gap = logs[5]
    assert gap["level"] == "WARNING"
    assert gap["message"].startswith("20 log lines of this phase dropped here")
    assert [e["message"][:5] for e in logs[6:11]] == ["0:25:", "0:26:", "0:27:", "0:28:", "0:29:"]
    assert logs[-1]["message"].startswith("1:4:")  # the next phase is whole


def test_a_phase_with_too_much_log_text_is_cut_the_same_way(body_of, monkeypatch):
    from station.tofupilot import payload

    monkeypatch.setattr(payload, "MAX_LOG_CHARS_PER_PHASE", 1000)
    record = _record_with_logs([100], size=100)  # 10,000 characters in one phase
    logs = body_of(record)["logs"]
    assert len(logs) == 5 + 1 + 5
    assert logs[5]["message"].startswith("90 log lines of this phase dropped here")


def test_a_body_carries_a_bounded_amount_of_log_text(body_of, monkeypatch):
    from station.tofupilot import payload

    monkeypatch.setattr(payload, "MAX_LOG_CHARS", 10 * (100 + payload.LOG_ENTRY_CHARS))
    record = _record_with_logs([10, 10, 10], size=100)
    logs = body_of(record)["logs"]
    assert len(logs) == 11
    assert logs[-1]["message"].startswith("20 more log lines dropped")


def test_the_bounds_are_sane():
    from station.tofupilot import payload

    # Every entry is counted at least LOG_ENTRY_CHARS: empty messages cannot add up unbounded.
    assert payload.LOG_ENTRY_CHARS >= 100
    assert payload.MAX_LOGS_PER_PHASE >= 1000 and payload.MAX_LOG_CHARS <= 20_000_000
