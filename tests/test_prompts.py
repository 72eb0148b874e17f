"""run.prompt(): typed answers, recorded in the phase, from the terminal, the page or an answers
file; the phase's own timeout paused while the operator is asked, the run's timeout not; a stop
ends the wait; nobody to ask is refused at load time, naming the line."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from station import phase
from station.authoring.helpers import Dut, PromptError, PromptRequest, parse_answer
from station.config.procedure_loader import ProcedureError
from station.engine.runner import Runner
from station.line.prompts import (
    AnswersFile,
    AnswersFileError,
    PagePrompts,
    check_prompts,
    prompt_calls,
)
from station.testing import run_phase

REPO = Path(__file__).resolve().parents[1]


def request(kind: str, **kw: object) -> PromptRequest:
    return PromptRequest(id="p1", key=None, text="Q?", kind=kind, **kw)  # type: ignore[arg-type]


# -- typed answers -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "extra", "raw", "typed"),
    [
        ("text", {}, "  hello ", "hello"),
        ("text", {}, "", ""),
        ("number", {}, " 3.25", 3.25),
        ("number", {}, 2, 2.0),
        ("confirm", {}, "Y", True),
        ("confirm", {}, "no", False),
        ("confirm", {}, True, True),
        ("choice", {"choices": ("red", "green")}, "GREEN", "green"),
        ("choice", {"choices": ("red", "green")}, "2", "green"),
        ("confirm", {"default": True}, "", True),
        ("number", {"default": 1.5}, "  ", 1.5),
    ],
)
def test_answers_are_typed_for_their_kind(kind, extra, raw, typed):
    answer = parse_answer(request(kind, **extra), raw)
    assert answer == typed and type(answer) is type(typed)


@pytest.mark.parametrize(
    ("kind", "extra", "raw", "says"),
    [
        ("number", {}, "abc", "expected a number"),
        ("number", {}, "nan", "finite"),
        ("number", {}, True, "expected a number"),
        ("number", {}, "", "an answer is required"),
        ("confirm", {}, "maybe", "yes or no"),
        ("choice", {"choices": ("red", "green")}, "blue", "one of red, green"),
        ("choice", {"choices": ("red", "green")}, "3", "one of red, green"),
    ],
)
def test_a_bad_answer_says_what_is_expected(kind, extra, raw, says):
    with pytest.raises(ValueError, match=says):
        parse_answer(request(kind, **extra), raw)


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"kind": "yesno"}, "kind must be one of"),
        ({"kind": "choice"}, "needs choices"),
        ({"kind": "choice", "choices": ["a", "a"]}, "choices repeat"),
        ({"kind": "text", "choices": ["a"]}, "choices are for kind='choice'"),
        ({"kind": "number", "default": "x"}, "default 'x'"),
        ({"kind": "choice", "choices": ["a"], "default": "b"}, "default 'b'"),
        ({"timeout_s": 0}, "timeout_s must be a positive"),
    ],
)
def test_a_prompt_that_can_never_be_answered_errors_at_its_line(kwargs, error):
    @phase
    def ask(run):
        run.prompt("Q?", **kwargs)

    result = run_phase(ask, prompt={"Q?": "a"})
    assert result.outcome == "ERROR"
    assert error in result.error.message
    assert result.error.source_file and result.error.line_number


# -- through the engine ------------------------------------------------------------------------


def test_the_typed_answer_comes_back_and_question_and_answer_are_recorded():
    seen = {}

    @phase
    def ask(run):
        seen["pins"] = run.prompt("How many pins are bent?", kind="number", key="bent")
        seen["led"] = run.prompt("Which LED is lit?", kind="choice", choices=["red", "green"])
        seen["ok"] = run.prompt("Fixture closed?", kind="confirm")

    result = run_phase(
        ask, prompt={"bent": "0", "Which LED is lit?": "green", "Fixture closed?": True}
    )
    assert result.outcome == "PASS", result.error
    assert seen == {"pins": 0.0, "led": "green", "ok": True}
    bent, led, ok = result.record.prompts
    assert (bent.key, bent.text, bent.kind, bent.answer) == (
        "bent",
        "How many pins are bent?",
        "number",
        0.0,
    )
    assert (led.choices, led.answer, led.answered_by) == (["red", "green"], "green", "answers")
    assert ok.answer is True and ok.asked_at <= ok.answered_at
    # ...and they travel in run.json (the journal writes the phase record as it ends).
    assert json.loads(result.run.to_json())["phases"][0]["prompts"][1]["answer"] == "green"


def test_with_nobody_to_ask_a_prompt_errors_naming_the_ways_to_answer():
    @phase
    def ask(run):
        run.prompt("Fixture closed?", kind="confirm")

    result = run_phase(ask)
    assert result.outcome == "ERROR"
    assert "--answers FILE" in result.error.message and "station serve" in result.error.message


def test_waiting_for_the_operator_does_not_count_against_the_phase_timeout():
    class SlowOperator:
        name = "slow"

        def ask(self, request, cancel):
            cancel.wait(1.0)  # the operator takes 1 s; the phase may take 0.3 s
            return request.parse("y")

    @phase(timeout_s=0.3)
    def ask(run):
        assert run.prompt("Ready?", kind="confirm") is True

    result = run_phase(ask, prompt=SlowOperator())
    assert result.outcome == "PASS", result.reason
    (asked,) = result.record.prompts
    assert (asked.answered_at - asked.asked_at).total_seconds() >= 0.9

    @phase(timeout_s=0.3)
    def busy(run):  # the same wait in the phase's own work does count
        run.sleep(1.0)

    assert run_phase(busy).outcome == "TIMEOUT"


def test_the_run_timeout_still_bounds_a_prompt_and_ends_its_wait(bench):
    page = PagePrompts()
    bench.write(
        """
        from station import phase

        @phase
        def ask(run):
            run.prompt("Anyone there?")

        @phase(teardown=True)
        def tidy(run):
            run.state["teardown"] = True
        """,
        procedure_yaml="timeout_s: 0.4",
    )
    procedure = bench.load()
    runner = Runner(procedure, Dut("SN-1"), prompt=page, handle_signals=False)
    record = runner.execute()
    assert record.outcome.value == "TIMEOUT"
    assert "run timeout of 0.4 s" in record.outcome_reason
    assert runner.run.state["teardown"] is True
    (asked,) = record.phases[0].prompts
    assert asked.answer is None and asked.answered_at is None
    assert page.pending() == []  # the question was withdrawn when the phase stopped


def test_the_prompt_timeout_bounds_the_wait():
    @phase
    def ask(run):
        run.prompt("Anyone there?", timeout_s=0.2)

    result = run_phase(ask, prompt=PagePrompts())
    assert result.outcome == "ERROR"
    assert result.error.type == "PromptTimeout" and "0.2 s" in result.error.message


def test_an_abort_while_the_operator_is_asked_ends_the_wait_and_runs_teardown(bench):
    page = PagePrompts()
    bench.write(
        """
        from station import phase

        @phase
        def ask(run):
            run.prompt("Press the button", kind="confirm")

        @phase(teardown=True)
        def tidy(run):
            run.state["teardown"] = True
        """
    )
    runner = Runner(bench.load(), Dut("SN-1"), prompt=page, handle_signals=False)
    done = threading.Event()
    threading.Thread(target=lambda: (runner.execute(), done.set()), daemon=True).start()
    deadline = time.monotonic() + 10
    while not page.pending() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert [p.text for p in page.pending()] == ["Press the button"]
    runner.abort("aborted from the page")
    assert done.wait(10)
    assert runner.record.outcome.value == "ABORTED"
    assert runner.record.phases[0].outcome.value == "ABORTED"
    assert runner.run.state["teardown"] is True
    assert page.pending() == []


def test_a_prompt_in_teardown_counts_against_its_timeout():
    class SlowOperator:
        name = "slow"

        def ask(self, request, cancel):
            cancel.wait(1.0)
            return request.parse("y")

    @phase(teardown=True, timeout_s=0.3)
    def remove_unit(run):
        run.prompt("Remove the unit", kind="confirm")

    result = run_phase(remove_unit, prompt=SlowOperator())
    assert result.outcome == "TIMEOUT"  # the safe state never waits on an operator


def test_an_image_must_be_a_file_beside_the_procedure(tmp_path):
    @phase
    def outside(run):
        run.prompt("Look", image="../../etc/passwd")

    result = run_phase(outside, prompt={"Look": "x"})
    assert result.outcome == "ERROR" and "outside the procedure's directory" in result.error.message

    @phase
    def missing(run):
        run.prompt("Look", image="no-such-picture.png")

    result = run_phase(missing, prompt={"Look": "x"})
    assert result.outcome == "ERROR" and "no such file" in result.error.message


# -- the page ----------------------------------------------------------------------------------


def test_the_page_lists_open_questions_and_refuses_a_bad_answer():
    changes = []
    page = PagePrompts(on_change=lambda: changes.append(len(page.pending())))
    answers = []
    req = PromptRequest(id="a1", key="k", text="Volts?", kind="number")
    asker = threading.Thread(
        target=lambda: answers.append(page.ask(req, threading.Event())), daemon=True
    )
    asker.start()
    deadline = time.monotonic() + 5
    while not page.pending() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert page.pending() == [req]
    with pytest.raises(ValueError, match="expected a number"):
        page.answer("a1", "lots")
    assert page.pending() == [req]  # still open: the operator types again
    with pytest.raises(KeyError):
        page.answer("nope", "1")
    assert page.answer("a1", "4.5") == 4.5
    asker.join(5)
    assert answers == [4.5] and page.pending() == []
    with pytest.raises(KeyError):  # answered already
        page.answer("a1", "5")
    assert changes[0] == 1 and changes[-1] == 0


def test_closing_the_page_withdraws_its_questions():
    page = PagePrompts()
    errors = []

    def ask():
        try:
            page.ask(PromptRequest(id="x", key=None, text="Q", kind="text"), threading.Event())
        except PromptError as exc:
            errors.append(type(exc).__name__)

    asker = threading.Thread(target=ask, daemon=True)
    asker.start()
    while not page.pending():
        time.sleep(0.01)
    page.close()
    asker.join(5)
    assert errors == ["PromptCancelled"]


# -- answers files and the load-time check -----------------------------------------------------

PROMPTING = """
    from station import phase

    @phase
    def ask(run, measurements):
        run.state["closed"] = run.prompt("Fixture closed?", kind="confirm")
        run.state["volts"] = run.prompt("Supply volts?", kind="number", key="volts")
