"""Korad KA3005P (also sold as Tenma 72-2540 and others): a 30 V / 5 A single-output supply.

Not SCPI, and not line based: raw serial at 9600 baud, commands and replies without any
terminator, replies of a fixed length (`VSET1?` -> `05.00`, `STATUS?` -> one binary byte). The
firmware tells commands apart only by the pause between them, so this driver leaves
`COMMAND_GAP_S` between the end of one exchange and the next, whoever the caller is. It has no
error queue: an out-of-range or garbled setting is silently ignored, so every setting is read
back and compared before the call returns.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

from drivers.errors import KIND_GARBAGE, KIND_NOT_APPLIED, KIND_WRONG_MODEL
from drivers.models.psu import PowerSupply, Regulation
from drivers.models.scpi import ScpiInstrument
from drivers.transport.seam import ByteTransport, Transport

_T = TypeVar("_T")

STATUS_OUTPUT_ON = 0x40  # STATUS? bit 6: output enabled
STATUS_CV = 0x01  # STATUS? bit 0: constant voltage (0: constant current)


class KoradKA3005P(ScpiInstrument, PowerSupply):
    """Korad/Tenma KA3005P on a serial port (`/dev/ttyUSB0`, `serial://...`, `socket://...`)."""

    MODEL = "Korad KA3005P"
    IDN_PATTERN = re.compile(r"\b(korad|tenma)\b.*\b(ka3005p|72-25[0-9]{2})\b", re.IGNORECASE)
    DEFAULT_OPTIONS: ClassVar[dict[str, Any]] = {
        "read_termination": "",
        "write_termination": "",
        "baud_rate": 9600,
    }
    COMMAND_GAP_S = 0.05  # the firmware needs this pause to see where a command ends
    MAX_VOLTS = 30.0
    MAX_AMPS = 5.0
    VOLTS_TOLERANCE = 0.005  # read-back resolution: 10 mV steps
    AMPS_TOLERANCE = 0.0005  # 1 mA steps
    channels = (1,)
    transport: ByteTransport  # a SerialTransport; connect() refuses anything else

    def __init__(self, transport: Transport, name: str) -> None:
        super().__init__(transport, name)
        self._io_lock = threading.RLock()  # one exchange at a time, gap included
        self._last_io = 0.0

    # -- session ----------------------------------------------------------------------------

    def connect(self) -> str:
        """Open the port and check the model; refuses a VISA resource (no terminator there)."""
        if not isinstance(self.transport, ByteTransport):
            raise self._error(
                "the KA3005P sends no line terminator, which VISA cannot read: give its serial "
                "port as a device path (/dev/ttyUSB0, COM3) or serial:// / socket:// URL",
                kind=KIND_WRONG_MODEL,
            )
        return super().connect()

    def reset(self) -> None:
        """There is no *RST: the nearest safe equivalent is output off."""
        self.safe_state()

    def clear_status(self) -> None:
        """No status registers to clear."""

    def wait_complete(self) -> None:
        """No *OPC?: each setting is confirmed by reading it back instead."""

    def check_errors(self) -> None:
        """No error queue: settings are confirmed by reading them back (see module doc)."""

    def safe_state(self) -> None:
        PowerSupply.safe_state(self)

    # -- PowerSupply ------------------------------------------------------------------------

    def set_voltage(self, channel: int, volts: float) -> None:
        self._check_channel(channel)
        _check_range("voltage", volts, self.MAX_VOLTS, "V")
        self.write(f"VSET1:{volts:.2f}")
        self._confirm("VSET1?", round(volts, 2), self.VOLTS_TOLERANCE, "V")

    def set_current_limit(self, channel: int, amps: float) -> None:
        self._check_channel(channel)
        _check_range("current limit", amps, self.MAX_AMPS, "A")
        self.write(f"ISET1:{amps:.3f}")
        self._confirm("ISET1?", round(amps, 3), self.AMPS_TOLERANCE, "A")

    def set_ovp(self, channel: int, volts: float) -> None:
        """Arm over-voltage protection (`OVP1`).

        The KA3005P's trip level cannot be set remotely (front panel only) and the state cannot
        be read back, so `volts` is only checked for range.
        """
        self._check_channel(channel)
        _check_range("OVP level", volts, self.MAX_VOLTS + 1, "V")
        self.write("OVP1")

    def enable(self, channel: int) -> None:
        self._check_channel(channel)
        self.write("OUT1")
        if not self.is_enabled(channel):
            raise self._error("OUT1 was not applied: STATUS? says output off", "OUT1",
                              KIND_NOT_APPLIED)  # fmt: skip

    def disable(self, channel: int) -> None:
        self._check_channel(channel)
        self.write("OUT0")
        if self.is_enabled(channel):
            raise self._error("OUT0 was not applied: STATUS? says output on", "OUT0",
                              KIND_NOT_APPLIED)  # fmt: skip

    def measure_voltage(self, channel: int) -> float:
        self._check_channel(channel)
        return self._query_number("VOUT1?")

    def measure_current(self, channel: int) -> float:
        self._check_channel(channel)
        return self._query_number("IOUT1?")

    def is_enabled(self, channel: int) -> bool:
        self._check_channel(channel)
        return bool(self.status() & STATUS_OUTPUT_ON)

    def regulation(self, channel: int) -> Regulation:
        """STATUS? bit 0: 1 constant voltage, 0 constant current (the KA3005P reports no
        unregulated state; with the output off it reads constant voltage)."""
        self._check_channel(channel)
        return "CV" if self.status() & STATUS_CV else "CC"

    def status(self) -> int:
        """The STATUS? byte (bit 6 output on, bit 0 constant voltage)."""
        return self._exchange(lambda: self.transport.query_bytes("STATUS?", 1))[0]

    # -- I/O with the inter-command gap ------------------------------------------------------

    def write(self, command: str) -> None:
        self._exchange(lambda: self.transport.write(command))

    def query(self, command: str, reply_length: int | None = None) -> str:
        """A reply of `reply_length` bytes, or (e.g. *IDN?) whatever comes before a pause."""
        if reply_length is None:
            return self._exchange(lambda: self.transport.query(command)).strip()
        reply = self._exchange(lambda: self.transport.query(command, reply_length=reply_length))
        return reply.strip()

    def _exchange(self, action: Callable[[], _T]) -> _T:
        with self._io_lock:
            pause = self._last_io + self.COMMAND_GAP_S - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            try:
                return action()
            finally:
                self._last_io = time.monotonic()

    def _query_number(self, command: str) -> float:
        reply = self.query(command, reply_length=5)
        try:
            return float(reply)
        except ValueError:
            message = f"expected a number from {command!r}, got {reply!r}"
            raise self._error(message, command, KIND_GARBAGE) from None

    def _confirm(self, query: str, expected: float, tolerance: float, unit: str) -> None:
        actual = self._query_number(query)
        if abs(actual - expected) > tolerance:
            setting = query.rstrip("?")
            raise self._error(
                f"{setting}:{expected:g} was not applied: {query} reads {actual:g} {unit}",
                query,
                KIND_NOT_APPLIED,
            )


def _check_range(what: str, value: float, high: float, unit: str) -> None:
    if not 0 <= value <= high:
        raise ValueError(f"KA3005P {what} must be within 0..{high:g} {unit}, got {value}")
