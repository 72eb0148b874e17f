"""Vxi11Server: one simulated instrument as a VXI-11 (`TCPIP::...::INSTR`) device on loopback.

Serves the VXI-11 core channel (ONC RPC over TCP, record marking) well enough for pyvisa-py's
`TCPIP::127.0.0.1,<port>::inst0::INSTR` sessions: with a port in the host field pyvisa-py
connects to it directly, so no portmapper (port 111) is needed. Like a real VXI-11 instrument
seen through pyvisa-py, a `device_read` blocks in the server until a reply is ready or the
client's io_timeout passes; pyvisa-py cannot abort it (it never uses the abort channel), which is
the case `SessionTransport.interrupt()` must handle without opening a second session.

Faults: the `WireFaults` of `sim.server` (no reply, slow, garbage, drop, error), acting on each
message a `device_write` completes. `clears` counts device clears (viClear), `links` the links
created, `open_links` those not yet destroyed.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import time
from typing import Any

from sim.server import LoopbackServer

# ONC RPC (RFC 5531) and VXI-11 numbers.
_CALL, _REPLY = 0, 1
_MSG_ACCEPTED, _SUCCESS, _PROC_UNAVAIL = 0, 0, 3
_CORE_PROG = 0x0607AF
_CREATE_LINK, _DEVICE_WRITE, _DEVICE_READ, _DEVICE_READSTB = 10, 11, 12, 13
_DEVICE_CLEAR, _DESTROY_LINK = 15, 23
_GENERIC_OK = (14, 16, 17, 18, 19, 20, 25, 26)  # trigger, remote, local, lock, unlock, srq, intr
_ERR_IO_TIMEOUT = 15
_OP_FLAG_END, _OP_FLAG_TERMCHAR_SET = 8, 128
_RX_CHR, _RX_END = 2, 4
_MAX_RECV = 1 << 20


class _Xdr:
    """Reads XDR values from one RPC call body."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def uint(self) -> int:
        (value,) = struct.unpack_from(">I", self.data, self.pos)
        self.pos += 4
        return int(value)

    def opaque(self) -> bytes:
        size = self.uint()
        value = self.data[self.pos : self.pos + size]
        self.pos += (size + 3) & ~3
        return value


