"""Instrument resource strings, checked when station.yaml loads.

A resource that VISA or pyserial would refuse (or, worse, read as something else) is reported at
its line with the form it should have: `TCPIP:192.168.1.20:5555` becomes "write
TCPIP::192.168.1.20::5555::SOCKET", a bare `192.168.1.20:5025` the same, `TCPIP::h::5025` (a
port without `::SOCKET`, which VISA would take for a VXI-11 device name) gets `::SOCKET` added.
`instrument_key()` gives one key per physical connection, so two instruments of one station.yaml
on the same resource (however each is spelt) are refused.

The forms accepted:

- VISA: `TCPIP[n]::host::port::SOCKET` (raw SCPI socket), `TCPIP[n]::host[::device][::INSTR]`
  (VXI-11 `inst0`, HiSLIP `hislip0`), `USB[n]::vendor::product::serial[::interface]::INSTR`
  (or `::RAW`), `GPIB[n]::address[::secondary][::INSTR]` (address 0-30), `ASRL<n>::INSTR`,
  `ASRL/dev/ttyUSB0::INSTR`, `ASRLsocket://host:port::INSTR`.
- Serial (pyserial): a device path (`/dev/ttyUSB0`, `/dev/serial/by-id/...`), `COM3`,
  `serial:///dev/ttyUSB0`, and the pyserial URLs `socket://host:port`, `rfc2217://host:port`,
  `loop://`, `spy://...`.

Pure text: nothing is resolved or opened here (no DNS, no device access), so loading stays
fast and works on a machine without the instruments.
"""

from __future__ import annotations

import re

__all__ = ["check_resource", "check_visa_library", "instrument_key"]

_PORT_HINT = "Keysight and most SCPI instruments listen on 5025, Rigol on 5555"
_SERIAL_URL = re.compile(r"^(socket|rfc2217)://([^:/\s]+):(\d+)(?:[/?].*)?$", re.IGNORECASE)
_OTHER_SERIAL_URL = re.compile(r"^(loop|spy|alt|hwgrep|cp2110)://", re.IGNORECASE)
_COM = re.compile(r"^COM(\d+)$", re.IGNORECASE)
_HOST = re.compile(r"^[A-Za-z0-9_.\-]+$|^\[?[0-9A-Fa-f:]+\]?$")
_SINGLE_COLON = re.compile(
    r"^(?:TCPIP\d*:)?\s*([A-Za-z0-9_.\-]+)\s*:\s*(\d+)\s*(?::\s*SOCKET)?$", re.IGNORECASE
)


