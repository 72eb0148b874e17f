"""The runner's outcome rules (docs/architecture.md), each against a real procedure module."""

from __future__ import annotations

import threading
import time


def phases_by_name(record):
    """The last attempt of each phase, by name."""
    return {p.name: p for p in record.phases}


def test_all_measurements_in_limits_pass_and_keep_structured_limits(bench):
    record = bench.run("""
        from station import phase, measure

        @phase
        @measure("v", unit="V", low=3.2, high=3.4, marginal=(3.25, 3.35))
        @measure("fw", matches=r"1\\.\\d+")
        @measure("mode", one_of=["A", "B"])
        @measure("count", equals=3)
        def check(measurements):
            measurements.v = 3.3
            measurements["fw"] = "1.7"
            measurements.mode = "B"
            measurements.count = 3
    """)
    assert record.outcome == "PASS" and not record.marginal
    (phase,) = record.phases
    m = {x.name: x for x in phase.measurements}
    assert [x.name for x in phase.measurements] == ["v", "fw", "mode", "count"]
    assert m["v"].measured_value == 3.3 and m["v"].units == "V"
    assert [
        (v.operator, v.expected_value, v.outcome, v.is_decisive) for v in m["v"].validators
    ] == [
        (">=", 3.2, "PASS", True),
        ("<=", 3.4, "PASS", True),
        (">=", 3.25, "PASS", False),
        ("<=", 3.35, "PASS", False),
    ]
    assert m["fw"].validators[0].operator == "matches"
    assert m["mode"].validators[0].operator == "in"
    assert m["count"].validators[0].operator == "=="


def test_limits_are_inclusive_and_out_of_limits_fails_phase_but_run_continues(bench):
    record = bench.run("""
        from station import phase, measure

        @phase
        @measure("at_low", low=1.0, high=2.0)
        @measure("at_high", low=1.0, high=2.0)
        def edges(measurements):
            measurements.at_low = 1.0
            measurements.at_high = 2.0

        @phase
        @measure("v", low=1.0, high=2.0)
        def too_high(measurements):
            measurements.v = 2.0001

        @phase
        def after():
            pass
    """)
    phases = phases_by_name(record)
    assert phases["edges"].outcome == "PASS"
    assert phases["too_high"].outcome == "FAIL"
    assert phases["too_high"].measurements[0].validators[1].outcome == "FAIL"
    assert phases["after"].outcome == "PASS"
    assert record.outcome == "FAIL"
    assert record.outcome_reason == "too_high failed: v"


def test_marginal_is_recorded_but_not_decisive(bench):
    record = bench.run("""
        from station import phase, measure

        @phase
        @measure("v", low=3.2, high=3.4, marginal=(3.25, 3.35))
        def p(measurements):
            measurements.v = 3.21
    """)
    assert record.outcome == "PASS" and record.marginal
    m = record.phases[0].measurements[0]
    assert m.outcome == "PASS" and m.marginal
    assert [v.outcome for v in m.validators if not v.is_decisive] == ["FAIL", "PASS"]


def test_unset_measurement_fails_its_phase(bench):
    record = bench.run("""
        from station import phase, measure

        @phase
        @measure("a", high=1)
        @measure("b", high=1)
        def p(measurements):
            measurements.a = 0
    """)
    phase = record.phases[0]
    assert phase.outcome == "FAIL" and record.outcome == "FAIL"
    assert {m.name: m.outcome for m in phase.measurements} == {"a": "PASS", "b": "UNSET"}
    assert all(v.outcome == "UNSET" for v in phase.measurements[1].validators)