"""


def test_an_answers_file_answers_by_key_or_text(tmp_path):
    answers = tmp_path / "answers.json"
    answers.write_text(json.dumps({"Fixture closed?": "yes", "volts": 5}))
    provider = AnswersFile(answers)
    got = provider.ask(
        PromptRequest(id="1", key="volts", text="Supply?", kind="number"), threading.Event()
    )
    assert got == 5.0
    with pytest.raises(PromptError, match=r"no answer for the prompt .*'Other\?'.*add"):
        provider.ask(PromptRequest(id="2", key=None, text="Other?", kind="text"), threading.Event())


@pytest.mark.parametrize(
    ("content", "says"),
    [(None, "no such file"), ("[1, 2]", "JSON object"), ("{", "not valid JSON"),
     ('{"a": {"b": 1}}', "must be text, a number")],
)  # fmt: skip
def test_a_bad_answers_file_says_why(tmp_path, content, says):
    path = tmp_path / "answers.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(AnswersFileError, match=says):
        AnswersFile(path)


def test_a_procedure_that_prompts_is_refused_at_load_time_without_anyone_to_ask(bench, tmp_path):
    bench.write(PROMPTING)
    procedure = bench.load()
    calls = prompt_calls(procedure)
    assert [(c.line, c.text, c.key) for c in calls] == [
        (6, "Fixture closed?", None),
        (7, "Supply volts?", "volts"),
    ]
    with pytest.raises(ProcedureError) as refused:
        check_prompts(procedure, None, why_none="standard input is not a terminal")
    message = str(refused.value)
    assert "proc_t.py:6: run.prompt(...)" in message
    assert "standard input is not a terminal" in message
    assert "--answers FILE" in message and "station serve" in message

    partial = tmp_path / "partial.json"
    partial.write_text(json.dumps({"Fixture closed?": True}))
    with pytest.raises(ProcedureError, match=r"proc_t.py:7: .* no answer for the prompt 'volts'"):
        check_prompts(procedure, AnswersFile(partial))
    check_prompts(procedure, PagePrompts())  # the page can answer anything


def station(*args: str, cwd: Path, **kw) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "station", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "NO_COLOR": "1", "PYTHONPATH": str(REPO)},
        **kw,
    )


@pytest.mark.slow
def test_station_run_takes_answers_from_a_file_and_records_them(bench, tmp_path):
    bench.write(PROMPTING)
    (tmp_path / "answers.json").write_text(json.dumps({"Fixture closed?": "y", "volts": "5.0"}))
    refused = station("run", "T1", "--serial", "SN-1", "--no-upload", cwd=tmp_path)
    assert refused.returncode == 2
    assert "proc_t.py:6: run.prompt(...)" in refused.stderr, refused.stderr
    assert not (tmp_path / "runs").exists() or not any(
        (tmp_path / "runs").glob("*/run.json")
    )  # nothing ran

    result = station(
        "run", "T1", "--serial", "SN-1", "--no-upload", "--answers", "answers.json", cwd=tmp_path
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "asked   Supply volts? -> 5.0 (answers-file)" in result.stdout
    (run_json,) = (tmp_path / "runs").glob("*/run.json")
    prompts = json.loads(run_json.read_text())["phases"][0]["prompts"]
    assert [(p["key"], p["answer"], p["answered_by"]) for p in prompts] == [
        (None, True, "answers-file"),
        ("volts", 5.0, "answers-file"),
    ]
    journal = (run_json.parent / "journal.jsonl").read_text()
    assert '"Supply volts?"' in journal  # the question is in the journal as the phase ends


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(os, "openpty"), reason="needs a pty (POSIX)")
def test_the_terminal_asks_again_after_a_bad_answer(bench, tmp_path):
    bench.write(
        """
        from station import phase

        @phase(timeout_s=1)
        def ask(run):
            run.state["led"] = run.prompt("Which LED?", kind="choice", choices=["red", "green"])
            assert run.state["led"] == "green"
        """
    )
    controller, terminal = os.openpty()
    try:
        process = subprocess.Popen(
            [sys.executable, "-m", "station", "run", "T1", "--serial", "SN-1", "--no-upload"],
            cwd=tmp_path,
            stdin=terminal,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "NO_COLOR": "1", "PYTHONPATH": str(REPO)},
        )
        os.write(controller, b"blue\n2\n")
        out, err = process.communicate(timeout=60)
    finally:
        os.close(controller)
        os.close(terminal)
    assert process.returncode == 0, out + err
    assert "   1) red" in out and "? Which LED? (number or name): " in out
    assert "expected one of red, green; got 'blue'; try again" in out
    (run_json,) = (tmp_path / "runs").glob("*/run.json")
    (asked,) = json.loads(run_json.read_text())["phases"][0]["prompts"]
    assert (asked["answer"], asked["answered_by"]) == ("green", "terminal")


def test_prompt_calls_are_found_in_the_phases_own_files(tmp_path, bench):
    (tmp_path / "shared_steps.py").write_text(
        textwrap.dedent(
            """
            from station import phase

            @phase
            def shared(run):
                run.prompt(f"dynamic {run.procedure_id}")
            """
        )
    )
    bench.write("from shared_steps import shared\n")
    calls = prompt_calls(bench.load())
    assert [(Path(c.file).name, c.line, c.text) for c in calls] == [("shared_steps.py", 6, None)]


def test_the_readme_prompt_example_runs_as_printed(tmp_path):
    """README.md "Prompts": its example procedure, answered by key, and refused with nobody to
    ask."""
    from station.testing import run_procedure

    text = (REPO / "README.md").read_text(encoding="utf-8")
    (block,) = re.findall(r"```python\n(# procedures/fixture_check\.py.*?)```", text, re.S)
    module = tmp_path / "fixture_check.py"
    module.write_text(block)
    (tmp_path / "fixture.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    good = run_procedure(module, prompt={"lid": "y", "led": "green"})
    assert good.outcome.value == "PASS"
    assert [(p.key, p.answer) for p in good.phases[0].prompts] == [("lid", True), ("led", "green")]
    bad = run_procedure(module, prompt={"lid": "y", "led": "2"})  # the 2nd choice: red
    assert bad.outcome.value == "FAIL"
    with pytest.raises(ProcedureError, match=r"fixture_check.py:\d+: run.prompt"):
        from station.config.model import StationConfig
        from station.config.procedure_loader import load_procedure

        config = StationConfig.model_validate(
            {"station": {"name": "x"}, "procedures": {"F": {"module": str(module)}}}
        )
        check_prompts(load_procedure("F", config), None)
