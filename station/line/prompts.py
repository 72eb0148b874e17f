"""Who answers a phase's `run.prompt()`: the terminal, the operator page, an answers file.

Every provider has `ask(request, cancel) -> answer` (`PromptProvider`): it blocks until the
operator answers, gives the answer typed for the prompt's kind (`PromptRequest.parse`), and
raises `PromptTimeout` once the prompt's `timeout_s` has passed or `PromptCancelled` once
`cancel` is set (the phase was stopped: Ctrl-C, Abort, the run's timeout) or the question is
withdrawn. The runner records each question and its answer in the phase (`PromptRecord`) and
pauses the phase's own timeout while the question is open.

- `TerminalPrompts`: the station's terminal (stdin a TTY); a bad answer is asked again.
- `PagePrompts`: the operator page; `pending()` lists the open questions, `answer(id, value)`
  answers one (ValueError on a bad answer, so the page can say why).
- `AnswersFile`: a JSON object of answers keyed by prompt key or by the question's text, for
  CI and launchers (`station run --answers FILE`). A missing answer is an error naming the
  prompt; `check_prompts` finds it at load time for prompts whose text or key is a literal.

`check_prompts` also refuses, before any instrument opens, a procedure that prompts when
nobody can answer, naming the line of the first `run.prompt(...)` and the ways to answer.
"""

from __future__ import annotations

import ast
import contextlib
import json
import os
import select
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from station.authoring.helpers import (
    PROMPT_KINDS,
    Answer,
    CancelSignal,
    PromptCancelled,
    PromptError,
    PromptProvider,
    PromptRequest,
    PromptTimeout,
    parse_answer,
)
from station.authoring.procedure import Procedure
from station.config.errors import display_path
from station.config.procedure_loader import ProcedureError

__all__ = [
    "PROMPT_KINDS",
    "AnswersFile",
    "AnswersFileError",
    "LineReader",
    "PagePrompts",
    "PromptCall",
    "PromptCancelled",
    "PromptError",
    "PromptProvider",
    "PromptRequest",
    "PromptTimeout",
    "TerminalPrompts",
    "check_prompts",
    "parse_answer",
    "prompt_calls",
]

_POLL_S = 0.05  # how often a waiting prompt looks at its cancel signal


class _Never:
    """A cancel signal that is never set (a prompt asked outside any phase)."""

    def is_set(self) -> bool:
        return False

    def wait(self, timeout: float | None = None) -> bool:
        if timeout is not None:
            time.sleep(timeout)
        return False


NEVER: CancelSignal = _Never()


def _remaining(deadline: float | None) -> float | None:
    return None if deadline is None else deadline - time.monotonic()


def _timed_out(request: PromptRequest) -> PromptTimeout:
    return PromptTimeout(
        f"no answer to {request.text!r} within its timeout_s of {request.timeout_s:g} s"
    )


# -- the terminal ------------------------------------------------------------------------------


class LineReader:
    """Lines from a stream that a timeout and a cancel signal can interrupt.

    On POSIX the stream's file descriptor is read directly, polled with `select`, so a prompt
    can give up when the phase is stopped, and the serial prompt of `station run --loop` and
    the phases' prompts share one buffer (nothing typed ahead is lost between them). A stream
    without a descriptor (a StringIO in tests) or a platform whose `select` cannot wait on it
    is read with a plain, blocking `readline()`.
    """

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream if stream is not None else sys.stdin
        self._pending = b""
        self._eof = False
        self._fd: int | None = None
        if os.name == "posix":
            with contextlib.suppress(AttributeError, OSError, ValueError):
                self._fd = self._stream.fileno()

    @property
    def stream(self) -> TextIO:
        return self._stream

    def isatty(self) -> bool:
        try:
            return self._stream.isatty()
        except (AttributeError, OSError, ValueError):
            return False

    def readline(
        self, timeout_s: float | None = None, cancel: CancelSignal | None = None
    ) -> str | None:
        """The next line without its line ending; None at end of input.

        Raises `TimeoutError` after `timeout_s` and `PromptCancelled` once `cancel` is set
        (only where the descriptor can be polled: otherwise the read blocks).
        """
        if self._fd is None:
            line = self._stream.readline()
            return line.rstrip("\r\n") if line else None
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while b"\n" not in self._pending and not self._eof:
            if cancel is not None and cancel.is_set():
                raise PromptCancelled("the phase was stopped")
            wait = _POLL_S
            left = _remaining(deadline)
            if left is not None:
                if left <= 0:
                    raise TimeoutError
                wait = min(wait, left)
            readable, _, _ = select.select([self._fd], [], [], wait)
            if readable:
                chunk = os.read(self._fd, 4096)
                if chunk:
                    self._pending += chunk
                else:
                    self._eof = True
        if b"\n" in self._pending:
            line, _, self._pending = self._pending.partition(b"\n")
        elif self._pending:  # the last line, without a line ending
            line, self._pending = self._pending, b""
        else:
            return None
        return line.decode("utf-8", "replace").rstrip("\r")


