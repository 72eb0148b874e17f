"""Transports: how a driver's strings reach an instrument (DESIGN.md §7).

A driver talks to a `Transport`; it never opens sockets itself. `VisaTransport` goes through
pyvisa with the pure-Python '@py' backend; `SerialTransport` (drivers/serial_transport.py) goes
through pyserial for raw serial devices. Both add what production needs: errors that name the
instrument, recovery after a timeout or a lost link (reconnect with backoff, never a silent
resend), thread safety, an OS lock per instrument (drivers/locking.py) so two processes cannot
drive one instrument, and `interrupt()`, which unblocks a call stuck in I/O from another thread.

pyvisa is imported lazily so that importing the drivers (and `python -m station --help`) stays fast.
"""

from __future__ import annotations

import contextlib
import os
import re
import select
import socket
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from drivers import locking
from drivers.errors import (
    KIND_GARBAGE,
    KIND_INTERRUPTED,
    KIND_IO,
    KIND_LOST,
    KIND_REFUSED,
    KIND_TIMEOUT,
    InstrumentError,
)

if TYPE_CHECKING:
    import pyvisa

_rm: pyvisa.ResourceManager | None = None
_rm_lock = threading.Lock()
# pyvisa-py's session table is shared by every resource of the one manager: open one at a time.
_open_lock = threading.Lock()

_VISA_RESOURCE = re.compile(r"^(TCPIP|USB|ASRL|GPIB)", re.IGNORECASE)
_URL_RESOURCE = re.compile(r"^[a-z][a-z0-9+.-]*://", re.IGNORECASE)
# pyserial URL handlers worth routing to SerialTransport ("serial://" is ours: a device path).
SERIAL_SCHEMES = ("serial", "socket", "rfc2217", "loop", "spy")
_SERIAL_RESOURCE = re.compile(
    rf"^(?:(?:{'|'.join(SERIAL_SCHEMES)})://|/dev/|COM\d+$)", re.IGNORECASE
)

# After a timeout a late reply may still arrive; drain until the line has been quiet this long.
_DRAIN_QUIET_S = 0.1
_DRAIN_MAX_S = 1.0
# After a lost link, the next call reconnects: at once, then after these pauses (bounded by
# the call's timeout), because a rebooting instrument may take a moment to listen again.
RECONNECT_BACKOFF_S = (0.05, 0.2, 0.5)


def get_resource_manager() -> pyvisa.ResourceManager:
    """The process-wide pyvisa-py resource manager, created on first use.

    It is shared by every transport and never closed by one: closing a manager closes the
    sessions of every instrument opened through it (pyvisa#742).
    """
    global _rm
    with _rm_lock:
        if _rm is None:
            import pyvisa

            _rm = pyvisa.ResourceManager("@py")
        return _rm


@runtime_checkable
class Transport(Protocol):
    """The seam between a driver and the wire: strings in, strings out."""

    resource: str
    timeout_ms: int

    def open(self) -> None: ...
    def write(self, command: str) -> None: ...
    def read(self) -> str: ...
    def query(self, command: str) -> str: ...
    def interrupt(self) -> None: ...
    def close(self) -> None: ...


class _PeerClosed(ConnectionError):
    """The peer closed the link (a recv returned b"")."""


class _NoReply(TimeoutError):
    """Nothing (or not a whole reply) arrived within the timeout."""


