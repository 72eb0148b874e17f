"""The stdlib HTTP plumbing: a threading server that can drop its connections, and the handler
that applies the fault plan before handing a request to the emulator."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit

from .faults import Faults
from .state import ApiError, RequestLog, Response


class EmulatorCore(Protocol):
    """What the HTTP front end needs of the emulator (kept a protocol, so this module does not
    import the emulator that imports it)."""

    faults: Faults
    requests: list[RequestLog]

    def hold(self, seconds: float) -> None: ...

    def dispatch(
        self, method: str, path: str, query: dict[str, list[str]], headers: Any, raw: bytes
    ) -> Response: ...

    def log_request(self, entry: RequestLog) -> None: ...


class EmulatorServer(ThreadingHTTPServer):
    daemon_threads = True
    emulator: EmulatorCore

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


class RequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like the real service behind its proxy
    server: EmulatorServer
    _ref: str | None = None  # the client_run_ref of the request being handled, if any

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
        self._ref = _client_run_ref(self.command, path, raw)
        action = emulator.faults.next_action(f"{self.command} {path}")
        kind, _, arg = action.partition(":")
        if kind in ("drop", "hang"):
            if kind == "hang":
                emulator.hold(float(arg) if arg else emulator.faults.hang_s)
            return self._drop(emulator, path, action)
        if kind.isdigit():
            headers = {}
            if kind == "429":
                seconds = float(arg) if arg else emulator.faults.retry_after_s
                headers["Retry-After"] = f"{seconds:g}"
            body = ApiError(int(kind), f"injected fault: {action}").body()
            return self._answer(emulator, path, action, Response(int(kind), body, headers))
        if kind == "slow":
            emulator.hold(float(arg or 0))
        try:
            response = emulator.dispatch(self.command, path, query, self.headers, raw)
        except ApiError as error:
            response = Response(error.status, error.body())
        except Exception as error:  # a bug in the emulator: answer like a server would
            response = Response(500, ApiError(500, f"emulator error: {error!r}").body())
        if kind == "hang_after_store":
            emulator.hold(float(arg) if arg else emulator.faults.hang_s)
        if kind in ("drop_after_store", "hang_after_store"):
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

    def _answer(self, emulator: EmulatorCore, path: str, action: str, r: Response) -> None:
        data = r.body if isinstance(r.body, bytes) else json.dumps(r.body).encode()
        # Logged before answering, so the log is complete as soon as the client has its answer.
        emulator.log_request(RequestLog(self.command, path, r.status, action, self._ref))
        self.send_response(r.status)
        headers = {"Content-Type": "application/json", **r.headers}
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _drop(self, emulator: EmulatorCore, path: str, action: str) -> None:
        emulator.log_request(RequestLog(self.command, path, None, action, self._ref))
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)


def _client_run_ref(method: str, path: str, raw: bytes) -> str | None:
    """The idempotency key of a run-create request, for the request log (None otherwise)."""
    if method != "POST" or not path.rstrip("/").endswith("/v2/runs"):
        return None
    try:
        body = json.loads(raw or b"null")
    except ValueError:
        return None
    ref = body.get("client_run_ref") if isinstance(body, dict) else None
    return ref if isinstance(ref, str) else None
