"""VisaTransport: a VISA resource through pyvisa-py's '@py' backend.

Every resource is opened through pyvisa-py, but for a ::SOCKET the messages then go over that
session's own socket through `SocketLink` (`socket_io`): pyvisa-py's socket read costs several
selects per query and cannot tell a closed peer from a silent one, which made a query 2-3x slower
than a raw socket client. Other resources (INSTR, USB, GPIB, ASRL) keep pyvisa's read and write.
Where pyvisa-py cannot abort a read (USB, VXI-11 `TCPIP::...::INSTR`, HiSLIP, GPIB: their
sessions have no `cancel_read`), `interrupt()` returns False and the session is cleared and reused
once the stuck call has ended (see `session`). pyvisa is imported lazily so that importing the
drivers (and `python -m station --help`) stays fast.
"""

from __future__ import annotations

import os
import socket
import threading
from typing import TYPE_CHECKING, Any

from drivers.errors import KIND_IO, KIND_NO_BACKEND, KIND_REFUSED
from drivers.transport.backends import backend_problem
from drivers.transport.session import (
    DRAIN_MAX_S,
    DRAIN_QUIET_S,
    Connection,
    NoReply,
    PeerClosed,
    SessionTransport,
)
from drivers.transport.socket_io import SocketLink

if TYPE_CHECKING:
    import pyvisa

# pyvisa-py's session table is shared by every resource of the one manager: open one at a time.
_open_lock = threading.Lock()
_rms: dict[str, pyvisa.ResourceManager] = {}
_rm_lock = threading.Lock()
DEFAULT_VISA_LIBRARY = "@py"


def get_resource_manager(library: str = DEFAULT_VISA_LIBRARY) -> pyvisa.ResourceManager:
    """The process-wide resource manager of a VISA implementation, created on first use.

    `library` is pyvisa's: "@py" (pyvisa-py, the default), "@ivi" (NI-VISA, Keysight IO
    Libraries), or the path of a VISA library. One per library, shared by every transport and
    never closed by one: closing a manager closes the sessions of every instrument opened
    through it (pyvisa#742).
    """
    with _rm_lock:
        rm = _rms.get(library)
        if rm is None:
            import pyvisa

            rm = _rms[library] = pyvisa.ResourceManager(library)
        return rm


def _raw_session(inst: Any) -> Any:
    """The pyvisa-py session object of a resource, if reachable."""
    try:
        return inst.visalib.sessions[inst.session]
    except (AttributeError, KeyError, TypeError):
        return None