class _Connection:
    """One open session (pyvisa resource or pyserial port) with its own lock.

    The lock lives here, not in the transport, so that `interrupt()` can detach a connection
    whose lock is held by a stuck thread and let the next call open a fresh one.
    """

    def __init__(
        self,
        handle: Any,
        *,
        sock: socket.socket | None = None,
        session: Any = None,
        abort: Callable[[], None] | None = None,
        dispose: Callable[[], None] | None = None,
    ) -> None:
        self.inst = handle
        self._dispose = dispose or handle.close  # how to close the handle
        self.sock = sock  # the raw socket of a ::SOCKET session, else None
        self.session = session  # the pyvisa-py session (for its pending buffer), if reachable
        self._abort = abort  # how to unblock a call in flight when there is no raw socket
        self.lock = threading.RLock()  # serialises I/O; held for a whole write+read
        self.applied_timeout_ms: int | None = None
        self._guard = threading.Lock()  # protects the flags below; held for microseconds
        self.busy = False
        self.interrupted = False
        self.closed = False

    def begin(self) -> bool:
        """Mark a call in flight (caller holds `lock`); False if interrupted meanwhile."""
        with self._guard:
            if self.interrupted or self.closed:
                return False
            self.busy = True
            return True

    def end(self) -> None:
        with self._guard:
            self.busy = False
            dispose = self.interrupted
        if dispose:
            self.close()

    def interrupt(self) -> None:
        """Abort the call in flight, if any, without waiting for it; never blocks on `lock`."""
        with self._guard:
            self.interrupted = True
            busy = self.busy
        if not busy:
            self.close()
            return
        if self.sock is not None:
            # shutdown() wakes a select(); the closed fd then makes the next select()/recv()
            # raise at once instead of waiting out the instrument timeout.
            with contextlib.suppress(OSError):
                self.sock.shutdown(socket.SHUT_RDWR)
            self.sock.close()
        elif self._abort is not None:
            # Serial: pyserial can cancel a blocking read; failing that, the call still raises
            # "interrupted" when its timeout ends.
            with contextlib.suppress(Exception):
                self._abort()

    def close(self) -> None:
        """Close the session once; safe from any thread and after `interrupt()`."""
        with self._guard:
            if self.closed:
                return
            self.closed = True
        # The socket may already be gone (interrupted); there is nothing else to release.
        with contextlib.suppress(Exception):
            self._dispose()


def _raw_session(inst: Any) -> Any:
    """The pyvisa-py session object of a resource, if reachable."""
    try:
        return inst.visalib.sessions[inst.session]
    except (AttributeError, KeyError, TypeError):
        return None


def _raw_interface(inst: Any) -> Any:
    """The backend object under a pyvisa-py resource (socket, serial.Serial...), if reachable."""
    return getattr(_raw_session(inst), "interface", None)


