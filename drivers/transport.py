"""Transports: how a driver's strings reach an instrument (DESIGN.md §7).

A driver talks to a `Transport`; it never opens sockets itself. `VisaTransport` goes through
pyvisa with the pure-Python '@py' backend. It adds what production needs on top of pyvisa-py:
errors that name the instrument, recovery after a timeout or a lost link, thread safety, and
`interrupt()`, which unblocks a call stuck in I/O from another thread.

pyvisa is imported lazily so that importing the drivers (and `python -m station --help`) stays fast.
"""

from __future__ import annotations

import contextlib
import re
import select
import socket
import threading
import time
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from drivers.errors import InstrumentError

if TYPE_CHECKING:
    import pyvisa

_rm: pyvisa.ResourceManager | None = None
_rm_lock = threading.Lock()
# pyvisa-py's session table is shared by every resource of the one manager: open one at a time.
_open_lock = threading.Lock()

_VISA_RESOURCE = re.compile(r"^(TCPIP|USB|ASRL|GPIB)", re.IGNORECASE)
_URL_RESOURCE = re.compile(r"^[a-z][a-z0-9+.-]*://", re.IGNORECASE)

# After a timeout a late reply may still arrive; drain until the line has been quiet this long.
_DRAIN_QUIET_S = 0.1
_DRAIN_MAX_S = 1.0


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


class _Connection:
    """One open pyvisa session with its own lock.

    The lock lives here, not in the transport, so that `interrupt()` can detach a connection
    whose lock is held by a stuck thread and let the next call open a fresh one.
    """

    def __init__(self, inst: Any, sock: socket.socket | None) -> None:
        self.inst = inst
        self.sock = sock  # the raw socket of a ::SOCKET session, else None
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
            # shutdown() wakes pyvisa-py's select(); the closed fd then makes its next
            # select()/recv() raise at once instead of waiting out the instrument timeout.
            with contextlib.suppress(OSError):
                self.sock.shutdown(socket.SHUT_RDWR)
            self.sock.close()
        else:
            # Serial and others: pyserial can cancel a blocking read; failing that, wait out
            # the timeout (the call still raises "interrupted" when it returns).
            cancel = getattr(_raw_interface(self.inst), "cancel_read", None)
            if cancel is not None:
                with contextlib.suppress(Exception):
                    cancel()

    def close(self) -> None:
        """Close the session once; safe from any thread and after `interrupt()`."""
        with self._guard:
            if self.closed:
                return
            self.closed = True
        # The socket may already be gone (interrupted); there is nothing else to release.
        with contextlib.suppress(Exception):
            self.inst.close()


def _raw_interface(inst: Any) -> Any:
    """The backend object under a pyvisa-py resource (socket, serial.Serial...), if reachable."""
    try:
        return inst.visalib.sessions[inst.session].interface
    except (AttributeError, KeyError, TypeError):
        return None


