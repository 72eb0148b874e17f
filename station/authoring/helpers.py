"""The helpers a phase can ask for by name: `measurements`, `log`, `dut` and `run`.

Each refuses, in the phase and at the line that did it, what the record could not hold or judge:
a sub-unit that is not a serial number, a measurement that was never declared, a value that is
not a number set against numeric limits. Each keeps what one run did and only that: a run's log
lines are captured by its own logger (`run_logger`), bounded per phase and per message.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, SupportsIndex, overload

from station.authoring.cancel import CancelToken, PhaseCancelled, current_token
from station.authoring.limits import MeasurementSpec
from station.records.model import LogEntry
from station.records.text import safe_repr, truncate

__all__ = [
    "MAX_LOG_LINES",
    "MAX_LOG_MESSAGE",
    "PROMPT_KINDS",
    "Answer",
    "CancelSignal",
    "Dut",
    "LogCapture",
    "MeasurementTypeError",
    "Measurements",
    "PromptCancelled",
    "PromptError",
    "PromptProvider",
    "PromptRequest",
    "PromptTimeout",
    "RunContext",
    "SubUnits",
    "UndeclaredMeasurementError",
    "as_prompt_provider",
    "parse_answer",
    "run_logger",
]

MAX_LOG_LINES = 10_000  # log lines one phase attempt (or the run, outside phases) keeps
MAX_LOG_MESSAGE = 10_000  # characters of one log message a record keeps


def _serial_number(value: object) -> str:
    """A sub-unit's serial number as TofuPilot takes it: non-empty text; else TypeError."""
    if not isinstance(value, str) or not value.strip():
        raise TypeError(
            f"dut.sub_units takes serial numbers (non-empty text), got {safe_repr(value, 80)}; "
            "a run holding it could never be uploaded"
        )
    return value


class SubUnits(list[str]):
    """`dut.sub_units`: a list that takes only serial numbers, checked as they are added.

    A bad item (a number, None, an empty string) raises TypeError in the phase that adds it,
    at its line, instead of producing a run TofuPilot refuses long after the unit has left.
    """

    def __init__(self, items: Iterable[object] = ()) -> None:
        super().__init__(_serial_number(item) for item in items)

    def append(self, item: object) -> None:
        super().append(_serial_number(item))

    def insert(self, index: SupportsIndex, item: object) -> None:
        super().insert(index, _serial_number(item))

    def extend(self, items: Iterable[object]) -> None:
        super().extend([_serial_number(item) for item in items])

    def __iadd__(self, items: Iterable[object]) -> SubUnits:  # type: ignore[override,misc]
        # list.__iadd__ takes Iterable[str]; this one takes anything and checks each item.
        self.extend(items)
        return self

    @overload
    def __setitem__(self, index: SupportsIndex, item: object) -> None: ...
    @overload
    def __setitem__(self, index: slice, item: Iterable[object]) -> None: ...
    def __setitem__(self, index: SupportsIndex | slice, item: Any) -> None:
        if isinstance(index, slice):
            super().__setitem__(index, [_serial_number(one) for one in item])
        else:
            super().__setitem__(index, _serial_number(item))


_IDENTITY_FIELDS = ("part_number", "revision", "batch_number")


@dataclass
class Dut:
    """The unit under test, as the record and TofuPilot will name it.

    A phase may set `part_number`, `revision` and `batch_number` (e.g. read from the board's
    EEPROM): later `run_if`s see the new values and the record keeps them. Append the serial
    numbers of assembled sub-units to `sub_units`. Values the record cannot hold are refused
    with a TypeError where they are set.
    """

    serial_number: str
    part_number: str | None = None
    revision: str | None = None
    batch_number: str | None = None
    sub_units: list[str] = field(default_factory=SubUnits)

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "sub_units" and not isinstance(value, SubUnits):
            if isinstance(value, str | bytes):  # would become one sub-unit per character
                raise TypeError(f"dut.sub_units must be a list of serial numbers, got {value!r}")
            value = SubUnits(value)
        elif name in _IDENTITY_FIELDS and value is not None and not isinstance(value, str):
            raise TypeError(f"dut.{name} must be text or None, got {safe_repr(value, 80)}")
        super().__setattr__(name, value)