class TerminalPrompts:
    """Asks on the station's terminal; a bad answer is explained and asked again."""

    name = "terminal"

    def __init__(self, reader: LineReader | None = None, output: TextIO | None = None) -> None:
        self._reader = reader if reader is not None else LineReader()
        self._output = output

    @property
    def reader(self) -> LineReader:
        return self._reader

    def _say(self, text: str) -> None:
        out = self._output if self._output is not None else sys.stdout
        out.write(text)
        out.flush()

    def ask(self, request: PromptRequest, cancel: CancelSignal) -> Answer:
        self._say(_question_text(request))
        deadline = None if request.timeout_s is None else time.monotonic() + request.timeout_s
        while True:
            try:
                line = self._reader.readline(_remaining(deadline), cancel)
            except TimeoutError:
                self._say("\n")
                raise _timed_out(request) from None
            if line is None:
                raise PromptCancelled(f"no answer to {request.text!r}: the input was closed")
            try:
                return request.parse(line)
            except ValueError as exc:
                self._say(f"  {exc}; try again: ")


def _question_text(request: PromptRequest) -> str:
    """The question as the terminal shows it, e.g. `? Fixture closed? [y/n] (default y): `."""
    lines = []
    if request.image:
        lines.append(f"  (see the picture {request.image})")
    if request.kind == "choice" and request.choices:
        lines.extend(f"   {n}) {choice}" for n, choice in enumerate(request.choices, 1))
    hint = {"number": " (a number)", "confirm": " [y/n]", "choice": " (number or name)"}.get(
        request.kind, ""
    )
    if request.default is not None:
        shown = request.default
        if isinstance(shown, bool):
            shown = "y" if shown else "n"
        hint += f" (Enter: {shown})"
    if request.timeout_s is not None:
        hint += f" (within {request.timeout_s:g} s)"
    head = f"? {request.text}{hint}: "
    return "\n".join([*lines, head]) if lines else head


# -- the operator page -------------------------------------------------------------------------


@dataclass
class _Open:
    request: PromptRequest
    answered: threading.Event
    answer: Answer | None = None
    withdrawn: str | None = None


class PagePrompts:
    """Questions waiting for the operator page (or any client of its JSON API).

    `ask` (the phase's thread) opens a question and waits; `pending()` lists the open ones,
    oldest first; `answer(id, value)` (a request handler's thread) answers one. `on_change`,
    if given, is called (from the thread that changed it) whenever the open questions change.
    """

    name = "page"

    def __init__(self, on_change: Callable[[], None] | None = None) -> None:
        self._lock = threading.Lock()
        self._open: dict[str, _Open] = {}
        self._on_change = on_change
        self._closed: str | None = None

    def ask(self, request: PromptRequest, cancel: CancelSignal) -> Answer:
        entry = _Open(request, threading.Event())
        with self._lock:
            if self._closed is not None:
                raise PromptCancelled(self._closed)
            self._open[request.id] = entry
        self._changed()
        deadline = None if request.timeout_s is None else time.monotonic() + request.timeout_s
        try:
            while not entry.answered.wait(_POLL_S):
                if cancel.is_set():
                    raise PromptCancelled("the phase was stopped")
                left = _remaining(deadline)
                if left is not None and left <= 0:
                    raise _timed_out(request)
        finally:
            with self._lock:
                self._open.pop(request.id, None)
            self._changed()
        if entry.withdrawn is not None:
            raise PromptCancelled(entry.withdrawn)
        assert entry.answer is not None
        return entry.answer

    def pending(self) -> list[PromptRequest]:
        """The questions open now, oldest first."""
        with self._lock:
            return [entry.request for entry in self._open.values()]

    def answer(self, prompt_id: str, raw: object) -> Answer:
        """Answer the open question `prompt_id` with `raw` (text or a JSON value); returns the
        typed answer. KeyError if no such question is open (answered, timed out or never
        asked); ValueError saying what is expected if `raw` is not a valid answer."""
        with self._lock:
            entry = self._open.get(prompt_id)
            if entry is None or entry.answered.is_set():
                raise KeyError(f"no open prompt {prompt_id!r}")
            typed = entry.request.parse(raw)  # ValueError: the question stays open
            entry.answer = typed
            del self._open[prompt_id]
            entry.answered.set()
        self._changed()
        return typed

    def close(self, reason: str = "the station is closing") -> None:
        """Withdraw every open question (their phases get `PromptCancelled`) and refuse new
        ones."""
        with self._lock:
            self._closed = reason
            entries = list(self._open.values())
            self._open.clear()
        for entry in entries:
            entry.withdrawn = reason
            entry.answered.set()
        if entries:
            self._changed()

    def _changed(self) -> None:
        if self._on_change is not None:
            with contextlib.suppress(Exception):  # the page's trouble never stops a phase
                self._on_change()


# -- an answers file ---------------------------------------------------------------------------


class AnswersFileError(ValueError):
    """The answers file cannot be read or is not a JSON object of answers."""


