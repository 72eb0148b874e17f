"""A TofuPilot v2 emulator: the endpoints a station uses, over real HTTP on loopback.

It exists so the reporter can be tested (and demonstrated) end to end without the SaaS: runs are
validated against the vendored run-create schema, keys and procedure links are checked like the
real service does, and faults (429, 5xx, hangs, a response lost after the run was stored) can be
injected while it serves.

    with TofuPilotEmulator() as tp:
        httpx.post(f"{tp.url}/v2/runs", json=body, headers={"Authorization": f"Bearer {key}"})
        tp.faults.plan(["429", "drop_after_store", "ok"])

Endpoints (under `{url}` = `http://127.0.0.1:PORT/api`): POST/GET `/v2/runs`, GET `/v2/runs/{id}`,
POST `/v2/runs/{id}/attachments`, POST `/v2/attachments/{id}/finalize`, GET `/v2/whoami`,
GET `/v2/stations/current`. Upload URLs point at the emulator itself (`/uploads/{id}`, no key,
like a presigned URL). Run `python -m sim.tofupilot --port 0` to serve it for a demo.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import re
import secrets
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

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
    (so ICT1 is a known procedure the first station may not write), and a user key."""

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


# -- faults -------------------------------------------------------------------------------------

_FAULT_RE = re.compile(r"(ok|drop|drop_after_store|hang|slow|[45]\d\d)(?::(\d+(?:\.\d+)?))?")


class Faults:
    """What the server does wrong, decided per request. Thread-safe; change it while serving.

    Actions (a string each): `ok`; `429` (with `Retry-After: retry_after_s`, or `429:<s>`); any
    other 4xx/5xx status such as `500` or `422` (answered with its documented error code);
    `hang` (hold the request `hang_s`, or `hang:<s>`, or until stop, then close without an
    answer; nothing is stored); `slow:<s>` (wait, then answer normally); `drop` (close without
    answering, nothing stored); `drop_after_store` (do the work, e.g. store the run, then close
    without answering: the lost-response case).

    `plan([...])` queues exact actions for the next matching requests; once the plan is used up,
    `random_mix(seed, weights)` (if set) draws one per request from a seeded generator, else `ok`.
    `match` (a regex searched in "METHOD /path") limits which requests count; default: all.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._plan: deque[str] = deque()
        self._rng: random.Random | None = None
        self._weights: list[tuple[str, float]] = []
        self.match: str | None = None
        self.retry_after_s: float = 1
        self.hang_s: float = 5.0

    def plan(self, actions: Iterable[str], *, match: str | None = None) -> None:
        """Answer the next matching requests with `actions`, in order (replaces any plan)."""
        actions = [_check_action(a) for a in actions]
        with self._lock:
            self._plan = deque(actions)
            self.match = match

    def random_mix(
        self, seed: int, weights: Mapping[str, float], *, match: str | None = None
    ) -> None:
        """After the plan, draw each matching request's action from `weights` (action -> weight)."""
        checked = [(_check_action(a), float(w)) for a, w in weights.items() if w > 0]
        if not checked:
            raise ValueError("random_mix needs at least one action with a positive weight")
        with self._lock:
            self._rng = random.Random(seed)
            self._weights = checked
            self.match = match

    def clear(self) -> None:
        """Back to a well-behaved server."""
        with self._lock:
            self._plan.clear()
            self._rng, self._weights, self.match = None, [], None

    @property
    def pending(self) -> list[str]:
        """Planned actions not used yet."""
        with self._lock:
            return list(self._plan)

    def next_action(self, request_line: str) -> str:
        with self._lock:
            if self.match and not re.search(self.match, request_line):
                return "ok"
            if self._plan:
                return self._plan.popleft()
            if self._rng is not None:
                actions, weights = zip(*self._weights, strict=True)
                return self._rng.choices(actions, weights)[0]
            return "ok"


def _check_action(action: str) -> str:
    if not isinstance(action, str) or not _FAULT_RE.fullmatch(action):
        raise ValueError(
            f"unknown fault {action!r}: use ok, 429[:s], a 4xx/5xx status, hang[:s], slow:s, "
            "drop or drop_after_store"
        )
    return action


# -- state --------------------------------------------------------------------------------------


@dataclass
class StoredAttachment:
    id: str
    run_id: str
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


@dataclass(frozen=True)
class RequestLog:
    method: str
    path: str  # without the query string, as sent (not decoded)
    status: int | None  # None when the connection was closed without an answer
    fault: str = "ok"


