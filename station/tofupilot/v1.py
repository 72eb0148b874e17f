"""The legacy TofuPilot v1 run (`POST /api/v1/runs`), for servers that lack the v2 API.

Chosen with `tofupilot.api: v1` in station.yaml; v2 stays the default. The body has the shape
the official v1 client sends (`TofuPilotClient.create_run`):

- `procedure_id`: the v1 procedure identifier, the procedure's `tofupilot_name` or else its
  station.yaml key (`FVT1`), never resolved to a UUID;
- `unit_under_test`: `serial_number`, and `part_number`, `revision`, `batch_number` when known;
- `run_passed` (a bool: v1 knows no ERROR or ABORTED, so `report_variables.outcome` keeps the
  record's outcome, and `outcome_reason` why), `started_at` (UTC, `Z`), `duration` (ISO 8601,
  `PT1.5S`);
- `steps`: flat, one per measurement (`name`, `started_at`, `duration`, `step_passed`,
  `measurement_value`, `measurement_unit`, `limit_low`, `limit_high`: the decisive numeric
  limits), and one per phase that measured nothing; skipped phases, which ran nothing, are
  left out;
- `sub_units` (`[{serial_number}]`), `procedure_version` when the procedure has one, and
  `report_variables`: every value as text: the outcome, then the same metadata a v2 run
  carries (`simulated`, the procedure's keys, `instrument.<name>`).

v1 has no idempotency key (`client_run_ref`): a request whose answer was lost may have created
the run. Before sending again after such a loss, `create_run` looks for the run among the
unit's runs (`GET /api/v1/runs?serial_number=`) by its start time, so a retry does not
duplicate it when the server lists it. Attachments are not sent through v1 (its upload flow
needs `sizeBytes` grants that expire in 60 s): they stay in the run directory, and upload.json
marks them `not-sent-v1`.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

from station.records.model import MeasurementRecord, PhaseRecord, RunRecord
from station.tofupilot.client import TofuPilotClient, TofuPilotError
from station.tofupilot.payload import MAX_METADATA_KEYS, run_metadata

__all__ = ["MAX_STEP_NAME", "build_v1_body", "create_run", "iso_duration"]

MAX_STEP_NAME = 100
MAX_VALUE_TEXT = 1_000
_LOW = frozenset({">=", ">"})
_HIGH = frozenset({"<=", "<"})


def build_v1_body(record: RunRecord, *, procedure_id: str) -> dict[str, Any]:
    """The v1 run-create body of `record`, for procedure `procedure_id` (its v1 identifier)."""
    if not procedure_id:
        raise ValueError("procedure_id must be the procedure's v1 identifier")
    if not record.serial_number:
        raise ValueError("the record has no serial number; TofuPilot requires one")
    started = _utc(record.started_at)
    ended = _utc(record.ended_at) if record.ended_at else started
    for phase in record.phases:
        ended = max(ended, _utc(phase.ended_at))
    unit: dict[str, Any] = {"serial_number": record.serial_number}
    for key, value in (
        ("part_number", record.part_number),
        ("revision", record.revision),
        ("batch_number", record.batch_number),
    ):
        if value:
            unit[key] = value
    outcome = record.outcome.value if record.outcome is not None else "ERROR"
    variables: dict[str, str] = {"outcome": outcome}
    if outcome != "PASS" and record.outcome_reason:
        variables["outcome_reason"] = record.outcome_reason[:MAX_VALUE_TEXT]
    for key, value in run_metadata(record).items():
        if len(variables) >= MAX_METADATA_KEYS:
            break
        variables.setdefault(key, _text(value))
    body: dict[str, Any] = {
        "procedure_id": procedure_id,
        "unit_under_test": unit,
        "run_passed": outcome == "PASS",
        "started_at": _timestamp(started),
        "duration": iso_duration(ended - started),
        "steps": [step for phase in record.phases for step in _steps(phase)],
        "report_variables": variables,
    }
    if record.procedure_version:
        body["procedure_version"] = record.procedure_version
    sub_units = [{"serial_number": serial} for serial in record.sub_units if serial]
    if sub_units:
        body["sub_units"] = sub_units
    return body


def create_run(
    client: TofuPilotClient,
    body: dict[str, Any],
    *,
    maybe_sent: bool,
    timeout: Any,
) -> str:
    """POST /api/v1/runs; returns the run id. With `maybe_sent` (an earlier attempt's answer was
    lost), the unit's runs are looked up first and a run with the same start time is taken as
    this one. `timeout()` gives each request's timeout."""
    if maybe_sent:
        existing = _find_existing(client, body, timeout)
        if existing is not None:
            return existing
    return client.create_run_v1(body, timeout_s=timeout())


