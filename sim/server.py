"""TwinServer: one simulated instrument on a loopback TCP port, like a LAN instrument's raw
SCPI socket. One thread per client, so a reconnect works while an old connection is stuck.

Faults are injected at the wire, while it runs, through `server.faults` (`WireFaults`): no reply,
late replies, garbage replies, a dropped connection, connections refused at open, and an error
left in the instrument's queue.
"""

from __future__ import annotations

import contextlib
import re
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Self

_ACCEPT_POLL_S = 0.05  # how often the accept loop notices stop(); bounds stop()'s latency


# Fault kinds as named on the command line (`--wire-fault dmm:KIND[:PATTERN]`).
FAULT_KINDS = ("no-reply", "slow", "garbage", "drop", "refuse", "error")
DEFAULT_GARBAGE = b"\xff\xfe\x80\x00garbage"


@dataclass
class WireFaults:
    """What the wire does wrong. Attributes may be changed from tests while serving.

    Pattern faults act on messages matching a regex (case-insensitive):
    `no_reply_to` swallows them (never executed or answered); `garbage_to` executes them but
    answers `garbage` instead of the reply; `drop_on` closes the connection instead of
    answering (a pty twin goes silent for `drop_s` instead); `error_on` executes them and then
    pushes `error` into the instrument's error queue; `delay_to` executes them and answers
    `delay_s` late. `count` limits how many matching messages are affected in all (None: every
    one). Without `delay_to`, `delay_s` makes every reply late. `refuse` makes a TCP twin accept
    and at once close every new connection.
    """

    no_reply_to: str | None = None
    count: int | None = None
    delay_s: float = 0.0
    delay_to: str | None = None
    garbage_to: str | None = None
    garbage: bytes = DEFAULT_GARBAGE
    drop_on: str | None = None
    drop_s: float = 0.5
    error_on: str | None = None
    error: tuple[int, str] = (-222, "Data out of range")
    refuse: bool = False
    swallowed: int = 0  # how many messages were swallowed so far (tests wait on it)
    dropped: int = 0  # how many connections were dropped (or silences begun) so far

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        # How many times each kind acted, by its command-line name: a fault that never fired
        # tested nothing (a typo in its pattern), and `SimBench.unfired_faults()` says so.
        self.fired: dict[str, int] = {}

    def fire(self, kind: str) -> None:
        """Count one action of fault `kind` (the servers call it for `refuse`)."""
        with self._lock:
            self.fired[kind] = self.fired.get(kind, 0) + 1

    def action(self, message: str) -> str | None:
        """The fault to apply to `message`: "no-reply", "drop", "garbage", "error", "slow" or
        None."""
        with self._lock:
            rules = (
                ("no-reply", self.no_reply_to),
                ("drop", self.drop_on),
                ("garbage", self.garbage_to),
                ("error", self.error_on),
                ("slow", self.delay_to),
            )
            kind = next((k for k, p in rules if p and re.search(p, message, re.IGNORECASE)), None)
            if kind is None:
                return None
            if self.count is not None:
                if self.count <= 0:
                    return None
                self.count -= 1
            if kind == "no-reply":
                self.swallowed += 1
            elif kind == "drop":
                self.dropped += 1
            self.fired[kind] = self.fired.get(kind, 0) + 1
            return kind

    def delay_of(self, action: str | None) -> float:
        """How late the reply to a message given `action` is sent, in seconds."""
        if action == "slow":
            return self.delay_s
        if self.delay_to is None and self.delay_s:
            self.fire("slow")  # every reply is late: each one counts
            return self.delay_s
        return 0.0

    def swallow(self, message: str) -> bool:
        """Whether `message` gets no reply (counts it against `count`)."""
        return self.action(message) == "no-reply"

    def set(self, kind: str, pattern: str | None = None) -> None:
        """Turn on one fault as written on the command line: KIND with an optional PATTERN.

        The PATTERN is a regex of the messages affected (default: every message), except for
        `slow`, where it is the delay in seconds (default 1), optionally followed by `:REGEX` to
        delay only the replies to those messages, and `error`, where it may also be
        `CODE,"TEXT"` to choose the error pushed after the next message.
        """
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown wire fault {kind!r}; valid: {', '.join(FAULT_KINDS)}")
        regex = pattern or "."
        if kind == "no-reply":
            self.no_reply_to = regex
        elif kind == "slow":
            delay, _, only = (pattern or "").partition(":")
            try:
                self.delay_s = float(delay) if delay else 1.0
            except ValueError:
                raise ValueError(f"slow takes a delay in seconds, not {pattern!r}") from None
            self.delay_to = only or None
        elif kind == "garbage":
            self.garbage_to = regex
        elif kind == "drop":
            self.drop_on, self.count = regex, 1 if self.count is None else self.count
        elif kind == "refuse":
            self.refuse = True
        else:
            match = re.fullmatch(r'\s*([+-]?\d+)\s*,\s*"?(.*?)"?\s*', pattern or "")
            if match:
                self.error, self.error_on, self.count = (int(match[1]), match[2]), ".", 1
            else:
                self.error_on = regex

    def clear(self) -> None:
        with self._lock:
            self.no_reply_to, self.count, self.delay_s, self.delay_to = None, None, 0.0, None
            self.garbage_to, self.drop_on, self.error_on, self.refuse = None, None, None, False


