"""The emulator's endpoints: runs, attachments and uploads, whoami, stations/current."""

from __future__ import annotations

import secrets
import threading
import uuid
from typing import Any

from .state import (
    MAX_ISSUE_MESSAGE,
    MAX_ISSUES,
    ApiError,
    Response,
    StoredAttachment,
    StoredRun,
    clip,
    now_iso,
    public_identity,
)


class Endpoints:
    """The endpoint logic of `TofuPilotEmulator` (its base class; state lives there)."""

    procedures: set[str]
    runs: dict[str, StoredRun]
    attachments: dict[str, StoredAttachment]
    base: str
    _validator: Any
    _lock: threading.RLock
    _by_ref: dict[str, str]

    def _create_run(self, identity: dict[str, Any], body: Any) -> Response:
        issues = self._issues(body)
        if issues:
            raise ApiError(400, f"invalid run: {issues[0]['message']}", issues)
        procedure_id = body["procedure_id"]
        with self._lock:
            if procedure_id not in self.procedures:
                raise ApiError(404, f"procedure {procedure_id!r} not found")
            if identity["type"] == "station" and procedure_id not in identity["procedures"]:
                name = identity["station"]["name"]
                raise ApiError(
                    403,
                    f"station {name!r} is not linked to procedure {procedure_id!r}: link the "
                    "procedure to the station in TofuPilot to let its key create these runs",
                )
            ref = body.get("client_run_ref")
            if ref is not None and ref in self._by_ref:
                return Response(200, {"id": self._by_ref[ref]})
            run_id = str(uuid.uuid4())
            self.runs[run_id] = StoredRun(
                id=run_id,
                body=body,
                created_by=public_identity(identity),
                created_at=now_iso(),
            )
            if ref is not None:
                self._by_ref[ref] = run_id
        return Response(200, {"id": run_id})

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
        try:
            limit = int(query.get("limit", ["50"])[0])
            cursor = int(query.get("cursor", ["0"])[0])
        except ValueError:
            raise ApiError(400, "limit and cursor must be integers") from None
        if not 1 <= limit <= 100 or cursor < 0:
            raise ApiError(
                400,
                "limit must be 1..100 and cursor >= 0",
                [{"message": "out of range", "path": ["limit"]}],
            )
        filters = {
            "serial_numbers": "serial_number",
            "procedure_ids": "procedure_id",
            "outcomes": "outcome",
        }
        with self._lock:
            runs = list(reversed(self.runs.values()))  # newest first
        for param, key in filters.items():
            if param in query:
                wanted = {v.lower() for v in query[param]}
                runs = [r for r in runs if str(r.body.get(key, "")).lower() in wanted]
        page = runs[cursor : cursor + limit]
        has_more = cursor + limit < len(runs)
        return Response(
            200,
            {
                "data": [self._run_summary(run) for run in page],
                "meta": {"has_more": has_more, "next_cursor": cursor + limit if has_more else None},
            },
        )

    def _run(self, run_id: str) -> StoredRun:
        with self._lock:
            run = self.runs.get(run_id)
        if run is None:
            raise ApiError(404, f"run {run_id!r} not found")
        return run

    def _run_summary(self, run: StoredRun) -> dict[str, Any]:
        b = run.body
        return {
            "id": run.id,
            "outcome": b["outcome"],
            "started_at": b["started_at"],
            "ended_at": b["ended_at"],
            "created_at": run.created_at,
            "procedure": {"id": b["procedure_id"], "name": b["procedure_id"]},
            "unit": {"serial_number": b["serial_number"]},
        }

    def _run_view(self, run: StoredRun) -> dict[str, Any]:
        """GET /v2/runs/{id}: the stored run in the shape the SDK documents (main fields)."""
        b = run.body
        version = b.get("procedure_version")
        return {
            **self._run_summary(run),
            "docstring": b.get("docstring"),
            "client_run_ref": b.get("client_run_ref"),
            "procedure": {
                "id": b["procedure_id"],
                "name": b["procedure_id"],
                "version": {"id": f"ver-{version}", "tag": version} if version else None,
            },
            "unit": {
                "serial_number": b["serial_number"],
                "part": {
                    "number": b.get("part_number"),
                    "revision": {"number": b.get("revision_number")},
                },
                "batch": {"number": b["batch_number"]} if b.get("batch_number") else None,
            },
            "operated_by": {"name": b["operated_by"]} if b.get("operated_by") else None,
            "phases": b.get("phases", []),
            "logs": b.get("logs", []),
            "sub_units": [{"serial_number": s} for s in b.get("sub_units", [])],
            "metadata": b.get("metadata", {}),
            "attachments": [
                {
                    "id": a.id,
                    "name": a.name,
                    "size": len(a.data) if a.finalized and a.data is not None else None,
                    "content_type": a.content_type if a.finalized else None,
                    "is_report": False,
                    "download_url": f"{self.base}/uploads/{a.id}?token={a.token}",
                }
                for a in run.attachments
            ],
            "created_by_station": run.created_by.get("station"),
            "created_by_user": run.created_by.get("user"),
        }

    def _create_attachment(self, run_id: str, body: Any) -> Response:
        name = body.get("name") if isinstance(body, dict) else None
        if not isinstance(name, str) or not 1 <= len(name) <= 255:
            raise ApiError(
                400,
                "invalid attachment: name must be a string of 1..255 characters",
                [{"message": "name must be a string of 1..255 characters", "path": ["name"]}],
            )
        with self._lock:
            run = self._run(run_id)
            attachment = StoredAttachment(
                id=str(uuid.uuid4()), run_id=run.id, name=name, token=secrets.token_hex(8)
            )
            run.attachments.append(attachment)
            self.attachments[attachment.id] = attachment
        upload_url = f"{self.base}/uploads/{attachment.id}?token={attachment.token}"
        return Response(200, {"id": attachment.id, "upload_url": upload_url})

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

    def _whoami(self, identity: dict[str, Any]) -> dict[str, Any]:
        public = public_identity(identity)
        return {
            "type": identity["type"],
            "station": public.get("station"),
            "user": public.get("user"),
            "organization": {"id": "org-demo", "slug": "demo", "name": "Demo organisation"},
        }

    def _current_station(self, identity: dict[str, Any]) -> dict[str, Any]:
        if identity["type"] != "station":
            raise ApiError(403, "stations/current needs a station API key; this is a user key")
        with self._lock:
            linked = list(identity["procedures"])
            counts = {p: 0 for p in linked}
            for run in self.runs.values():
                if run.created_by.get("station") == identity["station"]:
                    pid = run.body["procedure_id"]
                    if pid in counts:
                        counts[pid] += 1
        return {
            **identity["station"],
            "api_key": None,
            "procedures": [
                {"id": p, "name": p, "runs_count": counts[p], "deployment": None} for p in linked
            ],
            "organization_slug": "demo",
            "team": None,
            "metadata": {},
        }
