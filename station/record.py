"""What happened during a run: records the runner makes, the journal stores, the reporter sends.

These are pydantic models because they cross process and version boundaries (run.json is read back
by `station upload` long after the run). Timestamps are timezone-aware UTC and serialise with `Z`.
Non-finite floats serialise as the strings "NaN"/"Infinity" so run.json stays valid JSON.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import Enum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic_core import PydanticSerializationError

from station.outcomes import Outcome, PhaseOutcome

RECORD_SCHEMA_VERSION = 1


def utc_now() -> datetime:
    return datetime.now(UTC)


class _Record(BaseModel):
    model_config = ConfigDict(ser_json_inf_nan="strings", extra="forbid")


class ValidatorRecord(_Record):
    """One limit and whether the value met it (TofuPilot: one validator per limit)."""

    operator: str
    expected_value: Any
    outcome: str
    is_decisive: bool = True


class MeasurementRecord(_Record):
    name: str
    outcome: str  # PASS FAIL UNSET
    measured_value: Any = None
    units: str | None = None
    description: str | None = None
    validators: list[ValidatorRecord] = Field(default_factory=list)
    marginal: bool = False
    limits: str = ""  # the limits as the operator read them on the console


class LogEntry(_Record):
    level: str
    timestamp: datetime
    message: str
    source_file: str
    line_number: int


class ErrorInfo(_Record):
    """Why a phase ended in ERROR, TIMEOUT or ABORTED."""

    type: str
    message: str
    traceback: str | None = None
    source_file: str | None = None
    line_number: int | None = None


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
    measurements: list[MeasurementRecord] = Field(default_factory=list)
    logs: list[LogEntry] = Field(default_factory=list)


class AttachmentRecord(_Record):
    name: str
    path: str  # relative to the run directory (or absolute when the run has no directory)
    size: int
    phase: str | None = None


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
    sub_units: list[str] = Field(default_factory=list)
    operator: str | None = None
    started_at: datetime
    ended_at: datetime | None = None
    outcome: Outcome | None = None
    outcome_reason: str | None = None
    marginal: bool = False
    phases: list[PhaseRecord] = Field(default_factory=list)
    logs: list[LogEntry] = Field(default_factory=list)  # logs outside any phase
    attachments: list[AttachmentRecord] = Field(default_factory=list)
    metadata: dict[str, Any] = Field(default_factory=dict)


def dump_json(model: BaseModel, **options: Any) -> str:
    """`model.model_dump_json(**options)`, even when a string in it cannot be encoded as UTF-8
    (a lone surrogate from a procedure's value or log): such characters are written as their
    `\\udxxx` escape text instead of losing the whole record."""
    try:
        return model.model_dump_json(**options)
    except PydanticSerializationError:
        clean = type(model).model_validate(_scrub(model.model_dump()))
        return clean.model_dump_json(**options)


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