class SessionTransport:
    """What every transport shares: one connection at a time, its lock, the instrument's OS
    lock, reconnect with backoff after a lost link, and `interrupt()`.

    Subclasses implement `_connect()` (open a `_Connection` or raise InstrumentError) and
    `_translate()` (turn a backend exception into an InstrumentError). A command is never resent:
    when the link drops, the failing call raises ("... will reconnect on next command") and the
    next call reconnects, retrying after RECONNECT_BACKOFF_S within its timeout.
    """

    def __init__(
        self, resource: str, *, name: str, timeout_ms: int, open_timeout_ms: int, lock: bool
    ) -> None:
        self.resource = resource
        self.name = name
        self.timeout_ms = timeout_ms
        self.open_timeout_ms = open_timeout_ms
        self.lock_resource = lock
        self._conn: _Connection | None = None
        self._state_lock = threading.Lock()  # guards the fields below; never held during I/O
        self._resource_lock: locking.ResourceLock | None = None
        self._reconnect_pending = False  # the last link was lost: reconnect with backoff
        self._answered = False  # some call ever succeeded (a drop before that is a refusal)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.resource!r}, name={self.name!r})"

    # -- public API -------------------------------------------------------------------------

    def open(self) -> None:
        """Lock the instrument and connect now (idempotent), so a wrong address fails early."""
        self._connection()

    def interrupt(self) -> None:
        """Make a call blocked in another thread raise `InstrumentError` promptly.

        Detaches the current connection (the next call from any thread opens a fresh one) and
        aborts its I/O. Never waits for the blocked call. The instrument stays locked.
        """
        with self._state_lock:
            conn, self._conn = self._conn, None
        if conn is not None:
            conn.interrupt()

    def close(self) -> None:
        """Close the connection and release the instrument's lock; a later call reopens both.

        Like `interrupt()`, it does not wait for a call in flight: it aborts it.
        """
        self.interrupt()
        with self._state_lock:
            held, self._resource_lock = self._resource_lock, None
        if held is not None:
            held.release()

    # -- internals --------------------------------------------------------------------------

    def _error(
        self, message: str, command: str | None = None, kind: str | None = None
    ) -> InstrumentError:
        return InstrumentError(
            message, instrument=self.name, resource=self.resource, command=command, kind=kind
        )

    def _connect(self) -> _Connection:
        raise NotImplementedError

    def _translate(
        self, conn: _Connection, exc: Exception, command: str | None, what: str
    ) -> InstrumentError:
        raise NotImplementedError

    def _connection(self) -> _Connection:
        with self._state_lock:
            if self._conn is not None:
                return self._conn
            if self.lock_resource and self._resource_lock is None:
                self._resource_lock = locking.acquire(self.resource, instrument=self.name)
        conn = self._connect_with_backoff()
        with self._state_lock:
            if self._conn is None:
                self._conn = conn
                return conn
            winner = self._conn  # another thread connected first; use its connection
        conn.close()
        return winner

    def _connect_with_backoff(self) -> _Connection:
        """Connect; after a lost link, retry (an instrument may be rebooting) within the timeout."""
        if not self._reconnect_pending:
            return self._connect()
        deadline = time.monotonic() + self.timeout_ms / 1000
        tries = 0
        last: InstrumentError | None = None
        for delay in (0.0, *RECONNECT_BACKOFF_S):
            if delay:
                if time.monotonic() + delay > deadline:
                    break
                time.sleep(delay)
            tries += 1
            try:
                conn = self._connect()
            except InstrumentError as exc:
                last = exc
                continue
            self._reconnect_pending = False
            return conn
        assert last is not None
        raise self._error(
            f"could not reconnect after the link was lost ({tries} tries): {last.message}",
            kind=last.kind,
        ) from last

    def _detach(self, conn: _Connection) -> None:
        """Forget `conn` if it is still current, and close it: the next call reconnects."""
        with self._state_lock:
            if self._conn is conn:
                self._conn = None
        conn.close()

    def _lost(
        self, conn: _Connection, detail: str, command: str | None, what: str
    ) -> InstrumentError:
        """The link dropped: forget it, reconnect (with backoff) on the next call."""
        self._detach(conn)
        self._reconnect_pending = True
        if not self._answered:
            return self._error(
                f"the connection was closed before the instrument ever answered ({detail}, "
                f"during {what}): it refuses connections (another client connected?)",
                command,
                KIND_REFUSED,
            )
        return self._error(
            f"connection lost during {what}: {detail}; will reconnect on next command",
            command,
            KIND_LOST,
        )

    def _apply_timeout(self, conn: _Connection) -> None:
        """Give the session the current `timeout_ms` (connect() shortens it for *IDN?)."""

    def _call(self, command: str | None, action: Callable[[_Connection], Any]) -> Any:
        conn = self._connection()
        what = repr(command) if command is not None else "a read"
        with conn.lock:
            if not conn.begin():
                raise self._error(f"interrupted before {what} was sent", command, KIND_INTERRUPTED)
            try:
                if conn.applied_timeout_ms != self.timeout_ms:
                    self._apply_timeout(conn)
                    conn.applied_timeout_ms = self.timeout_ms
                result = action(conn)
                self._answered = True
                return result
            except InstrumentError:
                raise
            except Exception as exc:
                if conn.interrupted:
                    raise self._error(
                        f"interrupted during {what}", command, KIND_INTERRUPTED
                    ) from exc
                raise self._translate(conn, exc, command, what) from exc
            finally:
                conn.end()