def _port(text: str, resource: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ValueError(f"{resource!r}: port {text!r} is not a TCP port number (1-65535)")
    return int(text)


def _host(text: str, resource: str) -> str:
    host = text.strip()
    if not host or not _HOST.match(host):
        raise ValueError(f"{resource!r}: {host!r} is not a host name or IP address")
    lowered = host.lower().strip("[]")
    return "127.0.0.1" if lowered in ("localhost", "::1") else lowered


def _socket_form(host: str, port: str) -> str:
    return f"TCPIP::{host}::{port}::SOCKET"


def _tcpip(parts: list[str], resource: str, board: str) -> tuple[str, ...]:
    """The key of a TCPIP resource; ValueError with the right form for a wrong one."""
    fields = parts[1:]
    if not fields or not fields[0]:
        raise ValueError(
            f"{resource!r}: no host: write TCPIP::<host>::INSTR (VXI-11) or "
            f"TCPIP::<host>::<port>::SOCKET (raw SCPI socket; {_PORT_HINT})"
        )
    host = _host(fields[0], resource)
    tail = list(fields[1:])
    if tail and tail[-1].upper() == "SOCKET":
        if tail[-1] != "SOCKET":
            fixed = "::".join([parts[0], *fields[:-1], "SOCKET"])
            raise ValueError(f"{resource!r}: write SOCKET in capitals, as VISA does: {fixed!r}")
        if len(tail) != 2:
            raise ValueError(
                f"{resource!r}: a socket resource is TCPIP::<host>::<port>::SOCKET ({_PORT_HINT})"
            )
        return ("tcp", host, str(_port(tail[0], resource)))
    if tail and tail[-1].upper() == "INSTR":
        if tail[-1] != "INSTR":
            fixed = "::".join([parts[0], *fields[:-1], "INSTR"])
            raise ValueError(f"{resource!r}: write INSTR in capitals, as VISA does: {fixed!r}")
        tail = tail[:-1]
    if len(tail) > 1:
        raise ValueError(
            f"{resource!r}: too many parts: write TCPIP::<host>::INSTR, "
            f"TCPIP::<host>::hislip0::INSTR or TCPIP::<host>::<port>::SOCKET"
        )
    device = tail[0] if tail else "inst0"
    if device.isdigit():
        raise ValueError(
            f"{resource!r}: {device} looks like a port: a raw SCPI socket is "
            f"{_socket_form(fields[0], device)!r} (VISA would read {device!r} as a VXI-11 device "
            "name)"
        )
    return ("vxi", board, host, device.lower())


def _usb(parts: list[str], resource: str, board: str) -> tuple[str, ...]:
    fields = parts[1:]
    if fields and fields[-1].upper() in ("INSTR", "RAW"):
        fields = fields[:-1]
    if len(fields) not in (3, 4):
        raise ValueError(
            f"{resource!r}: a USB resource is USB::<vendor id>::<product id>::<serial>::INSTR, "
            "e.g. USB0::0x2A8D::0x1301::MY59000000::INSTR (the instrument's I/O settings "
            "or `pyvisa-info`/NI MAX list it)"
        )
    numbers = []
    for what, text in (("vendor id", fields[0]), ("product id", fields[1])):
        try:
            numbers.append(int(text, 16) if text.lower().startswith("0x") else int(text))
        except ValueError:
            raise ValueError(
                f"{resource!r}: {what} {text!r} is not a number (write it as 0x2A8D)"
            ) from None
    interface = fields[3] if len(fields) == 4 else "0"
    return ("usb", f"{numbers[0]:04x}", f"{numbers[1]:04x}", fields[2], interface)


def _gpib(parts: list[str], resource: str, board: str) -> tuple[str, ...]:
    fields = parts[1:]
    if fields and fields[-1].upper() == "INSTR":
        fields = fields[:-1]
    if len(fields) not in (1, 2) or not all(field.isdigit() for field in fields):
        raise ValueError(
            f"{resource!r}: a GPIB resource is GPIB<board>::<address>::INSTR, e.g. GPIB0::22::INSTR"
        )
    address = int(fields[0])
    if not 0 <= address <= 30:
        raise ValueError(f"{resource!r}: GPIB address {address} is outside 0-30")
    return ("gpib", board, str(address), fields[1] if len(fields) == 2 else "")


def _serial_key(port: str, resource: str) -> tuple[str, ...]:
    """The key of a serial port given as pyserial would open it."""
    com = _COM.match(port)
    if com:
        return ("com", str(int(com.group(1))))
    url = _SERIAL_URL.match(port)
    if url:
        return ("tcp", _host(url.group(2), resource), str(_port(url.group(3), resource)))
    if _OTHER_SERIAL_URL.match(port):
        return ("url", port)
    if port.startswith("/"):
        return ("path", port)
    raise ValueError(
        f"{resource!r}: not a serial port: write a device path (/dev/ttyUSB0), COM3, or a "
        "pyserial URL (socket://host:port)"
    )


def instrument_key(resource: str) -> tuple[str, ...]:
    """One key per physical connection, for finding two instruments on one resource.

    `TCPIP::localhost::5025::SOCKET`, `TCPIP0::127.0.0.1::5025::SOCKET` and
    `socket://localhost:5025` are one; `ASRL3::INSTR` and `COM3` are one; `/dev/ttyUSB0`,
    `serial:///dev/ttyUSB0` and `ASRL/dev/ttyUSB0::INSTR` are one. Raises ValueError (with the
    right form) for a resource that is not valid; see `check_resource`.
    """
    text = resource.strip()
    if not text:
        raise ValueError("must not be empty")
    visa = re.match(r"^(TCPIP|USB|GPIB|ASRL)(\d*)(::|$)", text, re.IGNORECASE)
    if visa and visa.group(3):
        interface, board = visa.group(1).upper(), visa.group(2) or "0"
        if interface == "ASRL":
            port = text[4:]
            if not port.upper().endswith("::INSTR"):
                raise ValueError(f"{resource!r}: a VISA serial resource ends in ::INSTR")
            return _serial_key(f"COM{port[:-7]}" if port[:-7].isdigit() else port[:-7], resource)
        parts = text.split("::")
        if interface == "TCPIP":
            return _tcpip(parts, resource, board)
        if interface == "USB":
            return _usb(parts, resource, board)
        return _gpib(parts, resource, board)
    asrl = re.match(r"^ASRL(.+)::INSTR$", text, re.IGNORECASE)
    if asrl:
        port = asrl.group(1)
        return _serial_key(f"COM{port}" if port.isdigit() else port, resource)
    if text.upper().startswith("ASRL"):
        port = text[4:].split("::")[0]
        raise ValueError(
            f"{resource!r}: a VISA serial resource ends in ::INSTR: write "
            f"'ASRL{port}::INSTR' (or the device itself, e.g. /dev/ttyUSB0 or COM3)"
        )
    if text.lower().startswith("serial://"):
        return _serial_key(text[len("serial://") :], resource)
    single = _SINGLE_COLON.match(text)
    if single and not _SERIAL_URL.match(text):
        raise ValueError(
            f"{resource!r} is not a VISA resource: VISA separates fields with '::'; for a raw "
            f"SCPI socket write {_socket_form(single.group(1), single.group(2))!r}"
        )
    if re.match(r"^\d{1,3}(\.\d{1,3}){3}$", text):
        raise ValueError(
            f"{resource!r} is an address, not a resource: write TCPIP::{text}::INSTR (VXI-11) "
            f"or {_socket_form(text, '5025')!r} (raw SCPI socket; {_PORT_HINT})"
        )
    if re.match(r"^[a-z][a-z0-9+.-]*://", text, re.IGNORECASE) and not (
        _SERIAL_URL.match(text) or _OTHER_SERIAL_URL.match(text)
    ):
        scheme = text.split("://")[0]
        raise ValueError(
            f"{resource!r}: unknown scheme {scheme!r}: use a VISA resource (TCPIP::..., USB..., "
            "GPIB..., ASRL...), a serial device (/dev/ttyUSB0, COM3, serial:///dev/...) or a "
            "pyserial URL (socket://host:port, rfc2217://host:port)"
        )
    if text.startswith("/") or _COM.match(text) or "://" in text:
        return _serial_key(text, resource)
    raise ValueError(
        f"{resource!r} is not an instrument resource: expected TCPIP::<host>::<port>::SOCKET, "
        "TCPIP::<host>::INSTR, USB0::<vendor>::<product>::<serial>::INSTR, "
        "GPIB0::<address>::INSTR, a serial device (/dev/ttyUSB0, COM3) or socket://host:port"
    )


def check_resource(resource: str) -> str:
    """`resource` stripped, if valid; ValueError with the right form otherwise."""
    instrument_key(resource)
    return resource.strip()


_LIBRARY_ALIASES = ("@py", "@ivi", "@ni", "@sim")


def check_visa_library(value: str) -> str:
    """A VISA implementation as pyvisa names it: `@py` (pyvisa-py, the default), `@ivi` (NI-VISA,
    Keysight IO Libraries, R&S VISA: whichever is installed), `@sim` (pyvisa-sim), or the path
    of a VISA library file (optionally with `@ivi`)."""
    text = value.strip()
    if text.lower() in _LIBRARY_ALIASES:
        return text.lower()
    path = text.removesuffix("@ivi")
    if re.search(r"\.(so(\.\d+)*|dll|dylib)$|\.framework/", path, re.IGNORECASE) and (
        "/" in path or "\\" in path
    ):
        return text
    raise ValueError(
        f"must be '@py' (pyvisa-py, the default), '@ivi' (NI-VISA or Keysight IO Libraries), "
        f"'@sim', or the path of a VISA library (e.g. /usr/lib/x86_64-linux-gnu/libvisa.so); "
        f"got {value!r}"
    )