class AnswersFile:
    """Answers from a JSON object keyed by prompt key or by the question's text.

        {"fixture_closed": true, "Supply current limit (A)?": 0.5, "Which LED is lit?": "red"}

    Each value is typed as the prompt asks (`PromptRequest.parse`): a question asked in every
    unit of a loop gets the same answer every time. The key is looked up first, then the text.
    """

    name = "answers-file"

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        shown = display_path(self.path)
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise AnswersFileError(f"--answers {shown}: no such file") from None
        except OSError as exc:
            raise AnswersFileError(f"--answers {shown}: cannot read: {exc.strerror}") from None
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise AnswersFileError(f"--answers {shown}: not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise AnswersFileError(
                f"--answers {shown}: must be a JSON object of answers keyed by prompt key or "
                'question text, e.g. {"fixture_closed": true}'
            )
        for name, value in data.items():
            if not isinstance(value, str | int | float | bool):
                raise AnswersFileError(
                    f"--answers {shown}: the answer for {name!r} must be text, a number or "
                    f"true/false, got {json.dumps(value)[:60]}"
                )
        self._answers: dict[str, Any] = data

    def has(self, key: str | None, text: str | None) -> bool:
        """Whether the file answers a prompt with this key or this text."""
        return any(name is not None and name in self._answers for name in (key, text))

    def ask(self, request: PromptRequest, cancel: CancelSignal) -> Answer:
        for name in (request.key, request.text):
            if name is not None and name in self._answers:
                try:
                    return request.parse(self._answers[name])
                except ValueError as exc:
                    raise PromptError(
                        f"--answers {display_path(self.path)}: the answer for {name!r} does "
                        f"not fit the prompt: {exc}"
                    ) from None
        raise PromptError(
            f"--answers {display_path(self.path)} has no answer for the prompt "
            + (f"key {request.key!r} / " if request.key else "")
            + f"text {request.text!r}: add "
            + json.dumps({request.key or request.text: _example(request)})
        )


def _example(request: PromptRequest) -> Answer:
    if request.default is not None:
        return request.default
    if request.kind == "choice" and request.choices:
        return request.choices[0]
    examples: dict[str, Answer] = {"number": 0.0, "confirm": True}
    return examples.get(request.kind, "...")


# -- load-time checks --------------------------------------------------------------------------


@dataclass(frozen=True)
class PromptCall:
    """A `run.prompt(...)` call found in a procedure's source."""

    file: str
    line: int
    text: str | None  # the question, when it is a literal
    key: str | None  # the key= argument, when it is a literal

    @property
    def where(self) -> str:
        return f"{display_path(self.file)}:{self.line}"


def prompt_calls(procedure: Procedure) -> list[PromptCall]:
    """Every `run.prompt(...)` in the procedure's module and the files its phases come from,
    in file and line order. Source that cannot be read or parsed is skipped (the call is still
    refused when it happens)."""
    files = dict.fromkeys(
        [
            procedure.source_file,
            *(ph.source_file for ph in [*procedure.phases, *procedure.teardown]),
        ]
    )
    found: list[PromptCall] = []
    for file in files:
        found.extend(_calls_in(file))
    return found


def _calls_in(file: str) -> Iterator[PromptCall]:
    try:
        tree = ast.parse(Path(file).read_bytes(), filename=file)
    except (OSError, SyntaxError, ValueError):
        return
    calls = [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "prompt"
        and isinstance(node.func.value, ast.Name)
        and node.func.value.id == "run"
    ]
    for node in sorted(calls, key=lambda n: (n.lineno, n.col_offset)):
        text = node.args[0] if node.args else None
        key = next((kw.value for kw in node.keywords if kw.arg == "key"), None)
        yield PromptCall(file, node.lineno, _literal(text), _literal(key))


def _literal(node: ast.expr | None) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    return None


def check_prompts(
    procedure: Procedure, provider: PromptProvider | None, *, why_none: str = ""
) -> None:
    """Refuse, before anything runs, a procedure whose prompts cannot be answered here.

    With no provider: the first `run.prompt(...)` is named with the ways to answer it. With an
    answers file: a prompt whose key or text is a literal and that the file does not answer.
    `why_none` says why there is no provider (e.g. "standard input is not a terminal").
    """
    calls = prompt_calls(procedure)
    if not calls:
        return
    if provider is None:
        call = calls[0]
        because = f" ({why_none})" if why_none else ""
        raise ProcedureError(
            f"procedure {procedure.id}: {call.where}: run.prompt(...) asks the operator, but "
            f"nobody can answer on this station{because}: pass --answers FILE (a JSON object "
            "keyed by prompt key or question text), run on a terminal, or use the operator "
            "page (station serve)"
        )
    if isinstance(provider, AnswersFile):
        for call in calls:
            if (call.text is not None or call.key is not None) and not provider.has(
                call.key, call.text
            ):
                name = call.key or call.text
                raise ProcedureError(
                    f"procedure {procedure.id}: {call.where}: --answers "
                    f"{display_path(provider.path)} has no answer for the prompt {name!r}; "
                    f"add {json.dumps(name)}: <answer> to it"
                )
