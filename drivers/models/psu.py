"""Power supplies: the PowerSupply capability and one class per model.

Channels are 1-based integers, values SI floats, output states `bool`, whatever the vendor
writes on the wire (`CH1` or `(@1)`, `ON` or `1`, `5.000` or `+5.00000000E+00`). Every model
says from its own status whether a channel is in constant voltage or current-limited
(`regulation()`), so a shorted or overloaded board is visible as such.
"""

from __future__ import annotations

import abc
import contextlib
import re
from typing import Any, ClassVar, Literal, NamedTuple, cast

from drivers.errors import KIND_GARBAGE, KIND_NOT_APPLIED, InstrumentError
from drivers.models.scpi import ScpiInstrument

Regulation = Literal["CV", "CC", "UR"]
"""How a supply channel regulates: constant voltage, constant current (current-limited), or
unregulated (neither loop in control)."""


class Rating(NamedTuple):
    """What a channel is rated for: the most a test may ask of it."""

    volts: float
    amps: float


class PowerSupply(abc.ABC):
    """What a test asks of a power supply. Channels are 1-based; values in volts and amperes.

    A model lists its channels' ratings in RATINGS; asking a channel for more than its rating
    raises ValueError before anything is sent, naming the channel and what it is rated for.
    """

    RATINGS: ClassVar[dict[int, Rating]] = {}

    @property
    def channels(self) -> tuple[int, ...]:
        """The channel numbers, in order."""
        return tuple(self.RATINGS)

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

    @abc.abstractmethod
    def regulation(self, channel: int) -> Regulation:
        """How `channel` regulates now, from the supply's status: "CV" (it holds its set
        voltage), "CC" (its current limit holds the output below the set voltage: a short or an
        overloaded board) or "UR" (neither; see each model for what it reports when off)."""

    def is_current_limited(self, channel: int) -> bool:
        """Whether `channel` is in constant current: its limit, not its voltage, decides."""
        return self.regulation(channel) == "CC"

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
        """Outputs off, verified: the unit is unpowered, or InstrumentError says which channel
        may not be.

        After `disable_all()`, every channel's output state is read back (a lost `OUTP ... OFF`
        is otherwise silent: `*OPC?` and the error queue answer all the same). A channel that
        does not read back off is turned off once more and read again; if it still does not
        read back off, InstrumentError of kind "not_applied" names it. A `disable` that raised
        but whose channel reads back off is not an error: the output is off.
        """
        failure: InstrumentError | None = None
        try:
            self.disable_all()
        except InstrumentError as exc:
            failure = exc
        problems = [problem for channel in self.channels if (problem := self._confirm_off(channel))]
        if problems:
            raise self._error(
                f"safe state not verified: {'; '.join(problems)}", None, KIND_NOT_APPLIED
            ) from failure

    def _confirm_off(self, channel: int) -> str | None:
        """None once `channel` reads back off (after one more `disable` if needed), else why not."""
        problem = ""
        for attempt in range(2):
            if attempt:
                with contextlib.suppress(InstrumentError):  # the read-back below decides
                    self.disable(channel)
            try:
                if not self.is_enabled(channel):
                    return None
                problem = f"CH{channel} output still reads ON after being turned off twice"
            except InstrumentError as exc:
                problem = f"CH{channel} output state could not be read back ({exc.message})"
        return problem

    @abc.abstractmethod
    def _error(
        self, message: str, command: str | None = None, kind: str | None = None
    ) -> InstrumentError:
        """An InstrumentError naming this instrument (`ScpiInstrument` provides it)."""

    # -- argument checks, before any I/O ----------------------------------------------------

    def _check_channel(self, channel: int) -> int:
        if channel not in self.channels:
            valid = ", ".join(str(c) for c in self.channels)
            raise ValueError(f"no channel {channel!r} on this supply; valid channels: {valid}")
        return channel

    def _check_volts(self, channel: int, volts: float) -> int:
        """The channel, once `volts` is known to be within its rating."""
        return self._check_setting(channel, volts, "V")

    def _check_amps(self, channel: int, amps: float) -> int:
        """The channel, once `amps` is known to be within its rating."""
        return self._check_setting(channel, amps, "A")

    def _check_setting(self, channel: int, value: float, unit: str) -> int:
        channel = self._check_channel(channel)
        model = getattr(self, "MODEL", type(self).__name__)
        if not value >= 0:
            raise ValueError(f"{model} CH{channel}: {value} {unit} is not a valid setting")
        rating = self.RATINGS.get(channel)
        if rating is None:
            return channel
        limit = rating.volts if unit == "V" else rating.amps
        if value > limit:
            raise ValueError(
                f"{model} CH{channel} is rated {rating.volts:g} V / {rating.amps:g} A; "
                f"{value:g} {unit} is above its rating"
            )
        return channel

    def _check_ovp(self, channel: int, volts: float) -> int:
        """OVP may sit above the rating (it guards the unit, not the supply); only > 0."""
        channel = self._check_channel(channel)
        if not volts > 0:
            raise ValueError(f"CH{channel}: OVP level must be positive; got {volts}")
        return channel