class VisaTransport(SessionTransport):
    """A VISA resource opened through pyvisa-py, safe to share between threads.

    It connects on `open()` or lazily on the first call. After a timeout the next query must not
    be answered by the previous one: a ::SOCKET reconnects, other sessions are cleared. A lost
    link drops the connection so the next call reconnects. On a ::SOCKET it notices a closed
    peer at once (pyvisa-py alone waits out the whole timeout, since it takes recv() == b"" for
    "no data yet"): there the messages go through our `SocketLink`, not pyvisa's read/write.
    """

    def __init__(self, resource: str, *, visa_library: str | None = None, **options: Any) -> None:
        super().__init__(resource, **options)
        self.visa_library = visa_library or DEFAULT_VISA_LIBRARY

    # -- public API -------------------------------------------------------------------------

    def write(self, command: str) -> None:
        self._call(command, lambda conn: self._send(conn, command, check_peer=True))

    def read(self) -> str:
        return self._call(None, self._receive)

    def query(self, command: str) -> str:
        """Write `command` and read its reply; no other thread's I/O can come in between."""

        def write_then_read(conn: Connection) -> str:
            self._send(conn, command)
            return self._receive(conn)

        return self._call(command, write_then_read)

    def query_bytes(self, command: str, count: int) -> bytes:
        """Write `command` and read exactly `count` raw bytes (no termination expected)."""

        def write_then_read(conn: Connection) -> bytes:
            self._send(conn, command)
            if conn.link is not None:
                data: bytes = conn.link.read_exact(count, self.timeout_ms / 1000)
                return data
            return bytes(conn.inst.read_bytes(count))

        return self._call(command, write_then_read)

    def query_block(self, command: str) -> bytes:
        """Write `command` and read its reply as one IEEE 488.2 definite-length block,
        `#<n><length><data>` (a waveform, a screenshot), then the termination after it.

        On a ::SOCKET the block is read from the session's socket, each part within the
        timeout; on other sessions (VXI-11, HiSLIP, USB, GPIB) by pyvisa's `read_binary_values`.
        A reply that is not such a block raises, and drops the session (what follows it in the
        stream is unknown), so the next call reconnects.
        """

        def write_then_read(conn: Connection) -> bytes:
            self._send(conn, command)
            link = conn.link
            if link is None:
                block = conn.inst.read_binary_values(
                    datatype="B", container=bytes, header_fmt="ieee", expect_termination=True
                )
                return bytes(block)
            timeout_s = self.timeout_ms / 1000
            header = link.read_exact(2, timeout_s)
            if header[:1] != b"#" or header[1:2] not in b"123456789" or len(header) != 2:
                raise ValueError(
                    f"expected an IEEE 488.2 block (#<n><length><data>), got {header!r}"
                )
            digits = link.read_exact(int(header[1:2]), timeout_s)
            if not digits.isdigit():
                raise ValueError(f"block length {digits!r} is not a number")
            data: bytes = link.read_exact(int(digits), timeout_s)
            termination = self.read_termination.encode("ascii")
            if termination and link.read_exact(len(termination), timeout_s) != termination:
                raise ValueError(f"no {self.read_termination!r} after a {len(data)}-byte block")
            return data

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
            raise PeerClosed("closed by the instrument")
        link.send(command)

    def _receive(self, conn: Connection) -> str:
        link = conn.link
        if link is None:
            reply: str = conn.inst.read()
            return reply
        line: str = link.read_line(self.timeout_ms / 1000)
        return line

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
        try:
            library = self.visa_library
            if library == DEFAULT_VISA_LIBRARY:
                rm = get_resource_manager()
            else:
                rm = get_resource_manager(library)
        except Exception as exc:  # OSError, pyvisa LibraryError, ValueError ("not found")
            raise self._error(
                f"cannot open: VISA library {self.visa_library!r} is not available ({exc}); "
                "install it (NI-VISA or Keysight IO Libraries for @ivi) or remove visa_library "
                "to use the built-in @py",
                kind=KIND_NO_BACKEND,
            ) from exc
        try:
            with _open_lock:
                inst = rm.open_resource(self.resource, **options)
        except Exception as exc:  # pyvisa-py raises a bare Exception("could not connect...")
            missing = backend_problem(self.resource, self.visa_library)
            if missing is not None:  # e.g. "Please install PyUSB": say what, and the udev rule
                raise self._error(missing, kind=KIND_NO_BACKEND) from exc
            kind = KIND_REFUSED if _looks_refused(exc) else KIND_IO
            raise self._error(f"cannot open: {exc}", kind=kind) from exc
        session = _raw_session(inst)
        interface = getattr(session, "interface", None)
        if not self.resource.upper().endswith("::SOCKET") or session is None:
            # (session None: another VISA library than pyvisa-py; it cannot be aborted here.)
            # pyserial (ASRL) can cancel a read; USB, VXI-11, HiSLIP and GPIB sessions cannot.
            abort = getattr(interface, "cancel_read", None)
            conn = Connection(inst, session=session, abort=abort)
            conn.applied_timeout_ms = self.timeout_ms
            return conn
        try:
            if not isinstance(interface, socket.socket):
                raise OSError(f"no socket in the pyvisa-py session ({type(interface).__name__})")
            # pyvisa-py's connect does not check the outcome: a refused port "opens".
            err = interface.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                raise ConnectionRefusedError(err, os.strerror(err))
            # pyvisa-py leaves Nagle on: 40+ ms per write-then-query without this.
            interface.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError as exc:
            inst.close()
            kind = KIND_REFUSED if isinstance(exc, ConnectionRefusedError) else KIND_IO
            raise self._error(f"cannot open: {exc}", kind=kind) from exc
        link = SocketLink(interface, self.read_termination, self.write_termination)
        conn = Connection(inst, sock=interface, session=session, link=link)
        conn.applied_timeout_ms = self.timeout_ms
        return conn

    # -- hooks of SessionTransport._translate ------------------------------------------------

    def _partial_reply(self, conn: Connection, exc: Exception) -> bytes | None:
        if isinstance(exc, NoReply):
            return bytes(conn.link.buffer) if conn.link is not None else exc.data
        from pyvisa import VisaIOError
        from pyvisa.constants import StatusCode

        if isinstance(exc, VisaIOError) and exc.error_code == StatusCode.error_timeout:
            return bytes(getattr(conn.session, "_pending_buffer", b"") or b"")
        return None

    def _partial_hint(self) -> str:
        return f" but no read termination {self.read_termination!r}"

    def _settle_after_timeout(self, conn: Connection) -> bool:
        if conn.sock is not None:
            # The reply may still come, later than any drain waits, and would then be read as
            # the answer to the next query. A fresh connection cannot carry it: the next call
            # reconnects (what a device clear does for USB and VXI-11).
            self._detach(conn)
            return True
        return self._drain(conn)

    def _drain(self, conn: Connection) -> bool:
        """Discard whatever is buffered or still arriving; False if the peer has closed.

        On a ::SOCKET, read until quiet; on other sessions, a device clear (viClear), which
        also ends a transfer the instrument is still in.
        """
        if conn.link is not None:
            # Our own loop rather than inst.clear(): pyvisa-py's spins forever on a closed peer.
            drained: bool = conn.link.drain(DRAIN_QUIET_S, DRAIN_MAX_S)
            return drained
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