def test_nan_and_inf_fail_numeric_limits_and_a_non_number_is_a_procedure_error(bench):
    record = bench.run("""
        from station import phase, measure

        @phase
        @measure("nan", low=0, high=1)
        @measure("inf", high=1)
        def numbers(measurements):
            measurements.nan = float("nan")
            measurements.inf = float("inf")

        @phase
        @measure("text", low=0)
        def not_a_number(measurements):
            measurements.text = "0.5"
    """)
    numbers, not_a_number = record.phases
    assert {m.name: m.outcome for m in numbers.measurements} == {"nan": "FAIL", "inf": "FAIL"}
    assert numbers.outcome == "FAIL"
    # A string against numeric limits is a procedure bug, not a bad unit: its limits could not
    # be checked (UNSET) and the phase is ERROR.
    assert [(m.name, m.outcome) for m in not_a_number.measurements] == [("text", "UNSET")]
    assert not_a_number.outcome == "ERROR"
    assert "value of type str for numeric limits" in not_a_number.error.message


def test_exception_is_error_remaining_phases_skip_and_teardown_runs(bench):
    record = bench.run("""
        from station import phase

        @phase
        def boom():
            raise RuntimeError("regulator on fire")

        @phase
        def later():
            pass

        @phase(teardown=True)
        def cleanup(run):
            run.state["cleaned"] = True
    """)
    phases = phases_by_name(record)
    assert phases["boom"].outcome == "ERROR"
    assert phases["boom"].error.type == "RuntimeError"
    assert phases["boom"].error.message == "regulator on fire"
    assert phases["boom"].error.source_file == "proc_t.py" and phases["boom"].error.line_number == 6
    assert phases["later"].outcome == "SKIP" and "boom" in phases["later"].reason
    assert phases["cleanup"].outcome == "PASS" and phases["cleanup"].teardown
    assert record.outcome == "ERROR" and "regulator on fire" in record.outcome_reason
    assert [p.name for p in record.phases] == ["boom", "later", "cleanup"]


def test_retries_record_every_attempt_and_the_last_decides(bench):
    record = bench.run("""
        from station import phase, measure

        @phase(retries=3)
        @measure("x", high=0)
        def settles(measurements, run):
            run.state["n"] = run.state.get("n", 0) + 1
            measurements.x = 3 - run.state["n"]

        @phase(retries=1)
        def always_errors():
            raise ValueError("nope")
    """)
    attempts = [(p.name, p.attempt, p.outcome.value) for p in record.phases]
    assert attempts == [
        ("settles", 0, "FAIL"),
        ("settles", 1, "FAIL"),
        ("settles", 2, "PASS"),
        ("always_errors", 0, "ERROR"),
        ("always_errors", 1, "ERROR"),
    ]
    assert record.outcome == "ERROR"


def test_retry_that_finally_passes_gives_pass(bench):
    record = bench.run("""
        from station import phase

        @phase(retries=2)
        def flaky(run):
            run.state["n"] = run.state.get("n", 0) + 1
            if run.state["n"] < 2:
                raise IOError("link glitch")
    """)
    assert [p.outcome.value for p in record.phases] == ["ERROR", "PASS"]
    assert record.outcome == "PASS"


def test_stop_on_fail_skips_the_rest(bench):
    record = bench.run("""
        from station import phase, measure
        STOP_ON_FAIL = True

        @phase
        @measure("x", high=0)
        def fails(measurements):
            measurements.x = 1

        @phase
        def never():
            pass

        @phase(teardown=True)
        def td():
            pass
    """)
    phases = phases_by_name(record)
    assert phases["never"].outcome == "SKIP" and "stops on failure" in phases["never"].reason
    assert phases["td"].outcome == "PASS"
    assert record.outcome == "FAIL"


def test_stop_on_fail_from_station_yaml_overrides_module(bench):
    bench.write(
        """
        from station import phase, measure

        @phase
        @measure("x", high=0)
        def fails(measurements):
            measurements.x = 1

        @phase
        def never():
            pass
    """,
        procedure_yaml="stop_on_fail: true\n",
    )
    record = bench.run()
    assert phases_by_name(record)["never"].outcome == "SKIP"