class UndeclaredMeasurementError(AttributeError):
    """A phase set a measurement it did not declare with @measure."""


class MeasurementTypeError(TypeError):
    """A phase set a value that is not a number against numeric limits: a bug in the procedure.

    The value is still recorded (with every validator UNSET: none could run), and the exception
    makes the phase ERROR at the line that set it, never a FAIL blamed on the unit.
    """


_UNSET = object()


class Measurements:
    """Where a phase puts its values: `measurements.rail = 3.3` or `measurements["rail"] = 3.3`.

    Values are checked against limits when the phase ends: the last value set counts. A value
    that is not a number, set against numeric limits, is kept for the record and raises
    `MeasurementTypeError` at once (see `MeasurementSpec.type_problem`).
    """

    __slots__ = ("_specs", "_token", "_values")

    def __init__(
        self, specs: tuple[MeasurementSpec, ...], token: CancelToken | None = None
    ) -> None:
        object.__setattr__(self, "_specs", {spec.name: spec for spec in specs})
        object.__setattr__(self, "_values", {})
        object.__setattr__(self, "_token", token)

    def __setattr__(self, name: str, value: Any) -> None:
        self[name] = value

    def __setitem__(self, name: str, value: Any) -> None:
        if self._token is not None and self._token.cancelled:
            raise PhaseCancelled(self._token.reason)
        spec = self._specs.get(name)
        if spec is None:
            declared = ", ".join(self._specs) or "none"
            raise UndeclaredMeasurementError(
                f"measurement {name!r} is not declared on this phase (declared: {declared})"
            )
        self._values[name] = value
        if spec.numeric:
            problem = spec.type_problem(value)
            if problem is not None:
                raise MeasurementTypeError(problem)

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def __getitem__(self, name: str) -> Any:
        if name not in self._specs:
            raise KeyError(name)
        value = self._values.get(name, _UNSET)
        if value is _UNSET:
            raise KeyError(f"measurement {name!r} has not been set yet")
        return value

    def __contains__(self, name: str) -> bool:
        return name in self._values

    def items(self) -> list[tuple[MeasurementSpec, Any, bool]]:
        """(spec, value, is_set) for every declared measurement, in declaration order."""
        return [
            (spec, self._values.get(name), name in self._values)
            for name, spec in self._specs.items()
        ]


# -- prompts ----------------------------------------------------------------------------------

PROMPT_KINDS = ("text", "number", "confirm", "choice")
Answer = str | float | bool  # what run.prompt() returns: str (text, choice), float, bool
_YES = frozenset({"y", "yes", "true", "1"})
_NO = frozenset({"n", "no", "false", "0"})


class PromptError(Exception):
    """`run.prompt()` got no answer: nobody to ask, no answer in the answers file, or a bad
    prompt. Raised in the phase, at its line: the phase ends ERROR, never a FAIL of the unit."""


class PromptTimeout(PromptError):
    """Nobody answered within the prompt's `timeout_s`."""


class PromptCancelled(PromptError):
    """The question was withdrawn before it was answered (the station is closing)."""


class CancelSignal(Protocol):
    """What a prompt provider watches while it waits: set once the phase is stopped."""

    def is_set(self) -> bool: ...

    def wait(self, timeout: float | None = None) -> bool: ...


@dataclass(frozen=True)
class PromptRequest:
    """One question a phase puts to the operator (`run.prompt`).

    `image` is a path relative to the procedure's directory (a picture of the fixture), shown
    by the providers that can show one. `default` is the answer an empty reply gives.
    `timeout_s` bounds the wait (None: wait as long as the run may last). `phase` is the phase
    asking (None outside a phase).
    """

    id: str
    key: str | None
    text: str
    kind: str  # one of PROMPT_KINDS
    choices: tuple[str, ...] | None = None
    image: str | None = None
    default: Answer | None = None
    timeout_s: float | None = None
    phase: str | None = None

    def parse(self, raw: object) -> Answer:
        """`raw` (typed text or a JSON value) as this prompt's typed answer; ValueError saying
        what is expected otherwise. See `parse_answer`."""
        return parse_answer(self, raw)

    def to_dict(self) -> dict[str, Any]:
        """The request as JSON-ready data (events, the page)."""
        return {
            "id": self.id,
            "key": self.key,
            "text": self.text,
            "kind": self.kind,
            "choices": list(self.choices) if self.choices is not None else None,
            "image": self.image,
            "default": self.default,
            "timeout_s": self.timeout_s,
            "phase": self.phase,
        }


