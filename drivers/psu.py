"""Power supplies: the PowerSupply capability and one class per model."""

from __future__ import annotations

import abc
import re
from typing import Any, ClassVar

from drivers.scpi import ScpiInstrument


class PowerSupply(abc.ABC):
    """What a test asks of a power supply. Channels are 1-based; values in volts and amperes."""

    channels: tuple[int, ...] = ()

    @abc.abstractmethod
    def set_voltage(self, channel: int, volts: float) -> None:
        """Set the output voltage of `channel` (applies when the output is on)."""

    @abc.abstractmethod
    def set_current_limit(self, channel: int, amps: float) -> None:
        """Set the current limit; above it the channel goes constant-current."""

    @abc.abstractmethod
    def set_ovp(self, channel: int, volts: float) -> None:
        """Set and arm over-voltage protection on `channel`."""

    @abc.abstractmethod
    def enable(self, channel: int) -> None:
        """Turn the output of `channel` on."""

    @abc.abstractmethod
    def disable(self, channel: int) -> None:
        """Turn the output of `channel` off."""

    @abc.abstractmethod
    def measure_voltage(self, channel: int) -> float:
        """The voltage actually present at the output terminals."""

    @abc.abstractmethod
    def measure_current(self, channel: int) -> float:
        """The current actually delivered by the output."""

    @abc.abstractmethod
    def is_enabled(self, channel: int) -> bool:
        """Whether the output of `channel` is on."""

    def disable_all(self) -> None:
        """Turn every output off; tries all channels even if one fails, then raises the first."""
        first: Exception | None = None
        for channel in self.channels:
            try:
                self.disable(channel)
            except Exception as exc:
                first = first or exc
        if first is not None:
            raise first

    def safe_state(self) -> None:
        """Outputs off: the unit is unpowered."""
        self.disable_all()

    def _check_channel(self, channel: int) -> int:
        if channel not in self.channels:
            valid = ", ".join(str(c) for c in self.channels)
            raise ValueError(f"no channel {channel!r} on this supply; valid channels: {valid}")
        return channel


class RigolDP832(ScpiInstrument, PowerSupply):
    """Rigol DP832 / DP832A triple-output supply (CH1, CH2 30 V/3 A; CH3 5 V/3 A).

    Channels are addressed by a leading `CH<n>` argument or a `SOUR<n>` suffix, booleans read
    `ON`/`OFF`. Every state change is confirmed with *OPC? and the error queue before returning.
    """

    MODEL = "Rigol DP832"
    IDN_PATTERN = re.compile(r"rigol technologies,dp832a?,", re.IGNORECASE)
    DEFAULT_OPTIONS: ClassVar[dict[str, Any]] = {
        "read_termination": "\n",
        "write_termination": "\n",
    }
    ERROR_QUERY = ":SYST:ERR?"
    channels = (1, 2, 3)

    def set_voltage(self, channel: int, volts: float) -> None:
        self._apply(f":SOUR{self._check_channel(channel)}:VOLT {_number(volts)}")

    def set_current_limit(self, channel: int, amps: float) -> None:
        self._apply(f":SOUR{self._check_channel(channel)}:CURR {_number(amps)}")

    def set_ovp(self, channel: int, volts: float) -> None:
        channel = self._check_channel(channel)
        self.write(f":OUTP:OVP:VAL CH{channel},{_number(volts)}")
        self._apply(f":OUTP:OVP CH{channel},ON")

    def enable(self, channel: int) -> None:
        self._apply(f":OUTP CH{self._check_channel(channel)},ON")

    def disable(self, channel: int) -> None:
        self._apply(f":OUTP CH{self._check_channel(channel)},OFF")

    def measure_voltage(self, channel: int) -> float:
        return self.query_float(f":MEAS:VOLT? CH{self._check_channel(channel)}")

    def measure_current(self, channel: int) -> float:
        return self.query_float(f":MEAS:CURR? CH{self._check_channel(channel)}")

    def is_enabled(self, channel: int) -> bool:
        command = f":OUTP? CH{self._check_channel(channel)}"
        reply = self.query(command).upper()
        if reply in ("ON", "1"):
            return True
        if reply in ("OFF", "0"):
            return False
        raise self._error(f"expected ON or OFF from {command!r}, got {reply!r}", command)

    def safe_state(self) -> None:
        # Explicit: ScpiInstrument's no-op would otherwise win over PowerSupply's in the MRO.
        PowerSupply.safe_state(self)

    def _apply(self, command: str) -> None:
        """Send a state change and return only once the supply has applied it without error."""
        self.write(command)
        self.wait_complete()
        self.check_errors()


def _number(value: float) -> str:
    """A number as SCPI text: 5 -> '5', 0.5 -> '0.5'."""
    return f"{value:.8g}"
