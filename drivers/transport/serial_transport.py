"""SerialTransport: a raw serial instrument through pyserial (DESIGN.md §7).

Same protocol and semantics as `VisaTransport` (a lock per connection, the instrument's OS lock,
`interrupt()`, every error an `InstrumentError`, reconnect with backoff after a lost link), for
instruments that VISA handles badly: serial devices with no line terminator at all, whose
replies have a fixed length (`query(command, reply_length=N)`, `query_bytes`) or end when the
line goes quiet (`read()` with `read_termination=""`).

Resources: a device path (`/dev/ttyUSB0`, `/dev/pts/3`, `COM3`), the same as `serial://<path>`,
or any pyserial URL (`socket://host:port` for a serial-to-LAN bridge or a simulated twin).
pyserial is imported lazily, like pyvisa.
"""

from __future__ import annotations

import contextlib
import errno
import socket
import time
from typing import Any

from drivers.errors import KIND_GARBAGE, KIND_IO, KIND_REFUSED, KIND_TIMEOUT, InstrumentError
from drivers.transport.session import (
    _DRAIN_MAX_S,
    _DRAIN_QUIET_S,
    Connection,
    SessionTransport,
    _NoReply,
)

_SERIAL_PREFIX = "serial://"


class _Partial(_NoReply):
    """The reply started but did not complete within the timeout."""

    def __init__(self, data: bytes) -> None:
        super().__init__()
        self.data = data