class PromptProvider(Protocol):
    """Who answers `run.prompt()`: the terminal, the operator page, an answers file.

    `ask` blocks until the answer (typed for the request's kind: `request.parse`) and raises
    `PromptTimeout` after `request.timeout_s`, `PromptCancelled` once `cancel` is set (the
    phase was stopped) or the question is withdrawn. `name` says who answered, for the record
    ("terminal", "page", "answers-file").
    """

    name: str

    def ask(self, request: PromptRequest, cancel: CancelSignal) -> Answer: ...


def parse_answer(request: PromptRequest, raw: object) -> Answer:
    """`raw` as the typed answer to `request`, or ValueError saying what is expected.

    Text is stripped. An empty reply is the default when there is one (a text prompt without
    one takes ""). number: a finite number (text like "3.3" too); confirm: a bool or
    y/yes/true/1 and n/no/false/0; choice: one of the choices (case-insensitive), or its
    1-based position typed as a number.
    """
    if isinstance(raw, str):
        raw = raw.strip()
        if raw == "":
            if request.default is not None:
                return request.default
            if request.kind == "text":
                return ""
            raise ValueError("an answer is required")
    kind = request.kind
    if kind == "text":
        if isinstance(raw, bool) or not isinstance(raw, str | int | float):
            raise ValueError(f"expected text, got {safe_repr(raw, 60)}")
        return str(raw)
    if kind == "number":
        if isinstance(raw, bool):
            raise ValueError(f"expected a number, got {safe_repr(raw, 60)}")
        try:
            number = float(raw)  # type: ignore[arg-type]  # anything else: the ValueError below
        except (TypeError, ValueError):
            raise ValueError(f"expected a number, got {safe_repr(raw, 60)}") from None
        if not math.isfinite(number):
            raise ValueError(f"expected a finite number, got {safe_repr(raw, 60)}")
        return number
    if kind == "confirm":
        if isinstance(raw, bool):
            return raw
        word = str(raw).strip().lower() if isinstance(raw, str | int) else None
        if word in _YES:
            return True
        if word in _NO:
            return False
        raise ValueError(f"expected yes or no, got {safe_repr(raw, 60)}")
    if kind == "choice":
        choices = request.choices or ()
        if isinstance(raw, str):
            for choice in choices:
                if raw == choice:
                    return choice
            for choice in choices:
                if raw.lower() == choice.lower():
                    return choice
            if raw.isdigit() and 1 <= int(raw) <= len(choices):
                return choices[int(raw) - 1]
        raise ValueError(f"expected one of {', '.join(choices)}; got {safe_repr(raw, 60)}")
    raise ValueError(f"unknown prompt kind {kind!r}")