class VisaTransport:
    """A VISA resource opened through pyvisa-py, safe to share between threads.

    It connects on `open()` or lazily on the first call. A timeout drains any late reply so the
    next query is not answered by the previous one; a lost link drops the connection so the
    next call reconnects.
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
    ) -> None:
        self.resource = resource
        self.name = name
        self.timeout_ms = timeout_ms
        self.open_timeout_ms = open_timeout_ms
        self.read_termination = read_termination
        self.write_termination = write_termination
        self.baud_rate = baud_rate
        self._conn: _Connection | None = None
        self._state_lock = threading.Lock()  # guards self._conn only; never held during I/O

    def __repr__(self) -> str:
        return f"VisaTransport({self.resource!r}, name={self.name!r})"

    # -- public API -------------------------------------------------------------------------

    def open(self) -> None:
        """Connect now (idempotent), so a wrong address fails before the first command."""
        self._connection()

    def write(self, command: str) -> None:
        self._call(command, lambda inst: inst.write(command))

    def read(self) -> str:
        return self._call(None, lambda inst: inst.read())

    def query(self, command: str) -> str:
        """Write `command` and read its reply; no other thread's I/O can come in between."""

        def write_then_read(inst: Any) -> str:
            inst.write(command)
            return inst.read()

        return self._call(command, write_then_read)

    def interrupt(self) -> None:
        """Make a call blocked in another thread raise `InstrumentError` promptly.

        Detaches the current connection (the next call from any thread opens a fresh one) and
        aborts its I/O. Never waits for the blocked call.
        """
        with self._state_lock:
            conn, self._conn = self._conn, None
        if conn is not None:
            conn.interrupt()

    def close(self) -> None:
        """Close the connection; a later call would reopen it. The manager stays open.

        Like `interrupt()`, it does not wait for a call in flight: it aborts it.
        """
        self.interrupt()

    # -- internals --------------------------------------------------------------------------

    def _error(self, message: str, command: str | None = None) -> InstrumentError:
        return InstrumentError(
            message, instrument=self.name, resource=self.resource, command=command
        )

    def _connection(self) -> _Connection:
        with self._state_lock:
            if self._conn is not None:
                return self._conn
        conn = self._connect()
        with self._state_lock:
            if self._conn is None:
                self._conn = conn
                return conn
            winner = self._conn  # another thread connected first; use its connection
        conn.close()
        return winner

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
            raise self._error(f"cannot open: {exc}") from exc
        sock = None
        if self.resource.upper().endswith("::SOCKET"):
            sock = _raw_interface(inst)
            try:
                # pyvisa-py's connect does not check the outcome: a refused port "opens".
                err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    raise ConnectionRefusedError(err, "connection refused")
                # pyvisa-py leaves Nagle on: 40+ ms per write-then-query without this.
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except (OSError, AttributeError) as exc:
                inst.close()
                raise self._error(f"cannot open: {exc}") from exc
        conn = _Connection(inst, sock)
        conn.applied_timeout_ms = self.timeout_ms
        return conn

    def _detach(self, conn: _Connection) -> None:
        """Forget `conn` if it is still current, and close it: the next call reconnects."""
        with self._state_lock:
            if self._conn is conn:
                self._conn = None
        conn.close()

    def _call(self, command: str | None, action: Any) -> Any:
        conn = self._connection()
        what = repr(command) if command is not None else "a read"
        with conn.lock:
            if not conn.begin():
                raise self._error(f"interrupted before {what} was sent", command)
            try:
                if conn.applied_timeout_ms != self.timeout_ms:
                    conn.inst.timeout = self.timeout_ms
                    conn.applied_timeout_ms = self.timeout_ms
                return action(conn.inst)
            except Exception as exc:
                if conn.interrupted:
                    raise self._error(f"interrupted during {what}", command) from exc
                raise self._translate(conn, exc, command, what) from exc
            finally:
                conn.end()

    def _translate(
        self, conn: _Connection, exc: Exception, command: str | None, what: str
    ) -> InstrumentError:
        """Turn a backend exception into an InstrumentError and leave the link usable."""
        from pyvisa import VisaIOError
        from pyvisa.constants import StatusCode

        if isinstance(exc, VisaIOError) and exc.error_code == StatusCode.error_timeout:
            if not self._drain(conn):
                self._detach(conn)
                return self._error(f"connection closed by the instrument during {what}", command)
            target = f"to {command!r}" if command is not None else "(read)"
            return self._error(f"no reply within {self.timeout_ms} ms {target}", command)
        if isinstance(exc, UnicodeDecodeError):
            self._drain(conn)
            return self._error(f"reply to {what} is not ASCII text", command)
        # Anything else (OSError such as refused/broken pipe, other VISA errors) leaves the
        # session in an unknown state: drop it so the next call reconnects.
        self._detach(conn)
        if isinstance(exc, ConnectionRefusedError):
            return self._error(f"connection refused during {what}", command)
        if isinstance(exc, OSError):
            return self._error(f"connection lost during {what}: {exc}", command)
        return self._error(f"I/O error during {what}: {exc}", command)

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


def open_transport(resource: str, **options: Any) -> Transport:
    """A transport for `resource`: VISA strings (TCPIP, USB, ASRL, GPIB) go through pyvisa-py."""
    if _VISA_RESOURCE.match(resource):
        return VisaTransport(resource, **options)
    name = options.get("name")
    if _URL_RESOURCE.match(resource):
        raise InstrumentError(
            "serial:// and socket:// resources are not supported yet; "
            "use a VISA resource string (e.g. ASRL/dev/ttyUSB0::INSTR)",
            instrument=name,
            resource=resource,
        )
    raise InstrumentError(
        "not a VISA resource string (expected TCPIP::..., USB..., ASRL... or GPIB...)",
        instrument=name,
        resource=resource,
    )