class SerialTransport(SessionTransport):
    """A serial port opened through pyserial's `serial_for_url`, safe to share between threads.

    `read_termination=""` means the instrument sends no terminator: a plain read returns once
    the line has been quiet for `idle_ms` after the first byte; `query(..., reply_length=N)`
    reads exactly N bytes instead, which is faster and exact when the reply length is known.
    """

    def __init__(self, resource: str, *, idle_ms: int = 50, **options: Any) -> None:
        super().__init__(resource, **options)
        self.baud_rate = self.baud_rate or 9600
        self.idle_ms = idle_ms

    @property
    def url(self) -> str:
        """What pyserial opens: the resource without our `serial://` prefix."""
        if self.resource.lower().startswith(_SERIAL_PREFIX):
            return self.resource[len(_SERIAL_PREFIX) :]
        return self.resource

    # -- public API -------------------------------------------------------------------------

    def write(self, command: str) -> None:
        self._call(command, lambda conn: self._send(conn, command))

    def read(self) -> str:
        return self._call(None, lambda conn: self._receive(conn))

    def read_bytes(self, count: int) -> bytes:
        """Exactly `count` raw bytes, or InstrumentError after the timeout."""
        return self._call(None, lambda conn: self._read_exact(conn, count))

    def query(self, command: str, reply_length: int | None = None) -> str:
        """Write `command` and read its reply (`reply_length` bytes if given) as ASCII text."""

        def write_then_read(conn: Connection) -> str:
            self._send(conn, command)
            if reply_length is not None:
                return self._read_exact(conn, reply_length).decode("ascii")
            return self._receive(conn)

        return self._call(command, write_then_read)

    def query_bytes(self, command: str, count: int) -> bytes:
        """Write `command` and read exactly `count` raw bytes (e.g. a binary status byte)."""

        def write_then_read(conn: Connection) -> bytes:
            self._send(conn, command)
            return self._read_exact(conn, count)

        return self._call(command, write_then_read)

    # -- I/O --------------------------------------------------------------------------------

    def _send(self, conn: Connection, command: str) -> None:
        if conn.owed:
            # The last call timed out: its reply may have come since. Read now, it would be
            # taken for the reply to this command (a serial line has no other way to tell).
            self._drain(conn)
            conn.owed = False
        conn.inst.write((command + self.write_termination).encode("ascii"))

    def _receive(self, conn: Connection) -> str:
        port = conn.inst
        if self.read_termination:
            term = self.read_termination.encode("ascii")
            data = port.read_until(term)
            if not data.endswith(term):
                raise _Partial(data)
            return data[: -len(term)].decode("ascii")
        first = port.read(1)
        if not first:
            raise _Partial(b"")
        return (first + self._read_while_busy(conn)).decode("ascii")

    def _read_while_busy(self, conn: Connection) -> bytes:
        """Bytes that keep arriving with gaps shorter than `idle_ms`, up to the timeout."""
        port = conn.inst
        chunks: list[bytes] = []
        deadline = time.monotonic() + self.timeout_ms / 1000
        port.timeout = self.idle_ms / 1000
        try:
            while time.monotonic() < deadline:
                chunk = port.read(port.in_waiting or 1)
                if not chunk:
                    break
                chunks.append(chunk)
        finally:
            port.timeout = self.timeout_ms / 1000
        return b"".join(chunks)

    def _read_exact(self, conn: Connection, count: int) -> bytes:
        data = conn.inst.read(count)
        if len(data) < count:
            raise _Partial(data)
        return data

    # -- session ----------------------------------------------------------------------------

    def _apply_timeout(self, conn: Connection) -> None:
        conn.inst.timeout = self.timeout_ms / 1000
        conn.inst.write_timeout = self.timeout_ms / 1000

    def _connect(self) -> Connection:
        import serial

        try:
            port = serial.serial_for_url(
                self.url,
                baudrate=self.baud_rate,
                timeout=self.timeout_ms / 1000,
                write_timeout=self.timeout_ms / 1000,
            )
        except (serial.SerialException, OSError, ValueError) as exc:
            kind = KIND_REFUSED if _nothing_there(exc) else KIND_IO
            raise self._error(f"cannot open: {exc}", kind=kind) from exc
        # A posix port can cancel a blocked read; other handlers (socket://) are closed instead,
        # which wakes their select() just the same.
        abort = getattr(port, "cancel_read", None)
        if abort is None or type(port).__module__.startswith("serial.urlhandler"):
            abort = port.close
        dispose = port.close
        if hasattr(port, "_socket"):
            abort = dispose = lambda: _close_socket_port(port)
        # A serial line outlives its connections: what arrived while nobody listened (the late
        # reply to an interrupted call) would be read as the reply to the next command.
        with contextlib.suppress(Exception):
            port.reset_input_buffer()
        conn = Connection(port, abort=abort, dispose=dispose)
        conn.applied_timeout_ms = self.timeout_ms
        return conn

    def _translate(
        self, conn: Connection, exc: Exception, command: str | None, what: str
    ) -> InstrumentError:
        """Turn a pyserial/OS exception into an InstrumentError and leave the link usable."""
        import serial

        target = f"to {command!r}" if command is not None else "(read)"
        if isinstance(exc, _Partial):
            if not self._drain(conn):
                return self._lost(conn, "closed by the instrument", command, what)
            conn.owed = True  # a late reply may still come: drained before the next command
            if exc.data:
                return self._error(
                    f"incomplete reply {target} within {self.timeout_ms} ms: got {exc.data[:60]!r}",
                    command,
                    KIND_TIMEOUT,
                )
            return self._error(
                f"no reply within {self.timeout_ms} ms {target}", command, KIND_TIMEOUT
            )
        if isinstance(exc, UnicodeDecodeError):
            self._drain(conn)
            return self._error(f"reply to {what} is not ASCII text", command, KIND_GARBAGE)
        if isinstance(exc, serial.SerialTimeoutException):
            self._drain(conn)
            return self._error(
                f"could not send {what} within {self.timeout_ms} ms", command, KIND_TIMEOUT
            )
        if isinstance(exc, (serial.SerialException, OSError)):
            return self._lost(conn, str(exc) or type(exc).__name__, command, what)
        self._detach(conn)
        return self._error(f"I/O error during {what}: {exc}", command, KIND_IO)

    def _drain(self, conn: Connection) -> bool:
        """Discard a late reply: read until quiet for a while; False if the link is gone."""
        port = conn.inst
        deadline = time.monotonic() + _DRAIN_MAX_S
        try:
            port.timeout = _DRAIN_QUIET_S
            while time.monotonic() < deadline:
                if not port.read(port.in_waiting or 1):
                    break
            port.reset_input_buffer()
            port.timeout = self.timeout_ms / 1000
        except Exception:
            return False
        return True


def _nothing_there(exc: BaseException) -> bool:
    """Whether an open failed because nothing is at that address (vs. permissions, etc.)."""
    cause = exc
    while cause is not None:
        if getattr(cause, "errno", None) in (errno.ENOENT, errno.ECONNREFUSED, errno.ENODEV):
            return True
        cause = cause.__cause__ or cause.__context__
    text = str(exc).lower()
    return "refused" in text or "no such file" in text


def _close_socket_port(port: Any) -> None:
    """Close a pyserial socket:// port without its close()'s 0.3 s sleep ("for quick
    reconnects"), which would delay every lost-link error and interrupt()."""
    sock = port._socket
    port._socket = None
    port.is_open = False
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        sock.close()
