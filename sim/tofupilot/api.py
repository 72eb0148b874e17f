"""The emulator's v2 endpoints: runs, procedures, units, attachments and uploads, whoami,
stations/current. Answers follow the shapes of the official SDK's response models (checked in
tests/tofupilot/test_sdk_bodies.py)."""

from __future__ import annotations

import secrets
import threading
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from .state import (
    MAX_ISSUE_MESSAGE,
    MAX_ISSUES,
    ApiError,
    Procedure,
    Response,
    StoredAttachment,
    StoredRun,
    StoredUnit,
    clip,
    is_uuid,
    iso_duration,
    new_id,
    now_iso,
    parse_time,
    public_identity,
)

T = TypeVar("T")

ORGANIZATION = {"id": "org-demo", "slug": "demo", "name": "Demo organisation"}
DEMO_USER = {"id": "usr-demo", "name": "Demo User", "email": "demo@example.com"}
SORT_KEYS = (
    "started_at",
    "created_at",
    "duration",
    "outcome",
    "serial_number",
    "part_number",
    "revision_number",
)


def page_of(items: Sequence[T], query: dict[str, list[str]]) -> tuple[list[T], dict[str, Any]]:
    """One page of `items` by `limit` (1..100, default 50) and `cursor` (an offset), with the
    `meta{has_more, next_cursor}` the service answers."""
    try:
        limit = int(query.get("limit", ["50"])[0])
        cursor = int(float(query.get("cursor", ["0"])[0]))
    except ValueError:
        raise ApiError(
            400,
            "limit and cursor must be integers",
            [{"message": "Expected number, received nan", "path": ["limit"]}],
        ) from None
    if not 1 <= limit <= 100 or cursor < 0:
        raise ApiError(
            400,
            "limit must be 1..100 and cursor >= 0",
            [{"message": "out of range", "path": ["limit" if cursor >= 0 else "cursor"]}],
        )
    page = list(items[cursor : cursor + limit])
    has_more = cursor + limit < len(items)
    return page, {"has_more": has_more, "next_cursor": cursor + limit if has_more else None}


def _flag(query: dict[str, list[str]], name: str) -> bool:
    return query.get(name, ["false"])[0].lower() in ("true", "1")


