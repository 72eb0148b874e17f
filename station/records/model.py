"""What happened during a run: records the runner makes, the journal stores, the reporter sends.

Records are plain slotted dataclasses: the runner builds thousands of them per run (one per
measurement and per limit), and a dataclass costs a tenth of a validated model to build and a
fifth of the memory. They cross process and version boundaries as JSON (run.json is read back by
`station upload` long after the run), so pydantic serialises them and validates them on the way
*in*: `from_json()` / `from_dict()` check every field, `to_json()` writes timestamps as UTC with
`Z`.

Non-finite numbers (NaN, +-inf) are facts of a measurement, not text: in memory they are floats,
and in JSON, where no number can hold them, each is written as the tagged object
`{"$non_finite": "NaN"}` (or `"Infinity"`, `"-Infinity"`), wherever it stands in a measured
value, a limit or the metadata, and read back as the float. So a decoder never has to guess
whether the text "NaN" was a number. Records of schema version 1 wrote them as the bare strings
"NaN"/"Infinity"/"-Infinity"; reading one upgrades it (`upgrade_v1_values`).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import Enum
from typing import Annotated, Any, Self, TypeVar

from pydantic import BeforeValidator, ConfigDict, PlainSerializer, TypeAdapter
from pydantic_core import PydanticSerializationError

from station.records.outcomes import Outcome, PhaseOutcome
from station.records.text import safe_repr

__all__ = [
    "NON_FINITE_TAG",
    "RECORD_SCHEMA_VERSION",
    "AttachmentRecord",
    "ErrorInfo",
    "InstrumentRecord",
    "JsonValue",
    "LogEntry",
    "MeasurementRecord",
    "Outcome",
    "PhaseOutcome",
    "PhaseRecord",
    "PromptRecord",
    "RunRecord",
    "ValidatorRecord",
    "non_finite_text",
    "upgrade_v1_values",
    "utc_now",
]

RECORD_SCHEMA_VERSION = 2  # 2: non-finite numbers as tagged objects (1: as bare strings)
NON_FINITE_TAG = "$non_finite"
RunRecordT = TypeVar("RunRecordT", bound="RunRecord")
_NON_FINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}
_SCALARS = (str, int, bool, type(None))


def utc_now() -> datetime:
    return datetime.now(UTC)


def non_finite_text(value: float) -> str:
    """How a non-finite float is named in records and messages: NaN, Infinity, -Infinity."""
    if math.isnan(value):
        return "NaN"
    return "Infinity" if value > 0 else "-Infinity"


def _encode_non_finite(value: Any) -> Any:
    """`value` with every non-finite float replaced by its tagged object (JSON output only)."""
    kind = type(value)
    if kind is float:
        return value if math.isfinite(value) else {NON_FINITE_TAG: non_finite_text(value)}
    if kind in _SCALARS:
        return value
    if kind is list or kind is tuple:
        return [_encode_non_finite(item) for item in value]
    if kind is dict:
        return {key: _encode_non_finite(item) for key, item in value.items()}
    if isinstance(value, float) and not math.isfinite(value):  # a float subclass (numpy)
        return {NON_FINITE_TAG: non_finite_text(value)}
    return value


def _decode_non_finite(value: Any) -> Any:
    """`value` with every tagged object turned back into its float (JSON and Python input)."""
    kind = type(value)
    if kind in _SCALARS or kind is float:
        return value
    if kind is list:
        return [_decode_non_finite(item) for item in value]
    if kind is dict:
        if len(value) == 1 and value.get(NON_FINITE_TAG) in _NON_FINITE:
            return _NON_FINITE[value[NON_FINITE_TAG]]
        return {key: _decode_non_finite(item) for key, item in value.items()}
    return value


#: Any JSON-like value a procedure produced (measured values, limits, metadata), non-finite
#: floats included: see the module docstring.
JsonValue = Annotated[
    Any,
    BeforeValidator(_decode_non_finite),
    PlainSerializer(_encode_non_finite, when_used="json"),
]

_ADAPTERS: dict[type[Any], TypeAdapter[Any]] = {}


def _adapter(cls: type[Any]) -> TypeAdapter[Any]:
    adapter = _ADAPTERS.get(cls)
    if adapter is None:
        adapter = _ADAPTERS[cls] = TypeAdapter(cls)
    return adapter


class _Record:
    """JSON in and out for the record dataclasses below."""

    __slots__ = ()
    # "strings" is a backstop only: every field a non-finite float can reach is a JsonValue.
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

    @classmethod
    def from_json(cls, data: str | bytes) -> Self:
        """Parse and validate a record written by `to_json()` (raises pydantic.ValidationError)."""
        record: Self = _adapter(cls).validate_json(data)
        return record

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        """Validate a record from Python data (e.g. a parsed journal event)."""
        record: Self = _adapter(cls).validate_python(data)
        return record

    def replace(self, **changes: Any) -> Self:
        """A copy with some fields changed."""
        # Every subclass is a dataclass; _Record itself is not one, which mypy cannot know.
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]


@dataclass(slots=True, kw_only=True)
class ValidatorRecord(_Record):
    """One limit and whether the value met it (TofuPilot: one validator per limit)."""

    operator: str
    expected_value: JsonValue
    outcome: str
    is_decisive: bool = True


@dataclass(slots=True, kw_only=True)
class MeasurementRecord(_Record):
    name: str
    outcome: str  # PASS FAIL UNSET
    measured_value: JsonValue = None
    units: str | None = None
    description: str | None = None
    validators: list[ValidatorRecord] = field(default_factory=list)
    marginal: bool = False
    limits: str = ""  # the limits as the operator read them on the console


@dataclass(slots=True, kw_only=True)
class LogEntry(_Record):
    level: str
    timestamp: datetime
    message: str
    source_file: str
    line_number: int


@dataclass(slots=True, kw_only=True)
class ErrorInfo(_Record):
    """Why a phase ended in ERROR, TIMEOUT or ABORTED."""

    type: str
    message: str
    traceback: str | None = None
    source_file: str | None = None
    line_number: int | None = None


@dataclass(slots=True, kw_only=True)
class PromptRecord(_Record):
    """A question a phase put to the operator (`run.prompt`), and the answer it got."""

    key: str | None = None  # the prompt's key, what an answers file may use instead of the text
    text: str
    kind: str = "text"  # text number confirm choice
    choices: list[str] | None = None
    answer: JsonValue = None  # as typed: str, float or bool; None if never answered
    answered_by: str | None = None  # terminal, page, answers-file, default
    asked_at: datetime
    answered_at: datetime | None = None


@dataclass(slots=True, kw_only=True)
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
    prompts: list[PromptRecord] = field(default_factory=list)


@dataclass(slots=True, kw_only=True)
class AttachmentRecord(_Record):
    name: str
    path: str  # relative to the run directory (or absolute when the run has no directory)
    size: int
    phase: str | None = None


@dataclass(slots=True, kw_only=True)
class InstrumentRecord(_Record):
    """An instrument the run opened: enough to answer calibration and traceability questions
    from the record alone."""

    name: str  # as in station.yaml
    driver: str  # registry name, "scpi", "serial-line" or "package.module:Class"
    resource: str | None = None  # what was connected to (the twin's, under --sim)
    identity: str | None = None  # the raw identity string (e.g. the *IDN? reply)
    manufacturer: str | None = None
    model: str | None = None
    serial_number: str | None = None
    firmware: str | None = None


@dataclass(slots=True, kw_only=True)
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
    instruments: list[InstrumentRecord] = field(default_factory=list)
    simulated: bool = False  # run on the simulated bench (--sim): never production data
    # --upload-sim: this simulated run may go to a TofuPilot that is not on this machine
    # (remembered here so a later `station upload` honours it; see tofupilot/policy.py).
    upload_simulated: bool = False
    metadata: dict[str, JsonValue] = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: str | bytes) -> Self:
        """Parse and validate a run.json (any schema version this code knows)."""
        return upgrade_v1_values(super(RunRecord, cls).from_json(data))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        return upgrade_v1_values(super(RunRecord, cls).from_dict(data))


def upgrade_v1_values(record: RunRecordT) -> RunRecordT:
    """A version-1 record brought to the current version, in place (a no-op for a current one).

    Version 1 wrote non-finite numbers as the bare strings "NaN", "Infinity" and "-Infinity". A
    measured value spelled so was a number unless a text limit (`matches`, or `==`/`in` with
    text) passed it; a numeric limit's bound spelled so was a number. Metadata cannot be told
    apart and stays as it was written.
    """
    if record.schema_version >= RECORD_SCHEMA_VERSION:
        return record
    for phase in record.phases:
        for m in phase.measurements:
            m.measured_value = _v1_value(m)
            for v in m.validators:
                if v.operator in _NUMERIC_OPERATORS and v.expected_value in _NON_FINITE:
                    v.expected_value = _NON_FINITE[v.expected_value]
    record.schema_version = RECORD_SCHEMA_VERSION
    return record


_NUMERIC_OPERATORS = frozenset({"<", "<=", ">", ">="})


def _v1_value(m: MeasurementRecord) -> Any:
    value = m.measured_value
    if any(v.outcome == "PASS" and _is_text_limit(v) for v in m.validators):
        return value  # text that met a text limit: text it was
    if isinstance(value, str):
        return _NON_FINITE.get(value, value)
    if isinstance(value, list) and all(
        (isinstance(x, int | float) and not isinstance(x, bool)) or x in _NON_FINITE for x in value
    ):
        return [_NON_FINITE.get(x, x) if isinstance(x, str) else x for x in value]
    return value


def _is_text_limit(v: ValidatorRecord) -> bool:
    expected = v.expected_value
    return (
        v.operator == "matches"
        or isinstance(expected, str)
        or (isinstance(expected, list) and any(isinstance(x, str) for x in expected))
    )


def _scrub(value: Any) -> Any:
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, dict):
        return {
            _scrub(k if isinstance(k, str) else safe_repr(k, 1000)): _scrub(v)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [_scrub(v) for v in value]
    if value is None or isinstance(value, bool | int | float | datetime | Enum):
        return value
    # Metadata the procedure filled with objects JSON cannot hold.
    return _scrub(safe_repr(value, 1000))