def _checked_request(
    text: object,
    kind: object,
    choices: object,
    image: object,
    default: object,
    timeout_s: object,
    key: object,
) -> PromptRequest:
    """The request `run.prompt()` was called with, or TypeError/ValueError at the caller's line
    saying what is wrong (a prompt that can never be answered is a bug in the procedure)."""
    if not isinstance(text, str) or not text.strip():
        raise TypeError(f"run.prompt: the question must be non-empty text, got {safe_repr(text)}")
    if kind not in PROMPT_KINDS:
        raise ValueError(f"run.prompt: kind must be one of {', '.join(PROMPT_KINDS)}, got {kind!r}")
    assert isinstance(kind, str)
    options: tuple[str, ...] | None = None
    if kind == "choice":
        if isinstance(choices, str) or not isinstance(choices, Iterable):
            raise TypeError("run.prompt: kind='choice' needs choices=[...], a list of texts")
        options = tuple(choices)
        if not options or not all(isinstance(c, str) and c.strip() for c in options):
            raise ValueError(
                f"run.prompt: choices must be non-empty texts, got {safe_repr(list(options))}"
            )
        if len(set(options)) != len(options):
            raise ValueError(f"run.prompt: choices repeat: {safe_repr(list(options))}")
    elif choices is not None:
        raise ValueError(f"run.prompt: choices are for kind='choice', not kind={kind!r}")
    if image is not None and (not isinstance(image, str) or not image.strip()):
        raise TypeError(f"run.prompt: image must be a path (text), got {safe_repr(image)}")
    if timeout_s is not None:
        number = isinstance(timeout_s, int | float) and not isinstance(timeout_s, bool)
        if not number or not 0 < timeout_s < math.inf:  # type: ignore[operator]
            raise ValueError(
                f"run.prompt: timeout_s must be a positive number of seconds, got "
                f"{safe_repr(timeout_s)}"
            )
    if key is not None and (not isinstance(key, str) or not key.strip()):
        raise TypeError(f"run.prompt: key must be non-empty text, got {safe_repr(key)}")
    request = PromptRequest(
        id=uuid.uuid4().hex[:12],
        key=key,
        text=text,
        kind=kind,
        choices=options,
        image=image,
        default=None,
        timeout_s=float(timeout_s) if timeout_s is not None else None,  # type: ignore[arg-type]
    )
    if default is not None:
        if isinstance(default, str) and not default.strip():
            raise ValueError("run.prompt: default must not be empty (leave it None)")
        try:
            typed = parse_answer(request, default)
        except ValueError as exc:
            raise ValueError(f"run.prompt: default {safe_repr(default)}: {exc}") from None
        request = dataclasses.replace(request, default=typed)
    return request


class _CallablePrompts:
    """A plain function of the question's text as a provider (tests, the harness)."""

    name = "function"

    def __init__(self, answer: Callable[[str], object]) -> None:
        self._answer = answer

    def ask(self, request: PromptRequest, cancel: CancelSignal) -> Answer:
        return request.parse(self._answer(request.text))


class _MappingPrompts:
    """Answers by prompt key, else by text (tests, the harness)."""

    name = "answers"

    def __init__(self, answers: Mapping[str, object]) -> None:
        self._answers = dict(answers)

    def ask(self, request: PromptRequest, cancel: CancelSignal) -> Answer:
        for name in (request.key, request.text):
            if name is not None and name in self._answers:
                return request.parse(self._answers[name])
        raise PromptError(
            f"no answer for the prompt {request.key or request.text!r} "
            f"(answers given for: {', '.join(map(repr, self._answers)) or 'none'})"
        )


def as_prompt_provider(
    prompts: PromptProvider | Callable[[str], object] | Mapping[str, object] | None,
) -> PromptProvider | None:
    """A provider from what a caller has: a provider, a function of the question's text, or a
    mapping of answers by prompt key or text (None stays None: nobody to ask)."""
    if prompts is None:
        return None
    if hasattr(prompts, "ask"):
        return prompts  # type: ignore[return-value]  # a PromptProvider by its method
    if isinstance(prompts, Mapping):
        return _MappingPrompts(prompts)
    if callable(prompts):
        return _CallablePrompts(prompts)
    raise TypeError(f"prompts: expected a provider, a function or a mapping, got {prompts!r}")