class Endpoints:
    """The endpoint logic of `TofuPilotEmulator` (its base class; state lives there)."""

    procedures: dict[str, Procedure]
    units: dict[str, StoredUnit]
    runs: dict[str, StoredRun]
    attachments: dict[str, StoredAttachment]
    base: str
    strict_sub_units: bool
    part_number_required: bool
    forbid_run_attachments: bool
    _validator: Any
    _lock: threading.RLock
    _by_ref: dict[str, str]
    _on_store: Callable[[StoredRun, Procedure], None] | None

    # -- procedures ------------------------------------------------------------------------------

    def _add_procedure(
        self, name: str, id: str | None = None, identifier: str | None = None
    ) -> Procedure:
        """A new procedure (a fresh UUID unless `id` is given; the v1 identifier is the name
        unless given). Names need not be unique, as in TofuPilot; ids must be UUIDs."""
        if not isinstance(name, str) or not name.strip():
            raise ValueError("a procedure needs a name")
        procedure_id = (id or new_id()).lower()
        if not is_uuid(procedure_id):
            raise ValueError(f"a procedure id must be a UUID, got {id!r}")
        with self._lock:
            if procedure_id in self.procedures:
                raise ValueError(f"procedure id {procedure_id} exists already")
            procedure = Procedure(procedure_id, name, identifier or name, now_iso())
            self.procedures[procedure_id] = procedure
        return procedure

    # -- runs ------------------------------------------------------------------------------------

    def _create_run(self, identity: dict[str, Any], body: Any) -> Response:
        issues = self._issues(body)
        procedure_id = body.get("procedure_id") if isinstance(body, dict) else None
        if isinstance(procedure_id, str) and not is_uuid(procedure_id):
            # What the service's validator says of `procedure_id: "FVT1"`.
            issues.append({"message": "Invalid uuid", "path": ["procedure_id"]})
        if issues:
            raise ApiError(400, f"invalid run: {issues[0]['message']}", issues)
        with self._lock:
            procedure = self._procedure_for_write(identity, body["procedure_id"])
            ref = body.get("client_run_ref")
            if ref is not None and ref in self._by_ref:
                return Response(200, {"id": self._by_ref[ref]})
            unit = self._unit_for_run(identity, body)
            run = StoredRun(
                id=new_id(),
                body=body,
                created_by=public_identity(identity),
                created_at=now_iso(),
                unit_id=unit.id,
            )
            self._store(run, procedure)
            if ref is not None:
                self._by_ref[ref] = run.id
        return Response(200, {"id": run.id})

    def _store(self, run: StoredRun, procedure: Procedure) -> None:
        self.runs[run.id] = run
        if self._on_store is not None:
            self._on_store(run, procedure)

    def _procedure_for_write(self, identity: dict[str, Any], procedure_id: str) -> Procedure:
        """The procedure a key may create runs for: a station key only its linked ones (403
        otherwise, known or not), a user key any existing one (404 otherwise)."""
        procedure = self.procedures.get(procedure_id.lower())
        if identity["type"] == "station":
            if procedure is None or procedure.id not in identity["procedures"]:
                name = identity["station"]["name"]
                raise ApiError(
                    403,
                    f"station {name!r} is not linked to procedure {procedure_id!r}: link the "
                    "procedure to the station in TofuPilot to let its key create these runs",
                )
        elif procedure is None:
            raise ApiError(404, f"procedure {procedure_id!r} not found")
        return procedure

    def _unit_for_run(self, identity: dict[str, Any], body: dict[str, Any]) -> StoredUnit:
        """The run's unit, created when absent (as the service does); sub-units must exist
        when `strict_sub_units` is on."""
        serial = body["serial_number"]
        unit = self.units.get(serial.lower())
        problems = []
        if unit is None and self.part_number_required and not body.get("part_number"):
            problems.append(
                {
                    "message": f"part_number is required: it could not be parsed from serial "
                    f"number {serial!r} (no serial number format matches)",
                    "path": ["part_number"],
                }
            )
        if self.strict_sub_units:
            for i, sub in enumerate(body.get("sub_units") or []):
                if sub.lower() not in self.units:
                    problems.append(
                        {
                            "message": f"sub-unit {sub!r} not found: a sub-unit must exist "
                            "before a run references it",
                            "path": ["sub_units", i],
                        }
                    )
        if problems:
            raise ApiError(400, f"invalid run: {problems[0]['message']}", problems)
        if unit is None:
            unit = StoredUnit(
                id=new_id(),
                serial_number=serial,
                part_number=body.get("part_number") or "",
                revision_number=body.get("revision_number") or "",
                created_at=now_iso(),
                created_by=public_identity(identity),
            )
            self.units[serial.lower()] = unit
        # A unit first seen without part or revision takes them from a later run.
        unit.part_number = unit.part_number or body.get("part_number") or ""
        unit.revision_number = unit.revision_number or body.get("revision_number") or ""
        if body.get("batch_number"):
            unit.batch_number = body["batch_number"]
        unit.metadata.update(body.get("unit_metadata") or {})
        return unit

    def _issues(self, body: Any) -> list[dict[str, Any]]:
        errors = sorted(self._validator.iter_errors(body), key=lambda e: list(e.absolute_path))
        return [
            {
                "message": clip(error.message, MAX_ISSUE_MESSAGE),
                "path": list(error.absolute_path),
            }
            for error in errors[:MAX_ISSUES]
        ]

    def _list_runs(self, query: dict[str, list[str]]) -> Response:
        """GET /v2/runs: filtered (exploded arrays), sorted (default newest created first),
        paginated."""
        filters: dict[str, Callable[[StoredRun], str]] = {
            "ids": lambda r: r.id,
            "serial_numbers": lambda r: r.body["serial_number"],
            "procedure_ids": lambda r: r.body["procedure_id"],
            "outcomes": lambda r: r.body["outcome"],
            "part_numbers": lambda r: self._unit_of(r).part_number,
            "revision_numbers": lambda r: self._unit_of(r).revision_number,
            "batch_numbers": lambda r: r.body.get("batch_number") or "",
            "procedure_versions": lambda r: r.body.get("procedure_version") or "",
            "created_by_station_ids": lambda r: (r.created_by.get("station") or {}).get("id", ""),
        }
        sort_by = query.get("sort_by", ["created_at"])[0]
        order = query.get("sort_order", ["desc"])[0]
        if sort_by not in SORT_KEYS or order not in ("asc", "desc"):
            raise ApiError(
                400,
                f"invalid sort: sort_by must be one of {', '.join(SORT_KEYS)}, "
                "sort_order asc or desc",
                [{"message": "Invalid enum value", "path": ["sort_by"]}],
            )
        with self._lock:
            runs = list(self.runs.values())  # in creation order
            for param, value_of in filters.items():
                if param in query:
                    wanted = {v.lower() for v in query[param]}
                    runs = [r for r in runs if str(value_of(r)).lower() in wanted]
            keyed = [(self._sort_value(r, sort_by), i, r) for i, r in enumerate(runs)]
            keyed.sort(key=lambda t: (t[0], t[1]), reverse=order == "desc")
            page, meta = page_of([r for _, _, r in keyed], query)
            data = [self._run_summary(r, _flag(query, "include_metadata")) for r in page]
        return Response(200, {"data": data, "meta": meta})

    def _sort_value(self, run: StoredRun, sort_by: str) -> Any:
        b = run.body
        if sort_by in ("started_at", "created_at"):
            return parse_time(b["started_at"] if sort_by == "started_at" else run.created_at)
        if sort_by == "duration":
            return (parse_time(b["ended_at"]) - parse_time(b["started_at"])).total_seconds()
        if sort_by in ("part_number", "revision_number"):
            return getattr(self._unit_of(run), sort_by).lower()
        return str(b[sort_by]).lower()

    def _run(self, run_id: str) -> StoredRun:
        with self._lock:
            run = self.runs.get(run_id)
        if run is None:
            raise ApiError(404, f"run {run_id!r} not found")
        return run

    def _unit_of(self, run: StoredRun) -> StoredUnit:
        unit = self.units.get(run.body["serial_number"].lower())
        if unit is None:  # the unit was deleted or renamed: show what the run said
            b = run.body
            return StoredUnit(
                run.unit_id,
                b["serial_number"],
                b.get("part_number") or "",
                b.get("revision_number") or "",
                run.created_at,
                {},
            )
        return unit

    def _procedure_view(self, run: StoredRun) -> dict[str, Any]:
        pid = run.body["procedure_id"]
        procedure = self.procedures.get(pid.lower())
        version = run.body.get("procedure_version")
        return {
            "id": pid,
            "name": procedure.name if procedure else pid,
            "version": {"id": f"ver-{version}", "tag": version} if version else None,
        }

    def _unit_view(self, unit: StoredUnit) -> dict[str, Any]:
        return {
            "id": unit.id,
            "serial_number": unit.serial_number,
            "sample": unit.sample,
            "part": {
                "id": f"part-{unit.part_number.lower()}",
                "number": unit.part_number,
                "name": unit.part_number,
                "revision": {
                    "id": f"rev-{unit.part_number.lower()}-{unit.revision_number.lower()}",
                    "number": unit.revision_number,
                },
            },
            "batch": (
                {"id": f"batch-{unit.batch_number.lower()}", "number": unit.batch_number}
                if unit.batch_number
                else None
            ),
        }

    def _creator_views(self, created_by: dict[str, Any]) -> dict[str, Any]:
        return {
            "created_by_station": created_by.get("station"),
            "created_by_user": created_by.get("user"),
        }

    def _run_summary(self, run: StoredRun, include_metadata: bool = False) -> dict[str, Any]:
        """A run in the shape of the SDK's `RunListData`."""
        b = run.body
        summary = {
            "id": run.id,
            "created_at": run.created_at,
            "started_at": b["started_at"],
            "ended_at": b["ended_at"],
            "duration": iso_duration(b["started_at"], b["ended_at"]),
            "outcome": b["outcome"],
            "execution_id": b.get("execution_id"),
            "slot_key": b.get("slot_key"),
            "slot_name": b.get("slot_name"),
            "procedure": self._procedure_view(run),
            "unit": self._unit_view(self._unit_of(run)),
            "docstring": b.get("docstring"),
            **self._creator_views(run.created_by),
            "operated_by": (
                {"id": None, "name": b["operated_by"], "email": None}
                if b.get("operated_by")
                else None
            ),
        }
        if include_metadata:
            summary["metadata"] = b.get("metadata") or {}
        return summary

    def _run_view(self, run: StoredRun) -> dict[str, Any]:
        """GET /v2/runs/{id}: the stored run in the shape of the SDK's `RunGetResponse`."""
        b = run.body
        with self._lock:
            summary = self._run_summary(run, include_metadata=True)
            sub_units = [self.units.get(s.lower()) for s in b.get("sub_units") or []]
            attachments = list(run.attachments)
        return {
            **summary,
            "client_run_ref": b.get("client_run_ref"),
            "config": [
                {"variable_id": None, "version": None, "source": None, **c}
                for c in b.get("config") or []
            ],
            "secrets": [
                {"variable_id": None, "version": None, "source": None, **s}
                for s in b.get("secrets") or []
            ],
            "phases": [_phase_view(p) for p in b.get("phases") or []],
            "sequences": [_sequence_view(s) for s in b.get("sequences") or []],
            "logs": [{"id": new_id(), **log} for log in b.get("logs") or []],
            "sub_units": [
                {
                    "id": unit.id if unit else new_id(),
                    "serial_number": unit.serial_number if unit else serial,
                    "part_number": unit.part_number if unit else "",
                    "part_name": unit.part_number if unit else None,
                }
                for serial, unit in zip(b.get("sub_units") or [], sub_units, strict=True)
            ],
            "attachments": [
                {
                    "id": a.id,
                    "name": a.name,
                    "size": len(a.data) if a.finalized and a.data is not None else None,
                    "content_type": a.content_type if a.finalized else None,
                    "is_report": False,
                    "download_url": f"{self.base}/uploads/{a.id}?token={a.token}",
                }
                for a in attachments
            ],
        }

    def _update_run(self, run_id: str, body: Any) -> Response:
        """PATCH /v2/runs/{id} `{attachments: [upload ids]}`: links generic uploads."""
        ids = body.get("attachments") if isinstance(body, dict) else None
        if (
            not isinstance(body, dict)
            or set(body) - {"attachments"}
            or not (ids is None or (isinstance(ids, list) and all(isinstance(i, str) for i in ids)))
        ):
            raise ApiError(
                400,
                "invalid run update: only attachments (a list of upload ids) may be set",
                [{"message": "Expected array of strings", "path": ["attachments"]}],
            )
        with self._lock:
            run = self._run(run_id)
            found = []
            for upload_id in ids or []:
                attachment = self.attachments.get(upload_id)
                if attachment is None:
                    raise ApiError(404, f"upload {upload_id!r} not found")
                if attachment.run_id not in (None, run.id):
                    raise ApiError(409, f"upload {upload_id!r} is linked to another run")
                found.append(attachment)
            for attachment in found:
                if attachment.run_id is None:
                    attachment.run_id = run.id
                    run.attachments.append(attachment)
        return Response(200, {"id": run.id})

    # -- attachments -----------------------------------------------------------------------------

    def _new_attachment(self, body: Any, run: StoredRun | None) -> Response:
        name = body.get("name") if isinstance(body, dict) else None
        if not isinstance(name, str) or not 1 <= len(name) <= 255:
            raise ApiError(
                400,
                "invalid attachment: name must be a string of 1..255 characters",
                [{"message": "name must be a string of 1..255 characters", "path": ["name"]}],
            )
        attachment = StoredAttachment(
            id=new_id(), run_id=run.id if run else None, name=name, token=secrets.token_hex(8)
        )
        with self._lock:
            if run is not None:
                run.attachments.append(attachment)
            self.attachments[attachment.id] = attachment
        upload_url = f"{self.base}/uploads/{attachment.id}?token={attachment.token}"
        return Response(200, {"id": attachment.id, "upload_url": upload_url})

    def _create_attachment(self, identity: dict[str, Any], run_id: str, body: Any) -> Response:
        """POST /v2/runs/{id}/attachments: the run-scoped flow (the row is linked at once)."""
        run = self._run(run_id)
        if self.forbid_run_attachments and identity["type"] == "station":
            raise ApiError(403, "this API key may not create run attachments; use the upload flow")
        return self._new_attachment(body, run)

    def _finalize(self, attachment_id: str) -> Response:
        with self._lock:
            attachment = self.attachments.get(attachment_id)
            if attachment is None:
                raise ApiError(404, f"attachment {attachment_id!r} not found")
            if attachment.data is None:
                raise ApiError(400, f"attachment {attachment_id!r} has no uploaded file yet")
            attachment.finalized = True
        return Response(200, {"url": f"{self.base}/uploads/{attachment.id}"})

    def _upload(
        self, method: str, attachment_id: str, query: dict[str, list[str]], headers: Any, raw: bytes
    ) -> Response:
        with self._lock:
            attachment = self.attachments.get(attachment_id)
        if attachment is None:
            raise ApiError(404, f"upload {attachment_id!r} not found")
        if method == "GET":
            if attachment.data is None:
                raise ApiError(404, "nothing uploaded yet")
            return Response(
                200,
                attachment.data,
                {"Content-Type": attachment.content_type or "application/octet-stream"},
            )
        if method != "PUT":
            raise ApiError(405, f"{method} is not supported on an upload URL")
        if query.get("token", [""])[0] != attachment.token:
            raise ApiError(403, "upload URL signature does not match")
        with self._lock:
            attachment.data = raw
            attachment.content_type = headers.get("Content-Type")
        return Response(200, b"")

    # -- procedures, stations, identity ----------------------------------------------------------

    def _procedure_data(self, procedure: Procedure) -> dict[str, Any]:
        return {
            "id": procedure.id,
            "name": procedure.name,
            "created_at": procedure.created_at,
            "created_by_user": dict(DEMO_USER),
            "linkedRepository": None,
        }

    def _list_procedures(self, query: dict[str, list[str]]) -> Response:
        """GET /v2/procedures: newest first, `search_query` matching the name."""
        search = query.get("search_query", [""])[0].lower()
        with self._lock:
            found = [p for p in reversed(self.procedures.values()) if search in p.name.lower()]
        page, meta = page_of(found, query)
        return Response(200, {"data": [self._procedure_data(p) for p in page], "meta": meta})

    def _get_procedure(self, procedure_id: str) -> Response:
        procedure = self.procedures.get(procedure_id.lower())
        if procedure is None:
            raise ApiError(404, f"procedure {procedure_id!r} not found")
        return Response(
            200, {**self._procedure_data(procedure), "identifier": procedure.identifier}
        )

    def _whoami(self, identity: dict[str, Any]) -> dict[str, Any]:
        public = public_identity(identity)
        return {
            "type": identity["type"],
            "station": public.get("station"),
            "user": public.get("user"),
            "organization": dict(ORGANIZATION),
        }

    def _current_station(self, identity: dict[str, Any]) -> dict[str, Any]:
        if identity["type"] != "station":
            raise ApiError(403, "stations/current needs a station API key; this is a user key")
        with self._lock:
            linked = [self.procedures[p] for p in identity["procedures"] if p in self.procedures]
            counts = {p.id: 0 for p in linked}
            for run in self.runs.values():
                if run.created_by.get("station") == identity["station"]:
                    pid = run.body["procedure_id"].lower()
                    if pid in counts:
                        counts[pid] += 1
        return {
            **identity["station"],
            "api_key": None,
            "procedures": [
                {"id": p.id, "name": p.name, "runs_count": counts[p.id], "deployment": None}
                for p in linked
            ],
            "organization_slug": ORGANIZATION["slug"],
            "team": None,
            "metadata": {},
        }

    # -- units -----------------------------------------------------------------------------------

    def _create_unit(self, identity: dict[str, Any], body: Any) -> Response:
        required = ("serial_number", "part_number", "revision_number")
        issues = [
            {"message": "Required" if key not in body else "Expected string", "path": [key]}
            for key in required
            if not isinstance(body, dict) or not isinstance(body.get(key), str) or not body[key]
        ]
        if isinstance(body, dict) and body.get("sample") not in (
            None,
            "golden",
            "failing",
            "ignored",
        ):
            issues.append({"message": "Invalid enum value", "path": ["sample"]})
        if issues:
            raise ApiError(
                400, f"invalid unit: {issues[0]['path'][0]}: {issues[0]['message']}", issues
            )
        serial = body["serial_number"]
        with self._lock:
            if serial.lower() in self.units:
                raise ApiError(409, f"a unit with serial number {serial!r} already exists")
            unit = StoredUnit(
                id=new_id(),
                serial_number=serial,
                part_number=body["part_number"],
                revision_number=body["revision_number"],
                created_at=now_iso(),
                created_by=public_identity(identity),
                sample=body.get("sample"),
                metadata=dict(body.get("metadata") or {}),
            )
            self.units[serial.lower()] = unit
        return Response(200, {"id": unit.id})

    def _unit_data(self, unit: StoredUnit) -> dict[str, Any]:
        """A unit in the shape of the SDK's `UnitListData` (and, with more, `UnitGetResponse`)."""
        runs = [
            r
            for r in self.runs.values()
            if r.body["serial_number"].lower() == unit.serial_number.lower()
        ]
        last = max(runs, key=lambda r: parse_time(r.body["started_at"]), default=None)
        view = self._unit_view(unit)
        return {
            **view,
            "created_at": unit.created_at,
            "children": [],
            **self._creator_views(unit.created_by),
            "parent": None,
            "last_run": (
                {
                    "id": last.id,
                    "outcome": last.body["outcome"],
                    "started_at": last.body["started_at"],
                    "ended_at": last.body["ended_at"],
                    "procedure": {
                        k: v for k, v in self._procedure_view(last).items() if k != "version"
                    },
                }
                if last
                else None
            ),
            "metadata": dict(unit.metadata),
        }

    def _list_units(self, query: dict[str, list[str]]) -> Response:
        with self._lock:
            units = list(reversed(self.units.values()))
            if "serial_numbers" in query:
                wanted = {s.lower() for s in query["serial_numbers"]}
                units = [u for u in units if u.serial_number.lower() in wanted]
            search = query.get("search_query", [""])[0].lower()
            units = [u for u in units if search in u.serial_number.lower()]
            page, meta = page_of(units, query)
            data = [self._unit_data(u) for u in page]
        return Response(200, {"data": data, "meta": meta})

    def _get_unit(self, serial: str) -> Response:
        with self._lock:
            unit = self.units.get(serial.lower())
            if unit is None:
                raise ApiError(404, f"unit {serial!r} not found")
            data = self._unit_data(unit)
        data.pop("last_run")
        return Response(200, {**data, "attachments": []})


