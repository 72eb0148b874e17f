"""The legacy v1 API (`/api/v1/runs`), for stations configured with `tofupilot.api: v1`.

`POST /api/v1/runs` takes the body the official v1 client (`TofuPilotClient.create_run`) sends:

    {unit_under_test: {serial_number, part_number?, part_name?, revision?, batch_number?},
     run_passed: bool, procedure_id? (the v1 identifier, e.g. "FVT1", or the UUID),
     procedure_name?, procedure_version?, started_at? (ISO), duration? (ISO 8601, "PT1.5S"),
     steps?: [{name, started_at, duration, step_passed, measurement_unit?, measurement_value?,
               limit_low?, limit_high?}],
     phases?: [{name, outcome, start_time_millis, end_time_millis, measurements?, docstring?}],
     sub_units?: [{serial_number}], logs?: [...], report_variables?: {str: str},
     client?, client_version?}

and answers `{success: true, id, message}`; errors are `{success: false, error: {message}}`.
Unknown keys are refused, so a station cannot drift from that shape unnoticed. The run is kept
normalised like a v2 run (`StoredRun.body`, outcome PASS/FAIL) with the body as received in
`StoredRun.v1_body`, so both APIs list it. `GET /api/v1/runs?serial_number=SN` answers the list
of that unit's runs (newest first) as the v1 client reads it.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

from .api import Endpoints
from .state import (
    ApiError,
    Procedure,
    Response,
    StoredRun,
    iso,
    iso_duration,
    new_id,
    now_iso,
    parse_time,
    public_identity,
)

_DURATION_RE = re.compile(
    r"P(?:(?P<d>\d+(?:\.\d+)?)D)?(?:T(?:(?P<h>\d+(?:\.\d+)?)H)?(?:(?P<m>\d+(?:\.\d+)?)M)?"
    r"(?:(?P<s>\d+(?:\.\d+)?)S)?)?"
)
_TOP = {
    "unit_under_test",
    "run_passed",
    "procedure_id",
    "procedure_name",
    "procedure_version",
    "started_at",
    "duration",
    "steps",
    "phases",
    "sub_units",
    "logs",
    "report_variables",
    "client",
    "client_version",
}
_UNIT = {"serial_number", "part_number", "part_name", "revision", "batch_number"}
_STEP = {
    "name",
    "started_at",
    "duration",
    "step_passed",
    "measurement_unit",
    "measurement_value",
    "limit_low",
    "limit_high",
}
_PHASE = {"name", "outcome", "start_time_millis", "end_time_millis", "measurements", "docstring"}
_MEASUREMENT = {
    "name",
    "outcome",
    "measured_value",
    "units",
    "lower_limit",
    "upper_limit",
    "validators",
    "docstring",
}
_LOG = {"level", "timestamp", "message", "source_file", "line_number"}


def parse_iso_duration(text: Any) -> timedelta | None:
    """`PT1.5S`, `P1DT2H`, ... as a timedelta; None if it is not an ISO 8601 duration."""
    if not isinstance(text, str) or text in ("P", "PT"):
        return None
    match = _DURATION_RE.fullmatch(text)
    if match is None or text.endswith("T"):
        return None
    parts = {k: float(v) for k, v in match.groupdict().items() if v}
    return timedelta(
        days=parts.get("d", 0),
        hours=parts.get("h", 0),
        minutes=parts.get("m", 0),
        seconds=parts.get("s", 0),
    )


class _Check:
    """Collects what is wrong with a v1 body, with the path of each problem."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def fail(self, path: str, message: str) -> None:
        self.problems.append(f"{path}: {message}")

    def keys(self, path: str, node: Any, allowed: set[str], required: set[str]) -> bool:
        if not isinstance(node, dict):
            self.fail(path, "expected an object")
            return False
        for key in sorted(set(node) - allowed):
            self.fail(f"{path}.{key}" if path else key, "unknown key")
        for key in sorted(required - set(node)):
            self.fail(f"{path}.{key}" if path else key, "required")
        return True

    def kind(self, path: str, value: Any, types: tuple[type, ...], nullable: bool = False) -> None:
        if value is None and nullable:
            return
        if isinstance(value, bool) and bool not in types:
            self.fail(path, f"expected {' or '.join(t.__name__ for t in types)}, got a boolean")
        elif not isinstance(value, types):
            self.fail(path, f"expected {' or '.join(t.__name__ for t in types)}")

    def time(self, path: str, value: Any) -> None:
        try:
            parse_time(value)
        except (TypeError, ValueError, AttributeError):
            self.fail(path, "expected an ISO 8601 date-time")

    def items(self, path: str, value: Any) -> list[Any]:
        if value is None:
            return []
        if not isinstance(value, list):
            self.fail(path, "expected a list")
            return []
        return value