class ScpiPowerSupply(ScpiInstrument, PowerSupply):
    """A SCPI supply: every state change is confirmed with *OPC? and the error queue."""

    def safe_state(self) -> None:
        # Explicit: ScpiInstrument's no-op would otherwise win over PowerSupply's in the MRO.
        PowerSupply.safe_state(self)

    def _apply(self, *commands: str) -> None:
        """Send state changes and return only once the supply has applied them without error."""
        for command in commands:
            self.write(command)
        self.wait_complete()
        self.check_errors()

    def _query_bool(self, command: str, expected: str) -> bool:
        """A boolean reply, read leniently (`ON`/`1`, `OFF`/`0`), else an InstrumentError."""
        reply = self.query(command).upper()
        if reply in ("ON", "1"):
            return True
        if reply in ("OFF", "0"):
            return False
        message = f"expected {expected} from {command!r}, got {reply!r}"
        raise self._error(message, command, KIND_GARBAGE)


class RigolDP832(ScpiPowerSupply):
    """Rigol DP832 / DP832A triple-output supply (CH1, CH2 30 V/3 A; CH3 5 V/3 A).

    Channels are addressed by a leading `CH<n>` argument or a `SOUR<n>` suffix, booleans read
    `ON`/`OFF`, numbers are fixed point. The supply accepts settings slightly above the rating
    (32 V, 3.2 A, 5.3 V); this driver holds tests to the rating.
    """

    MODEL = "Rigol DP832"
    IDN_PATTERN = re.compile(r"rigol technologies,dp832a?,", re.IGNORECASE)
    DEFAULT_OPTIONS: ClassVar[dict[str, Any]] = {
        "read_termination": "\n",
        "write_termination": "\n",
    }
    ERROR_QUERY = ":SYST:ERR?"
    RATINGS: ClassVar[dict[int, Rating]] = {
        1: Rating(30.0, 3.0),
        2: Rating(30.0, 3.0),
        3: Rating(5.0, 3.0),
    }

    def set_voltage(self, channel: int, volts: float) -> None:
        self._apply(f":SOUR{self._check_volts(channel, volts)}:VOLT {_number(volts)}")

    def set_current_limit(self, channel: int, amps: float) -> None:
        self._apply(f":SOUR{self._check_amps(channel, amps)}:CURR {_number(amps)}")

    def set_ovp(self, channel: int, volts: float) -> None:
        channel = self._check_ovp(channel, volts)
        self._apply(f":OUTP:OVP:VAL CH{channel},{_number(volts)}", f":OUTP:OVP CH{channel},ON")

    def enable(self, channel: int) -> None:
        self._apply(f":OUTP CH{self._check_channel(channel)},ON")

    def disable(self, channel: int) -> None:
        self._apply(f":OUTP CH{self._check_channel(channel)},OFF")

    def measure_voltage(self, channel: int) -> float:
        return self.query_float(f":MEAS:VOLT? CH{self._check_channel(channel)}")

    def measure_current(self, channel: int) -> float:
        return self.query_float(f":MEAS:CURR? CH{self._check_channel(channel)}")

    def is_enabled(self, channel: int) -> bool:
        return self._query_bool(f":OUTP? CH{self._check_channel(channel)}", "ON or OFF")

    def regulation(self, channel: int) -> Regulation:
        """`:OUTP:MODE? CH<n>` answers CV, CC or UR (CV with the output off)."""
        command = f":OUTP:MODE? CH{self._check_channel(channel)}"
        reply = self.query(command).upper()
        if reply in ("CV", "CC", "UR"):
            return cast(Regulation, reply)
        raise self._error(f"expected CV, CC or UR from {command!r}, got {reply!r}", command,
                          KIND_GARBAGE)  # fmt: skip


