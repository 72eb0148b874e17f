"""Electronic loads: the ElectronicLoad capability and the Rigol DL3021 model.

A load sinks current from the unit: in constant current (CC, a level in amperes), constant
voltage (CV, volts: it sinks whatever holds its input at that voltage) or constant resistance
(CR, ohms). It keeps one level per mode; the level of the active mode applies while its input
is on. Safe state is the input off, read back.
"""

from __future__ import annotations

import abc
import enum
import math
import re
from typing import Any, ClassVar, NamedTuple

from drivers.errors import KIND_GARBAGE
from drivers.models.confirm import ConfirmingScpiInstrument, number


class LoadMode(enum.StrEnum):
    """How the load sinks, in the bench's words. Plain strings work too: "cc"."""

    CC = "cc"  # constant current: the level is in amperes
    CV = "cv"  # constant voltage: the level is in volts
    CR = "cr"  # constant resistance: the level is in ohms


UNITS = {LoadMode.CC: "A", LoadMode.CV: "V", LoadMode.CR: "Ω"}


class LoadRating(NamedTuple):
    """The most a test may ask of the load (the lowest resistance it can present too)."""

    volts: float
    amps: float
    watts: float
    min_ohms: float
    max_ohms: float


class ElectronicLoad(abc.ABC):
    """What a test asks of a DC electronic load. Values in volts, amperes, ohms and watts.

    `configure(mode, level)` sets the level of `mode` first and then selects the mode, so a load
    whose input is already on never sinks a stale level of the new mode. A level beyond the
    model's RATING raises ValueError before anything is sent.
    """

    RATING: ClassVar[LoadRating] = LoadRating(math.inf, math.inf, math.inf, 0.0, math.inf)

    @abc.abstractmethod
    def set_mode(self, mode: LoadMode | str) -> None:
        """Select how the load sinks (its level for that mode applies)."""

    @abc.abstractmethod
    def mode(self) -> LoadMode:
        """The selected mode, as the load reports it."""

    @abc.abstractmethod
    def set_level(self, mode: LoadMode | str, value: float) -> None:
        """Set the level used in `mode` (A for CC, V for CV, Ω for CR)."""

    @abc.abstractmethod
    def level(self, mode: LoadMode | str) -> float:
        """The level set for `mode`."""

    @abc.abstractmethod
    def enable_input(self) -> None:
        """Start sinking."""

    @abc.abstractmethod
    def disable_input(self) -> None:
        """Stop sinking."""

    @abc.abstractmethod
    def is_input_enabled(self) -> bool:
        """Whether the load is sinking."""

    @abc.abstractmethod
    def measure_voltage(self) -> float:
        """The voltage across the load's input."""

    @abc.abstractmethod
    def measure_current(self) -> float:
        """The current the load sinks."""

    @abc.abstractmethod
    def measure_power(self) -> float:
        """The power the load dissipates."""

    def configure(self, mode: LoadMode | str, level: float) -> None:
        """Set `mode`'s level, then select `mode` (e.g. `configure("cc", 0.5)` for 0.5 A)."""
        self.set_level(mode, level)
        self.set_mode(mode)

    def _check_level(self, mode: LoadMode | str, value: float) -> LoadMode:
        """The mode as a LoadMode, once `value` is a level the load is rated for."""
        model = getattr(self, "MODEL", type(self).__name__)
        mode = _load_mode(mode, model)
        rating = self.RATING
        low, high = {
            LoadMode.CC: (0.0, rating.amps),
            LoadMode.CV: (0.0, rating.volts),
            LoadMode.CR: (rating.min_ohms, rating.max_ohms),
        }[mode]
        if not low <= value <= high:
            unit = UNITS[mode]
            raise ValueError(
                f"{model}: a {mode.value.upper()} level must be within {low:g}..{high:g} {unit}; "
                f"got {value:g} {unit}"
            )
        return mode


