"""What several twins share: number formats and the DMM's view of the bench.

A DMM twin's reading takes as long as the real one's: `dmm_reading` returns after the aperture
(NPLC / line frequency of bench time, see `Bench.dmm_dc_volts`), holding the twin busy meanwhile,
as the instrument is.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from sim.bench import OVERLOAD, Bench

# Measurement functions, keyed the way SCPI DMMs name them, with the largest range of each.
DMM_MAX_RANGE = {"VOLT:DC": 1000.0, "VOLT:AC": 750.0, "CURR:DC": 10.0, "RES": 100e6}


def nr3(value: float) -> str:
    """A number as SCPI NR3 (`+3.30012345E+00`); overload as +9.9E37."""
    if math.isinf(value) or abs(value) >= OVERLOAD:
        return "+9.90000000E+37"
    return f"{value:+.8E}"


def dmm_reading(bench: Bench, function: str, range: float | None, nplc: float) -> float:
    """What a DMM across the bench's rail reads, integrating over `nplc` power-line cycles
    where the function has an integration time; above 120 % of a fixed range, overload."""
    readings: dict[str, Callable[[], float]] = {
        "VOLT:DC": lambda: bench.dmm_dc_volts(nplc),
        "VOLT:AC": bench.dmm_ac_volts,
        "CURR:DC": lambda: bench.dmm_dc_amps(nplc),
        "RES": lambda: bench.dmm_ohms(nplc),
    }
    value = readings[function]()
    if range is not None and abs(value) > 1.2 * range:
        return OVERLOAD
    return value


def line_frequency(bench: Bench) -> str:
    """`SYST:LFR?`: the mains frequency the meter measured at power-on, as an integer."""
    return f"{bench.line_frequency_hz:.0f}"