def test_timeout_stops_a_phase_blocked_in_run_sleep(bench):
    started = time.monotonic()
    record = bench.run("""
        from station import phase

        @phase(timeout_s=0.3)
        def hangs(run):
            run.sleep(60)

        @phase
        def later():
            pass

        @phase(teardown=True)
        def td(run):
            run.state["td"] = True
    """)
    elapsed = time.monotonic() - started
    phases = phases_by_name(record)
    assert phases["hangs"].outcome == "TIMEOUT"
    assert phases["hangs"].reason == "phase 'hangs' timed out after 0.3 s"
    assert phases["later"].outcome == "SKIP"
    assert phases["td"].outcome == "PASS"
    assert record.outcome == "TIMEOUT"
    assert elapsed < 0.3 + 1.0


def test_timeout_stops_a_pure_python_loop(bench):
    started = time.monotonic()
    record = bench.run("""
        from station import phase

        @phase(timeout_s=0.3)
        def spins(run):
            n = 0
            while True:
                n += 1

        @phase(teardown=True)
        def td():
            pass
    """)
    assert record.phases[0].outcome == "TIMEOUT"
    assert record.phases[1].outcome == "PASS"
    assert time.monotonic() - started < 1.3


def test_timeout_cannot_be_swallowed_by_except_exception(bench):
    record = bench.run("""
        from station import phase

        @phase(timeout_s=0.2)
        def stubborn(run):
            while True:
                try:
                    run.sleep(60)
                except Exception:
                    pass
    """)
    assert record.phases[0].outcome == "TIMEOUT"


def test_abandoned_phase_cannot_set_measurements_after_its_timeout(bench):
    record = bench.run(
        """
        import time
        from station import phase, measure

        @phase(timeout_s=0.2)
        @measure("late", high=1)
        def slow_c_call(measurements):
            time.sleep(0.6)  # a C call the async exception cannot interrupt
            measurements.late = 0

        @phase
        def next_one(run):
            run.sleep(0.6)
    """,
        procedure_yaml="",
    )
    phases = phases_by_name(record)
    assert phases["slow_c_call"].outcome == "TIMEOUT"
    assert phases["slow_c_call"].measurements[0].outcome == "UNSET"


def test_run_level_timeout(bench):
    started = time.monotonic()
    record = bench.run(
        """
        from station import phase

        @phase
        def first(run):
            run.sleep(0.2)

        @phase
        def second(run):
            run.sleep(60)

        @phase
        def third():
            pass

        @phase(teardown=True)
        def td():
            pass
    """,
        procedure_yaml="timeout_s: 0.5\n",
    )
    phases = phases_by_name(record)
    assert phases["first"].outcome == "PASS"
    assert phases["second"].outcome == "TIMEOUT"
    assert "run timeout of 0.5 s" in phases["second"].reason
    assert phases["third"].outcome == "SKIP"
    assert phases["td"].outcome == "PASS"
    assert record.outcome == "TIMEOUT"
    assert time.monotonic() - started < 1.5


def test_skip_and_run_if(bench):
    record = bench.run("""
        from station import phase, SKIP

        @phase
        def runs():
            pass

        @phase
        def skips():
            return SKIP

        @phase(run_if=lambda dut: dut.serial_number.startswith("X"))
        def only_for_x():
            raise AssertionError("must not run")
    """)
    phases = phases_by_name(record)
    assert phases["skips"].outcome == "SKIP" and phases["only_for_x"].outcome == "SKIP"
    assert phases["only_for_x"].reason == "run_if returned false"
    assert record.outcome == "PASS"


def test_a_run_where_nothing_ran_is_an_error(bench):
    record = bench.run("""
        from station import phase, SKIP

        @phase
        def skips():
            return SKIP
    """)
    assert record.outcome == "ERROR" and "nothing was tested" in record.outcome_reason


def test_abort_stops_the_phase_skips_the_rest_and_runs_teardown(bench):
    def abort_soon(runner):
        threading.Timer(0.2, runner.abort).start()

    started = time.monotonic()
    record = bench.run(
        """
        from station import phase

        @phase
        def long(run):
            run.sleep(60)

        @phase
        def later():
            pass

        @phase(teardown=True)
        def td(run):
            run.sleep(0.1)
    """,
        runner_hook=abort_soon,
    )
    phases = phases_by_name(record)
    assert phases["long"].outcome == "ABORTED"
    assert phases["later"].outcome == "SKIP"
    assert phases["td"].outcome == "PASS"
    assert record.outcome == "ABORTED" and "Ctrl-C" in record.outcome_reason
    assert time.monotonic() - started < 1.5


