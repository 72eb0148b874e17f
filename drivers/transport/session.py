"""The session machinery every transport shares.

`SessionTransport` holds one `Connection` at a time, each with its own lock, plus the
instrument's OS lock (`drivers.transport.locking`); it reconnects with backoff after a lost link,
lets `interrupt()` unblock a call stuck in I/O from another thread, and turns every backend
exception into an `InstrumentError` with one template method (`_translate`) whose hooks each
transport fills in. `VisaTransport` (`visa_transport`) and `SerialTransport` (`serial_transport`)
subclass it.

Three promises the rest of the framework builds on:

- `close()` is final. Afterwards every call, from any thread, raises
  `InstrumentError(kind="closed")`; nothing reopens the link or re-takes the OS lock. (A phase
  thread that swallowed its cancel must not switch a supply back on after teardown.)
- `set_call_guard()` installs a check run at the start of every I/O call, before any lock or I/O:
  when it returns a reason, the call raises `InstrumentError(kind="stopped")`. The runner uses it
  to refuse I/O from a stopped phase's thread without `drivers` importing `station`.
- `interrupt()` says whether it could abort. Raw sockets and serial ports can be aborted at once.
  pyvisa-py cannot abort a read on USB, VXI-11 (`TCPIP::...::INSTR`), HiSLIP or GPIB: there
  `interrupt()` returns False and keeps the session; the stuck call ends at its VISA timeout
  (raising "interrupted"), and the next call waits for it (bounded), clears the session (device
  clear and drain) and reuses it, instead of opening a second session to an instrument that is
  still in a transfer.
"""

from __future__ import annotations

import abc
import contextlib
import socket
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from drivers.errors import (
    KIND_CLOSED,
    KIND_GARBAGE,
    KIND_INTERRUPTED,
    KIND_IO,
    KIND_LOST,
    KIND_REFUSED,
    KIND_STOPPED,
    KIND_TIMEOUT,
    InstrumentError,
)
from drivers.transport import locking, trace

# After a timeout a late reply may still arrive; drain until the line has been quiet this long.
DRAIN_QUIET_S = 0.1
DRAIN_MAX_S = 1.0
# After a lost link, the next call reconnects: at once, then after these pauses (bounded by
# the call's timeout), because a rebooting instrument may take a moment to listen again.
RECONNECT_BACKOFF_S = (0.05, 0.2, 0.5)
# How long a call waits, beyond the session's timeout, for another thread's call on the same
# connection to end (that call is bounded by the timeout plus at most one drain).
BUSY_WAIT_SLACK_S = DRAIN_MAX_S + 1.0

CallGuard = Callable[[], str | None]
"""A check run before every I/O call: None to allow it, or the reason it is refused."""

_T = TypeVar("_T")


def describe(command: str | None) -> str:
    """A call as messages name it: `'READ?'`, or `a read` for a bare read."""
    return repr(command) if command is not None else "a read"


class PeerClosed(ConnectionError):
    """The peer closed the link (a recv returned b"")."""


class NoReply(TimeoutError):
    """Nothing (or not a whole reply) arrived within the timeout."""

    def __init__(self, data: bytes = b"") -> None:
        super().__init__()
        self.data = data  # what did arrive: the start of a reply that never completed


