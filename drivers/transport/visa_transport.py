"""VisaTransport: a VISA resource through pyvisa-py's '@py' backend (DESIGN.md §7).

Every resource is opened through pyvisa-py, but for a ::SOCKET the messages then go over that
session's own socket through `SocketLink` (drivers/socket_io.py): pyvisa-py's socket read costs
several selects per query and cannot tell a closed peer from a silent one, which made a query
2-3x slower than a raw socket client. Other resources (INSTR, USB, GPIB, ASRL) keep pyvisa's
read and write. pyvisa is imported lazily so that importing the drivers (and
`python -m station --help`) stays fast.
"""

from __future__ import annotations

import os
import socket
import threading
from typing import Any

from drivers.errors import KIND_GARBAGE, KIND_IO, KIND_REFUSED, KIND_TIMEOUT, InstrumentError
from drivers.transport.seam import get_resource_manager
from drivers.transport.session import (
    _DRAIN_MAX_S,
    _DRAIN_QUIET_S,
    Connection,
    SessionTransport,
    _NoReply,
    _PeerClosed,
)
from drivers.transport.socket_io import SocketLink

# pyvisa-py's session table is shared by every resource of the one manager: open one at a time.
_open_lock = threading.Lock()


def _raw_session(inst: Any) -> Any:
    """The pyvisa-py session object of a resource, if reachable."""
    try:
        return inst.visalib.sessions[inst.session]
    except (AttributeError, KeyError, TypeError):
        return None


def _raw_interface(inst: Any) -> Any:
    """The backend object under a pyvisa-py resource (socket, serial.Serial...), if reachable."""
    return getattr(_raw_session(inst), "interface", None)


class VisaTransport(SessionTransport):
    """A VISA resource opened through pyvisa-py, safe to share between threads.

    It connects on `open()` or lazily on the first call. After a timeout the next query must not
    be answered by the previous one: a ::SOCKET reconnects, other sessions are cleared. A lost
    link drops the connection so the next call reconnects. On a ::SOCKET it notices a closed
    peer at once (pyvisa-py alone waits out the whole timeout, since it takes recv() == b"" for
    "no data yet"): there the messages go through our `SocketLink`, not pyvisa's read/write.
    """

    # -- public API -------------------------------------------------------------------------

    def write(self, command: str) -> None:
        self._call(command, lambda conn: self._send(conn, command, check_peer=True))

    def read(self) -> str:
        return self._call(None, lambda conn: self._receive(conn, None))

    def query(self, command: str) -> str:
        """Write `command` and read its reply; no other thread's I/O can come in between."""

        def write_then_read(conn: Connection) -> str:
            self._send(conn, command)
            return self._receive(conn, command)

        return self._call(command, write_then_read)

    def query_bytes(self, command: str, count: int) -> bytes:
        """Write `command` and read exactly `count` raw bytes (no termination expected)."""

        def write_then_read(conn: Connection) -> bytes:
            self._send(conn, command)
            if conn.link is not None:
                return conn.link.read_exact(count, self.timeout_ms / 1000)
            return bytes(conn.inst.read_bytes(count))

        return self._call(command, write_then_read)

    # -- internals --------------------------------------------------------------------------

    def _send(self, conn: Connection, command: str, *, check_peer: bool = False) -> None:
        link = conn.link
        if link is None:
            conn.inst.write(command)
            return
        # A send to a closed peer succeeds: a write that no read follows would be lost silently.
        # (A query's read sees the EOF at once.)
        if check_peer and link.peer_closed():
            raise _PeerClosed("closed by the instrument")
        link.send(command)

    def _receive(self, conn: Connection, command: str | None) -> str:
        link = conn.link
        if link is None:
            return conn.inst.read()
        return link.read_line(self.timeout_ms / 1000)

    def _apply_timeout(self, conn: Connection) -> None:
        conn.inst.timeout = self.timeout_ms

    def _connect(self) -> Connection:
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
        link = None
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
            link = SocketLink(sock, self.read_termination, self.write_termination)
        else:
            abort = getattr(getattr(session, "interface", None), "cancel_read", None)
        conn = Connection(inst, sock=sock, session=session, abort=abort, link=link)
        conn.applied_timeout_ms = self.timeout_ms
        return conn

    def _translate(
        self, conn: Connection, exc: Exception, command: str | None, what: str
    ) -> InstrumentError:
        """Turn a backend exception into an InstrumentError and leave the link usable."""
        from pyvisa import VisaIOError
        from pyvisa.constants import StatusCode

        timed_out = isinstance(exc, _NoReply) or (
            isinstance(exc, VisaIOError) and exc.error_code == StatusCode.error_timeout
        )
        if timed_out:
            if conn.link is not None:
                partial = bytes(conn.link.buffer)
            else:
                partial = bytes(getattr(conn.session, "_pending_buffer", b"") or b"")
            if conn.sock is not None:
                # The reply may still come, later than any drain waits, and would then be read
                # as the answer to the next query. A fresh connection cannot carry it: the next
                # call reconnects (what a device clear does for USB and VXI-11).
                self._detach(conn)
            elif not self._drain(conn):
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

    def _drain(self, conn: Connection) -> bool:
        """Discard whatever is buffered or still arriving; False if the peer has closed."""
        if conn.link is not None:
            # Our own loop rather than inst.clear(): pyvisa-py's spins forever on a closed peer.
            return conn.link.drain(_DRAIN_QUIET_S, _DRAIN_MAX_S)
        try:
            conn.inst.clear()
        except Exception:
            return False
        return True


def _looks_refused(exc: BaseException) -> bool:
    text = str(exc).lower()
    return (
        isinstance(exc, ConnectionRefusedError) or "refused" in text or "could not connect" in text
    )
