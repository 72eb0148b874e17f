"""The helpers a phase can ask for by name: `measurements`, `log`, `dut` and `run`.

Each refuses, in the phase and at the line that did it, what the record could not hold or judge:
a sub-unit that is not a serial number, a measurement that was never declared, a value that is
not a number set against numeric limits. Each keeps what one run did and only that: a run's log
lines are captured by its own logger (`run_logger`), bounded per phase and per message.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, SupportsIndex, overload

from station.authoring.cancel import CancelToken, PhaseCancelled, current_token
from station.authoring.limits import MeasurementSpec
from station.records.model import LogEntry
from station.records.text import safe_repr, truncate

__all__ = [
    "MAX_LOG_LINES",
    "MAX_LOG_MESSAGE",
    "Dut",
    "LogCapture",
    "MeasurementTypeError",
    "Measurements",
    "RunContext",
    "SubUnits",
    "UndeclaredMeasurementError",
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


class RunContext:
    """The `run` helper: state shared across phases, run metadata, attachments, prompts, sleep."""

    def __init__(
        self,
        procedure_id: str,
        run_id: str,
        attach: Callable[[Path, str | None], None],
        prompt: Callable[[str], str] | None,
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

    def prompt(self, text: str) -> str:
        """Ask the operator and return the answer (an empty string if they just press Enter)."""
        if self._prompt is None:
            raise RuntimeError("run.prompt: this station has no operator terminal to ask on")
        return self._prompt(text)

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