# -- run views ------------------------------------------------------------------------------------


def _validator_view(validator: dict[str, Any]) -> dict[str, Any]:
    operator = validator.get("operator")
    expected = validator.get("expected_value")
    expression = validator.get("expression")
    if expression is None:
        expression = f"x {operator} {expected}" if operator else ""
    return {
        "outcome": validator.get("outcome") or "UNSET",
        "operator": operator,
        "expected_value": expected if isinstance(expected, (bool, int, float, str, list)) else None,
        "expression": expression,
        "is_decisive": validator.get("is_decisive", True),
        "is_expression_only": operator is None,
        "analytics_expression": None,
        "has_custom_expression": validator.get("expression") is not None,
    }


def _limit_validators(measurement: dict[str, Any]) -> list[dict[str, Any]]:
    """The deprecated lower_limit/upper_limit, turned into validators as the service does."""
    found = []
    for key, operator in (("lower_limit", ">="), ("upper_limit", "<=")):
        if isinstance(measurement.get(key), (int, float)):
            found.append(
                {
                    "operator": operator,
                    "expected_value": measurement[key],
                    "outcome": measurement.get("outcome"),
                }
            )
    return found


def _aggregation_view(aggregation: dict[str, Any]) -> dict[str, Any]:
    validators = aggregation.get("validators")
    return {
        "id": new_id(),
        "type": aggregation["type"],
        "outcome": aggregation.get("outcome"),
        "value": aggregation.get("value"),
        "unit": aggregation.get("unit"),
        "validators": [_validator_view(v) for v in validators] if validators else None,
    }


