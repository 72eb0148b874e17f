"""The session machinery every transport shares (DESIGN.md §7).

`SessionTransport` holds one `Connection` at a time, each with its own lock, plus the
instrument's OS lock (drivers/locking.py); it reconnects with backoff after a lost link and lets
`interrupt()` unblock a call stuck in I/O from another thread. `VisaTransport`
(drivers/visa_transport.py) and `SerialTransport` (drivers/serial_transport.py) subclass it.
"""

from __future__ import annotations

import abc
import contextlib
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from drivers.errors import KIND_INTERRUPTED, KIND_LOST, KIND_REFUSED, InstrumentError
from drivers.transport import locking

# After a timeout a late reply may still arrive; drain until the line has been quiet this long.
_DRAIN_QUIET_S = 0.1
_DRAIN_MAX_S = 1.0
# After a lost link, the next call reconnects: at once, then after these pauses (bounded by
# the call's timeout), because a rebooting instrument may take a moment to listen again.
RECONNECT_BACKOFF_S = (0.05, 0.2, 0.5)


class _PeerClosed(ConnectionError):
    """The peer closed the link (a recv returned b"")."""


class _NoReply(TimeoutError):
    """Nothing (or not a whole reply) arrived within the timeout."""


class Connection:
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
        link: Any = None,
    ) -> None:
        self.inst = handle
        self._dispose = dispose or handle.close  # how to close the handle
        self.sock = sock  # the raw socket of a ::SOCKET session, else None
        self.session = session  # the pyvisa-py session (for its pending buffer), if reachable
        self.link = link  # our own message I/O on `sock` (drivers/socket_io.SocketLink), if used
        self._abort = abort  # how to unblock a call in flight when there is no raw socket
        self.lock = threading.RLock()  # serialises I/O; held for a whole write+read
        self.applied_timeout_ms: int | None = None
        self.owed = False  # the last call timed out: its reply may still arrive (serial)
        self.doing: tuple[str, float] | None = None  # the call in flight: what, since when
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


class SessionTransport(abc.ABC):
    """What every transport shares: one connection at a time, its lock, the instrument's OS
    lock, reconnect with backoff after a lost link, and `interrupt()`.

    Subclasses implement `_connect()` (open a `Connection` or raise InstrumentError) and
    `_translate()` (turn a backend exception into an InstrumentError). A command is never resent:
    when the link drops, the failing call raises ("... will reconnect on next command") and the
    next call reconnects, retrying after RECONNECT_BACKOFF_S within its timeout.
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
        self.resource = resource
        self.name = name
        self.timeout_ms = timeout_ms
        self.open_timeout_ms = open_timeout_ms
        self.read_termination = read_termination
        self.write_termination = write_termination
        self.baud_rate = baud_rate
        self.lock_resource = lock
        self._conn: Connection | None = None
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

    def in_flight(self) -> tuple[str, float] | None:
        """The call in progress, if any: what it is (`'READ?'`, `a read`) and for how long (s).

        For a caller about to interrupt it, to say what the instrument was doing.
        """
        with self._state_lock:
            conn = self._conn
        doing = conn.doing if conn is not None else None
        if doing is None:
            return None
        return doing[0], time.monotonic() - doing[1]

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

    @abc.abstractmethod
    def _connect(self) -> Connection:
        """Open a new connection to the instrument, or raise InstrumentError."""

    @abc.abstractmethod
    def _translate(
        self, conn: Connection, exc: Exception, command: str | None, what: str
    ) -> InstrumentError:
        """Turn a backend exception during `what` into an InstrumentError."""

    def _connection(self) -> Connection:
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

    def _connect_with_backoff(self) -> Connection:
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

    def _detach(self, conn: Connection) -> None:
        """Forget `conn` if it is still current, and close it: the next call reconnects."""
        with self._state_lock:
            if self._conn is conn:
                self._conn = None
        conn.close()

    def _lost(
        self, conn: Connection, detail: str, command: str | None, what: str
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

    @abc.abstractmethod
    def _apply_timeout(self, conn: Connection) -> None:
        """Give the session the current `timeout_ms` (connect() shortens it for *IDN?)."""

    def _call(self, command: str | None, action: Callable[[Connection], Any]) -> Any:
        conn = self._connection()
        what = repr(command) if command is not None else "a read"
        with conn.lock:
            if not conn.begin():
                raise self._error(f"interrupted before {what} was sent", command, KIND_INTERRUPTED)
            conn.doing = (what, time.monotonic())
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
                conn.doing = None
                conn.end()