class VisaTransport(SessionTransport):
    """A VISA resource opened through pyvisa-py, safe to share between threads.

    It connects on `open()` or lazily on the first call. A timeout drains any late reply so the
    next query is not answered by the previous one; a lost link drops the connection so the
    next call reconnects. On a ::SOCKET it notices a closed peer at once (pyvisa-py alone waits
    out the whole timeout, since it takes recv() == b"" for "no data yet").
    """

    def __init__(
        self,
        resource: str,
        *,
        name: str = "instrument",
        timeout_ms: int = 3000,
        open_timeout_ms: int = 2000,
        read_termination: str = "\n",
        write_termination: str = "\n",
        baud_rate: int | None = None,
        lock: bool = True,
    ) -> None:
        super().__init__(
            resource, name=name, timeout_ms=timeout_ms, open_timeout_ms=open_timeout_ms, lock=lock
        )
        self.read_termination = read_termination
        self.write_termination = write_termination
        self.baud_rate = baud_rate

    # -- public API -------------------------------------------------------------------------

    def write(self, command: str) -> None:
        self._call(command, lambda conn: self._send(conn, command))

    def read(self) -> str:
        return self._call(None, lambda conn: self._receive(conn, None))

    def query(self, command: str) -> str:
        """Write `command` and read its reply; no other thread's I/O can come in between."""

        def write_then_read(conn: _Connection) -> str:
            self._send(conn, command)
            return self._receive(conn, command)

        return self._call(command, write_then_read)

    def query_bytes(self, command: str, count: int) -> bytes:
        """Write `command` and read exactly `count` raw bytes (no termination expected)."""

        def write_then_read(conn: _Connection) -> bytes:
            self._send(conn, command)
            if conn.sock is not None and not self._pending(conn):
                _wait_readable(conn.sock, self.timeout_ms)
            return bytes(conn.inst.read_bytes(count))

        return self._call(command, write_then_read)

    # -- internals --------------------------------------------------------------------------

    def _send(self, conn: _Connection, command: str) -> None:
        if conn.sock is not None:
            _check_peer(conn.sock)
        conn.inst.write(command)

    def _receive(self, conn: _Connection, command: str | None) -> str:
        if conn.sock is not None and not self._pending(conn):
            _wait_readable(conn.sock, self.timeout_ms)
        return conn.inst.read()

    @staticmethod
    def _pending(conn: _Connection) -> bool:
        """Whether pyvisa-py already holds received bytes (then the socket may not be readable)."""
        return bool(getattr(conn.session, "_pending_buffer", None))

    def _apply_timeout(self, conn: _Connection) -> None:
        conn.inst.timeout = self.timeout_ms

    def _connect(self) -> _Connection:
        options: dict[str, Any] = {
            "read_termination": self.read_termination,
            "write_termination": self.write_termination,
            "timeout": self.timeout_ms,
            "open_timeout": self.open_timeout_ms,
            "encoding": "ascii",
        }
        if self.baud_rate is not None and self.resource.upper().startswith("ASRL"):
            options["baud_rate"] = self.baud_rate
        rm = get_resource_manager()
        try:
            with _open_lock:
                inst = rm.open_resource(self.resource, **options)
        except Exception as exc:  # pyvisa-py raises a bare Exception("could not connect...")
            kind = KIND_REFUSED if _looks_refused(exc) else KIND_IO
            raise self._error(f"cannot open: {exc}", kind=kind) from exc
        session = _raw_session(inst)
        sock = None
        abort = None
        if self.resource.upper().endswith("::SOCKET"):
            sock = getattr(session, "interface", None)
            try:
                # pyvisa-py's connect does not check the outcome: a refused port "opens".
                err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    raise ConnectionRefusedError(err, os.strerror(err))
                # pyvisa-py leaves Nagle on: 40+ ms per write-then-query without this.
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except (OSError, AttributeError) as exc:
                inst.close()
                kind = KIND_REFUSED if isinstance(exc, ConnectionRefusedError) else KIND_IO
                raise self._error(f"cannot open: {exc}", kind=kind) from exc
        else:
            abort = getattr(getattr(session, "interface", None), "cancel_read", None)
        conn = _Connection(inst, sock=sock, session=session, abort=abort)
        conn.applied_timeout_ms = self.timeout_ms
        return conn

    def _translate(
        self, conn: _Connection, exc: Exception, command: str | None, what: str
    ) -> InstrumentError:
        """Turn a backend exception into an InstrumentError and leave the link usable."""
        from pyvisa import VisaIOError
        from pyvisa.constants import StatusCode

        timed_out = isinstance(exc, _NoReply) or (
            isinstance(exc, VisaIOError) and exc.error_code == StatusCode.error_timeout
        )
        if timed_out:
            partial = bytes(getattr(conn.session, "_pending_buffer", b"") or b"")
            if not self._drain(conn):
                return self._lost(conn, "closed by the instrument", command, what)
            target = f"to {command!r}" if command is not None else "(read)"
            if partial:
                return self._error(
                    f"incomplete reply {target} within {self.timeout_ms} ms: got "
                    f"{partial[:60]!r} but no read termination {self.read_termination!r}",
                    command,
                    KIND_TIMEOUT,
                )
            return self._error(
                f"no reply within {self.timeout_ms} ms {target}", command, KIND_TIMEOUT
            )
        if isinstance(exc, UnicodeDecodeError):
            self._drain(conn)
            return self._error(f"reply to {what} is not ASCII text", command, KIND_GARBAGE)
        if isinstance(exc, _PeerClosed):
            return self._lost(conn, "closed by the instrument", command, what)
        # Anything else (OSError such as refused/broken pipe, other VISA errors) leaves the
        # session in an unknown state: drop it so the next call reconnects.
        if isinstance(exc, ConnectionRefusedError):
            return self._lost(conn, "connection refused", command, what)
        if isinstance(exc, OSError):
            return self._lost(conn, str(exc) or type(exc).__name__, command, what)
        self._detach(conn)
        return self._error(f"I/O error during {what}: {exc}", command, KIND_IO)

    def _drain(self, conn: _Connection) -> bool:
        """Discard whatever is buffered or still arriving; False if the peer has closed."""
        if conn.sock is None:
            try:
                conn.inst.clear()
            except Exception:
                return False
            return True
        # Our own loop rather than inst.clear(): pyvisa-py's spins forever on a closed peer.
        from pyvisa.constants import BufferOperation

        conn.inst.flush(BufferOperation.discard_read_buffer_no_io)
        deadline = time.monotonic() + _DRAIN_MAX_S
        try:
            while time.monotonic() < deadline:
                readable, _, _ = select.select([conn.sock], [], [], _DRAIN_QUIET_S)
                if not readable:
                    return True
                if not conn.sock.recv(4096):
                    return False
        except (OSError, ValueError):
            return False
        return True