def check_v1_body(body: Any) -> list[str]:
    """Everything wrong with a `POST /api/v1/runs` body ([] when it is valid)."""
    c = _Check()
    if not c.keys("", body, _TOP, {"unit_under_test", "run_passed"}):
        return c.problems
    uut = body.get("unit_under_test")
    if uut is not None and c.keys("unit_under_test", uut, _UNIT, {"serial_number"}):
        for key in _UNIT & set(uut):
            c.kind(f"unit_under_test.{key}", uut[key], (str,), nullable=key != "serial_number")
        if isinstance(uut.get("serial_number"), str) and not uut["serial_number"].strip():
            c.fail("unit_under_test.serial_number", "must not be empty")
    if "run_passed" in body:
        c.kind("run_passed", body["run_passed"], (bool,))
    for key in ("procedure_id", "procedure_name", "procedure_version", "client", "client_version"):
        c.kind(key, body.get(key), (str,), nullable=True)
    if not body.get("procedure_id") and not body.get("procedure_name"):
        c.fail("procedure_id", "procedure_id or procedure_name is required")
    if body.get("started_at") is not None:
        c.time("started_at", body["started_at"])
    if body.get("duration") is not None and parse_iso_duration(body["duration"]) is None:
        c.fail("duration", "expected an ISO 8601 duration such as PT1.5S")
    for i, step in enumerate(c.items("steps", body.get("steps"))):
        path = f"steps[{i}]"
        if c.keys(path, step, _STEP, {"name", "started_at", "duration", "step_passed"}):
            c.kind(f"{path}.name", step.get("name"), (str,))
            c.kind(f"{path}.step_passed", step.get("step_passed"), (bool,))
            c.time(f"{path}.started_at", step.get("started_at"))
            if parse_iso_duration(step.get("duration")) is None:
                c.fail(f"{path}.duration", "expected an ISO 8601 duration")
            c.kind(f"{path}.measurement_unit", step.get("measurement_unit"), (str,), True)
            c.kind(
                f"{path}.measurement_value", step.get("measurement_value"), (int, float, str), True
            )
            for key in ("limit_low", "limit_high"):
                if key in step:
                    c.kind(f"{path}.{key}", step[key], (int, float), True)
    for i, phase in enumerate(c.items("phases", body.get("phases"))):
        path = f"phases[{i}]"
        if c.keys(path, phase, _PHASE, {"name", "outcome", "start_time_millis", "end_time_millis"}):
            c.kind(f"{path}.name", phase.get("name"), (str,))
            if phase.get("outcome") not in ("PASS", "FAIL", "SKIP", "ERROR"):
                c.fail(f"{path}.outcome", "expected PASS, FAIL, SKIP or ERROR")
            for key in ("start_time_millis", "end_time_millis"):
                c.kind(f"{path}.{key}", phase.get(key), (int,))
            for j, m in enumerate(c.items(f"{path}.measurements", phase.get("measurements"))):
                mpath = f"{path}.measurements[{j}]"
                if c.keys(mpath, m, _MEASUREMENT, {"name", "outcome"}):
                    if m.get("outcome") not in ("PASS", "FAIL", "UNSET"):
                        c.fail(f"{mpath}.outcome", "expected PASS, FAIL or UNSET")
                    c.kind(
                        f"{mpath}.measured_value", m.get("measured_value"), (int, float, str), True
                    )
    for i, sub in enumerate(c.items("sub_units", body.get("sub_units"))):
        if c.keys(f"sub_units[{i}]", sub, {"serial_number"}, {"serial_number"}):
            c.kind(f"sub_units[{i}].serial_number", sub["serial_number"], (str,))
    for i, log in enumerate(c.items("logs", body.get("logs"))):
        c.keys(f"logs[{i}]", log, _LOG, _LOG)
    variables = body.get("report_variables")
    if variables is not None and not (
        isinstance(variables, dict) and all(isinstance(v, str) for v in variables.values())
    ):
        c.fail("report_variables", "expected an object of strings")
    return c.problems


