"""Source-measure units: the SourceMeter capability and the Keithley 2450 model.

An SMU sources a voltage with a current limit (compliance), or a current with a voltage limit,
and measures what flows and what appears at its terminals. When the unit takes more than the
limit allows, the limit holds and the source does not reach its level: `in_compliance()` says so.
Safe state is the output off, read back.
"""

from __future__ import annotations

import abc
import re
from typing import Any, ClassVar

from drivers.errors import KIND_GARBAGE, KIND_WRONG_MODEL
from drivers.models.confirm import ConfirmingScpiInstrument, number


class SourceMeter(abc.ABC):
    """What a test asks of an SMU. Values in volts and amperes; `nplc=None` keeps the
    instrument's integration time.

    Limits are set before the level, so the unit never sees a level without its limit. A level
    or limit beyond the model's MAX_VOLTS / MAX_AMPS raises ValueError before anything is sent.
    """

    MAX_VOLTS: ClassVar[float] = float("inf")
    MAX_AMPS: ClassVar[float] = float("inf")

    @abc.abstractmethod
    def source_voltage(self, volts: float, current_limit: float) -> None:
        """Source `volts`, letting at most `current_limit` amperes flow (either polarity)."""

    @abc.abstractmethod
    def source_current(self, amps: float, voltage_limit: float) -> None:
        """Source `amps`, letting the terminals reach at most `voltage_limit` volts."""

    @abc.abstractmethod
    def enable(self) -> None:
        """Turn the output on: the source is applied to the unit."""

    @abc.abstractmethod
    def disable(self) -> None:
        """Turn the output off."""

    @abc.abstractmethod
    def is_enabled(self) -> bool:
        """Whether the output is on."""

    @abc.abstractmethod
    def measure_voltage(self, nplc: float | None = None) -> float:
        """One voltage reading at the terminals."""

    @abc.abstractmethod
    def measure_current(self, nplc: float | None = None) -> float:
        """One current reading (positive into the unit)."""

    @abc.abstractmethod
    def in_compliance(self) -> bool:
        """Whether the limit holds the output now (the source could not reach its level)."""

    def _check_source(self, level: float, limit: float, level_unit: str) -> None:
        model = getattr(self, "MODEL", type(self).__name__)
        level_max, limit_max, limit_unit = (
            (self.MAX_VOLTS, self.MAX_AMPS, "A")
            if level_unit == "V"
            else (self.MAX_AMPS, self.MAX_VOLTS, "V")
        )
        if not abs(level) <= level_max:
            raise ValueError(f"{model}: {level:g} {level_unit} is beyond ±{level_max:g} "
                             f"{level_unit}")  # fmt: skip
        if not 0 < limit <= limit_max:
            raise ValueError(f"{model}: the limit must be within 0..{limit_max:g} {limit_unit} "
                             f"(and not 0); got {limit:g} {limit_unit}")  # fmt: skip


class Keithley2450(ConfirmingScpiInstrument, SourceMeter):
    """Keithley 2450 SourceMeter (±210 V, ±1.05 A) in its SCPI command set.

    Sourcing: `:SOUR:FUNC VOLT|CURR`, the limit `:SOUR:VOLT:ILIM` / `:SOUR:CURR:VLIM`, the level
    `:SOUR:VOLT` / `:SOUR:CURR`, each confirmed with *OPC? and the error queue. A reading is
    `:MEAS:VOLT?` / `:MEAS:CURR?` (NR3), with its integration time `:SENS:<function>:NPLC`.
    Compliance is the source's limit TRIPped query. Error-queue entries carry extra fields in
    the quotes (`0,"No error;0;0 0"`): only the leading integer decides.
    """

    MODEL = "Keithley 2450"
    IDN_PATTERN = re.compile(r"keithley instruments,model 2450,", re.IGNORECASE)
    DEFAULT_OPTIONS: ClassVar[dict[str, Any]] = {
        "read_termination": "\n",
        "write_termination": "\n",
    }
    ERROR_QUERY = ":SYST:ERR?"
    MAX_VOLTS = 210.0
    MAX_AMPS = 1.05
    # source function -> its compliance node
    LIMITS: ClassVar[dict[str, str]] = {"VOLT": ":SOUR:VOLT:ILIM", "CURR": ":SOUR:CURR:VLIM"}

    def connect(self) -> str:
        """Check the model, then that it speaks SCPI: in TSP it would ignore every command."""
        idn = super().connect()
        self._identity = None
        language = self.query("*LANG?").strip().strip('"').upper()
        if language != "SCPI":
            raise self._error(
                f"the command set is {language}, this driver needs SCPI: select MENU > System > "
                "Settings > Command Set > SCPI on the instrument and reboot it",
                "*LANG?",
                KIND_WRONG_MODEL,
            )
        self._identity = idn
        return idn

    def source_voltage(self, volts: float, current_limit: float) -> None:
        self._check_source(volts, current_limit, "V")
        self._apply(
            ":SOUR:FUNC VOLT",
            f":SOUR:VOLT:ILIM {number(current_limit)}",
            f":SOUR:VOLT {number(volts)}",
        )

    def source_current(self, amps: float, voltage_limit: float) -> None:
        self._check_source(amps, voltage_limit, "A")
        self._apply(
            ":SOUR:FUNC CURR",
            f":SOUR:CURR:VLIM {number(voltage_limit)}",
            f":SOUR:CURR {number(amps)}",
        )

    def enable(self) -> None:
        self._apply(":OUTP ON")

    def disable(self) -> None:
        self._apply(":OUTP OFF")

    def is_enabled(self) -> bool:
        return self._query_bool(":OUTP?")

    def measure_voltage(self, nplc: float | None = None) -> float:
        return self._measure("VOLT", nplc)

    def measure_current(self, nplc: float | None = None) -> float:
        return self._measure("CURR", nplc)

    def _measure(self, function: str, nplc: float | None) -> float:
        if nplc is not None:
            if not 0.01 <= nplc <= 10:
                raise ValueError(f"{self.MODEL}: nplc must be within 0.01..10; got {nplc}")
            self._apply(f":SENS:{function}:NPLC {number(nplc)}")
        return self.query_float(f":MEAS:{function}?")

    def source_function(self) -> str:
        """What the SMU sources: "VOLT" or "CURR"."""
        reply = self.query(":SOUR:FUNC?").upper()
        if reply not in self.LIMITS:
            raise self._error(f"expected VOLT or CURR from ':SOUR:FUNC?', got {reply!r}",
                              ":SOUR:FUNC?", KIND_GARBAGE)  # fmt: skip
        return reply

    def in_compliance(self) -> bool:
        return self._query_bool(f"{self.LIMITS[self.source_function()]}:TRIP?")

    def safe_state(self) -> None:
        """Output off, read back (once more if it still reads on), else InstrumentError."""

        def still_on() -> str | None:
            return "the output still reads ON" if self.is_enabled() else None

        self._verify_safe("turning the output off", self.disable, still_on)
