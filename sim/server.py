"""TwinServer: one simulated instrument on a loopback TCP port, like a LAN instrument's raw
SCPI socket. One thread per client, so a reconnect works while an old connection is stuck.

Faults are injected at the wire, while it runs: `server.faults.no_reply_to` (a regex; matching
messages are swallowed, never executed or answered, optionally only `count` times) and
`server.faults.delay_s` (every reply is late).
"""

from __future__ import annotations

import contextlib
import re
import socket
import threading
from dataclasses import dataclass

_ACCEPT_POLL_S = 0.05  # how often the accept loop notices stop(); bounds stop()'s latency


@dataclass
class WireFaults:
    """What the wire does wrong. Attributes may be changed from tests while serving."""

    no_reply_to: str | None = None
    count: int | None = None  # swallow only this many matching messages; None = all
    delay_s: float = 0.0
    swallowed: int = 0  # how many messages were swallowed so far (tests wait on it)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()

    def swallow(self, message: str) -> bool:
        """Whether `message` gets no reply (counts it against `count`)."""
        with self._lock:
            if not self.no_reply_to or not re.search(self.no_reply_to, message, re.IGNORECASE):
                return False
            if self.count is not None:
                if self.count <= 0:
                    return False
                self.count -= 1
            self.swallowed += 1
            return True

    def clear(self) -> None:
        with self._lock:
            self.no_reply_to, self.count, self.delay_s = None, None, 0.0


class TwinServer:
    """Serve `twin.handle()` on 127.0.0.1:<port chosen by the OS>, newline-terminated."""

    def __init__(self, twin, *, host: str = "127.0.0.1") -> None:
        self.twin = twin
        self.faults = WireFaults()
        self._host = host
        self._listener: socket.socket | None = None
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._clients: set[socket.socket] = set()
        self._lock = threading.Lock()
        self.port = 0

    @property
    def resource(self) -> str:
        """The VISA resource string of this twin."""
        return f"TCPIP::{self._host}::{self.port}::SOCKET"

    @property
    def connection_count(self) -> int:
        """Client connections currently open (for tests)."""
        with self._lock:
            return len(self._clients)

    def start(self) -> TwinServer:
        listener = socket.create_server((self._host, 0))
        listener.settimeout(_ACCEPT_POLL_S)
        self._listener = listener
        self.port = listener.getsockname()[1]
        self._spawn(self._accept_loop, "accept")
        return self

    def drop_connections(self) -> None:
        """Close every client connection, as an instrument reboot would; keep listening."""
        with self._lock:
            clients = list(self._clients)
        for client in clients:
            with contextlib.suppress(OSError):
                client.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in recv()

    def stop(self) -> None:
        """Close the listener and every client connection, and join the threads."""
        self._stopping.set()
        if self._listener is not None:
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)  # wakes accept() on Linux
        self.drop_connections()
        for thread in list(self._threads):
            thread.join(timeout=1.0)
        if self._listener is not None:
            self._listener.close()

    def __enter__(self) -> TwinServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _spawn(self, target, label: str, *args) -> None:
        thread = threading.Thread(
            target=target, args=args, name=f"twin-{self.port}-{label}", daemon=True
        )
        self._threads.append(thread)
        thread.start()

    def _accept_loop(self) -> None:
        assert self._listener is not None
        while not self._stopping.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            client.settimeout(None)
            with self._lock:
                self._clients.add(client)
            self._spawn(self._serve, "client", client)

    def _serve(self, client: socket.socket) -> None:
        buffer = b""
        try:
            while not self._stopping.is_set():
                data = client.recv(4096)
                if not data:
                    return
                buffer += data
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    self._answer(client, line.decode("ascii", "replace").strip())
        except OSError:
            return
        finally:
            with self._lock:
                self._clients.discard(client)
            client.close()

    def _answer(self, client: socket.socket, message: str) -> None:
        if not message or self.faults.swallow(message):
            return
        reply = self.twin.handle(message)
        if reply is None:
            return
        if self.faults.delay_s and self._stopping.wait(self.faults.delay_s):
            return
        client.sendall(reply.encode("ascii") + b"\n")
