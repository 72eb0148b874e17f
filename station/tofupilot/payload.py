"""The TofuPilot v2 run-create body (`POST /v2/runs`) built from a RunRecord.

A pure function of the record: the outbox calls it on every attempt, so the same record always
gives the same body. Every body is valid against the v2 run-create schema and is strict JSON
(`json.dumps(body, allow_nan=False)` works): a NaN or infinite value, in memory a float and after
a round trip through run.json the string "NaN"/"Infinity"/"-Infinity", goes out as a null value
with the reason in the measurement's docstring. Attachments are not part of the body; they are
uploaded once the run exists.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from typing import Any

from station.records.model import (
    LogEntry,
    MeasurementRecord,
    PhaseRecord,
    RunRecord,
    ValidatorRecord,
)

MAX_METADATA_KEYS = 50  # server limit
MAX_LOG_MESSAGE = 10_000  # the server truncates longer messages; we do it visibly instead
MAX_TEXT = 10_000  # bound for docstrings we compose (error messages, reasons)

_RUN_OUTCOMES = {"PASS", "FAIL", "ERROR", "TIMEOUT", "ABORTED"}
_PHASE_OUTCOMES = {"PASS", "FAIL", "SKIP", "ERROR"}  # TIMEOUT and ABORTED go out as ERROR
_MEASUREMENT_OUTCOMES = {"PASS", "FAIL", "UNSET"}
_LOG_LEVELS = {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}
# How pydantic writes non-finite floats to run.json (RunRecord uses ser_json_inf_nan="strings").
_NON_FINITE_TEXT = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}
_TRUNCATED = "... (truncated)"


def build_run_body(record: RunRecord, *, client_run_ref: str) -> dict[str, Any]:
    """The v2 run-create body for `record`, carrying `client_run_ref` as its idempotency key."""
    if not client_run_ref:
        raise ValueError("client_run_ref must be a non-empty string")
    if not record.serial_number:
        raise ValueError("the record has no serial number; TofuPilot requires one")
    outcome = str(record.outcome) if record.outcome in _RUN_OUTCOMES else "ERROR"
    ended_at = record.ended_at or max(
        _utc(moment) for moment in (record.started_at, *(p.ended_at for p in record.phases))
    )
    metadata, dropped = _metadata(record.metadata)

    notes = [record.docstring or ""]
    if record.outcome is None:
        notes.append("ERROR: the run has no outcome (it never finished)")
    elif outcome != "PASS" and record.outcome_reason:
        notes.append(f"{outcome}: {record.outcome_reason}")
    if dropped:
        notes.append(
            f"metadata: {len(dropped)} keys not sent (TofuPilot keeps at most "
            f"{MAX_METADATA_KEYS}): {', '.join(dropped)}"
        )

    body: dict[str, Any] = {
        "outcome": outcome,
        "procedure_id": record.procedure_id,
        "started_at": _timestamp(record.started_at),
        "ended_at": _timestamp(ended_at),
        "serial_number": record.serial_number,
        "client_run_ref": client_run_ref,
    }
    # Optional strings: omitted when unknown (these fields are not nullable in the schema).
    for key, value in (
        ("part_number", record.part_number),
        ("revision_number", record.revision),
        ("batch_number", record.batch_number),
        ("procedure_version", record.procedure_version),
        ("operated_by", record.operator),
        ("docstring", _join(notes)),
    ):
        if value:
            body[key] = value
    sub_units = [serial for serial in record.sub_units if serial]
    if sub_units:
        body["sub_units"] = sub_units
    if metadata:
        body["metadata"] = metadata
    body["phases"] = [_phase(phase) for phase in record.phases]
    body["logs"] = [_log(entry) for entry in _all_logs(record)]
    return body


# -- phases and measurements --------------------------------------------------------------------


def _phase(phase: PhaseRecord) -> dict[str, Any]:
    outcome = str(phase.outcome)
    notes = [phase.docstring or ""]
    if outcome not in _PHASE_OUTCOMES:  # TIMEOUT, ABORTED: the run outcome carries the kind
        notes.append(f"{outcome}: {phase.reason or (phase.error.message if phase.error else '')}")
        outcome = "ERROR"
    elif phase.error is not None:
        where = (
            f" ({phase.error.source_file}:{phase.error.line_number})"
            if phase.error.source_file
            else ""
        )
        notes.append(f"{phase.error.type}: {phase.error.message}{where}")
    elif phase.reason:
        notes.append(phase.reason)
    body: dict[str, Any] = {
        "name": phase.name,
        "outcome": outcome,
        "started_at": _timestamp(phase.started_at),
        "ended_at": _timestamp(phase.ended_at),
        "retry_count": phase.attempt,
    }
    docstring = _join(notes)
    if docstring:
        body["docstring"] = docstring
    body["measurements"] = [_measurement(m) for m in phase.measurements]
    return body


def _measurement(m: MeasurementRecord) -> dict[str, Any]:
    outcome = m.outcome if m.outcome in _MEASUREMENT_OUTCOMES else "UNSET"
    value, non_finite = _measured_value(m)
    notes = [m.description or ""]
    if non_finite:
        # Decisive limits judged it (NaN fails them all, +inf passes a lone low limit): keep that
        # verdict, which the phase outcome agrees with. Without one, a null value is UNSET.
        if not any(v.is_decisive for v in m.validators):
            outcome = "UNSET"
        notes.append(f"measured value was {non_finite}")
    body: dict[str, Any] = {"name": m.name, "outcome": outcome, "measured_value": value}
    if m.units:
        body["units"] = m.units
    docstring = _join(notes)
    if docstring:
        body["docstring"] = docstring
    if m.validators:
        body["validators"] = [_validator(v) for v in m.validators]
    return body


def _validator(v: ValidatorRecord) -> dict[str, Any]:
    return {
        "operator": v.operator,
        # An infinite bound is legal in a spec; as text it stays readable and valid JSON.
        "expected_value": _jsonable(v.expected_value, non_finite=_float_text),
        "outcome": v.outcome if v.outcome in _MEASUREMENT_OUTCOMES else "UNSET",
        "is_decisive": v.is_decisive,  # false marks a marginal limit
    }


def _measured_value(m: MeasurementRecord) -> tuple[Any, str | None]:
    """(JSON-safe value, description of the non-finite value it had, or None)."""
    value = m.measured_value
    if _non_finite(value, m):
        return None, _float_text(_as_float(value))
    if isinstance(value, list | tuple) and _is_numeric_list(value):
        bad = [(i, x) for i, x in enumerate(value) if _non_finite(x, m)]
        if bad:
            where = ", ".join(f"{_float_text(_as_float(x))} at index {i}" for i, x in bad[:10])
            more = f" and {len(bad) - 10} more" if len(bad) > 10 else ""
            return [None if _non_finite(x, m) else x for x in value], f"{where}{more}"
    return _jsonable(value, non_finite=lambda _: None), None


def _non_finite(value: Any, m: MeasurementRecord) -> bool:
    """Whether `value` stands for NaN or +-inf.

    In memory that is a float. In a record read back from run.json it is the string "NaN",
    "Infinity" or "-Infinity", taken for a number unless a text limit (`matches`, or `==`/`in`
    with text) passed: then it was a genuine text value and stays as it is.
    """
    if isinstance(value, float):
        return not math.isfinite(value)
    return (
        isinstance(value, str)
        and value in _NON_FINITE_TEXT
        and not any(v.outcome == "PASS" and _is_text_limit(v) for v in m.validators)
    )


def _is_text_limit(v: ValidatorRecord) -> bool:
    expected = v.expected_value
    return (
        v.operator == "matches"
        or isinstance(expected, str)
        or (isinstance(expected, list) and any(isinstance(x, str) for x in expected))
    )


def _is_numeric_list(values: list[Any] | tuple[Any, ...]) -> bool:
    return all(
        (isinstance(x, int | float) and not isinstance(x, bool)) or x in _NON_FINITE_TEXT
        for x in values
    )


def _as_float(value: Any) -> float:
    return value if isinstance(value, float) else _NON_FINITE_TEXT[value]


def _float_text(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    return "Infinity" if value > 0 else "-Infinity"


# -- logs, metadata, helpers --------------------------------------------------------------------


def _all_logs(record: RunRecord) -> list[LogEntry]:
    """Run-level and phase logs in one list, in time order (stable for equal timestamps)."""
    entries = [*record.logs, *(entry for phase in record.phases for entry in phase.logs)]
    return sorted(entries, key=lambda entry: _utc(entry.timestamp))


def _log(entry: LogEntry) -> dict[str, Any]:
    return {
        "level": entry.level if entry.level in _LOG_LEVELS else "INFO",
        "timestamp": _timestamp(entry.timestamp),
        "message": _truncate(entry.message, MAX_LOG_MESSAGE),
        "source_file": entry.source_file,
        "line_number": entry.line_number,
    }


def _metadata(metadata: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """(scalar metadata, keys dropped over the limit). Non-scalars go out as their JSON text."""
    keys = list(metadata)
    sent = {}
    for key in keys[:MAX_METADATA_KEYS]:
        value = metadata[key]
        if isinstance(value, float) and not math.isfinite(value):
            sent[key] = _float_text(value)
        elif isinstance(value, str | bool | int | float):
            sent[key] = value
        else:
            sent[key] = json.dumps(value, default=repr, ensure_ascii=False, sort_keys=True)
    return sent, keys[MAX_METADATA_KEYS:]


def _jsonable(value: Any, *, non_finite: Any) -> Any:
    """`value` as strict JSON data: tuples as lists, non-finite floats through `non_finite`,
    unknown objects as their repr."""
    if isinstance(value, float):
        return value if math.isfinite(value) else non_finite(value)
    if value is None or isinstance(value, str | bool | int):
        return value
    if isinstance(value, list | tuple):
        return [_jsonable(item, non_finite=non_finite) for item in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v, non_finite=non_finite) for k, v in value.items()}
    return repr(value)


def _utc(moment: datetime) -> datetime:
    # A naive datetime in a record is UTC (records are written with tz-aware UTC times).
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _timestamp(moment: datetime) -> str:
    """UTC ISO 8601 with milliseconds and `Z`: `2025-01-01T12:00:00.123Z`."""
    return _utc(moment).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - len(_TRUNCATED)] + _TRUNCATED


def _join(parts: list[str]) -> str:
    return _truncate("\n\n".join(part for part in parts if part), MAX_TEXT)
