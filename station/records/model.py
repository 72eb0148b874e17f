"""What happened during a run: records the runner makes, the journal stores, the reporter sends.

Records are plain slotted dataclasses: the runner builds thousands of them per run (one per
measurement and per limit), and a dataclass costs a tenth of a validated model to build and a
fifth of the memory. They cross process and version boundaries as JSON (run.json is read back by
`station upload` long after the run), so pydantic serialises them and validates them on the way
*in*: `from_json()` / `from_dict()` check every field, `to_json()` writes timestamps as UTC with
`Z`. Non-finite measured values are recorded as the strings "NaN", "Infinity", "-Infinity" (the
limits were checked on the number), so run.json stays valid JSON and reads back equal.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import Enum
from functools import cache
from typing import Any, Self

from pydantic import ConfigDict, TypeAdapter
from pydantic_core import PydanticSerializationError

from station.records.outcomes import Outcome, PhaseOutcome

RECORD_SCHEMA_VERSION = 1


def utc_now() -> datetime:
    return datetime.now(UTC)


@cache
def _adapter(cls: type) -> TypeAdapter:
    return TypeAdapter(cls)


class _Record:
    """JSON in and out for the record dataclasses below."""

    __slots__ = ()
    __pydantic_config__ = ConfigDict(ser_json_inf_nan="strings", extra="forbid")

    def to_json(self, *, indent: int | None = None, exclude: set[str] | None = None) -> str:
        """The record as JSON, even when a string in it cannot be encoded as UTF-8 (a lone
        surrogate from a procedure's value or log): such characters are written as their
        `\\udxxx` escape text instead of losing the whole record."""
        adapter = _adapter(type(self))
        try:
            return adapter.dump_json(self, indent=indent, exclude=exclude).decode()
        except PydanticSerializationError:
            clean = adapter.validate_python(_scrub(adapter.dump_python(self)))
            return adapter.dump_json(clean, indent=indent, exclude=exclude).decode()

    def to_dict(self) -> dict[str, Any]:
        """The record as JSON-compatible Python data."""
        return _adapter(type(self)).dump_python(self, mode="json")

    @classmethod
    def from_json(cls, data: str | bytes) -> Self:
        """Parse and validate a record written by `to_json()` (raises pydantic.ValidationError)."""
        return _adapter(cls).validate_json(data)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        """Validate a record from Python data (e.g. a parsed journal event)."""
        return _adapter(cls).validate_python(data)

    def replace(self, **changes: Any) -> Self:
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)


_record = dataclass(slots=True, kw_only=True)


@_record
class ValidatorRecord(_Record):
    """One limit and whether the value met it (TofuPilot: one validator per limit)."""

    operator: str
    expected_value: Any
    outcome: str
    is_decisive: bool = True


@_record
class MeasurementRecord(_Record):
    name: str
    outcome: str  # PASS FAIL UNSET
    measured_value: Any = None
    units: str | None = None
    description: str | None = None
    validators: list[ValidatorRecord] = field(default_factory=list)
    marginal: bool = False
    limits: str = ""  # the limits as the operator read them on the console


@_record
class LogEntry(_Record):
    level: str
    timestamp: datetime
    message: str
    source_file: str
    line_number: int


@_record
class ErrorInfo(_Record):
    """Why a phase ended in ERROR, TIMEOUT or ABORTED."""

    type: str
    message: str
    traceback: str | None = None
    source_file: str | None = None
    line_number: int | None = None


@_record
class PhaseRecord(_Record):
    name: str
    outcome: PhaseOutcome
    started_at: datetime
    ended_at: datetime
    attempt: int = 0  # 0 for the first run of the phase, 1 for its first retry, ...
    teardown: bool = False
    docstring: str | None = None
    reason: str | None = None  # why it was skipped, timed out or aborted
    error: ErrorInfo | None = None
    measurements: list[MeasurementRecord] = field(default_factory=list)
    logs: list[LogEntry] = field(default_factory=list)


@_record
class AttachmentRecord(_Record):
    name: str
    path: str  # relative to the run directory (or absolute when the run has no directory)
    size: int
    phase: str | None = None


@_record
class RunRecord(_Record):
    schema_version: int = RECORD_SCHEMA_VERSION
    run_id: str
    procedure_id: str
    procedure_version: str | None = None
    procedure_file: str | None = None
    docstring: str | None = None
    station_name: str | None = None
    serial_number: str
    part_number: str | None = None
    revision: str | None = None
    batch_number: str | None = None
    sub_units: list[str] = field(default_factory=list)
    operator: str | None = None
    started_at: datetime
    ended_at: datetime | None = None
    outcome: Outcome | None = None
    outcome_reason: str | None = None
    marginal: bool = False
    phases: list[PhaseRecord] = field(default_factory=list)
    logs: list[LogEntry] = field(default_factory=list)  # logs outside any phase
    attachments: list[AttachmentRecord] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)


def _scrub(value: Any) -> Any:
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, dict):
        return {_scrub(k if isinstance(k, str) else _text(k)): _scrub(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_scrub(v) for v in value]
    if value is None or isinstance(value, bool | int | float | datetime | Enum):
        return value
    return _scrub(_text(value))  # metadata the procedure filled with objects JSON cannot hold


def _text(value: Any) -> str:
    try:
        return repr(value)[:1000]
    except BaseException:  # a procedure's object: its __repr__ may raise anything
        return f"<{type(value).__name__}>"
