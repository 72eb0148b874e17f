"""The TofuPilot v2 run-create body (`POST /v2/runs`) built from a RunRecord.

A pure function of the record: the outbox calls it on every attempt, so the same record always
gives the same body. Every body is valid against the v2 run-create schema and is strict JSON
(`json.dumps(body, allow_nan=False)` works): a NaN or infinite measured value (a float, in memory
and read back from run.json alike: see station.records.model) goes out as a null value with the
value named in the measurement's docstring. Attachments are not part of the body; they are
uploaded once the run exists.

`procedure_id` is TofuPilot's id of the procedure (a UUID, see `resolve`), not the record's
`procedure_id` (the station.yaml key). The run's metadata carries, besides what the procedure
set: `simulated: true` for a run on the simulated bench (first, so it is never the key dropped),
and one `instrument.<name>` key per instrument the run opened (`Keysight 34461A SN MY60012345 fw
A.03.01 @ USB0::...`), after the procedure's own keys, within TofuPilot's 50 keys.

A body is bounded whatever the record holds (a record from disk may come from a procedure that
logged a million lines): at most `MAX_LOGS_PER_PHASE` log lines and `MAX_LOG_CHARS_PER_PHASE`
characters of messages per phase (and for the run's own logs), its first and last lines, and at
most about `MAX_LOG_CHARS` characters of logs in all. Every cut is an explicit log entry
saying how many lines were dropped; the full log stays in run.json.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from typing import Any

from station.records.model import (
    InstrumentRecord,
    LogEntry,
    MeasurementRecord,
    PhaseRecord,
    RunRecord,
    ValidatorRecord,
    non_finite_text,
)

MAX_METADATA_KEYS = 50  # server limit
MAX_METADATA_TEXT = 1_000  # an instrument's line is cut here (a raw identity can be anything)
MAX_LOG_MESSAGE = 10_000  # the server truncates longer messages; we do it visibly instead
MAX_TEXT = 10_000  # bound for docstrings we compose (error messages, reasons)
MAX_LOGS_PER_PHASE = 10_000  # log lines one phase (or the run outside phases) sends
MAX_LOG_CHARS_PER_PHASE = 2_000_000  # characters of log messages one phase sends
MAX_LOG_CHARS = 10_000_000  # characters of log messages one body carries in all
LOG_ENTRY_CHARS = 100  # what an entry costs besides its message (level, time, file, line)

_RUN_OUTCOMES = {"PASS", "FAIL", "ERROR", "TIMEOUT", "ABORTED"}
_PHASE_OUTCOMES = {"PASS", "FAIL", "SKIP", "ERROR"}  # TIMEOUT and ABORTED go out as ERROR
_MEASUREMENT_OUTCOMES = {"PASS", "FAIL", "UNSET"}
_LOG_LEVELS = {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}
_TRUNCATED = "... (truncated)"


def build_run_body(record: RunRecord, *, client_run_ref: str, procedure_id: str) -> dict[str, Any]:
    """The v2 run-create body for `record`, carrying `client_run_ref` as its idempotency key and
    `procedure_id` (TofuPilot's id of the procedure) as the procedure."""
    if not client_run_ref:
        raise ValueError("client_run_ref must be a non-empty string")
    if not procedure_id:
        raise ValueError("procedure_id must be TofuPilot's id of the procedure")
    if not record.serial_number:
        raise ValueError("the record has no serial number; TofuPilot requires one")
    outcome = str(record.outcome) if record.outcome in _RUN_OUTCOMES else "ERROR"
    ended_at = record.ended_at or max(
        _utc(moment) for moment in (record.started_at, *(p.ended_at for p in record.phases))
    )
    metadata, dropped = _metadata(run_metadata(record))

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
        "procedure_id": procedure_id,
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
        "expected_value": _jsonable(v.expected_value, non_finite=non_finite_text),
        "outcome": v.outcome if v.outcome in _MEASUREMENT_OUTCOMES else "UNSET",
        "is_decisive": v.is_decisive,  # false marks a marginal limit
    }


def _measured_value(m: MeasurementRecord) -> tuple[Any, str | None]:
    """(JSON-safe value, description of the non-finite value(s) it had, or None)."""
    value = m.measured_value
    if _is_non_finite(value):
        return None, non_finite_text(value)
    if isinstance(value, list | tuple):
        bad = [(i, x) for i, x in enumerate(value) if _is_non_finite(x)]
        if bad:
            where = ", ".join(f"{non_finite_text(x)} at index {i}" for i, x in bad[:10])
            more = f" and {len(bad) - 10} more" if len(bad) > 10 else ""
            return _jsonable(value, non_finite=lambda _: None), f"{where}{more}"
    return _jsonable(value, non_finite=lambda _: None), None


def _is_non_finite(value: Any) -> bool:
    return isinstance(value, float) and not math.isfinite(value)


# -- logs, metadata, helpers --------------------------------------------------------------------


