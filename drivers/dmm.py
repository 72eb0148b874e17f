"""Digital multimeters: the Dmm capability and one class per model."""

from __future__ import annotations

import abc
import re
from typing import Any, ClassVar

from drivers.scpi import ScpiInstrument


class Dmm(abc.ABC):
    """What a test asks of a multimeter. `range=None` means autorange; values in SI units."""

    @abc.abstractmethod
    def measure_dc_voltage(self, range: float | None = None, nplc: float | None = None) -> float:
        """One DC voltage reading in volts; `nplc` trades speed for noise rejection."""

    @abc.abstractmethod
    def measure_ac_voltage(self, range: float | None = None) -> float:
        """One AC (true rms) voltage reading in volts."""

    @abc.abstractmethod
    def measure_dc_current(self, range: float | None = None, nplc: float | None = None) -> float:
        """One DC current reading in amperes."""

    @abc.abstractmethod
    def measure_resistance(self, range: float | None = None, nplc: float | None = None) -> float:
        """One 2-wire resistance reading in ohms (inf when open)."""


class Keysight34461A(ScpiInstrument, Dmm):
    """Keysight (Agilent) Truevolt 34461A, 6½ digits.

    Each reading configures the function (CONF presets NPLC, so NPLC is sent after it), checks
    the error queue, then triggers with READ?.
    """

    MODEL = "Keysight 34461A"
    IDN_PATTERN = re.compile(r"(keysight|agilent) technologies,34461a,", re.IGNORECASE)
    DEFAULT_OPTIONS: ClassVar[dict[str, Any]] = {
        "read_termination": "\n",
        "write_termination": "\n",
    }
    ERROR_QUERY = "SYST:ERR?"
    NPLC_VALUES = (0.02, 0.2, 1.0, 10.0, 100.0)

    def measure_dc_voltage(self, range: float | None = None, nplc: float | None = None) -> float:
        return self._measure("CONF:VOLT:DC", "SENS:VOLT:DC:NPLC", range, nplc)

    def measure_ac_voltage(self, range: float | None = None) -> float:
        return self._measure("CONF:VOLT:AC", None, range, None)

    def measure_dc_current(self, range: float | None = None, nplc: float | None = None) -> float:
        return self._measure("CONF:CURR:DC", "SENS:CURR:DC:NPLC", range, nplc)

    def measure_resistance(self, range: float | None = None, nplc: float | None = None) -> float:
        return self._measure("CONF:RES", "SENS:RES:NPLC", range, nplc)

    def _measure(
        self, configure: str, nplc_command: str | None, range: float | None, nplc: float | None
    ) -> float:
        if nplc is not None:
            self._check_nplc(nplc)
        if range is not None and not range > 0:
            raise ValueError(f"{self.MODEL}: range must be positive, or None for auto; got {range}")
        self.write(f"{configure} {'AUTO' if range is None else _number(range)}")
        if nplc is not None and nplc_command is not None:
            self.write(f"{nplc_command} {_number(nplc)}")
        self.check_errors()
        return self.query_float("READ?")

    def _check_nplc(self, nplc: float) -> None:
        if not any(abs(nplc - valid) < 1e-9 for valid in self.NPLC_VALUES):
            allowed = ", ".join(_number(v) for v in self.NPLC_VALUES)
            raise ValueError(f"{self.MODEL} does not support nplc={nplc}; use one of {allowed}")


def _number(value: float) -> str:
    """A number as SCPI text: 10 -> '10', 0.02 -> '0.02', 1e-05 -> '1e-05'."""
    return f"{value:.8g}"
