"""What several twins share: number formats and the DMM's view of the bench."""

from __future__ import annotations

import math

from sim.bench import OVERLOAD, Bench

# Measurement functions, keyed the way SCPI DMMs name them, with the largest range of each.
DMM_MAX_RANGE = {"VOLT:DC": 1000.0, "VOLT:AC": 750.0, "CURR:DC": 10.0, "RES": 100e6}


def nr3(value: float) -> str:
    """A number as SCPI NR3 (`+3.30012345E+00`); overload as +9.9E37."""
    if math.isinf(value) or abs(value) >= OVERLOAD:
        return "+9.90000000E+37"
    return f"{value:+.8E}"


def dmm_reading(bench: Bench, function: str, range: float | None, nplc: float) -> float:
    """What a DMM across the bench's rail reads; above 120 % of a fixed range, overload."""
    value = {
        "VOLT:DC": lambda: bench.dmm_dc_volts(nplc),
        "VOLT:AC": bench.dmm_ac_volts,
        "CURR:DC": bench.dmm_dc_amps,
        "RES": bench.dmm_ohms,
    }[function]()
    if range is not None and abs(value) > 1.2 * range:
        return OVERLOAD
    return value