def _all_logs(record: RunRecord) -> list[LogEntry]:
    """Run-level and phase logs in one list, in time order (stable for equal timestamps),
    within the body's bounds (see the module docstring)."""
    groups = [record.logs, *(phase.logs for phase in record.phases)]
    entries = [entry for group in groups for entry in _capped(group)]
    entries.sort(key=lambda entry: _utc(entry.timestamp))
    return _within_budget(entries)


def _capped(entries: list[LogEntry]) -> list[LogEntry]:
    """One phase's logs: all of them if within the per-phase bounds, else its first and last
    lines (half the bounds each) around one entry that says how many were dropped."""
    sizes = [min(len(entry.message), MAX_LOG_MESSAGE) for entry in entries]
    if len(entries) <= MAX_LOGS_PER_PHASE and sum(sizes) <= MAX_LOG_CHARS_PER_PHASE:
        return entries
    lines, chars = MAX_LOGS_PER_PHASE // 2, MAX_LOG_CHARS_PER_PHASE // 2
    head = _fitting(sizes, lines, chars)
    tail = _fitting(sizes[head:][::-1], lines, chars)
    dropped = entries[head : len(entries) - tail]
    marker = _dropped_entry(
        dropped[0],
        f"{len(dropped)} log lines of this phase dropped here: a run sent to TofuPilot carries "
        f"at most {MAX_LOGS_PER_PHASE} lines and {MAX_LOG_CHARS_PER_PHASE} characters per "
        "phase, its first and last ones (run.json on the station holds them all)",
    )
    return [*entries[:head], marker, *entries[len(entries) - tail :]]


def _fitting(sizes: list[int], lines: int, chars: int) -> int:
    """How many of the first `sizes` fit in `lines` lines and `chars` characters."""
    total = 0
    for count, size in enumerate(sizes[:lines]):
        total += size
        if total > chars:
            return count
    return min(len(sizes), lines)


def _within_budget(entries: list[LogEntry]) -> list[LogEntry]:
    """The entries up to MAX_LOG_CHARS characters in all (each message, plus LOG_ENTRY_CHARS
    for the rest of its entry); then one entry that says how many were dropped."""
    total = 0
    for count, entry in enumerate(entries):
        total += min(len(entry.message), MAX_LOG_MESSAGE) + LOG_ENTRY_CHARS
        if total > MAX_LOG_CHARS:
            marker = _dropped_entry(
                entry,
                f"{len(entries) - count} more log lines dropped: a run sent to TofuPilot carries "
                f"at most {MAX_LOG_CHARS} characters of log messages (run.json on the station "
                "holds them all)",
            )
            return [*entries[:count], marker]
    return entries


def _dropped_entry(first_dropped: LogEntry, message: str) -> LogEntry:
    return LogEntry(
        level="WARNING",
        timestamp=first_dropped.timestamp,
        message=message,
        source_file=first_dropped.source_file,
        line_number=first_dropped.line_number,
    )


def _log(entry: LogEntry) -> dict[str, Any]:
    return {
        "level": entry.level if entry.level in _LOG_LEVELS else "INFO",
        "timestamp": _timestamp(entry.timestamp),
        "message": _truncate(entry.message, MAX_LOG_MESSAGE),
        "source_file": entry.source_file,
        "line_number": entry.line_number,
    }


def run_metadata(record: RunRecord) -> dict[str, Any]:
    """The metadata a run carries to TofuPilot (before the key limit): `simulated` first, the
    procedure's own keys, then one `instrument.<name>` per instrument the run opened."""
    metadata: dict[str, Any] = {"simulated": True} if record.simulated else {}
    for key, value in record.metadata.items():
        metadata.setdefault(key, value)  # never lets a procedure's key unmark a simulated run
    for instrument in record.instruments:
        metadata.setdefault(f"instrument.{instrument.name}", instrument_text(instrument))
    return metadata


def instrument_text(instrument: InstrumentRecord) -> str:
    """`Keysight 34461A SN MY60012345 fw A.03.01 @ USB0::...`: who the instrument was, from what
    the record knows of it (its raw identity when it was not parsed)."""
    parts = [" ".join(p for p in (instrument.manufacturer, instrument.model) if p)]
    if instrument.serial_number:
        parts.append(f"SN {instrument.serial_number}")
    if instrument.firmware:
        parts.append(f"fw {instrument.firmware}")
    text = " ".join(p for p in parts if p) or (instrument.identity or "").strip()
    text = text or f"{instrument.driver} (no identity)"
    if instrument.resource:
        text += f" @ {instrument.resource}"
    return _truncate(text, MAX_METADATA_TEXT)


def _metadata(metadata: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """(scalar metadata, keys dropped over the limit). Non-scalars go out as their JSON text."""
    keys = list(metadata)
    sent: dict[str, Any] = {}
    for key in keys[:MAX_METADATA_KEYS]:
        value = metadata[key]
        if isinstance(value, float) and not math.isfinite(value):
            sent[key] = non_finite_text(value)
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