class ApiError(Exception):
    """An error answer: `{code, message, issues?}` with the documented code for `status`."""

    def __init__(self, status: int, message: str, issues: list[dict[str, Any]] | None = None):
        super().__init__(message)
        self.status, self.message, self.issues = status, message, issues

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": CODES.get(self.status, "ERROR"), "message": self.message}
        if self.issues is not None:
            body["issues"] = self.issues
        return body


@dataclass
class _Response:
    status: int
    body: Any  # JSON data, or bytes sent as they are
    headers: dict[str, str] = field(default_factory=dict)


# -- the emulator -------------------------------------------------------------------------------


class TofuPilotEmulator:
    """TofuPilot v2 on `http://host:port/api`. Start with `start()` or `with`; state is kept
    across stop()/start() (same port), so a test can take the service down and bring it back."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        keys: dict[str, dict[str, Any]] | None = None,
        on_request: Callable[[RequestLog], None] | None = None,
    ) -> None:
        try:
            from jsonschema import Draft202012Validator
        except ImportError:  # pragma: no cover - jsonschema ships with the test extra
            raise RuntimeError(
                "the TofuPilot emulator needs jsonschema: pip install -e '.[test]'"
            ) from None
        self.host, self.port = host, port
        self.keys = {key: _identity(info) for key, info in (keys or default_keys()).items()}
        self.procedures: set[str] = {p for info in self.keys.values() for p in info["procedures"]}
        self.faults = Faults()
        self.runs: dict[str, StoredRun] = {}
        self.attachments: dict[str, StoredAttachment] = {}
        self.requests: list[RequestLog] = []
        self._on_request = on_request
        self._validator = Draft202012Validator(
            load_run_schema(), format_checker=Draft202012Validator.FORMAT_CHECKER
        )
        self._lock = threading.RLock()
        self._by_ref: dict[str, str] = {}
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> TofuPilotEmulator:
        if self._server is not None:
            return self
        self._stopping.clear()
        server = _Server((self.host, self.port), _Handler)
        server.emulator = self
        self.port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.name = f"tofupilot-emulator-{self.port}"
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving: hung requests are released and open connections are closed."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()  # no new connections from here on
        self._stopping.set()
        server.close_connections()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> TofuPilotEmulator:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def base(self) -> str:
        if self._server is None and not self.port:
            raise RuntimeError("the emulator is not started")
        return f"http://{self.host}:{self.port}"

    @property
    def url(self) -> str:
        """The API base, like `https://www.tofupilot.app/api`: v2 paths go under it."""
        return f"{self.base}/api"

    # -- keys and links -------------------------------------------------------------------------

    def key_of(self, type_: str, index: int = 0) -> str:
        return [k for k, info in self.keys.items() if info["type"] == type_][index]

    @property
    def station_key(self) -> str:
        """The first station key."""
        return self.key_of("station")

    @property
    def user_key(self) -> str:
        return self.key_of("user")

    def link(self, procedure_id: str, key: str | None = None) -> None:
        """Link a procedure to a station key (default: the first), as the dashboard does."""
        with self._lock:
            self._station(key)["procedures"].append(procedure_id)
            self.procedures.add(procedure_id)

    def unlink(self, procedure_id: str, key: str | None = None) -> None:
        """Unlink it; the procedure stays known (runs for it then get 403, not 404)."""
        with self._lock:
            links = self._station(key)["procedures"]
            if procedure_id in links:
                links.remove(procedure_id)

    def _station(self, key: str | None) -> dict[str, Any]:
        info = self.keys[key or self.station_key]
        if info["type"] != "station":
            raise ValueError("not a station key")
        return info

    def reset(self) -> None:
        """Forget runs, attachments and the request log (keys and links stay)."""
        with self._lock:
            self.runs.clear()
            self.attachments.clear()
            self.requests.clear()
            self._by_ref.clear()

    def requests_to(self, method: str, path_regex: str) -> list[RequestLog]:
        """Logged requests with this method whose path fully matches `path_regex`."""
        return [r for r in self.requests if r.method == method and re.fullmatch(path_regex, r.path)]

    # -- request handling (called from the server's threads) ------------------------------------

    def _log(self, entry: RequestLog) -> None:
        with self._lock:
            self.requests.append(entry)
        if self._on_request is not None:
            self._on_request(entry)

    def _hold(self, seconds: float) -> None:
        self._stopping.wait(seconds)

    def _dispatch(
        self, method: str, path: str, query: dict[str, list[str]], headers: Any, raw: bytes
    ) -> _Response:
        segments = path.strip("/").split("/")
        if segments[:1] == ["uploads"] and len(segments) == 2:
            return self._upload(method, unquote(segments[1]), query, headers, raw)
        if segments[:2] != ["api", "v2"]:
            raise ApiError(404, f"no such endpoint: {path}")
        route = segments[2:]
        identity = self._authenticate(headers.get("Authorization"))
        parts = [unquote(s) for s in route]
        match method, parts:
            case "POST", ["runs"]:
                return self._create_run(identity, _json_body(raw))
            case "GET", ["runs"]:
                return self._list_runs(query)
            case "GET", ["runs", run_id]:
                return _Response(200, self._run_view(self._run(run_id)))
            case "POST", ["runs", run_id, "attachments"]:
                return self._create_attachment(run_id, _json_body(raw))
            case "POST", ["attachments", attachment_id, "finalize"]:
                return self._finalize(attachment_id)
            case "GET", ["whoami"]:
                return _Response(200, self._whoami(identity))
            case "GET", ["stations", "current"]:
                return _Response(200, self._current_station(identity))
        raise ApiError(404, f"no such endpoint: {method} {path}")

    def _authenticate(self, header: str | None) -> dict[str, Any]:
        scheme, _, key = (header or "").partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise ApiError(401, "missing API key: send 'Authorization: Bearer <API key>'")
        identity = self.keys.get(key.strip())
        if identity is None:
            raise ApiError(401, "invalid API key")
        return identity

    def _create_run(self, identity: dict[str, Any], body: Any) -> _Response:
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
                return _Response(200, {"id": self._by_ref[ref]})
            run_id = str(uuid.uuid4())
            self.runs[run_id] = StoredRun(
                id=run_id,
                body=body,
                created_by=_public_identity(identity),
                created_at=_now(),
            )
            if ref is not None:
                self._by_ref[ref] = run_id
        return _Response(200, {"id": run_id})

    def _issues(self, body: Any) -> list[dict[str, Any]]:
        errors = sorted(self._validator.iter_errors(body), key=lambda e: list(e.absolute_path))
        return [
            {
                "message": _clip(error.message, MAX_ISSUE_MESSAGE),
                "path": list(error.absolute_path),
            }
            for error in errors[:MAX_ISSUES]
        ]

    def _list_runs(self, query: dict[str, list[str]]) -> _Response:
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
        return _Response(
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

    def _create_attachment(self, run_id: str, body: Any) -> _Response:
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
        return _Response(200, {"id": attachment.id, "upload_url": upload_url})

    def _finalize(self, attachment_id: str) -> _Response:
        with self._lock:
            attachment = self.attachments.get(attachment_id)
            if attachment is None:
                raise ApiError(404, f"attachment {attachment_id!r} not found")
            if attachment.data is None:
                raise ApiError(400, f"attachment {attachment_id!r} has no uploaded file yet")
            attachment.finalized = True
        return _Response(200, {"url": f"{self.base}/uploads/{attachment.id}"})

    def _upload(
        self, method: str, attachment_id: str, query: dict[str, list[str]], headers: Any, raw: bytes
    ) -> _Response:
        with self._lock:
            attachment = self.attachments.get(attachment_id)
        if attachment is None:
            raise ApiError(404, f"upload {attachment_id!r} not found")
        if method == "GET":
            if attachment.data is None:
                raise ApiError(404, "nothing uploaded yet")
            return _Response(
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
        return _Response(200, b"")

    def _whoami(self, identity: dict[str, Any]) -> dict[str, Any]:
        public = _public_identity(identity)
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


# -- HTTP plumbing ------------------------------------------------------------------------------


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    emulator: TofuPilotEmulator

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(*args, **kwargs)

    def track(self, conn: socket.socket, add: bool) -> None:
        with self._connections_lock:
            (self._connections.add if add else self._connections.discard)(conn)

    def close_connections(self) -> None:
        """Close kept-alive connections too, so a stopped emulator really stops answering."""
        with self._connections_lock:
            connections, self._connections = self._connections, set()
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                conn.close()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like the real service behind its proxy
    server: _Server

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in two writes: without this, Nagle + delayed ACK add 40 ms.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.track(self.connection, True)

    def finish(self) -> None:
        with contextlib.suppress(OSError):
            super().finish()
        self.server.track(self.connection, False)

    def do_GET(self) -> None:
        self._handle()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_GET

    def log_message(self, format: str, *args: Any) -> None:
        pass  # requests are logged in emulator.requests (never with headers, so never the key)

    def _handle(self) -> None:
        emulator = self.server.emulator
        split = urlsplit(self.path)
        path, query = split.path, parse_qs(split.query)
        raw = self._read_body()
        action = emulator.faults.next_action(f"{self.command} {path}")
        kind, _, arg = action.partition(":")
        if kind in ("drop", "hang"):
            if kind == "hang":
                emulator._hold(float(arg) if arg else emulator.faults.hang_s)
            return self._drop(emulator, path, action)
        if kind.isdigit():
            headers = {}
            if kind == "429":
                seconds = float(arg) if arg else emulator.faults.retry_after_s
                headers["Retry-After"] = f"{seconds:g}"
            body = ApiError(int(kind), f"injected fault: {action}").body()
            return self._answer(emulator, path, action, _Response(int(kind), body, headers))
        if kind == "slow":
            emulator._hold(float(arg or 0))
        try:
            response = emulator._dispatch(self.command, path, query, self.headers, raw)
        except ApiError as error:
            response = _Response(error.status, error.body())
        except Exception as error:  # a bug in the emulator: answer like a server would
            response = _Response(500, ApiError(500, f"emulator error: {error!r}").body())
        if kind == "drop_after_store":
            return self._drop(emulator, path, action)
        self._answer(emulator, path, action, response)

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _answer(self, emulator: TofuPilotEmulator, path: str, action: str, r: _Response) -> None:
        data = r.body if isinstance(r.body, bytes) else json.dumps(r.body).encode()
        # Logged before answering, so the log is complete as soon as the client has its answer.
        emulator._log(RequestLog(self.command, path, r.status, action))
        self.send_response(r.status)
        headers = {"Content-Type": "application/json", **r.headers}
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _drop(self, emulator: TofuPilotEmulator, path: str, action: str) -> None:
        emulator._log(RequestLog(self.command, path, None, action))
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)


# -- helpers ------------------------------------------------------------------------------------


def _identity(info: Mapping[str, Any]) -> dict[str, Any]:
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


def _public_identity(identity: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in identity.items() if k in ("type", "station", "user")}


def _json_body(raw: bytes) -> Any:
    try:
        return json.loads(raw or b"null")
    except ValueError as exc:
        raise ApiError(
            400, f"body is not valid JSON: {exc}", [{"message": str(exc), "path": []}]
        ) from None


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# -- command line -------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m sim.tofupilot",
        description="Serve a TofuPilot v2 emulator on loopback for demos (Ctrl-C to stop).",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument(
        "--procedures",
        default="FVT1,T1",
        help="procedures linked to the station key, comma-separated (default: FVT1,T1)",
    )
    parser.add_argument(
        "--fault",
        action="append",
        default=[],
        metavar="ACTION",
        help="answer the next request with ACTION (repeat for a sequence): "
        "429[:s], 500, 503, hang[:s], slow:s, drop, drop_after_store, ok",
    )
    parser.add_argument(
        "--mix",
        metavar="SEED:ACTION=W,...",
        help="after the --fault sequence, a seeded random mix, e.g. '7:ok=6,429=1,500=1,"
        "drop_after_store=1'",
    )
    parser.add_argument("--match", help="faults only for requests matching this regex")
    parser.add_argument("--retry-after", type=float, default=1.0, help="seconds sent with 429")
    parser.add_argument("--hang-s", type=float, default=30.0, help="how long 'hang' holds")
    parser.add_argument("-v", "--verbose", action="store_true", help="print each request")
    args = parser.parse_args(argv)

    keys = default_keys()
    station_key = next(k for k, info in keys.items() if info["type"] == "station")
    keys[station_key]["procedures"] = [p.strip() for p in args.procedures.split(",") if p.strip()]
    printer = (lambda r: print(f"{r.method} {r.path} -> {r.status or 'dropped'} ({r.fault})",
                               flush=True)) if args.verbose else None  # fmt: skip
    emulator = TofuPilotEmulator(args.host, args.port, keys=keys, on_request=printer)
    emulator.faults.retry_after_s = args.retry_after
    emulator.faults.hang_s = args.hang_s
    try:
        if args.fault:
            emulator.faults.plan(args.fault, match=args.match)
        if args.mix:
            seed, _, spec = args.mix.partition(":")
            weights = {a: float(w) for a, _, w in (p.partition("=") for p in spec.split(","))}
            emulator.faults.random_mix(int(seed), weights, match=args.match)
    except ValueError as exc:
        parser.error(str(exc))
    with emulator:
        station = emulator.keys[station_key]
        linked = ", ".join(station["procedures"]) or "no procedure"
        print(
            f"TofuPilot emulator serving on {emulator.url}\n"
            f"  station key ({station['station']['name']!r}, linked to {linked}):\n"
            f"    export TOFUPILOT_API_KEY={station_key}\n"
            f"  user key:\n"
            f"    export TOFUPILOT_API_KEY={emulator.user_key}\n"
            f"  station.yaml:\n"
            f"    tofupilot: {{url: {emulator.url}}}\n"
            "Ctrl-C to stop.",
            flush=True,
        )
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            print("stopped", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
