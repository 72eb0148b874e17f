"""Digital multimeters: the Dmm capability and one class per model.

A test either asks for one reading (`measure_dc_voltage(range=10, nplc=1)`), or configures once
and then reads many times (`configure("dc_voltage", range=10, nplc=1)`, then `read()` in a loop),
which costs one query per reading. The models differ in how they select a function, where the
integration time lives and which values it takes; those differences stay in the model classes.
"""

from __future__ import annotations

import abc
import enum
import re
from typing import Any, ClassVar

from drivers.errors import KIND_WRONG_MODEL
from drivers.models.scpi import ScpiInstrument


class DmmFunction(enum.StrEnum):
    """What the meter measures, in the bench's words. Plain strings work too: "dc_voltage"."""

    DC_VOLTAGE = "dc_voltage"
    AC_VOLTAGE = "ac_voltage"
    DC_CURRENT = "dc_current"
    RESISTANCE = "resistance"


class Dmm(abc.ABC):
    """What a test asks of a multimeter. `range=None` means autorange; values in SI units.

    `nplc=None` leaves the integration time to the instrument (what its configure command presets,
    or its current setting). A model implements `configure()` and `read()`; the one-shot
    `measure_*` methods are built on them.
    """

    @abc.abstractmethod
    def configure(
        self, function: DmmFunction | str, range: float | None = None, nplc: float | None = None
    ) -> None:
        """Set up `function` once, checking the instrument accepted it; then call `read()`."""

    @abc.abstractmethod
    def read(self) -> float:
        """One reading with the current configuration (a single query, nothing else sent)."""

    def measure_dc_voltage(self, range: float | None = None, nplc: float | None = None) -> float:
        """One DC voltage reading in volts; `nplc` trades speed for noise rejection."""
        self.configure(DmmFunction.DC_VOLTAGE, range=range, nplc=nplc)
        return self.read()

    def measure_ac_voltage(self, range: float | None = None) -> float:
        """One AC (true rms) voltage reading in volts."""
        self.configure(DmmFunction.AC_VOLTAGE, range=range)
        return self.read()

    def measure_dc_current(self, range: float | None = None, nplc: float | None = None) -> float:
        """One DC current reading in amperes."""
        self.configure(DmmFunction.DC_CURRENT, range=range, nplc=nplc)
        return self.read()

    def measure_resistance(self, range: float | None = None, nplc: float | None = None) -> float:
        """One 2-wire resistance reading in ohms (inf when open)."""
        self.configure(DmmFunction.RESISTANCE, range=range, nplc=nplc)
        return self.read()

    def _check_settings(
        self, function: DmmFunction | str, range: float | None, nplc: float | None
    ) -> DmmFunction:
        """The function as a DmmFunction; ValueError, before any I/O, for what cannot be sent."""
        model = getattr(self, "MODEL", type(self).__name__)
        try:
            function = DmmFunction(function)
        except ValueError:
            valid = ", ".join(f.value for f in DmmFunction)
            message = f"{model}: unknown function {function!r}; use one of {valid}"
            raise ValueError(message) from None
        if range is not None and not range > 0:
            raise ValueError(f"{model}: range must be positive, or None for auto; got {range}")
        if nplc is not None:
            if function is DmmFunction.AC_VOLTAGE:
                raise ValueError(f"{model}: nplc does not apply to {function.value}")
            if not nplc > 0:
                raise ValueError(f"{model}: nplc must be positive; got {nplc}")
        return function


class Keysight344xxA(ScpiInstrument, Dmm):
    """Keysight (Agilent) Truevolt 3446x DMMs; the models differ only in their class data.

    `configure()` sends CONF (which presets the integration time, so NPLC goes after it), then
    checks the error queue; that query is answered only once the settings are applied, so no
    separate *OPC? is needed. `read()` sends READ? (= INIT + FETC?).
    """

    MODEL: ClassVar[str] = "Keysight 3446x"
    DEFAULT_OPTIONS: ClassVar[dict[str, Any]] = {
        "read_termination": "\n",
        "write_termination": "\n",
    }
    ERROR_QUERY = "SYST:ERR?"
    # The integration times the model has; anything else is refused before any I/O.
    NPLC_VALUES: ClassVar[tuple[float, ...]] = ()
    # function -> (configure command, NPLC command or None where NPLC does not apply)
    COMMANDS: ClassVar[dict[DmmFunction, tuple[str, str | None]]] = {
        DmmFunction.DC_VOLTAGE: ("CONF:VOLT:DC", "SENS:VOLT:DC:NPLC"),
        DmmFunction.AC_VOLTAGE: ("CONF:VOLT:AC", None),
        DmmFunction.DC_CURRENT: ("CONF:CURR:DC", "SENS:CURR:DC:NPLC"),
        DmmFunction.RESISTANCE: ("CONF:RES", "SENS:RES:NPLC"),
    }

    def configure(
        self, function: DmmFunction | str, range: float | None = None, nplc: float | None = None
    ) -> None:
        if nplc is not None:
            self._check_nplc(nplc)
        function = self._check_settings(function, range, nplc)
        configure, nplc_command = self.COMMANDS[function]
        self.write(f"{configure} {'AUTO' if range is None else _number(range)}")
        if nplc is not None and nplc_command is not None:
            self.write(f"{nplc_command} {_number(nplc)}")
        self.check_errors()

    def read(self) -> float:
        return self.query_float("READ?")

    def _check_nplc(self, nplc: float) -> None:
        if not any(abs(nplc - valid) < 1e-9 for valid in self.NPLC_VALUES):
            allowed = ", ".join(_number(v) for v in self.NPLC_VALUES)
            raise ValueError(f"{self.MODEL} does not support nplc={nplc}; use one of {allowed}")


