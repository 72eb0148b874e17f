"""What a resource needs installed before it can be opened, said before trying.

pyvisa-py opens USB instruments through PyUSB and libusb, and GPIB through linux-gpib or
gpib-ctypes; without them it raises a bare "Please install PyUSB", which a station would report
against the resource line of station.yaml, the one thing that is right. `backend_problem()`
says instead what to install, and on Linux the udev rule that lets a non-root user open the
device. Another VISA implementation (`visa_library: "@ivi"`: NI-VISA, Keysight IO Libraries)
brings its own USB and GPIB support, so nothing is checked for it here.
"""

from __future__ import annotations

import importlib.util
import re
import sys

from drivers.errors import KIND_NO_BACKEND, InstrumentError

__all__ = ["backend_problem", "check_backend", "udev_rule"]

_USB = re.compile(r"^USB\d*::(0x[0-9a-f]+|\d+)::", re.IGNORECASE)
_GPIB = re.compile(r"^GPIB\d*::", re.IGNORECASE)
PYVISA_PY = "@py"


def udev_rule(vendor_id: str | None) -> str:
    """The udev rule that lets every user open USB devices of `vendor_id` (e.g. "2a8d")."""
    vendor = f'ATTR{{idVendor}}=="{vendor_id}", ' if vendor_id else ""
    return f'SUBSYSTEM=="usb", {vendor}MODE="0666"'


def _vendor_of(resource: str) -> str | None:
    match = _USB.match(resource.strip())
    if match is None:
        return None
    text = match.group(1)
    value = int(text, 16) if text.lower().startswith("0x") else int(text)
    return f"{value:04x}"


def _usb_help(vendor: str | None) -> str:
    if not sys.platform.startswith("linux"):
        return ""
    return (
        "; on Linux also let non-root users open it with a udev rule: put "
        f"'{udev_rule(vendor)}' in /etc/udev/rules.d/99-station-usb.rules, run "
        "'udevadm control --reload-rules && udevadm trigger' as root, and replug the instrument"
    )


def backend_problem(resource: str, visa_library: str | None = None) -> str | None:
    """What is missing to open `resource` with `visa_library` (None: "@py"), or None if
    nothing is known to be missing."""
    if (visa_library or PYVISA_PY) != PYVISA_PY:
        return None
    text = resource.strip()
    if _USB.match(text):
        vendor = _vendor_of(text)
        if importlib.util.find_spec("usb") is None:
            return (
                "USB instruments need PyUSB and libusb: pip install 'station[usb]' and install "
                "libusb (Debian/Ubuntu: apt install libusb-1.0-0; Windows: a libusb driver, e.g. "
                "with Zadig), or use NI-VISA / Keysight IO Libraries with visa_library: '@ivi'"
                + _usb_help(vendor)
            )
        try:
            libusb1 = importlib.import_module("usb.backend.libusb1")
            found = libusb1.get_backend() is not None
        except Exception:  # a broken PyUSB install counts as no backend
            found = False
        if not found:
            return (
                "PyUSB is installed but finds no libusb: install it (Debian/Ubuntu: apt install "
                "libusb-1.0-0; macOS: brew install libusb)" + _usb_help(vendor)
            )
        return None
    if _GPIB.match(text) and not any(importlib.util.find_spec(m) for m in ("gpib", "gpib_ctypes")):
        return (
            "GPIB instruments need a GPIB driver: linux-gpib with its Python bindings "
            "(Linux), or pip install gpib-ctypes (with the adapter vendor's driver), or "
            "NI-VISA / Keysight IO Libraries with visa_library: '@ivi'"
        )
    return None


def check_backend(resource: str, visa_library: str | None = None, *, name: str) -> None:
    """Raise InstrumentError of kind "no_backend" naming what to install, if anything is
    missing to open `resource` (see `backend_problem`)."""
    problem = backend_problem(resource, visa_library)
    if problem is not None:
        raise InstrumentError(problem, instrument=name, resource=resource, kind=KIND_NO_BACKEND)
