"""Transports: how a driver's strings reach an instrument.

A driver talks to a `Transport`; it never opens sockets itself. `VisaTransport`
(`visa_transport`) goes through pyvisa with the pure-Python '@py' backend; `SerialTransport`
(`serial_transport`) goes through pyserial for raw serial devices. Both build on
`SessionTransport` (`session`), which adds what production needs: errors that name the
instrument, recovery after a timeout or a lost link (reconnect with backoff, never a silent
resend), thread safety, an OS lock per instrument (`locking`) so two processes cannot drive one
instrument, `interrupt()`, which unblocks a call stuck in I/O from another thread where the
backend allows it, a call guard that can refuse I/O, and a final `close()`.

This module is the seam: the `Transport` protocols, `open_transport` and `is_serial_resource`.
The implementations are imported lazily (they import nothing from here), and pyvisa too, so that
importing the drivers (and `python -m station --help`) stays fast.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

from drivers.errors import InstrumentError

_VISA_RESOURCE = re.compile(r"^(TCPIP|USB|ASRL|GPIB)", re.IGNORECASE)
_URL_RESOURCE = re.compile(r"^[a-z][a-z0-9+.-]*://", re.IGNORECASE)
# pyserial URL handlers worth routing to SerialTransport ("serial://" is ours: a device path).
SERIAL_SCHEMES = ("serial", "socket", "rfc2217", "loop", "spy")
_SERIAL_RESOURCE = re.compile(
    rf"^(?:(?:{'|'.join(SERIAL_SCHEMES)})://|/dev/|COM\d+$)", re.IGNORECASE
)


@runtime_checkable
class Transport(Protocol):
    """The seam between a driver and the wire: strings in, strings out.

    `interrupt()` returns False when the call in flight cannot be aborted (it then ends at its
    timeout); `close()` is final (later calls raise kind "closed"); a call guard set with
    `set_call_guard()` may refuse any call (kind "stopped"). See `session.SessionTransport`.
    """

    resource: str
    timeout_ms: int

    def open(self) -> None: ...
    def write(self, command: str) -> None: ...
    def read(self) -> str: ...
    def query(self, command: str) -> str: ...
    def in_flight(self) -> tuple[str, float] | None: ...
    def interrupt(self) -> bool: ...
    def set_call_guard(self, guard: Callable[[], str | None] | None) -> None: ...
    def close(self) -> None: ...


@runtime_checkable
class ByteTransport(Transport, Protocol):
    """A transport for instruments without line terminators (`SerialTransport`): replies of a
    known length, or raw bytes."""

    def query(self, command: str, reply_length: int | None = None) -> str: ...
    def read_bytes(self, count: int) -> bytes: ...
    def query_bytes(self, command: str, count: int) -> bytes: ...


@runtime_checkable
class BlockTransport(Transport, Protocol):
    """A transport that also reads IEEE 488.2 definite-length binary blocks
    (`#<n><length><data>`: waveforms, screenshots): `VisaTransport`."""

    def query_block(self, command: str) -> bytes: ...


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
        from drivers.transport.visa_transport import VisaTransport

        return VisaTransport(resource, **options)
    if is_serial_resource(resource):
        from drivers.transport.serial_transport import SerialTransport

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
