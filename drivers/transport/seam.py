"""Transports: how a driver's strings reach an instrument (DESIGN.md §7).

A driver talks to a `Transport`; it never opens sockets itself. `VisaTransport`
(drivers/visa_transport.py) goes through pyvisa with the pure-Python '@py' backend;
`SerialTransport` (drivers/serial_transport.py) goes through pyserial for raw serial devices.
Both build on `SessionTransport` (drivers/session.py), which adds what production needs: errors
that name the instrument, recovery after a timeout or a lost link (reconnect with backoff, never
a silent resend), thread safety, an OS lock per instrument (drivers/locking.py) so two processes
cannot drive one instrument, and `interrupt()`, which unblocks a call stuck in I/O from another
thread.

This module is the seam: the `Transport` protocol, `open_transport`, `is_serial_resource` and
the shared pyvisa resource manager. The implementations are imported lazily, and pyvisa too, so
that importing the drivers (and `python -m station --help`) stays fast.
"""

from __future__ import annotations

import re
import threading
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from drivers.errors import InstrumentError

if TYPE_CHECKING:
    import pyvisa

_rm: pyvisa.ResourceManager | None = None
_rm_lock = threading.Lock()

_VISA_RESOURCE = re.compile(r"^(TCPIP|USB|ASRL|GPIB)", re.IGNORECASE)
_URL_RESOURCE = re.compile(r"^[a-z][a-z0-9+.-]*://", re.IGNORECASE)
# pyserial URL handlers worth routing to SerialTransport ("serial://" is ours: a device path).
SERIAL_SCHEMES = ("serial", "socket", "rfc2217", "loop", "spy")
_SERIAL_RESOURCE = re.compile(
    rf"^(?:(?:{'|'.join(SERIAL_SCHEMES)})://|/dev/|COM\d+$)", re.IGNORECASE
)


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