class KeysightE36312A(ScpiPowerSupply):
    """Keysight E36312A triple-output supply (CH1 6 V/5 A; CH2, CH3 25 V/1 A).

    Channels are addressed by a channel-list suffix, `VOLT 5,(@1)` (preferred over
    the stateful `INST:NSEL`, so every command stands alone); booleans read `1`/`0`, numbers
    NR3. OVP is always armed on this family: `set_ovp` only sets its level.
    """

    MODEL = "Keysight E36312A"
    IDN_PATTERN = re.compile(r"(keysight|agilent) technologies,e36312a,", re.IGNORECASE)
    DEFAULT_OPTIONS: ClassVar[dict[str, Any]] = {
        "read_termination": "\n",
        "write_termination": "\n",
    }
    ERROR_QUERY = "SYST:ERR?"
    RATINGS: ClassVar[dict[int, Rating]] = {
        1: Rating(6.0, 5.0),
        2: Rating(25.0, 1.0),
        3: Rating(25.0, 1.0),
    }

    def set_voltage(self, channel: int, volts: float) -> None:
        self._apply(f"VOLT {_number(volts)},(@{self._check_volts(channel, volts)})")

    def set_current_limit(self, channel: int, amps: float) -> None:
        self._apply(f"CURR {_number(amps)},(@{self._check_amps(channel, amps)})")

    def set_ovp(self, channel: int, volts: float) -> None:
        # VOLT:PROT <level>,(@n): the channel-list form of the OVP level (as PyMeasure uses it).
        self._apply(f"VOLT:PROT {_number(volts)},(@{self._check_ovp(channel, volts)})")

    def enable(self, channel: int) -> None:
        self._apply(f"OUTP ON,(@{self._check_channel(channel)})")

    def disable(self, channel: int) -> None:
        self._apply(f"OUTP OFF,(@{self._check_channel(channel)})")

    def disable_all(self) -> None:
        """Every output off in one command: no moment with some channels still on."""
        self._apply(f"OUTP OFF,(@{self.channels[0]}:{self.channels[-1]})")

    def measure_voltage(self, channel: int) -> float:
        return self.query_float(f"MEAS:VOLT? (@{self._check_channel(channel)})")

    def measure_current(self, channel: int) -> float:
        return self.query_float(f"MEAS:CURR? (@{self._check_channel(channel)})")

    def is_enabled(self, channel: int) -> bool:
        return self._query_bool(f"OUTP? (@{self._check_channel(channel)})", "1 or 0")

    def regulation(self, channel: int) -> Regulation:
        """The channel's questionable-instrument-summary condition register,
        `STAT:QUES:INST:ISUM<n>:COND?`: bit 0 set in constant voltage, bit 1 in constant
        current; neither (an output that is off) is "UR"."""
        command = f"STAT:QUES:INST:ISUM{self._check_channel(channel)}:COND?"
        reply = self.query(command)
        try:
            condition = int(float(reply))
        except ValueError:
            raise self._error(f"expected a register value from {command!r}, got {reply!r}",
                              command, KIND_GARBAGE) from None  # fmt: skip
        if condition & ISUM_CC:
            return "CC"
        if condition & ISUM_CV:
            return "CV"
        return "UR"


# E36300 questionable instrument summary register bits.
ISUM_CV = 0x01
ISUM_CC = 0x02


def _number(value: float) -> str:
    """A number as SCPI text: 5 -> '5', 0.5 -> '0.5'."""
    return f"{value:.8g}"