def _axis_view(axis: dict[str, Any]) -> dict[str, Any]:
    units = axis.get("units")
    return {
        "data": axis["data"],
        "units": units if isinstance(units, str) else None,
        "name": axis.get("name"),
        "description": axis.get("description"),
        "validators": [_validator_view(v) for v in axis.get("validators") or []] or None,
        "aggregations": [_aggregation_view(a) for a in axis.get("aggregations") or []] or None,
    }


def _measurement_view(m: dict[str, Any]) -> dict[str, Any]:
    validators = [*(m.get("validators") or []), *_limit_validators(m)]
    units = m.get("units")
    view: dict[str, Any] = {
        "id": new_id(),
        "name": m["name"],
        "outcome": m["outcome"],
        "validators": [_validator_view(v) for v in validators] or None,
        "units": units if isinstance(units, str) else (", ".join(units) if units else None),
        "aggregations": [_aggregation_view(a) for a in m.get("aggregations") or []] or None,
    }
    if m.get("measured_value") is not None:
        view["measured_value"] = m["measured_value"]
    axes = [a for a in [m.get("x_axis"), *(m.get("y_axis") or [])] if a]
    if axes:
        view["data_series"] = [_axis_view(a) for a in axes]
    return view


def _phase_view(phase: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": new_id(),
        "name": phase["name"],
        "outcome": phase["outcome"],
        "started_at": phase["started_at"],
        "ended_at": phase["ended_at"],
        "duration": iso_duration(phase["started_at"], phase["ended_at"]),
        "retry_count": phase.get("retry_count", 0),
        "sequence_path": phase.get("sequence_path"),
        "measurements": [_measurement_view(m) for m in phase.get("measurements") or []],
        "docstring": phase.get("docstring"),
    }


def _sequence_view(sequence: dict[str, Any]) -> dict[str, Any]:
    path = sequence["path"]
    started, ended = sequence.get("started_at"), sequence.get("ended_at")
    return {
        "id": new_id(),
        "path": path,
        "key": path.rsplit("/", 1)[-1],
        "parent_path": path.rsplit("/", 1)[0] if "/" in path else None,
        "name": sequence["name"],
        "source": sequence.get("source"),
        "outcome": sequence["outcome"],
        "started_at": started,
        "ended_at": ended,
        "duration": iso_duration(started, ended) if started and ended else None,
    }