def test_outcome_precedence(bench):
    record = bench.run("""
        from station import phase, measure

        @phase
        @measure("x", high=0)
        def fails(measurements):
            measurements.x = 1

        @phase(teardown=True, timeout_s=0.2)
        def td_times_out(run):
            run.sleep(5)

        @phase(teardown=True)
        def td_errors():
            raise RuntimeError("x")
    """)
    assert record.outcome == "TIMEOUT"  # TIMEOUT > ERROR > FAIL, teardown phases count


def test_teardown_error_makes_the_run_error(bench):
    record = bench.run("""
        from station import phase

        @phase
        def ok():
            pass

        @phase(teardown=True)
        def td():
            raise RuntimeError("psu did not answer")
    """)
    assert record.outcome == "ERROR"


def test_hostile_exceptions_become_error_runs(bench):
    record = bench.run("""
        import sys
        from station import phase

        class Nasty(Exception):
            def __str__(self):
                raise ValueError("no str for you")

        @phase
        def nasty():
            raise Nasty()

        @phase(teardown=True)
        def exits():
            sys.exit(3)

        @phase(teardown=True)
        def interrupts():
            raise KeyboardInterrupt

        @phase(teardown=True)
        def recurses():
            def f(n):
                return f(n + 1)
            f(0)

        @phase(teardown=True)
        def returns_value():
            return 42
    """)
    phases = phases_by_name(record)
    assert phases["nasty"].error.type == "Nasty" and "str() raised" in phases["nasty"].error.message
    assert phases["exits"].error.type == "SystemExit"
    assert phases["interrupts"].error.type == "KeyboardInterrupt"
    assert phases["recurses"].error.type == "RecursionError"
    assert (
        phases["returns_value"].outcome == "ERROR" and "42" in phases["returns_value"].error.message
    )
    assert record.outcome == "ERROR"


def test_setting_an_undeclared_measurement_at_run_time_is_an_error(bench):
    record = bench.run("""
        from station import phase, measure

        @phase
        @measure("a")
        def p(measurements):
            setattr(measurements, "b", 1)
    """)
    assert record.phases[0].outcome == "ERROR"
    assert "'b' is not declared" in record.phases[0].error.message


def test_injection_logs_dut_and_run_helpers(bench, tmp_path):
    attachment = tmp_path / "scope.csv"
    attachment.write_text("t,v\n0,3.3\n")

    class FakePsu:  # instruments are injected by their station.yaml name
        def measure_voltage(self, channel):
            return 5.0

    record = bench.run(
        f"""
        from station import phase, measure

        @phase
        @measure("vin", unit="V", low=4.9, high=5.1)
        def p(psu, measurements, log, dut, run):
            measurements.vin = psu.measure_voltage(1)
            log.info("vin is %.2f", measurements.vin)
            log.warning("second")
            dut.sub_units.append("SUB-1")
            run.metadata["fixture"] = "F7"
            run.attach({str(attachment)!r})
    """,
        instruments={"psu": FakePsu()},
        journal=True,
    )
    assert record.outcome == "PASS"
    logs = record.phases[0].logs
    assert [(entry.level, entry.message) for entry in logs] == [
        ("INFO", "vin is 5.00"),
        ("WARNING", "second"),
    ]
    assert logs[0].source_file == "proc_t.py" and logs[0].line_number == 8
    assert record.sub_units == ["SUB-1"] and record.metadata == {"fixture": "F7"}
    (att,) = record.attachments
    assert att.name == "scope.csv" and att.phase == "p" and att.size == attachment.stat().st_size
    run_dir = next((bench.root / "runs").glob("[!.]*"))
    assert (run_dir / att.path).read_text() == attachment.read_text()