class LoopbackServer:
    """A twin's TCP listener on loopback: one thread per client, stopped with `stop()`.

    The part every twin server shares (the raw SCPI socket here, VXI-11 in `sim.vxi11_server`):
    the listener on an OS-chosen port, the accept loop, a thread per client, dropping every
    connection as an instrument reboot would, and a stop that wakes and joins every thread.
    Subclasses serve one client in `_serve(client)` and may refuse one in `_admit(client)`.
    `_lock` is a condition: subclasses may wait on it for their own state; `stop()` wakes them.
    """

    def __init__(self, twin: Any, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.twin = twin
        self.faults = WireFaults()
        self._host = host
        self._listener: socket.socket | None = None
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._clients: set[socket.socket] = set()
        self._lock = threading.Condition()
        self.port = port  # 0: chosen by the OS at start()
        # Called with every message the twin receives (`station sim --trace`), in its thread.
        self.on_message: Callable[[str], None] | None = None

    @property
    def connection_count(self) -> int:
        """Client connections currently open (for tests)."""
        with self._lock:
            return len(self._clients)

    def start(self) -> Self:
        listener = socket.create_server((self._host, self.port))
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
        with self._lock:
            self._lock.notify_all()  # a subclass's waits end too
        if self._listener is not None:
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)  # wakes accept() on Linux
        self.drop_connections()
        for thread in list(self._threads):
            thread.join(timeout=1.0)
        if self._listener is not None:
            self._listener.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _spawn(self, target: Callable[..., None], label: str, *args: Any) -> None:
        thread = threading.Thread(
            target=target, args=args, name=f"twin-{self.port}-{label}", daemon=True
        )
        self._threads.append(thread)
        thread.start()

    def _admit(self, client: socket.socket) -> bool:
        """Whether to serve a connection the kernel accepted (False: it is closed at once)."""
        return True

    def _accept_loop(self) -> None:
        assert self._listener is not None
        while not self._stopping.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if not self._admit(client):
                with contextlib.suppress(OSError):
                    client.shutdown(socket.SHUT_RDWR)
                client.close()
                continue
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            client.settimeout(None)
            with self._lock:
                self._clients.add(client)
            self._spawn(self._serve, "client", client)

    def _serve(self, client: socket.socket) -> None:
        raise NotImplementedError  # each server speaks its own protocol


class TwinServer(LoopbackServer):
    """Serve `twin.handle()` on 127.0.0.1:<port chosen by the OS>, newline-terminated."""

    @property
    def resource(self) -> str:
        """The VISA resource string of this twin."""
        return f"TCPIP::{self._host}::{self.port}::SOCKET"

    def _admit(self, client: socket.socket) -> bool:
        if self.faults.refuse:  # "refuse": accepted by the kernel, closed at once
            self.faults.fire("refuse")
            return False
        return True

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
                    if not self._answer(client, line.decode("ascii", "replace").strip()):
                        return  # fault: drop the connection
        except OSError:
            return
        finally:
            with self._lock:
                self._clients.discard(client)
            client.close()

    def _answer(self, client: socket.socket, message: str) -> bool:
        """Execute and answer one message; False to drop the connection."""
        if not message:
            return True
        if self.on_message is not None:
            self.on_message(message)
        action = self.faults.action(message)
        if action == "no-reply":
            return True
        if action == "drop":
            with contextlib.suppress(OSError):
                client.shutdown(socket.SHUT_RDWR)
            return False
        reply = self.twin.handle(message)
        if action == "error":
            self.twin.push_error(*self.faults.error)
        if reply is None:
            return True
        delay = self.faults.delay_of(action)
        if delay and self._stopping.wait(delay):
            return True
        raw = reply if isinstance(reply, bytes) else reply.encode("ascii")  # bytes: a binary block
        payload = self.faults.garbage if action == "garbage" else raw
        client.sendall(payload + b"\n")
        return True