class Keysight34461A(Keysight344xxA):
    """Keysight (Agilent) Truevolt 34461A, 6½ digits."""

    MODEL = "Keysight 34461A"
    IDN_PATTERN = re.compile(r"(keysight|agilent) technologies,34461a,", re.IGNORECASE)
    NPLC_VALUES = (0.02, 0.2, 1.0, 10.0, 100.0)


class Keysight34465A(Keysight344xxA):
    """Keysight Truevolt 34465A, 6½ digits, with the finer integration times of its family.

    0.001, 0.002 and 0.006 PLC need the DIG option or firmware A.03 or later; an instrument
    without them reports the error, which `configure()` raises.
    """

    MODEL = "Keysight 34465A"
    IDN_PATTERN = re.compile(r"(keysight|agilent) technologies,34465a,", re.IGNORECASE)
    NPLC_VALUES = (0.001, 0.002, 0.006, 0.02, 0.06, 0.2, 1.0, 10.0, 100.0)


class KeithleyDMM6500(ScpiInstrument, Dmm):
    """Keithley DMM6500, 6½ digits, in its SCPI command set.

    The function is selected by a quoted string (`:SENS:FUNC "VOLT:DC"`); range and NPLC are
    per function (`:SENS:VOLT:NPLC`) and kept by the instrument across function changes. Its
    error-queue entries carry extra fields inside the quotes; only the leading integer decides.
    As for the Keysights, the error-queue query after the settings is what confirms them.
    """

    MODEL = "Keithley DMM6500"
    IDN_PATTERN = re.compile(r"keithley instruments,model dmm6500,", re.IGNORECASE)
    # Raw socket needs "\n" as read termination (pyvisa-py #301).
    DEFAULT_OPTIONS: ClassVar[dict[str, Any]] = {
        "read_termination": "\n",
        "write_termination": "\n",
    }
    ERROR_QUERY = ":SYST:ERR?"
    # function -> (the quoted :SENS:FUNC name, the function's settings node)
    COMMANDS: ClassVar[dict[DmmFunction, tuple[str, str]]] = {
        DmmFunction.DC_VOLTAGE: ("VOLT:DC", ":SENS:VOLT"),
        DmmFunction.AC_VOLTAGE: ("VOLT:AC", ":SENS:VOLT:AC"),
        DmmFunction.DC_CURRENT: ("CURR:DC", ":SENS:CURR"),
        DmmFunction.RESISTANCE: ("RES", ":SENS:RES"),
    }

    def connect(self) -> str:
        """Check the model, then that it speaks SCPI: TSP or an emulation mode would not."""
        idn = super().connect()
        self._identity = None  # not usable until the command set is known
        language = self.query("*LANG?").strip().strip('"').upper()
        if language != "SCPI":
            raise self._error(
                f"the command set is {language}, this driver needs SCPI: select "
                "MENU > System > Settings > Command Set > SCPI on the instrument and reboot it",
                "*LANG?",
                KIND_WRONG_MODEL,  # an emulation mode or TSP: not the dialect this driver speaks
            )
        self._identity = idn
        return idn

    def configure(
        self, function: DmmFunction | str, range: float | None = None, nplc: float | None = None
    ) -> None:
        """Select the function, its range and NPLC; the instrument range-checks NPLC."""
        function = self._check_settings(function, range, nplc)
        name, node = self.COMMANDS[function]
        self.write(f':SENS:FUNC "{name}"')
        self.write(f"{node}:RANG:AUTO ON" if range is None else f"{node}:RANG {_number(range)}")
        if nplc is not None:
            self.write(f"{node}:NPLC {_number(nplc)}")
        self.check_errors()

    def read(self) -> float:
        return self.query_float(":READ?")


def _number(value: float) -> str:
    """A number as SCPI text: 10 -> '10', 0.02 -> '0.02', 1e-05 -> '1e-05'."""
    return f"{value:.8g}"