class RunContext:
    """The `run` helper: state shared across phases, run metadata, attachments, prompts, sleep."""

    def __init__(
        self,
        procedure_id: str,
        run_id: str,
        attach: Callable[[Path, str | None], None],
        prompt: Callable[[PromptRequest], Answer] | None,
    ) -> None:
        self.procedure_id = procedure_id
        self.run_id = run_id
        self.state: dict[str, Any] = {}
        self.metadata: dict[str, Any] = {}
        self._attach = attach
        self._prompt = prompt
        self._names = _UniqueNames()

    def attach(self, path: str | os.PathLike[str], name: str | None = None) -> None:
        """Copy a file into the run (the original may be deleted afterwards).

        Every attachment of a run gets a name of its own: a second `scope.png` is recorded (and
        stored, and uploaded) as `scope-1.png`, the next as `scope-2.png`.
        """
        source = Path(path)
        if not source.is_file():
            raise FileNotFoundError(f"run.attach: {source} is not a file")
        self._attach(source, self._names.claim(name or source.name))

    def prompt(
        self,
        text: str,
        *,
        kind: str = "text",
        choices: Iterable[str] | None = None,
        image: str | None = None,
        default: Answer | None = None,
        timeout_s: float | None = None,
        key: str | None = None,
    ) -> Any:
        """Ask the operator and return the typed answer.

        `kind`: "text" (str), "number" (float), "confirm" (bool) or "choice" (one of `choices`,
        as str). `image`: a picture beside the procedure (path relative to its directory) shown
        with the question where the provider can (the operator page). `default`: what an empty
        reply gives. `timeout_s`: how long to wait for the operator (then `PromptTimeout`).
        `key`: a stable name for the question (answers files may use it instead of the text).

        The time the question is open does not count against the phase's own `timeout_s` (the
        run's timeout still does); a stop (Ctrl-C, Abort, the run's timeout) ends the wait.
        Question and answer are recorded in the phase. With nobody to ask, `PromptError`.
        """
        request = _checked_request(text, kind, choices, image, default, timeout_s, key)
        if self._prompt is None:
            raise PromptError(
                "run.prompt: nobody to ask on this station: give answers (station run "
                "--answers FILE), run on a terminal, or use the operator page (station serve)"
            )
        return self._prompt(request)

    def sleep(self, seconds: float) -> None:
        """Wait, but let a timeout or Ctrl-C stop the phase at once."""
        token = current_token()
        if token is None:
            time.sleep(seconds)
        else:
            token.sleep(seconds)


class _UniqueNames:
    """Hands out names unique within a run: `a.txt`, then `a-1.txt`, `a-2.txt`, ...

    Linear in the number of names: each base name remembers the next suffix to try, so the 2,000th
    attachment of one name costs what the first did (a search from 1 each time is quadratic).
    """

    def __init__(self) -> None:
        self._used: set[str] = set()
        self._next: dict[str, int] = {}

    def claim(self, name: str) -> str:
        if name not in self._used:
            self._used.add(name)
            return name
        stem, suffix = _split_suffix(name)
        number = self._next.get(name, 1)
        while f"{stem}-{number}{suffix}" in self._used:  # taken by a name given explicitly
            number += 1
        self._next[name] = number + 1
        unique = f"{stem}-{number}{suffix}"
        self._used.add(unique)
        return unique


def _split_suffix(name: str) -> tuple[str, str]:
    """('scope', '.png') of 'scope.png'; ('.env', '') of a dot file; ('notes', '') of 'notes'."""
    dot = name.rfind(".")
    return (name[:dot], name[dot:]) if dot > 0 else (name, "")


def run_logger(procedure_id: str) -> logging.Logger:
    """The `log` helper of one run: a logger of its own, not registered with `logging`.

    `logging.getLogger(name)` returns one shared object per name, so two runs of a procedure in
    one process (two Runners, two slots) would hang their captures on the same logger and each
    record would collect the other's lines. A logger made here is reachable only through the run
    that made it; it does not propagate to the root logger (the record is where its lines go).
    """
    logger = logging.Logger(f"station.procedure.{procedure_id}", logging.DEBUG)
    logger.propagate = False
    return logger