class Connection:
    """One open session (pyvisa resource or pyserial port) with its own lock.

    The lock lives here, not in the transport, so that `interrupt()` can detach a connection
    whose lock is held by a stuck thread and let the next call open a fresh one. A connection
    that cannot be aborted (`can_abort` False) is never detached while a call is in flight: it is
    marked `needs_clear` and reused once that call has ended.
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
        self._dispose: Callable[[], None] = dispose or handle.close  # how to close the handle
        self.sock = sock  # the raw socket of a ::SOCKET session, else None
        self.session = session  # the pyvisa-py session (for its pending buffer), if reachable
        self.link = link  # our own message I/O on `sock` (socket_io.SocketLink), if used
        self._abort = abort  # how to unblock a call in flight when there is no raw socket
        self.can_abort = sock is not None or abort is not None
        self.lock = threading.RLock()  # serialises I/O; held for a whole write+read
        self.applied_timeout_ms: int | None = None
        self.owed = False  # the last call timed out: its reply may still arrive (serial)
        # The call in flight: its command (None for a bare read) and since when.
        self.doing: tuple[str | None, float] | None = None
        self._guard = threading.Lock()  # protects the flags below; held for microseconds
        self.busy = False
        self.interrupted = False  # no call may begin any more; closed when the last one ends
        self.stranded = False  # interrupt() could not abort the call in flight: it must raise
        self.needs_clear = False  # a call was cut short unaborted: clear before the next one
        self.closed = False
        self._after_close: Callable[[], None] | None = None

    def begin(self) -> bool:
        """Mark a call in flight (caller holds `lock`); False if interrupted meanwhile."""
        with self._guard:
            if self.interrupted or self.closed:
                return False
            self.busy = True
            return True

    def end(self) -> None:
        """Mark the call ended; close the session if it was interrupted meanwhile."""
        with self._guard:
            self.busy = False
            self.stranded = False
            dispose = self.interrupted
        if dispose:
            self.close()

    def strand(self) -> bool:
        """For `interrupt()`: True if a call is in flight that cannot be aborted (the connection
        is then kept and marked for a clear); else mark it interrupted (no call begins any more)
        and return False: the caller detaches it and calls `abort_or_close()`."""
        with self._guard:
            if self.busy and not self.can_abort and not self.closed:
                self.stranded = self.needs_clear = True
                return True
            self.interrupted = True
            return False

    def shut(self, after_close: Callable[[], None] | None) -> None:
        """For a final `close()`: no call begins any more; abort the call in flight if possible.

        `after_close` (releasing the OS lock) runs once the session is closed: at once, or,
        when the call in flight cannot be aborted, when it ends, so the instrument stays locked
        for as long as this process may still be talking to it.
        """
        with self._guard:
            self.interrupted = True
            deferred = self.busy and not self.can_abort and not self.closed
            if deferred:
                self.stranded = True
                self._after_close = after_close
        if not deferred:
            self.abort_or_close()
            if after_close is not None:
                after_close()

    def abort_or_close(self) -> None:
        """Abort the call in flight, if any, without waiting for it; else close the session.

        Never blocks on `lock`. The aborted call closes the session when it ends (`end()`).
        """
        with self._guard:
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
            after, self._after_close = self._after_close, None
        # The socket may already be gone (interrupted); there is nothing else to release.
        with contextlib.suppress(Exception):
            self._dispose()
        if after is not None:
            after()


class SessionTransport(abc.ABC):
    """What every transport shares: one connection at a time, its lock, the instrument's OS
    lock, reconnect with backoff after a lost link, `interrupt()`, a final `close()`, the call
    guard, and the translation of backend exceptions into `InstrumentError`.

    Subclasses implement `_connect()` (open a `Connection` or raise InstrumentError),
    `_apply_timeout()`, `_drain()` and the hooks of `_translate()` (`_partial_reply`,
    `_settle_after_timeout`, `_link_gone`, optionally `_write_timed_out`). A command is never
    resent: when the link drops, the failing call raises ("... will reconnect on next command")
    and the next call reconnects, retrying after RECONNECT_BACKOFF_S within its timeout.
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
        self._closed = False  # close() was called: final
        self._call_guard: CallGuard | None = None
        self._reconnect_pending = False  # the last link was lost: reconnect with backoff
        self._answered = False  # some call ever succeeded (a drop before that is a refusal)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.resource!r}, name={self.name!r})"

    # -- public API -------------------------------------------------------------------------

    def open(self) -> None:
        """Lock the instrument and connect now (idempotent), so a wrong address fails early."""
        self._check_guard(None, "opening the connection")
        self._connection()

    @property
    def closed(self) -> bool:
        """Whether `close()` was called (every call raises kind "closed" since)."""
        return self._closed

    def set_call_guard(self, guard: CallGuard | None) -> None:
        """Run `guard()` at the start of every I/O call (before any lock or I/O), in the
        calling thread; if it returns a string, the call raises `InstrumentError` of kind
        "stopped" whose message includes it. None removes the guard."""
        self._call_guard = guard

    def in_flight(self) -> tuple[str, float] | None:
        """The call in progress, if any: what it is (`'READ?'`, `a read`) and for how long (s).

        For a caller about to interrupt it, to say what the instrument was doing.
        """
        with self._state_lock:
            conn = self._conn
        doing = conn.doing if conn is not None else None
        if doing is None:
            return None
        return describe(doing[0]), time.monotonic() - doing[1]

    def interrupt(self) -> bool:
        """Make a call blocked in another thread end promptly, if this transport can.

        Returns True if the call in flight was aborted (it raises kind "interrupted" at once) or
        nothing was in flight; the connection is then dropped and the next call opens a fresh
        one. Returns False if the call in flight cannot be aborted (pyvisa-py on USB, VXI-11,
        HiSLIP, GPIB): the connection is kept, the call raises "interrupted" when it ends at its
        timeout, and the next call waits for that, clears the session and reuses it. Never waits
        for the blocked call. The instrument stays locked.
        """
        with self._state_lock:
            conn = self._conn
            if conn is None:
                return True
            if conn.strand():
                return False
            self._conn = None
        conn.abort_or_close()
        return True

    def close(self) -> None:
        """Close the connection and release the instrument's lock, for good (idempotent).

        Like `interrupt()`, it does not wait for a call in flight: it aborts it (or, where that
        is impossible, lets it end at its timeout, keeping the OS lock until then). Every later
        call, from any thread, raises `InstrumentError` of kind "closed".
        """
        with self._state_lock:
            if self._closed:
                return
            self._closed = True
            conn, self._conn = self._conn, None
            held, self._resource_lock = self._resource_lock, None
        release = held.release if held is not None else None
        if conn is not None:
            conn.shut(release)
        elif release is not None:
            release()

    # -- internals --------------------------------------------------------------------------

    def _error(
        self, message: str, command: str | None = None, kind: str | None = None
    ) -> InstrumentError:
        return InstrumentError(
            message, instrument=self.name, resource=self.resource, command=command, kind=kind
        )

    def _closed_error(self, what: str, command: str | None) -> InstrumentError:
        return self._error(f"closed: {what} not sent", command, KIND_CLOSED)

    def _check_guard(self, command: str | None, what: str) -> None:
        guard = self._call_guard
        if guard is not None:
            reason = guard()
            if reason is not None:
                raise self._error(f"{what} refused: {reason}", command, KIND_STOPPED)

    @abc.abstractmethod
    def _connect(self) -> Connection:
        """Open a new connection to the instrument, or raise InstrumentError."""

    @abc.abstractmethod
    def _apply_timeout(self, conn: Connection) -> None:
        """Give the session the current `timeout_ms` (connect() shortens it for *IDN?)."""

    @abc.abstractmethod
    def _drain(self, conn: Connection) -> bool:
        """Discard whatever is buffered or still arriving; False if the link is gone."""

    def _clear(self, conn: Connection) -> bool:
        """Make a session whose last call was cut short usable again; False if it is not.

        Default: drain. VisaTransport's drain is a device clear on sessions it cannot abort.
        """
        return self._drain(conn)

    def _connection(self) -> Connection:
        with self._state_lock:
            existing = self._conn
            if existing is not None:
                return existing
            if self._closed:
                raise self._closed_error("the connection is not reopened", None)
            need_lock = self.lock_resource and self._resource_lock is None
        if need_lock:
            self._take_resource_lock()
        conn = self._connect_with_backoff()
        with self._state_lock:
            if self._conn is None and not self._closed:
                self._conn = conn
                return conn
            winner = self._conn  # another thread connected first (or close() came meanwhile)
        conn.close()
        if winner is None:
            raise self._closed_error("the connection is not reopened", None)
        return winner

    def _take_resource_lock(self) -> None:
        """Take the instrument's OS lock, outside `_state_lock`: resolving a host name may take
        a while, and `interrupt()` must never wait for it."""
        held = locking.acquire(self.resource, instrument=self.name)
        with self._state_lock:
            if not self._closed and self._resource_lock is None:
                self._resource_lock = held
                return
            closed = self._closed
        held.release()  # closed meanwhile, or another thread took it first (counted once)
        if closed:
            raise self._closed_error("the connection is not reopened", None)

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
            if self._closed:
                break
            tries += 1
            try:
                conn = self._connect()
            except InstrumentError as exc:
                last = exc
                continue
            self._reconnect_pending = False
            return conn
        if last is None:
            raise self._closed_error("the connection is not reopened", None)
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

    def _ready_connection(self, command: str | None, what: str) -> Connection:
        """The current connection with its lock held and a call begun on it.

        Waits for another thread's call on it at most the timeout plus BUSY_WAIT_SLACK_S. If the
        last call was cut short by an `interrupt()` that could not abort it, the session is
        cleared first; if that fails, it is replaced (the old call has ended by then).
        """
        while True:
            conn = self._connection()
            wait_s = self.timeout_ms / 1000 + BUSY_WAIT_SLACK_S
            if not conn.lock.acquire(timeout=wait_s):
                doing = conn.doing
                busy_with = f" with {describe(doing[0])}" if doing is not None else ""
                raise self._error(
                    f"{what} not sent: the instrument is still busy{busy_with} from another "
                    f"thread after {wait_s:.1f} s",
                    command,
                    KIND_TIMEOUT,
                )
            if not conn.begin():
                conn.lock.release()
                if self._closed:
                    raise self._closed_error(what, command)
                raise self._error(f"interrupted before {what} was sent", command, KIND_INTERRUPTED)
            if not conn.needs_clear:
                return conn
            conn.needs_clear = False
            try:
                cleared = self._clear(conn)
            except Exception:
                cleared = False
            if cleared:
                return conn
            conn.end()
            conn.lock.release()
            self._detach(conn)  # the next pass opens a fresh session

    def _call(self, command: str | None, action: Callable[[Connection], _T]) -> _T:
        """Run `action` on the connection: guard, lock, timeout, and errors translated.

        Every call goes through the hook installed at the seam (`trace.installed`: the I/O trace
        of `--trace-io`, the replay check of `--sim-replay`), if any.
        """
        hook = trace.hook
        if hook is not None:
            return hook.call(self, command, lambda: self._call_session(command, action, hook))
        return self._call_session(command, action, None)

    def _call_session(
        self,
        command: str | None,
        action: Callable[[Connection], _T],
        hook: trace.IoHook | None,
    ) -> _T:
        """`_call` inside the hook, which is told (`on_wire`) when the command is about to be
        sent: a call refused or failed before that never reached the instrument.

        The common case (connection open, idle, nothing to clear) takes no other lock than the
        connection's; everything else goes through `_ready_connection`.
        """
        if self._call_guard is not None:
            self._check_guard(command, describe(command))
        conn = self._conn  # read without _state_lock: a stale one fails begin() below
        if conn is not None and conn.lock.acquire(False):
            if conn.needs_clear or not conn.begin():
                conn.lock.release()
                conn = self._ready_connection(command, describe(command))
        else:
            conn = self._ready_connection(command, describe(command))
        try:
            conn.doing = (command, time.monotonic())
            try:
                if conn.applied_timeout_ms != self.timeout_ms:
                    self._apply_timeout(conn)
                    conn.applied_timeout_ms = self.timeout_ms
                if hook is not None:
                    hook.on_wire(self, command)
                result = action(conn)
                self._answered = True
            except InstrumentError:
                raise
            except Exception as exc:
                if conn.interrupted or conn.stranded:
                    raise self._interrupted(conn, command) from exc
                raise self._translate(conn, exc, command, describe(command)) from exc
            if conn.stranded:  # the reply came, but after interrupt(): the caller was stopped
                raise self._interrupted(conn, command)
            return result
        finally:
            conn.doing = None
            conn.end()
            conn.lock.release()

    def _interrupted(self, conn: Connection, command: str | None) -> InstrumentError:
        what = describe(command)
        if conn.stranded:
            started = conn.doing[1] if conn.doing is not None else time.monotonic()
            return self._error(
                f"interrupted during {what}: this session cannot abort a call, so it ran until "
                f"it ended ({time.monotonic() - started:.1f} s, timeout {self.timeout_ms} ms)",
                command,
                KIND_INTERRUPTED,
            )
        return self._error(f"interrupted during {what}", command, KIND_INTERRUPTED)

    # -- error translation: one template, per-transport hooks --------------------------------

    def _translate(
        self, conn: Connection, exc: Exception, command: str | None, what: str
    ) -> InstrumentError:
        """Turn a backend exception during `what` into an InstrumentError, and leave the link
        usable for the next call (drained, or dropped so that call reconnects)."""
        target = f"to {command!r}" if command is not None else "(read)"
        partial = self._partial_reply(conn, exc)
        if partial is not None:
            if not self._settle_after_timeout(conn):
                return self._lost(conn, "closed by the instrument", command, what)
            if partial:
                return self._error(
                    f"incomplete reply {target} within {self.timeout_ms} ms: got "
                    f"{partial[:60]!r}{self._partial_hint()}",
                    command,
                    KIND_TIMEOUT,
                )
            return self._error(
                f"no reply within {self.timeout_ms} ms {target}", command, KIND_TIMEOUT
            )
        if isinstance(exc, UnicodeDecodeError):
            self._drain(conn)
            return self._error(f"reply to {what} is not ASCII text", command, KIND_GARBAGE)
        if self._write_timed_out(exc):
            self._drain(conn)
            return self._error(
                f"could not send {what} within {self.timeout_ms} ms", command, KIND_TIMEOUT
            )
        gone = self._link_gone(exc)
        if gone is not None:
            return self._lost(conn, gone, command, what)
        # Anything else leaves the session in an unknown state: drop it, the next call reconnects.
        self._detach(conn)
        return self._error(f"I/O error during {what}: {exc}", command, KIND_IO)

    @abc.abstractmethod
    def _partial_reply(self, conn: Connection, exc: Exception) -> bytes | None:
        """If `exc` means "no whole reply within the timeout": what did arrive (b"" if
        nothing). Else None."""

    @abc.abstractmethod
    def _settle_after_timeout(self, conn: Connection) -> bool:
        """After a timeout, make sure a late reply cannot be read as the next one (drain it,
        or drop the connection); False if the link turned out to be closed."""

    def _partial_hint(self) -> str:
        """What to add after the bytes of an incomplete reply."""
        return ""

    def _write_timed_out(self, exc: Exception) -> bool:
        """Whether `exc` means a command could not be sent within the timeout."""
        return False

    def _link_gone(self, exc: Exception) -> str | None:
        """If `exc` means the link is gone (closed, refused, OS error): a short description."""
        if isinstance(exc, PeerClosed):
            return "closed by the instrument"
        if isinstance(exc, ConnectionRefusedError):
            return "connection refused"
        if isinstance(exc, OSError):
            return str(exc) or type(exc).__name__
        return None
