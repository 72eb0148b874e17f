"""PCBA01, the demo power board: 5 V in, a 3.3 V LDO, a ~50 Ω load on the rail.

Electrically: VIN from PSU channel 1 feeds an LDO (dropout 0.35 V, so below ~3.65 V in the rail
follows VIN - dropout, and below ~1 V the regulator is off). Input current is the load current
plus the LDO's quiescent current (≈ 70 mA at 5 V). After power-on the rail rises with a 2 ms time
constant. Fault modes model the failures FVT1 is meant to catch.
"""

from __future__ import annotations

import math
import random

FAULTS = ("low_rail", "dead_regulator", "shorted_rail", "noisy")

RAIL_NOMINAL = 3.30
RAIL_LOW = 3.10  # low_rail: a wrong feedback resistor
DROPOUT = 0.35
MIN_INPUT = 1.0  # below this the LDO does not start
QUIESCENT = 0.004
LOAD_OHMS = 50.0
SHORT_OHMS = 2.5  # shorted_rail: ~2 A at 5 V
RIPPLE_RMS = 0.002
NOISY_RIPPLE_RMS = 0.060
SETTLE_TAU_S = 0.002


class Pcba01:
    """One PCBA01 unit on the fixture, good or with one fault mode."""

    name = "pcba01"

    def __init__(self, fault: str | None = None, seed: int = 0) -> None:
        if fault is not None and fault not in FAULTS:
            raise ValueError(f"unknown pcba01 fault {fault!r}; valid faults: {', '.join(FAULTS)}")
        self.fault = fault
        self._rng = random.Random(seed)

    def __repr__(self) -> str:
        return f"Pcba01(fault={self.fault!r})"

    def input_current(self, vin: float) -> float:
        """Current drawn from VIN at steady state (the PSU's load line)."""
        if vin <= 0:
            return 0.0
        if self.fault == "shorted_rail":
            return vin / SHORT_OHMS
        quiescent = QUIESCENT * min(vin / MIN_INPUT, 1.0)
        return quiescent + self.rail_voltage(vin) / LOAD_OHMS

    def rail_voltage(self, vin: float, since_power_on_s: float = math.inf) -> float:
        """The 3.3 V rail for a given VIN, `since_power_on_s` after the input came up."""
        if self.fault in ("dead_regulator", "shorted_rail") or vin < MIN_INPUT:
            return 0.0
        target = RAIL_LOW if self.fault == "low_rail" else RAIL_NOMINAL
        steady = max(0.0, min(target, vin - DROPOUT))
        return steady * (1.0 - math.exp(-max(since_power_on_s, 0.0) / SETTLE_TAU_S))

    def rail_mean(self, vin: float, start_s: float, end_s: float) -> float:
        """The rail averaged from `start_s` to `end_s` after the input came up (closed form).

        What an integrating DMM reads: the mean of `rail_voltage` over its aperture. The rise
        is steady * (1 - exp(-t/tau)), whose integral from a to b is
        steady * ((b - a) - tau * (exp(-a/tau) - exp(-b/tau))).
        """
        start_s, end_s = max(start_s, 0.0), max(end_s, 0.0)
        steady = self.rail_voltage(vin)
        if end_s - start_s <= 1e-12 or steady == 0.0:
            return self.rail_voltage(vin, start_s)
        rise = SETTLE_TAU_S * (math.exp(-start_s / SETTLE_TAU_S) - math.exp(-end_s / SETTLE_TAU_S))
        return steady * (1.0 - rise / (end_s - start_s))

    @property
    def ripple_rms(self) -> float:
        """Ripple on the rail (what an AC voltmeter reads while powered)."""
        return NOISY_RIPPLE_RMS if self.fault == "noisy" else RIPPLE_RMS

    def rail_noise(self, nplc: float) -> float:
        """Ripple left in a DC reading integrated over `nplc` power-line cycles."""
        return self._rng.gauss(0.0, self.ripple_rms * 0.5 / math.sqrt(max(nplc, 0.02)))