class LogCapture(logging.Handler):
    """Collects the procedure logger's records into the phase that emitted them.

    Records from the phase thread go to the current phase; anything else (the main thread, a
    thread the phase started, or a phase thread abandoned after a timeout) goes to the run-level
    list. Hang it on the run's own logger (`run_logger`), never on a shared one.

    Bounded, so no record grows without limit in memory, on disk or on the wire: a phase attempt
    keeps its first `MAX_LOG_LINES` lines and the run-level list as many; what is dropped is
    counted and said in one closing WARNING entry ("1235 log lines dropped: ..."), added when the
    phase ends (`end_phase`) or the run does (`finish`). A message longer than `MAX_LOG_MESSAGE`
    characters is cut, visibly. Dropped lines are not passed to `on_entry` either.
    """

    def __init__(self, procedure_dir: Path, on_entry: Callable[[LogEntry, bool], None]) -> None:
        super().__init__(logging.DEBUG)
        self._procedure_dir = procedure_dir
        self._on_entry = on_entry
        self._lock_phase = threading.Lock()
        self._phase_thread: int | None = None
        # (how many lines were dropped, the first of them) for the phase and for the run level
        self._phase_dropped: tuple[int, logging.LogRecord | None] = (0, None)
        self._run_dropped: tuple[int, logging.LogRecord | None] = (0, None)
        self.phase_logs: list[LogEntry] = []
        self.run_logs: list[LogEntry] = []

    def begin_phase(self, thread_ident: int | None) -> list[LogEntry]:
        """Lines from `thread_ident` go to the returned list until `end_phase`."""
        with self._lock_phase:
            self._phase_thread = thread_ident
            self._phase_dropped = (0, None)
            self.phase_logs = []
            return self.phase_logs

    def end_phase(self) -> None:
        """The phase is over: later lines from its thread are run-level; say what was dropped."""
        with self._lock_phase:
            self._phase_thread = None
            dropped, self._phase_dropped = self._phase_dropped, (0, None)
            marker = self._closing_entry(dropped, "a phase")
            if marker is not None:
                self.phase_logs.append(marker)
        if marker is not None:
            self._on_entry(marker, True)

    def finish(self) -> list[LogEntry]:
        """The run-level lines, closed with the count of those dropped; call once, at the end."""
        with self._lock_phase:
            dropped, self._run_dropped = self._run_dropped, (0, None)
            marker = self._closing_entry(dropped, "a run outside its phases")
            if marker is not None:
                self.run_logs.append(marker)
        if marker is not None:
            self._on_entry(marker, False)
        return self.run_logs

    def emit(self, record: logging.LogRecord) -> None:
        if self._dropped(record):  # before formatting: a flood costs as little as it can
            return
        entry = self._entry(record)
        with self._lock_phase:
            in_phase = record.thread == self._phase_thread
            logs = self.phase_logs if in_phase else self.run_logs
            if len(logs) >= MAX_LOG_LINES:  # filled up while this one was formatted
                self._count_dropped(in_phase, record)
                return
            logs.append(entry)
        self._on_entry(entry, in_phase)

    def _dropped(self, record: logging.LogRecord) -> bool:
        """Count `record` as dropped if its list is full."""
        with self._lock_phase:
            in_phase = record.thread == self._phase_thread
            if len(self.phase_logs if in_phase else self.run_logs) < MAX_LOG_LINES:
                return False
            self._count_dropped(in_phase, record)
            return True

    def _count_dropped(self, in_phase: bool, record: logging.LogRecord) -> None:
        count, first = self._phase_dropped if in_phase else self._run_dropped
        dropped = (count + 1, first or record)
        if in_phase:
            self._phase_dropped = dropped
        else:
            self._run_dropped = dropped

    def _entry(self, record: logging.LogRecord, message: str | None = None) -> LogEntry:
        """A log record as the run record keeps it; never raises on the procedure's objects."""
        if message is None:
            message = _message(record)
        try:
            source = os.path.relpath(record.pathname, self._procedure_dir)
        except ValueError:
            source = record.pathname
        return LogEntry(
            level=record.levelname if record.levelname in _LEVELS else "INFO",
            timestamp=datetime.fromtimestamp(record.created, UTC),
            message=message,
            source_file=source.replace(os.sep, "/"),
            line_number=record.lineno,
        )

    def _closing_entry(
        self, dropped: tuple[int, logging.LogRecord | None], where: str
    ) -> LogEntry | None:
        """One WARNING saying how many lines were dropped, at where the first of them was logged."""
        count, first = dropped
        if first is None:
            return None
        entry = self._entry(
            first,
            f"{count} log lines dropped: {where} keeps at most {MAX_LOG_LINES} lines, "
            "so a flood of logging cannot grow the record without bound",
        )
        entry.level = "WARNING"
        return entry


def _message(record: logging.LogRecord) -> str:
    try:
        message = record.getMessage()
    except BaseException:  # the procedure's objects: their __str__ may raise anything
        message = (
            f"{safe_repr(record.msg, 1000)} "
            f"(could not format with args {safe_repr(record.args, 1000)})"
        )
    if record.exc_info:
        try:
            message += "\n" + _FORMATTER.formatException(record.exc_info)
        except BaseException:
            message += f"\n(the exception could not be formatted: {safe_repr(record.exc_info[0])})"
    return truncate(message, MAX_LOG_MESSAGE)


_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_FORMATTER = logging.Formatter()