def _find_existing(client: TofuPilotClient, body: dict[str, Any], timeout: Any) -> str | None:
    """The id of a run of this unit and procedure that started when this one did, if the server
    lists one (None when it does not, or when the lookup itself fails: then the run is sent)."""
    serial = body["unit_under_test"]["serial_number"]
    try:
        runs = client.list_runs_v1(serial, timeout_s=timeout())
    except TofuPilotError:
        return None
    wanted = _parse(body["started_at"])
    for run in runs:
        started = _parse(run.get("started_at"))
        if wanted is not None and started == wanted and isinstance(run.get("id"), str):
            return str(run["id"])
    return None


def _steps(phase: PhaseRecord) -> list[dict[str, Any]]:
    if str(phase.outcome) == "SKIP" and not phase.measurements:
        return []
    timing = {
        "started_at": _timestamp(_utc(phase.started_at)),
        "duration": iso_duration(_utc(phase.ended_at) - _utc(phase.started_at)),
    }
    if not phase.measurements:
        return [
            {"name": phase.name[:MAX_STEP_NAME], **timing, "step_passed": phase.outcome == "PASS"}
        ]
    return [{**_measurement_step(m), **timing} for m in phase.measurements]


def _measurement_step(m: MeasurementRecord) -> dict[str, Any]:
    step: dict[str, Any] = {"name": m.name[:MAX_STEP_NAME], "step_passed": m.outcome == "PASS"}
    value = m.measured_value
    if isinstance(value, bool):
        step["measurement_value"] = str(value).lower()
    elif isinstance(value, int | float):
        if math.isfinite(value):
            step["measurement_value"] = value
    elif isinstance(value, str):
        step["measurement_value"] = value[:MAX_VALUE_TEXT]
    elif value is not None:
        step["measurement_value"] = _text(value)
    if m.units:
        step["measurement_unit"] = m.units
    for v in m.validators:
        bound = v.expected_value
        if not v.is_decisive or isinstance(bound, bool) or not isinstance(bound, int | float):
            continue
        if not math.isfinite(bound):
            continue
        if v.operator in _LOW or v.operator == "==":
            step["limit_low"] = bound
        if v.operator in _HIGH or v.operator == "==":
            step["limit_high"] = bound
    return step


def iso_duration(delta: timedelta) -> str:
    """ISO 8601 duration: `PT1.5S`, `PT2M3.25S`, `P1DT1H` (a negative one gives `PT0S`)."""
    total_ms = max(0, round(delta.total_seconds() * 1000))
    days, rest = divmod(total_ms, 86_400_000)
    hours, rest = divmod(rest, 3_600_000)
    minutes, ms = divmod(rest, 60_000)
    out = "P" + (f"{days}D" if days else "")
    clock = (f"{hours}H" if hours else "") + (f"{minutes}M" if minutes else "")
    if ms:
        seconds = f"{ms / 1000:.3f}".rstrip("0").rstrip(".")
        clock += f"{seconds}S"
    if clock:
        out += "T" + clock
    return out if out != "P" else "PT0S"


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return str(value)[:MAX_VALUE_TEXT]


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _timestamp(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _parse(text: Any) -> datetime | None:
    if not isinstance(text, str):
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    moment = _utc(moment)
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)
