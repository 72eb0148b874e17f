"""SerialTransport: a raw serial instrument through pyserial.

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

from drivers.errors import KIND_IO, KIND_REFUSED
from drivers.transport.session import (
    DRAIN_MAX_S,
    DRAIN_QUIET_S,
    Connection,
    NoReply,
    SessionTransport,
)

_SERIAL_PREFIX = "serial://"


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
        return self._call(None, self._receive)

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
            data: bytes = port.read_until(term)
            if not data.endswith(term):
                raise NoReply(data)
            return data[: -len(term)].decode("ascii")
        first: bytes = port.read(1)
        if not first:
            raise NoReply(b"")
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
        data: bytes = conn.inst.read(count)
        if len(data) < count:
            raise NoReply(data)
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

    # -- hooks of SessionTransport._translate ------------------------------------------------

    def _partial_reply(self, conn: Connection, exc: Exception) -> bytes | None:
        return exc.data if isinstance(exc, NoReply) else None

    def _settle_after_timeout(self, conn: Connection) -> bool:
        if not self._drain(conn):
            return False
        conn.owed = True  # a late reply may still come: drained before the next command
        return True

    def _write_timed_out(self, exc: Exception) -> bool:
        import serial

        return isinstance(exc, serial.SerialTimeoutException)

    def _link_gone(self, exc: Exception) -> str | None:
        import serial

        if isinstance(exc, serial.SerialException):
            return str(exc) or type(exc).__name__
        return super()._link_gone(exc)

    def _drain(self, conn: Connection) -> bool:
        """Discard a late reply: read until quiet for a while; False if the link is gone."""
        port = conn.inst
        deadline = time.monotonic() + DRAIN_MAX_S
        try:
            port.timeout = DRAIN_QUIET_S
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
    cause: BaseException | None = exc
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
