"""Keys, the vendored run-create schema and the emulator's stored state and error answers."""

from __future__ import annotations

import json
import re
import secrets
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import resources
from typing import Any

SCHEMA_RESOURCE = "data/run-create.schema.json"
MAX_ISSUES = 20
MAX_ISSUE_MESSAGE = 300

CODES = {
    400: "BAD_REQUEST",
    401: "UNAUTHORIZED",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    405: "METHOD_NOT_SUPPORTED",
    408: "TIMEOUT",
    409: "CONFLICT",
    422: "UNPROCESSABLE_CONTENT",
    429: "TOO_MANY_REQUESTS",
    500: "INTERNAL_SERVER_ERROR",
    502: "BAD_GATEWAY",
    503: "SERVICE_UNAVAILABLE",
    504: "GATEWAY_TIMEOUT",
}


def load_run_schema() -> dict[str, Any]:
    """The vendored JSON Schema (draft 2020-12) of the `POST /v2/runs` body."""
    return json.loads(resources.files("sim").joinpath(SCHEMA_RESOURCE).read_text("utf-8"))


def default_keys() -> dict[str, dict[str, Any]]:
    """A demo organisation: a station linked to FVT1 and T1, a second station linked to ICT1
    (so ICT1 is a known procedure the first station may not write), and a user key.

    `procedures` lists procedure names (or ids of procedures the emulator already knows): the
    emulator creates a procedure with a UUID id for each name it does not know yet."""

    def key(kind: str) -> str:
        return f"tp_{kind}_{secrets.token_urlsafe(18)}"

    return {
        key("station"): {
            "type": "station",
            "station": {"id": "stn-demo-bench", "name": "Demo bench"},
            "procedures": ["FVT1", "T1"],
        },
        key("station"): {
            "type": "station",
            "station": {"id": "stn-rework-bench", "name": "Rework bench"},
            "procedures": ["ICT1"],
        },
        key("user"): {
            "type": "user",
            "user": {"id": "usr-demo", "name": "Demo User", "email": "demo@example.com"},
        },
    }


# -- state --------------------------------------------------------------------------------------


@dataclass
class Procedure:
    """A TofuPilot procedure: its own id (a UUID), its dashboard name, and the legacy v1
    identifier (the "FVT1" of v1 uploads), which is the name unless given."""

    id: str
    name: str
    identifier: str | None
    created_at: str


@dataclass
class StoredUnit:
    id: str
    serial_number: str
    part_number: str
    revision_number: str
    created_at: str
    created_by: dict[str, Any]
    sample: str | None = None
    batch_number: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class StoredAttachment:
    id: str
    run_id: str | None  # None: a generic upload (POST /v2/attachments) not linked to a run yet
    name: str
    token: str  # the "signature" of its upload URL
    data: bytes | None = None
    content_type: str | None = None
    finalized: bool = False


@dataclass
class StoredRun:
    id: str
    body: dict[str, Any]  # the run-create body as received
    created_by: dict[str, Any]  # the key's identity (never the key)
    created_at: str
    attachments: list[StoredAttachment] = field(default_factory=list)
    api: str = "v2"  # "v1" when it came through POST /api/v1/runs (body is then normalised)
    v1_body: dict[str, Any] | None = None  # the v1 body as received
    unit_id: str = ""


@dataclass(frozen=True)
class RequestLog:
    method: str
    path: str  # without the query string, as sent (not decoded)
    status: int | None  # None when the connection was closed without an answer
    fault: str = "ok"
    client_run_ref: str | None = None  # POST /v2/runs only: the body's idempotency key


class ApiError(Exception):
    """An error answer: `{code, message, issues?}` with the documented code for `status`; for
    the legacy v1 API (`legacy=True`), `{success: false, error: {message}}` as v1 answers."""

    def __init__(self, status: int, message: str, issues: list[dict[str, Any]] | None = None):
        super().__init__(message)
        self.status, self.message, self.issues = status, message, issues
        self.legacy = False

    def body(self) -> dict[str, Any]:
        if self.legacy:
            return {"success": False, "error": {"message": self.message}}
        body: dict[str, Any] = {"code": CODES.get(self.status, "ERROR"), "message": self.message}
        if self.issues is not None:
            body["issues"] = self.issues
        return body


@dataclass
class Response:
    status: int
    body: Any  # JSON data, or bytes sent as they are
    headers: dict[str, str] = field(default_factory=dict)


# -- helpers ------------------------------------------------------------------------------------


def identity_of(info: Mapping[str, Any]) -> dict[str, Any]:
    """A checked copy of one key's description."""
    kind = info.get("type")
    if kind == "station":
        station = info.get("station") or {}
        if not station.get("id") or not station.get("name"):
            raise ValueError("a station key needs station: {id, name}")
        return {
            "type": "station",
            "station": {"id": station["id"], "name": station["name"]},
            "procedures": list(info.get("procedures", [])),
        }
    if kind == "user":
        user = dict(info.get("user") or {"id": "usr-demo", "name": "Demo User"})
        user.setdefault("email", None)
        return {"type": "user", "user": user, "procedures": []}
    raise ValueError(f"key type must be 'station' or 'user', got {kind!r}")


def public_identity(identity: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in identity.items() if k in ("type", "station", "user")}


def json_body(raw: bytes) -> Any:
    try:
        return json.loads(raw or b"null")
    except ValueError as exc:
        raise ApiError(
            400, f"body is not valid JSON: {exc}", [{"message": str(exc), "path": []}]
        ) from None


def clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


_UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.I)


def is_uuid(value: object) -> bool:
    """What the service's validator accepts as a uuid (8-4-4-4-12 hex digits)."""
    return isinstance(value, str) and _UUID_RE.fullmatch(value) is not None


def new_id() -> str:
    return str(uuid.uuid4())


def iso_duration(started_at: str, ended_at: str) -> str:
    """ISO 8601 duration between two timestamps (`PT5.25S`), as the service answers it."""
    seconds = max(0.0, (parse_time(ended_at) - parse_time(started_at)).total_seconds())
    return f"PT{seconds:.3f}".rstrip("0").rstrip(".") + "S"


def parse_time(text: str) -> datetime:
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
