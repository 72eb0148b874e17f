"""SocketLink: message I/O on the raw socket of a pyvisa-py ::SOCKET session.

pyvisa-py opens the session (the VISA stack on a bench is the one tested), but its read loop
selects on every pass and takes recv() == b"" for "no data yet", so a closed peer only shows
after the whole timeout; polling the socket first to catch that cost four selects per query. This
loop reads the same socket with its own buffer: it waits (one select) only when no whole reply is
buffered, and takes b"" for what it is, a closed link.
"""

from __future__ import annotations

import select
import socket
import time

from drivers.transport.session import NoReply, PeerClosed

_CHUNK = 4096
# Linux and BSD: a non-blocking recv on a blocking socket, without a select first.
_DONTWAIT = getattr(socket, "MSG_DONTWAIT", 0)


class SocketLink:
    """Writes commands and reads terminated replies on a connected, blocking TCP socket.

    Like VISA, a reply ends at the last character of `read_termination` (the termchar), and the
    whole termination is stripped if the reply ends with it. Not thread-safe: the caller holds the
    connection's lock.
    """

    __slots__ = ("_strip", "_termchar", "_write_termination", "buffer", "sock")

    def __init__(self, sock: socket.socket, read_termination: str, write_termination: str) -> None:
        self.sock = sock
        self.buffer = bytearray()  # received, not yet returned (bytes after a termchar)
        self._termchar = read_termination[-1:].encode("ascii")
        self._strip = read_termination.encode("ascii")
        self._write_termination = write_termination.encode("ascii")

    def send(self, command: str) -> None:
        self.sock.sendall(command.encode("ascii") + self._write_termination)

    def peer_closed(self) -> bool:
        """Whether the peer has closed the link (checked without waiting).

        For a write with no reply to read: a send to a closed peer succeeds, and the command
        would be lost without an error.
        """
        sock = self.sock
        if not _DONTWAIT:
            readable, _, _ = select.select([sock], [], [], 0)
            if not readable:
                return False
        try:
            return not sock.recv(1, socket.MSG_PEEK | _DONTWAIT)
        except BlockingIOError:
            return False

    def read_line(self, timeout_s: float) -> str:
        """The next reply as text, termination stripped.

        NoReply after `timeout_s`, PeerClosed on EOF, UnicodeDecodeError if not ASCII (the
        reply is consumed then).
        """
        buffer = self.buffer
        termchar = self._termchar
        end = buffer.find(termchar) if termchar else -1
        if end < 0:
            deadline = time.monotonic() + timeout_s
            while end < 0:
                searched = len(buffer)
                self._fill(deadline)
                if termchar:
                    end = buffer.find(termchar, searched)
        end += 1
        line = bytes(buffer[:end])
        del buffer[:end]
        strip = self._strip
        if len(strip) > 1 and not line.endswith(strip):
            return line.decode("ascii")  # what pyvisa does: the termchar alone is kept
        return line[: -len(strip)].decode("ascii")

    def read_exact(self, count: int, timeout_s: float) -> bytes:
        """Exactly `count` bytes (no termination expected)."""
        buffer = self.buffer
        if len(buffer) < count:
            deadline = time.monotonic() + timeout_s
            while len(buffer) < count:
                self._fill(deadline)
        data = bytes(buffer[:count])
        del buffer[:count]
        return data

    def drain(self, quiet_s: float, max_s: float) -> bool:
        """Discard what is buffered or still arriving until the line has been quiet for
        `quiet_s` (at most `max_s`); False if the peer has closed."""
        self.buffer.clear()
        sock = self.sock
        deadline = time.monotonic() + max_s
        try:
            while time.monotonic() < deadline:
                readable, _, _ = select.select([sock], [], [], quiet_s)
                if not readable:
                    return True
                if not sock.recv(_CHUNK):
                    return False
        except (OSError, ValueError):
            return False
        return True

    def _fill(self, deadline: float) -> None:
        """Append what arrives next to the buffer; NoReply at `deadline`, PeerClosed on EOF."""
        sock = self.sock
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise NoReply()
            readable, _, _ = select.select([sock], [], [], remaining)
            if not readable:
                raise NoReply()
            try:
                data = sock.recv(_CHUNK, _DONTWAIT)
            except BlockingIOError:  # a spurious wake-up: wait again
                continue
            if not data:
                raise PeerClosed("closed by the instrument")
            self.buffer += data
            return
