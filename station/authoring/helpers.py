"""The helpers a phase can ask for by name: `measurements`, `log`, `dut` and `run`."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from station.authoring.cancel import CancelToken, PhaseCancelled, current_token
from station.authoring.limits import MeasurementSpec
from station.records.model import LogEntry


@dataclass
class Dut:
    """The unit under test. Append the serial numbers of assembled sub-units to `sub_units`."""

    serial_number: str
    part_number: str | None = None
    revision: str | None = None
    batch_number: str | None = None
    sub_units: list[str] = field(default_factory=list)


class UndeclaredMeasurementError(AttributeError):
    """A phase set a measurement it did not declare with @measure."""


_UNSET = object()


class Measurements:
    """Where a phase puts its values: `measurements.rail = 3.3` or `measurements["rail"] = 3.3`.

    Values are checked against limits when the phase ends: the last value set counts.
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
        if name not in self._specs:
            declared = ", ".join(self._specs) or "none"
            raise UndeclaredMeasurementError(
                f"measurement {name!r} is not declared on this phase (declared: {declared})"
            )
        self._values[name] = value

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

    def attach(self, path: str | os.PathLike[str], name: str | None = None) -> None:
        """Copy a file into the run (the original may be deleted afterwards)."""
        source = Path(path)
        if not source.is_file():
            raise FileNotFoundError(f"run.attach: {source} is not a file")
        self._attach(source, name)

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


class LogCapture(logging.Handler):
    """Collects the procedure logger's records into the phase that emitted them.

    Records from the phase thread go to the current phase; anything else (the main thread, or a
    phase thread abandoned after a timeout) goes to the run-level list.
    """

    def __init__(self, procedure_dir: Path, on_entry: Callable[[LogEntry, bool], None]) -> None:
        super().__init__(logging.DEBUG)
        self._procedure_dir = procedure_dir
        self._on_entry = on_entry
        self._lock_phase = threading.Lock()
        self._phase_thread: int | None = None
        self.phase_logs: list[LogEntry] = []
        self.run_logs: list[LogEntry] = []

    def begin_phase(self, thread_ident: int | None) -> list[LogEntry]:
        with self._lock_phase:
            self._phase_thread = thread_ident
            self.phase_logs = []
            return self.phase_logs

    def end_phase(self) -> None:
        with self._lock_phase:
            self._phase_thread = None

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except BaseException:  # the procedure's objects: their __str__ may raise anything
            message = (
                f"{_safe_repr(record.msg)} (could not format with args {_safe_repr(record.args)})"
            )
        if record.exc_info:
            try:
                message += "\n" + _FORMATTER.formatException(record.exc_info)
            except BaseException:
                message += f"\n(the exception could not be formatted: {record.exc_info[0]!r})"
        if len(message) > _MAX_MESSAGE:
            message = message[:_MAX_MESSAGE] + "... (truncated)"
        try:
            source = os.path.relpath(record.pathname, self._procedure_dir)
        except ValueError:
            source = record.pathname
        entry = LogEntry(
            level=record.levelname if record.levelname in _LEVELS else "INFO",
            timestamp=datetime.fromtimestamp(record.created, UTC),
            message=message,
            source_file=source.replace(os.sep, "/"),
            line_number=record.lineno,
        )
        with self._lock_phase:
            in_phase = record.thread == self._phase_thread
            (self.phase_logs if in_phase else self.run_logs).append(entry)
        self._on_entry(entry, in_phase)


_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_FORMATTER = logging.Formatter()
_MAX_MESSAGE = 10_000


def _safe_repr(obj: object) -> str:
    try:
        return repr(obj)[:1000]
    except BaseException:
        return f"<{type(obj).__name__}>"
