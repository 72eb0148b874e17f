"""Procedures that misbehave in every way a test engineer's code can: the run always ends.

Whatever a phase raises (SystemExit, KeyboardInterrupt, GeneratorExit, BaseException subclasses,
exceptions whose str() or repr() raises, huge messages, deep recursion, MemoryError), whatever it
sets as a measurement (objects, None, bytes, nested lists, huge strings, NaN, ±inf, huge ints,
lone surrogates) and whatever it logs: the run finishes, teardown runs, run.json is written and
reads back, the journal is valid JSON lines, and the outcome follows the runner's rules (an
exception is ERROR and names the exception and the procedure's file:line; a value outside its
limits is FAIL).

A procedure that fails while it is imported is refused before anything runs: exit 2, the file and
line, never a traceback.

The default suite draws a fixed set of generated procedures; the soak draws many more:

    pytest -m soak tests/chaos/test_fuzz_procedures.py
"""

from __future__ import annotations

import logging
import shutil
import textwrap

import pytest
from fuzz_fixtures import (  # noqa: F401 - soak_only is a fixture
    FUZZ,
    SOAK,
    assert_record_round_trips,
    journal_events,
    only_run_dir,
    soak_only,
    station_cli,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from station.cli.main import main
from station.records.model import RunRecord

# ------------------------------------------------------------------------------------------------
# What a phase can raise. Each body raises on its LAST line: the record must point there.

RAISES = {
    "SystemExit": "raise SystemExit(3)",
    "KeyboardInterrupt": "raise KeyboardInterrupt",
    "GeneratorExit": "raise GeneratorExit",
    "a BaseException subclass": "class Fatal(BaseException):\n    pass\nraise Fatal('fatal')",
    "str() raises": (
        "class Unprintable(Exception):\n"
        "    def __str__(self):\n"
        "        raise ValueError('no str')\n"
        "    def __repr__(self):\n"
        "        raise ValueError('no repr')\n"
        "raise Unprintable()"
    ),
    "str() raises KeyboardInterrupt": (
        "class Hostile(Exception):\n"
        "    def __str__(self):\n"
        "        raise KeyboardInterrupt\n"
        "raise Hostile()"
    ),
    "str() raises SystemExit": (
        "class Hostile(Exception):\n"
        "    def __str__(self):\n"
        "        raise SystemExit(1)\n"
        "raise Hostile()"
    ),
    "str() returns a non-string": (
        "class Odd(Exception):\n    def __str__(self):\n        return 42\nraise Odd()"
    ),
    "a 20 MB message": "raise ValueError('x' * 20_000_000)",
    "deep recursion": "def down(n):\n    return down(n + 1)\ndown(0)",
    "MemoryError": "raise MemoryError",
    "an allocation that cannot succeed": "hoard = bytearray(1 << 60)",
    "an exception group": "raise ExceptionGroup('several', [ValueError('a'), KeyError('b')])",
    "a cause cycle": (
        "first, second = ValueError('a'), ValueError('b')\n"
        "first.__cause__, second.__cause__ = second, first\n"
        "raise first"
    ),
    "a lone surrogate in the message": "raise ValueError('bad \\udc80 byte')",
}

# What a phase can set. `v` has numeric limits (1..2), `anything` has none. A value that is not a
# number, set against numeric limits, is a bug in the procedure: ERROR, never FAIL (or PASS).
VALUES = {
    "an object": ("object()", "ERROR"),
    "None": ("None", "ERROR"),
    "bytes": ("b'\\xff\\x00abc'", "ERROR"),
    "nested lists": ("[[1, [2, [3]]], {'a': {1, 2}}]", "ERROR"),
    "a 5 MB string": ("'y' * 5_000_000", "ERROR"),
    "NaN": ("float('nan')", "FAIL"),
    "+inf": ("float('inf')", "FAIL"),
    "-inf": ("-float('inf')", "FAIL"),
    "a 5000-digit int": ("10 ** 5000", "FAIL"),
    "2**64": ("2 ** 64", "FAIL"),
    "a lone surrogate": ("'\\ud800'", "ERROR"),
    "a complex number": ("1j", "ERROR"),
    "an object whose repr raises": (
        "type('R', (), {'__repr__': lambda s: 1 / 0, '__str__': lambda s: 1 / 0})()",
        "ERROR",
    ),
    "a list with NaN, inf and a huge int": ("[float('nan'), float('inf'), 10 ** 5000]", "ERROR"),
    "a number in limits": ("1.5", "PASS"),
}

TEARDOWN = """

@phase(teardown=True)
def power_down(run):
    run.state["teardown ran"] = True
"""


def phase_source(body: str, params: str = "log", decorators: str = "@phase") -> str:
    return (
        "from station import measure, phase\n\n\n"
        f"{decorators}\ndef boom({params}):\n{textwrap.indent(body, '    ')}\n{TEARDOWN}"
    )


def last_line_of(source: str, text: str) -> int:
    return max(i for i, line in enumerate(source.splitlines(), 1) if text in line)


def run_and_check(bench, source: str) -> RunRecord:
    """Run `source` for real with a journal; the invariants every run must keep."""
    record = bench.run(source, journal=True)
    assert record.outcome is not None and record.ended_at is not None
    assert bench.last_runner.run.state.get("teardown ran"), "teardown did not run"
    journal = bench.last_runner._listeners[0]
    assert not journal.failures, journal.failures
    run_dir = only_run_dir(bench.root / "runs")
    events = journal_events(run_dir)
    assert events[0]["event"] == "run_started" and events[-1]["event"] == "run_ended"
    assert_record_round_trips(run_dir, record)
    return record


# ------------------------------------------------------------------------------------------------
# Exceptions in a phase


@pytest.mark.parametrize("kind", list(RAISES))
def test_any_exception_in_a_phase_is_an_error_naming_it_and_its_line(bench, kind: str) -> None:
    source = phase_source(RAISES[kind])
    record = run_and_check(bench, source)

    assert record.outcome == "ERROR"
    boom = record.phases[0]
    assert boom.name == "boom" and boom.outcome == "ERROR"
    assert boom.error is not None and boom.error.type
    assert boom.error.source_file == "proc_t.py"
    raising = RAISES[kind].splitlines()[-1].strip()
    expected_line = last_line_of(source, raising)
    if kind == "deep recursion":  # the deepest frame of the procedure is the recursing line
        expected_line = last_line_of(source, "return down(n + 1)")
    assert boom.error.line_number == expected_line
    assert len(boom.error.message) <= 10_100
    assert "boom" in record.outcome_reason and boom.error.type in record.outcome_reason
    assert [p.name for p in record.phases] == ["boom", "power_down"]


def test_an_unreadable_exception_message_says_so_instead_of_crashing(bench) -> None:
    record = run_and_check(bench, phase_source(RAISES["str() raises KeyboardInterrupt"]))
    assert record.phases[0].error.type == "Hostile"
    assert "str() raised" in record.phases[0].error.message


# ------------------------------------------------------------------------------------------------
# Values that are not numbers


@pytest.mark.parametrize("kind", list(VALUES))
def test_any_value_is_recorded_and_judged_against_the_limits(bench, kind: str) -> None:
    expression, outcome = VALUES[kind]
    source = phase_source(
        f"measurements.anything = {expression}\nmeasurements.v = {expression}",
        params="measurements",
        decorators='@phase\n@measure("v", low=1, high=2)\n@measure("anything")',
    )
    record = run_and_check(bench, source)

    assert record.outcome == outcome
    boom = record.phases[0]
    assert boom.outcome == outcome
    v, anything = boom.measurements
    assert anything.outcome == "PASS"
    if outcome == "ERROR":  # no validator could run on it: UNSET, and the phase says why
        assert "for numeric limits" in boom.error.message
        assert v.outcome == "UNSET" and {x.outcome for x in v.validators} == {"UNSET"}
    else:
        assert boom.error is None and v.outcome == outcome
    assert v.measured_value is not None or expression == "None"
    if isinstance(v.measured_value, str):
        assert len(v.measured_value) <= 10_100


def test_a_phase_returning_a_value_is_an_error_that_says_so(bench) -> None:
    record = run_and_check(bench, phase_source("return object()"))
    assert record.outcome == "ERROR"
    assert "a phase returns None or station.SKIP" in record.phases[0].error.message


# ------------------------------------------------------------------------------------------------
# Logs that fail to format

BAD_LOGS = """\
log.info("%d apples", "not a number")
log.info("%s %s", "one argument")
class Unprintable:
    def __str__(self):
        raise ValueError("no")
    def __repr__(self):
        raise ValueError("no")
log.info(Unprintable())
log.warning("%s", Unprintable())
log.info(b"\\xff\\x00")
log.info("bad \\ud800 text")
log.info("z" * 5_000_000)
log.error("with exc_info", exc_info=(ValueError, ValueError("q"), None))
try:
    1 / 0
except ZeroDivisionError:
    log.exception("divided by zero")
log.log(55, "a custom level")
"""


@pytest.fixture
def lenient_pytest_logging(monkeypatch: pytest.MonkeyPatch) -> None:
    """pytest also hangs its own capture handlers on the procedure's logger, and those fail the
    test on a message that does not format (logging.raiseExceptions). The station's handler is
    what is tested here, so pytest's handlers are told to let it be, as a bench's would."""
    monkeypatch.setattr(logging, "raiseExceptions", False)


@pytest.mark.usefixtures("lenient_pytest_logging")
def test_logs_that_fail_to_format_are_recorded_and_the_run_passes(bench) -> None:
    record = run_and_check(bench, phase_source(BAD_LOGS))

    assert record.outcome == "PASS"
    logs = record.phases[0].logs
    assert len(logs) == 10
    assert all(entry.source_file == "proc_t.py" and entry.line_number > 0 for entry in logs)
    messages = [entry.message for entry in logs]
    assert "could not format" in messages[0] and "not a number" in messages[0]
    assert "could not format" in messages[1]
    assert "<Unprintable>" in messages[2]
    assert "ValueError: q" in messages[7] and "ZeroDivisionError" in messages[8]
    assert all(len(m) <= 10_100 for m in messages)
    assert logs[-1].level == "INFO"  # an unknown level number is kept, as INFO


# ------------------------------------------------------------------------------------------------
# Generated procedures: several phases, each doing one bad thing

_VALUE_EXPRESSIONS = st.sampled_from([expression for expression, _ in VALUES.values()])
_VALUE_KIND = {e: "raise" if outcome == "ERROR" else "value" for e, outcome in VALUES.values()}
_STEP = st.one_of(
    st.sampled_from(list(RAISES.values())).map(lambda body: ("raise", body)),
    # A non-number against v's numeric limits raises where it is set, like a `raise` step.
    _VALUE_EXPRESSIONS.map(lambda e: (_VALUE_KIND[e], f"measurements.v = {e}")),
    st.sampled_from(BAD_LOGS.split("class Unprintable")[0].splitlines()).map(lambda b: ("log", b)),
    st.just(("pass", "pass")),
    st.just(("skip", "return SKIP")),
)


@st.composite
def procedures(draw: st.DrawFn) -> tuple[str, list[str], bool]:
    """A procedure of 1-4 phases (one possibly with retries) and a teardown that may also fail."""
    steps = draw(st.lists(_STEP, min_size=1, max_size=4))
    retries = draw(st.integers(min_value=0, max_value=2))
    parts = ["from station import SKIP, measure, phase\n"]
    for index, (_, body) in enumerate(steps):
        options = f"(retries={retries})" if index == 0 and retries else ""
        parts.append(
            f"@phase{options}\n@measure('v', low=1, high=2)\n"
            f"def step_{index}(measurements, log):\n{textwrap.indent(body, '    ')}\n"
        )
    teardown_fails = draw(st.booleans())
    parts.append(
        "@phase(teardown=True)\ndef power_down(run):\n"
        "    run.state['teardown ran'] = True\n"
        + ("    raise RuntimeError('teardown broke')\n" if teardown_fails else "")
    )
    return "\n".join(parts), [kind for kind, _ in steps], teardown_fails


def _check_generated(bench, generated: tuple[str, list[str], bool]) -> None:
    source, kinds, teardown_fails = generated
    shutil.rmtree(bench.root / "runs", ignore_errors=True)  # one run directory per example
    record = run_and_check(bench, source)

    finals = {(p.name, p.teardown): p for p in record.phases}
    main = [finals[(f"step_{i}", False)] for i in range(len(kinds))]
    if "raise" in kinds:
        first = kinds.index("raise")
        assert main[first].outcome == "ERROR"
        assert main[first].error is not None and main[first].error.line_number
        assert all(p.outcome == "SKIP" for p in main[first + 1 :])
    if teardown_fails or any(p.outcome == "ERROR" for p in main):
        assert record.outcome == "ERROR"
    assert finals[("power_down", True)].outcome == ("ERROR" if teardown_fails else "PASS")
    assert record.outcome in ("PASS", "FAIL", "ERROR")


@settings(FUZZ, max_examples=40)
@given(generated=procedures())
@pytest.mark.usefixtures("lenient_pytest_logging")
def test_generated_procedures_always_finish_with_a_readable_record(bench, generated) -> None:
    _check_generated(bench, generated)


@pytest.mark.soak
@settings(SOAK)
@given(generated=procedures())
@pytest.mark.usefixtures("soak_only", "lenient_pytest_logging")
def test_soak_generated_procedures(bench, generated) -> None:
    _check_generated(bench, generated)


# ------------------------------------------------------------------------------------------------
# Failing at import: refused before anything runs, with file:line

IMPORT_FAILURES = {
    "SystemExit": ("raise SystemExit(4)", "SystemExit"),
    "GeneratorExit": ("raise GeneratorExit", "GeneratorExit"),
    "a BaseException subclass": (
        "class Fatal(BaseException):\n    pass\nraise Fatal('at import')",
        "Fatal: at import",
    ),
    "str() raises KeyboardInterrupt": (
        "class Hostile(Exception):\n"
        "    def __str__(self):\n"
        "        raise KeyboardInterrupt\n"
        "raise Hostile()",
        "str() raised",
    ),
    "a 10 MB message": ("raise ValueError('y' * 10_000_000)", "ValueError: yyy"),
    "deep recursion": ("def down(n):\n    return down(n + 1)\ndown(0)", "RecursionError"),
    "a syntax error": ("x = (", "syntax error"),
    "a bad @measure": (
        "from station import measure, phase\n@phase\n@measure('v', low=2, high=1)\n"
        "def a(measurements):\n    pass",
        "low (2) is greater than high (1)",
    ),
    "a phase timeout of NaN": (
        "from station import phase\n@phase(timeout_s=float('nan'))\ndef a():\n    pass",
        "timeout_s must be a positive number",
    ),
    "TIMEOUT_S that is text": (
        "from station import phase\nTIMEOUT_S = 'soon'\n@phase\ndef a():\n    pass",
        "TIMEOUT_S must be a positive number",
    ),
    "PHASES that is not a list": ("PHASES = 5", "PHASES is 5"),
    "__version__ whose str() raises": (
        "from station import phase\n"
        "class V:\n    def __str__(self):\n        raise ValueError\n"
        "__version__ = V()\n@phase\ndef a():\n    pass",
        "__version__ cannot be read",
    ),
}


# Problems with a module-level name, reported at the file and the name rather than a line.
MODULE_LEVEL = (
    "PHASES that is not a list",
    "TIMEOUT_S that is text",
    "__version__ whose str() raises",
)


@pytest.mark.parametrize("kind", list(IMPORT_FAILURES))
def test_a_procedure_failing_at_import_is_refused_with_file_and_line(
    bench, capsys, kind: str
) -> None:
    body, words = IMPORT_FAILURES[kind]
    bench.write(body + "\n")
    code = main(
        ["run", "T1", "--config", str(bench.root / "station.yaml"), "--serial", "S1", "--no-upload"]
    )
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("station: procedure T1: ")
    assert "proc_t.py" in err and words in err, err[:500]
    assert len(err) < 5_000
    assert not (bench.root / "runs").exists(), "nothing may run, nothing may be recorded"
    if kind not in MODULE_LEVEL:
        assert "proc_t.py:" in err, err[:300]  # with the line


def test_keyboard_interrupt_at_import_is_taken_as_the_operators_ctrl_c(bench, capsys) -> None:
    # A real Ctrl-C while the module imports cannot be told apart from `raise KeyboardInterrupt`:
    # both stop the station as interrupted (exit 130), and nothing is recorded.
    bench.write("raise KeyboardInterrupt\n")
    code = main(["run", "T1", "--config", str(bench.root / "station.yaml"), "--serial", "S1"])
    assert code == 130 and "interrupted" in capsys.readouterr().err
    assert not (bench.root / "runs").exists()


@pytest.mark.slow
def test_import_failure_through_the_real_command_has_no_traceback(bench) -> None:
    bench.write("import math\n\nraise RuntimeError('calibration file missing')\n")
    seen = station_cli(bench.root, "run", "T1", "--serial", "S1", "--no-upload")
    seen.assert_no_traceback()
    assert seen.code == 2
    assert "proc_t.py:3: cannot import" in seen.err
    assert "RuntimeError: calibration file missing" in seen.err
    seen = station_cli(bench.root, "check")
    seen.assert_no_traceback()
    assert seen.code == 2 and "proc_t.py:3" in seen.err
