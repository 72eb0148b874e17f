"""`TofuPilotEmulator`: lifecycle, keys and links, the request log, routing and authentication."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote

from .api import Endpoints
from .faults import Faults
from .schema import run_schema_validator
from .server import EmulatorServer, RequestHandler
from .state import (
    ApiError,
    RequestLog,
    Response,
    StoredAttachment,
    StoredRun,
    default_keys,
    identity_of,
    json_body,
)


class TofuPilotEmulator(Endpoints):
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
            import jsonschema  # noqa: F401 - checked here for a clear message
        except ImportError:  # pragma: no cover - jsonschema ships with the test extra
            raise RuntimeError(
                "the TofuPilot emulator needs jsonschema: pip install -e '.[test]'"
            ) from None
        self.host, self.port = host, port
        self.keys = {key: identity_of(info) for key, info in (keys or default_keys()).items()}
        self.procedures: set[str] = {p for info in self.keys.values() for p in info["procedures"]}
        self.faults = Faults()
        self.runs: dict[str, StoredRun] = {}
        self.attachments: dict[str, StoredAttachment] = {}
        self.requests: list[RequestLog] = []
        self._on_request = on_request
        # Every body is checked against the vendored schema; dereferenced and compiled once
        # per process (schema.py), which makes a large body's check ~15x faster.
        self._validator = run_schema_validator()
        self._lock = threading.RLock()
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
        if segments[:2] != ["api", "v2"]:
            raise ApiError(404, f"no such endpoint: {path}")
        route = segments[2:]
        identity = self._authenticate(headers.get("Authorization"))
        parts = [unquote(s) for s in route]
        match method, parts:
            case "POST", ["runs"]:
                return self._create_run(identity, json_body(raw))
            case "GET", ["runs"]:
                return self._list_runs(query)
            case "GET", ["runs", run_id]:
                return Response(200, self._run_view(self._run(run_id)))
            case "POST", ["runs", run_id, "attachments"]:
                return self._create_attachment(run_id, json_body(raw))
            case "POST", ["attachments", attachment_id, "finalize"]:
                return self._finalize(attachment_id)
            case "GET", ["whoami"]:
                return Response(200, self._whoami(identity))
            case "GET", ["stations", "current"]:
                return Response(200, self._current_station(identity))
        raise ApiError(404, f"no such endpoint: {method} {path}")

    def _authenticate(self, header: str | None) -> dict[str, Any]:
        scheme, _, key = (header or "").partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise ApiError(401, "missing API key: send 'Authorization: Bearer <API key>'")
        identity = self.keys.get(key.strip())
        if identity is None:
            raise ApiError(401, "invalid API key")
        return identity
