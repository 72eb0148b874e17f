"""`TofuPilotEmulator`: lifecycle, keys and links, the request log, routing and authentication."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import unquote

from .faults import Faults
from .schema import run_schema_validator
from .server import EmulatorServer, RequestHandler
from .state import (
    ApiError,
    Procedure,
    RequestLog,
    Response,
    StoredAttachment,
    StoredRun,
    StoredUnit,
    default_keys,
    identity_of,
    is_uuid,
    json_body,
)
from .v1 import LegacyEndpoints


class TofuPilotEmulator(LegacyEndpoints):
    """TofuPilot on `http://host:port/api` (v2, and the legacy v1 runs API). Start with
    `start()` or `with`; state is kept across stop()/start() (same port), so a test can take the
    service down and bring it back.

    Procedures have UUID ids and names (`procedures`: name -> id, None for a fresh UUID; plus
    every name a key's `procedures` lists). Switches, changeable while serving:
    `strict_sub_units` (a run naming a sub-unit TofuPilot does not know is a 400),
    `part_number_required` (a run for a new unit without part_number is a 400, as when the
    organisation has no serial-number format that gives it), `forbid_run_attachments`
    (station keys get 403 on `POST /v2/runs/{id}/attachments`, as some do; the generic upload
    flow still works). `on_store(run, procedure)` is called for every run stored."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        keys: dict[str, dict[str, Any]] | None = None,
        procedures: Mapping[str, str | None] | None = None,
        on_request: Callable[[RequestLog], None] | None = None,
        on_store: Callable[[StoredRun, Procedure], None] | None = None,
    ) -> None:
        try:
            import jsonschema  # noqa: F401 - checked here for a clear message
        except ImportError:  # pragma: no cover - jsonschema ships with the test extra
            raise RuntimeError(
                "the TofuPilot emulator needs jsonschema: pip install -e '.[test]'"
            ) from None
        self.host, self.port = host, port
        self._lock = threading.RLock()
        self.procedures: dict[str, Procedure] = {}  # by id (lower case)
        for name, procedure_id in (procedures or {}).items():
            self._add_procedure(name, procedure_id)
        self.keys = {key: identity_of(info) for key, info in (keys or default_keys()).items()}
        for info in self.keys.values():
            info["procedures"] = [self._find_or_create(ref).id for ref in info["procedures"]]
        self.units: dict[str, StoredUnit] = {}  # by serial number (lower case)
        self.faults = Faults()
        self.runs: dict[str, StoredRun] = {}
        self.attachments: dict[str, StoredAttachment] = {}
        self.requests: list[RequestLog] = []
        self.strict_sub_units = False
        self.part_number_required = False
        self.forbid_run_attachments = False
        self._on_request = on_request
        self._on_store = on_store
        # Every body is checked against the vendored schema; dereferenced and compiled once
        # per process (schema.py), which makes a large body's check ~15x faster.
        self._validator = run_schema_validator()
        self._by_ref: dict[str, str] = {}
        self._server: EmulatorServer | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> TofuPilotEmulator:
        if self._server is not None:
            return self
        self._stopping.clear()
        server = EmulatorServer((self.host, self.port), RequestHandler)
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

    # -- procedures and links ---------------------------------------------------------------------

    def create_procedure(
        self, name: str, id: str | None = None, *, identifier: str | None = None
    ) -> str:
        """Create a procedure as the dashboard does (linked to no station); returns its id."""
        return self._add_procedure(name, id, identifier).id

    def procedure(self, ref: str) -> Procedure:
        """The procedure with this id, or the only one with this name (case-insensitive).
        KeyError if none, ValueError if several share the name."""
        with self._lock:
            if ref.lower() in self.procedures:
                return self.procedures[ref.lower()]
            named = [p for p in self.procedures.values() if p.name.lower() == ref.lower()]
        if len(named) > 1:
            raise ValueError(f"{len(named)} procedures are named {ref!r}: use an id")
        if not named:
            raise KeyError(f"no procedure {ref!r}")
        return named[0]

    def procedure_id(self, ref: str) -> str:
        """The id of `procedure(ref)`."""
        return self.procedure(ref).id

    def _find_or_create(self, ref: str) -> Procedure:
        try:
            return self.procedure(ref)
        except KeyError:
            return self._add_procedure(ref, ref if is_uuid(ref) else None)

    def link(self, ref: str, key: str | None = None) -> str:
        """Link a procedure (an id, or a name; a name no procedure has creates it) to a station
        key (default: the first), as the dashboard's "Link Procedure" does. Returns its id."""
        with self._lock:
            procedure = self._find_or_create(ref)
            links = self._station(key)["procedures"]
            if procedure.id not in links:
                links.append(procedure.id)
        return procedure.id

    def unlink(self, ref: str, key: str | None = None) -> None:
        """Unlink it; the procedure stays known (a station's runs for it get 403, as before)."""
        with self._lock:
            procedure = self.procedure(ref)
            links = self._station(key)["procedures"]
            if procedure.id in links:
                links.remove(procedure.id)

    def linked(self, key: str | None = None) -> list[Procedure]:
        """The procedures linked to a station key (default: the first)."""
        with self._lock:
            return [self.procedures[p] for p in self._station(key)["procedures"]]

    def _station(self, key: str | None) -> dict[str, Any]:
        info = self.keys[key or self.station_key]
        if info["type"] != "station":
            raise ValueError("not a station key")
        return info

    def reset(self) -> None:
        """Forget runs, units, attachments and the request log (keys, procedures and links
        stay)."""
        with self._lock:
            self.runs.clear()
            self.units.clear()
            self.attachments.clear()
            self.requests.clear()
            self._by_ref.clear()

    def requests_to(self, method: str, path_regex: str) -> list[RequestLog]:
        """Logged requests with this method whose path fully matches `path_regex`."""
        return [r for r in self.requests if r.method == method and re.fullmatch(path_regex, r.path)]

    # -- request handling (called from the server's threads) ------------------------------------

    def log_request(self, entry: RequestLog) -> None:
        with self._lock:
            self.requests.append(entry)
        if self._on_request is not None:
            self._on_request(entry)

    def hold(self, seconds: float) -> None:
        self._stopping.wait(seconds)

    def dispatch(
        self, method: str, path: str, query: dict[str, list[str]], headers: Any, raw: bytes
    ) -> Response:
        segments = path.strip("/").split("/")
        if segments[:1] == ["uploads"] and len(segments) == 2:
            return self._upload(method, unquote(segments[1]), query, headers, raw)
        if segments[:2] == ["api", "v1"]:
            try:
                return self._dispatch_v1(method, path, segments[2:], query, headers, raw)
            except ApiError as error:
                error.legacy = True  # v1 answers errors as {success: false, error: {message}}
                raise
        if segments[:2] != ["api", "v2"]:
            raise ApiError(404, f"no such endpoint: {path}")
        identity = self._authenticate(headers.get("Authorization"))
        parts = [unquote(s) for s in segments[2:]]
        match method, parts:
            case "POST", ["runs"]:
                return self._create_run(identity, json_body(raw))
            case "GET", ["runs"]:
                return self._list_runs(query)
            case "GET", ["runs", run_id]:
                return Response(200, self._run_view(self._run(run_id)))
            case "PATCH", ["runs", run_id]:
                return self._update_run(run_id, json_body(raw))
            case "POST", ["runs", run_id, "attachments"]:
                return self._create_attachment(identity, run_id, json_body(raw))
            case "POST", ["attachments"]:
                return self._new_attachment(json_body(raw), None)
            case "POST", ["attachments", attachment_id, "finalize"]:
                return self._finalize(attachment_id)
            case "GET", ["procedures"]:
                return self._list_procedures(query)
            case "GET", ["procedures", procedure_id]:
                return self._get_procedure(procedure_id)
            case "POST", ["units"]:
                return self._create_unit(identity, json_body(raw))
            case "GET", ["units"]:
                return self._list_units(query)
            case "GET", ["units", serial_number]:
                return self._get_unit(serial_number)
            case "GET", ["whoami"]:
                return Response(200, self._whoami(identity))
            case "GET", ["stations", "current"]:
                return Response(200, self._current_station(identity))
        raise ApiError(404, f"no such endpoint: {method} {path}")

    def _dispatch_v1(
        self,
        method: str,
        path: str,
        route: list[str],
        query: dict[str, list[str]],
        headers: Any,
        raw: bytes,
    ) -> Response:
        identity = self._authenticate(headers.get("Authorization"))
        match method, route:
            case "POST", ["runs"]:
                return self._create_run_v1(identity, json_body(raw))
            case "GET", ["runs"]:
                return self._list_runs_v1(query)
        raise ApiError(404, f"no such endpoint: {method} {path}")

    def _authenticate(self, header: str | None) -> dict[str, Any]:
        scheme, _, key = (header or "").partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise ApiError(401, "missing API key: send 'Authorization: Bearer <API key>'")
        identity = self.keys.get(key.strip())
        if identity is None:
            raise ApiError(401, "invalid API key")
        return identity