def _load_mode(mode: LoadMode | str, model: str) -> LoadMode:
    try:
        return LoadMode(str(mode).lower())
    except ValueError:
        valid = ", ".join(m.value for m in LoadMode)
        raise ValueError(f"{model}: unknown load mode {mode!r}; use one of {valid}") from None


class RigolDL3021(ConfirmingScpiInstrument, ElectronicLoad):
    """Rigol DL3021 / DL3021A DC electronic load (150 V, 40 A, 200 W).

    Every setting is confirmed with *OPC? and the error queue. The mode is `:SOUR:FUNC`
    (`CURR`, `VOLT`, `RES`; the query answers `CC`, `CV`, `CR`), each mode's level its own
    `:SOUR:<function>:LEV:IMM`, the input `:SOUR:INP:STAT` (read back as `1`/`0` or `ON`/`OFF`),
    numbers fixed point. Raw socket port 5555.
    """

    MODEL = "Rigol DL3021"
    IDN_PATTERN = re.compile(r"rigol technologies,dl3021a?,", re.IGNORECASE)
    DEFAULT_OPTIONS: ClassVar[dict[str, Any]] = {
        "read_termination": "\n",
        "write_termination": "\n",
    }
    ERROR_QUERY = ":SYST:ERR?"
    RATING = LoadRating(volts=150.0, amps=40.0, watts=200.0, min_ohms=0.08, max_ohms=15000.0)
    FUNCTIONS: ClassVar[dict[LoadMode, str]] = {
        LoadMode.CC: "CURR",
        LoadMode.CV: "VOLT",
        LoadMode.CR: "RES",
    }
    # What `:SOUR:FUNC?` may answer, for each mode (short and long forms seen on firmware).
    REPLIES: ClassVar[dict[str, LoadMode]] = {
        "CC": LoadMode.CC, "CURR": LoadMode.CC, "CURRENT": LoadMode.CC,
        "CV": LoadMode.CV, "VOLT": LoadMode.CV, "VOLTAGE": LoadMode.CV,
        "CR": LoadMode.CR, "RES": LoadMode.CR, "RESISTANCE": LoadMode.CR,
    }  # fmt: skip

    def set_mode(self, mode: LoadMode | str) -> None:
        self._apply(f":SOUR:FUNC {self.FUNCTIONS[_load_mode(mode, self.MODEL)]}")

    def mode(self) -> LoadMode:
        reply = self.query(":SOUR:FUNC?").upper()
        if reply not in self.REPLIES:
            raise self._error(f"unexpected mode {reply!r} from ':SOUR:FUNC?' (CP, battery or "
                              "list mode is not driven here)", ":SOUR:FUNC?",
                              KIND_GARBAGE)  # fmt: skip
        return self.REPLIES[reply]

    def set_level(self, mode: LoadMode | str, value: float) -> None:
        mode = self._check_level(mode, value)
        self._apply(f":SOUR:{self.FUNCTIONS[mode]}:LEV:IMM {number(value)}")

    def level(self, mode: LoadMode | str) -> float:
        mode = _load_mode(mode, self.MODEL)
        return self.query_float(f":SOUR:{self.FUNCTIONS[mode]}:LEV:IMM?")

    def enable_input(self) -> None:
        self._apply(":SOUR:INP:STAT ON")

    def disable_input(self) -> None:
        self._apply(":SOUR:INP:STAT OFF")

    def is_input_enabled(self) -> bool:
        return self._query_bool(":SOUR:INP:STAT?")

    def measure_voltage(self) -> float:
        return self.query_float(":MEAS:VOLT?")

    def measure_current(self) -> float:
        return self.query_float(":MEAS:CURR?")

    def measure_power(self) -> float:
        return self.query_float(":MEAS:POW?")

    def safe_state(self) -> None:
        """Input off, read back (once more if it still reads on), else InstrumentError."""

        def still_on() -> str | None:
            return "the input still reads ON" if self.is_input_enabled() else None

        self._verify_safe("turning the input off", self.disable_input, still_on)