class LegacyEndpoints(Endpoints):
    """`/api/v1/runs`: create (POST) and list by serial number (GET)."""

    def _procedure_v1(self, identity: dict[str, Any], body: dict[str, Any]) -> Procedure:
        """The v1 procedure: `procedure_id` is the v1 identifier or the UUID; else
        `procedure_name`, creating the procedure when none has that name (as v1 documents)."""
        ref, name = body.get("procedure_id"), body.get("procedure_name")
        with self._lock:
            if ref:
                found = [
                    p
                    for p in self.procedures.values()
                    if p.id == ref.lower() or (p.identifier or "").lower() == ref.lower()
                ]
                if not found:
                    raise ApiError(404, f"procedure {ref!r} not found")
            else:
                found = [p for p in self.procedures.values() if p.name.lower() == name.lower()]
                if len(found) > 1:
                    raise ApiError(
                        409, f"several procedures are named {name!r}: send its procedure_id"
                    )
                if not found:
                    if identity["type"] == "station":
                        raise ApiError(403, f"a station key may not create procedure {name!r}")
                    found = [self._add_procedure(name)]
        return self._procedure_for_write(identity, found[0].id)

    def _create_run_v1(self, identity: dict[str, Any], body: Any) -> Response:
        problems = check_v1_body(body)
        if problems:
            raise ApiError(400, f"invalid run: {'; '.join(problems[:20])}")
        procedure = self._procedure_v1(identity, body)
        uut = body["unit_under_test"]
        duration = parse_iso_duration(body.get("duration")) or timedelta(0)
        started = parse_time(body["started_at"]) if body.get("started_at") else None
        if started is None:
            started = datetime.now(UTC) - duration
        normalised = {
            "outcome": "PASS" if body["run_passed"] else "FAIL",
            "procedure_id": procedure.id,
            "started_at": iso(started),
            "ended_at": iso(started + duration),
            "serial_number": uut["serial_number"],
            "part_number": uut.get("part_number"),
            "revision_number": uut.get("revision"),
            "batch_number": uut.get("batch_number"),
            "procedure_version": body.get("procedure_version"),
            "sub_units": [s["serial_number"] for s in body.get("sub_units") or []],
        }
        normalised = {k: v for k, v in normalised.items() if v is not None}
        with self._lock:
            unit = self._unit_for_run(identity, normalised)
            run = StoredRun(
                id=new_id(),
                body=normalised,
                created_by=public_identity(identity),
                created_at=now_iso(),
                api="v1",
                v1_body=body,
                unit_id=unit.id,
            )
            self._store(run, procedure)
        return Response(
            200,
            {
                "success": True,
                "id": run.id,
                "message": f"Run created for unit {uut['serial_number']}",
            },
        )

    def _list_runs_v1(self, query: dict[str, list[str]]) -> Response:
        serial = query.get("serial_number", [""])[0]
        if not serial:
            raise ApiError(400, "serial_number is required")
        with self._lock:
            runs = [
                r for r in self.runs.values() if r.body["serial_number"].lower() == serial.lower()
            ]
            runs.sort(key=lambda r: parse_time(r.body["started_at"]), reverse=True)
            data = [self._run_v1_view(r) for r in runs]
        return Response(200, data)

    def _run_v1_view(self, run: StoredRun) -> dict[str, Any]:
        """A run as v1 lists it (the v1 client's `Run` type)."""
        b = run.body
        unit = self._unit_of(run)
        procedure = self.procedures.get(b["procedure_id"].lower())
        version = b.get("procedure_version")
        return {
            "id": run.id,
            "created_at": run.created_at,
            "started_at": b["started_at"],
            "ended_at": b["ended_at"],
            "duration": iso_duration(b["started_at"], b["ended_at"]),
            "outcome": b["outcome"],
            "procedure": {
                "id": b["procedure_id"],
                "name": procedure.name if procedure else b["procedure_id"],
            },
            "procedure_version": {"id": f"ver-{version}", "value": version} if version else None,
            "unit": {
                "id": unit.id,
                "serial_number": unit.serial_number,
                "batch": {"id": f"batch-{unit.batch_number}", "number": unit.batch_number}
                if unit.batch_number
                else None,
                "revision": {
                    "id": f"rev-{unit.part_number}-{unit.revision_number}",
                    "identifier": unit.revision_number,
                    "component": {
                        "id": f"part-{unit.part_number}",
                        "part_number": unit.part_number,
                        "name": unit.part_number,
                    },
                },
            },
            "created_by_station": run.created_by.get("station"),
            "created_by_user": run.created_by.get("user"),
        }