def _check_peer(sock: socket.socket) -> None:
    """Raise _PeerClosed if the peer has closed the socket (before we send on it)."""
    readable, _, _ = select.select([sock], [], [], 0)
    if not readable:
        return
    try:
        data = sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except BlockingIOError:
        return
    if not data:
        raise _PeerClosed("closed by the instrument")


def _wait_readable(sock: socket.socket, timeout_ms: int) -> None:
    """Wait for a reply to start; _NoReply after the timeout, _PeerClosed on EOF."""
    readable, _, _ = select.select([sock], [], [], timeout_ms / 1000)
    if not readable:
        raise _NoReply()
    try:
        data = sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except BlockingIOError:
        return
    if not data:
        raise _PeerClosed("closed by the instrument")


def _looks_refused(exc: BaseException) -> bool:
    text = str(exc).lower()
    return (
        isinstance(exc, ConnectionRefusedError) or "refused" in text or "could not connect" in text
    )


def is_serial_resource(resource: str) -> bool:
    """Whether `resource` names a raw serial port for pyserial rather than a VISA resource.

    `serial:///dev/ttyUSB0`, `/dev/ttyUSB0`, `COM3`, and pyserial URLs such as
    `socket://host:port` (a serial instrument behind a TCP bridge, or its simulated twin).
    """
    return bool(_SERIAL_RESOURCE.match(resource.strip()))


def open_transport(resource: str, **options: Any) -> Transport:
    """A transport for `resource`, not yet connected.

    VISA strings (TCPIP, USB, ASRL, GPIB) go through pyvisa-py (`VisaTransport`); serial device
    paths and pyserial URLs (see `is_serial_resource`) through pyserial (`SerialTransport`).
    """
    if _VISA_RESOURCE.match(resource):
        return VisaTransport(resource, **options)
    if is_serial_resource(resource):
        from drivers.serial_transport import SerialTransport

        return SerialTransport(resource, **options)
    name = options.get("name")
    if _URL_RESOURCE.match(resource):
        raise InstrumentError(
            f"unsupported URL scheme; use a VISA resource string (TCPIP::..., ASRL...) or a "
            f"serial port ({', '.join(s + '://' for s in SERIAL_SCHEMES)}, /dev/..., COMn)",
            instrument=name,
            resource=resource,
        )
    raise InstrumentError(
        "not an instrument resource (expected TCPIP::..., USB..., ASRL..., GPIB..., a serial "
        "device such as /dev/ttyUSB0 or serial:///dev/ttyUSB0, or socket://host:port)",
        instrument=name,
        resource=resource,
    )