def _opaque(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data + b"\0" * (-len(data) % 4)


class _Link:
    """One VXI-11 link: the message being written and the replies waiting to be read."""

    def __init__(self) -> None:
        self.incoming = b""
        self.replies: list[tuple[float, bytes]] = []  # (ready at, bytes), oldest first


class Vxi11Server(LoopbackServer):
    """Serve `twin.handle()` as a VXI-11 device on 127.0.0.1:<port chosen by the OS>."""

    def __init__(self, twin: Any, *, device: str = "inst0") -> None:
        super().__init__(twin)
        self.device = device
        self.clears = 0
        self.links = 0
        self.open_links = 0
        self._next_link = 1

    @property
    def resource(self) -> str:
        """The VISA resource string of this twin (port given: no portmapper)."""
        return f"TCPIP::127.0.0.1,{self.port}::{self.device}::INSTR"

    # -- serving ----------------------------------------------------------------------------

    def _serve(self, client: socket.socket) -> None:
        links: dict[int, _Link] = {}
        try:
            while not self._stopping.is_set():
                record = self._receive_record(client)
                if record is None:
                    return
                xid = struct.unpack_from(">I", record, 0)[0]
                reply = self._dispatch(_Xdr(record), links)
                if reply is None:  # a "drop" fault: close the link without answering
                    return
                header = struct.pack(">6I", xid, _REPLY, _MSG_ACCEPTED, 0, 0, reply[0])
                body = header + reply[1]
                client.sendall(struct.pack(">I", 0x80000000 | len(body)) + body)
        except OSError:
            return
        finally:
            with self._lock:
                self._clients.discard(client)
                self.open_links -= len(links)
            with contextlib.suppress(OSError):
                client.shutdown(socket.SHUT_RDWR)
            client.close()

    @staticmethod
    def _receive_exact(client: socket.socket, size: int) -> bytes | None:
        data = b""
        while len(data) < size:
            chunk = client.recv(size - len(data))
            if not chunk:
                return None
            data += chunk
        return data

    def _receive_record(self, client: socket.socket) -> bytes | None:
        record = b""
        while True:
            header = self._receive_exact(client, 4)
            if header is None:
                return None
            (mark,) = struct.unpack(">I", header)
            fragment = self._receive_exact(client, mark & 0x7FFFFFFF)
            if fragment is None:
                return None
            record += fragment
            if mark & 0x80000000:
                return record

    def _dispatch(self, xdr: _Xdr, links: dict[int, _Link]) -> tuple[int, bytes] | None:
        """(accept status, result body) for one call; None to drop the connection."""
        xdr.uint()  # xid
        if xdr.uint() != _CALL:
            return _PROC_UNAVAIL, b""
        xdr.uint()  # rpc version
        prog, _vers, proc = xdr.uint(), xdr.uint(), xdr.uint()
        xdr.uint(), xdr.opaque()  # credentials
        xdr.uint(), xdr.opaque()  # verifier
        if prog != _CORE_PROG:
            return _PROC_UNAVAIL, b""
        if proc == _CREATE_LINK:
            xdr.uint(), xdr.uint(), xdr.uint()  # client id, lock device, lock timeout
            link_id = self._next_link
            self._next_link += 1
            links[link_id] = _Link()
            with self._lock:
                self.links += 1
                self.open_links += 1
            return _SUCCESS, struct.pack(">iiII", 0, link_id, 0, _MAX_RECV)
        if proc == _DEVICE_WRITE:
            link = links[xdr.uint()]
            xdr.uint(), xdr.uint()  # io timeout, lock timeout
            flags = xdr.uint()
            data = xdr.opaque()
            link.incoming += data
            if flags & _OP_FLAG_END:
                message, link.incoming = link.incoming, b""
                if not self._execute(link, message.decode("ascii", "replace").strip()):
                    return None
            return _SUCCESS, struct.pack(">iI", 0, len(data))
        if proc == _DEVICE_READ:
            link = links[xdr.uint()]
            request_size, io_timeout_ms = xdr.uint(), xdr.uint()
            xdr.uint()  # lock timeout
            flags, term_char = xdr.uint(), xdr.uint()
            return _SUCCESS, self._read(link, request_size, io_timeout_ms, flags, term_char)
        if proc == _DEVICE_CLEAR:
            link = links[xdr.uint()]
            with self._lock:
                link.replies.clear()
                link.incoming = b""
                self.clears += 1
            return _SUCCESS, struct.pack(">i", 0)
        if proc == _DEVICE_READSTB:
            return _SUCCESS, struct.pack(">iI", 0, 0)
        if proc == _DESTROY_LINK:
            if links.pop(xdr.uint(), None) is not None:
                with self._lock:
                    self.open_links -= 1
            return _SUCCESS, struct.pack(">i", 0)
        if proc in _GENERIC_OK:
            return _SUCCESS, struct.pack(">i", 0)
        return _PROC_UNAVAIL, b""

    def _execute(self, link: _Link, message: str) -> bool:
        """Run one message through the faults and the twin; False to drop the connection."""
        for line in filter(None, (part.strip() for part in message.split("\n"))):
            action = self.faults.action(line)
            if action == "no-reply":
                continue
            if action == "drop":
                return False
            reply = self.twin.handle(line)
            if action == "error":
                self.twin.push_error(*self.faults.error)
            if reply is None:
                continue
            raw = reply if isinstance(reply, bytes) else reply.encode("ascii")  # bytes: a block
            payload = self.faults.garbage if action == "garbage" else raw
            ready_at = time.monotonic() + self.faults.delay_of(action)
            with self._lock:
                link.replies.append((ready_at, payload + b"\n"))
                self._lock.notify_all()
        return True

    def _read(
        self, link: _Link, request_size: int, io_timeout_ms: int, flags: int, term_char: int
    ) -> bytes:
        """A device_read: wait for a ready reply up to io_timeout (no abort), then answer."""
        deadline = time.monotonic() + io_timeout_ms / 1000
        with self._lock:
            while not self._stopping.is_set():
                now = time.monotonic()
                if link.replies and link.replies[0][0] <= now:
                    break
                if now >= deadline:
                    return struct.pack(">ii", _ERR_IO_TIMEOUT, 0) + _opaque(b"")
                wake = deadline
                if link.replies:
                    wake = min(wake, link.replies[0][0])
                self._lock.wait(wake - now)
            else:
                return struct.pack(">ii", _ERR_IO_TIMEOUT, 0) + _opaque(b"")
            ready_at, payload = link.replies[0]
            chunk, rest = payload[:request_size], payload[request_size:]
            if rest:
                link.replies[0] = (ready_at, rest)
                reason = 0
            else:
                link.replies.pop(0)
                reason = _RX_END
                if flags & _OP_FLAG_TERMCHAR_SET and chunk.endswith(bytes([term_char])):
                    reason |= _RX_CHR
        return struct.pack(">ii", 0, reason) + _opaque(chunk)
