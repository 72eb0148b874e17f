"""PCBA01, the demo power board: 5 V in, a 3.3 V LDO, a ~50 Ω load on the rail.

Electrically: VIN from PSU channel 1 feeds an LDO (dropout 0.35 V, so below ~3.65 V in the rail
follows VIN - dropout, and below ~1 V the regulator is off). Input current is the load current
plus the LDO's quiescent current (≈ 70 mA at 5 V). After power-on the rail rises with a 2 ms time
constant (a 10-90 % rise time of 2 ms x ln 9 = 4.4 ms).

What the second procedure (FVT2) measures, on the same board:
- Load regulation: an electronic load on the 3.3 V rail makes it droop through the LDO's output
  resistance (40 mΩ: 20 mV at 0.5 A) and recover when the load is removed; the LDO limits its
  output at 1 A, beyond which the rail collapses.
- Ripple: a 100 kHz sawtooth from the board's charge pump (it rises over 30 % of a period, so its
  10-90 % rise time is 2.4 µs), 2 mV RMS (6.9 mV peak to peak); what an AC voltmeter reads
  and what a scope shows are the same ripple.
- Test points behind the multiplexer: 1V8 (a second LDO fed from the 3.3 V rail), 5V0 (VIN after
  the input fuse and ferrite, 0.1 Ω), VREF (a 2.500 V reference fed from the 3.3 V rail) and 3V3.
- The EN input of the board's load switch, driven by the SMU: a 1 MΩ pull-down (3.3 µA at
  3.3 V), clamped by an ESD diode above 6 V and below -0.6 V.

Fault modes model the failures FVT1 and FVT2 are meant to catch: `low_rail` (a wrong feedback
resistor), `dead_regulator`, `shorted_rail` (~2 Ω across VIN), `noisy` (30x the ripple),
`weak_regulator` (16x the output resistance: fine unloaded, 0.4 V of droop at 0.5 A),
`bad_1v8` (the 1.8 V LDO sits at 1.65 V) and `leaky_enable` (a damaged EN pin with a 20 kΩ
leak path to ground).
"""

from __future__ import annotations

import math
import random

from sim.boards.circuit import NO_LOAD, ExternalLoad

FAULTS = (
    "low_rail",
    "dead_regulator",
    "shorted_rail",
    "noisy",
    "weak_regulator",
    "bad_1v8",
    "leaky_enable",
)

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
# Load regulation: the rail droops by R_OUT times the current an external load draws (the
# on-board load is what the setpoint is trimmed at). The LDO limits its output current.
R_OUT = 0.04
WEAK_R_OUT = 0.8  # weak_regulator
CURRENT_LIMIT = 1.0
# The charge pump's ripple: a sawtooth rising over RIPPLE_RISE of each period.
RIPPLE_HZ = 100e3
RIPPLE_RISE = 0.3
# Test points: rails fed from the 3.3 V rail, each with its dropout.
RAIL_1V8 = 1.80
BAD_1V8 = 1.65  # bad_1v8
DROPOUT_1V8 = 0.3
VREF = 2.500
DROPOUT_VREF = 0.2
INPUT_OHMS = 0.1  # fuse + ferrite between VIN and the 5V0 test point
TEST_POINTS = ("1V8", "5V0", "VREF", "3V3")
# The EN pin the SMU drives: pull-down, and the ESD diode's clamps.
EN_PULLDOWN_OHMS = 1e6
EN_LEAK_OHMS = 20e3  # leaky_enable: in parallel with the pull-down
EN_CLAMP_HIGH = 6.0
EN_CLAMP_LOW = -0.6
EN_CLAMP_OHMS = 5.0


class Pcba01:
    """One PCBA01 unit on the fixture, good or with one fault mode."""

    name = "pcba01"
    test_points = TEST_POINTS
    ripple_hz = RIPPLE_HZ

    def __init__(self, fault: str | None = None, seed: int = 0) -> None:
        if fault is not None and fault not in FAULTS:
            raise ValueError(f"unknown pcba01 fault {fault!r}; valid faults: {', '.join(FAULTS)}")
        self.fault = fault
        self._rng = random.Random(seed)

    def __repr__(self) -> str:
        return f"Pcba01(fault={self.fault!r})"

    # -- VIN and the 3.3 V rail -------------------------------------------------------------

    def input_current(self, vin: float, load: ExternalLoad = NO_LOAD) -> float:
        """Current drawn from VIN at steady state (the PSU's load line)."""
        if vin <= 0:
            return 0.0
        if self.fault == "shorted_rail":
            return vin / SHORT_OHMS
        quiescent = QUIESCENT * min(vin / MIN_INPUT, 1.0)
        rail = self.rail_voltage(vin, load=load)
        return quiescent + rail / LOAD_OHMS + load.current(rail)

    def rail_voltage(
        self, vin: float, since_power_on_s: float = math.inf, load: ExternalLoad = NO_LOAD
    ) -> float:
        """The 3.3 V rail for a given VIN, `since_power_on_s` after the input came up."""
        steady = self._steady(vin, load)
        if steady == 0.0:
            return 0.0
        return steady * (1.0 - math.exp(-max(since_power_on_s, 0.0) / SETTLE_TAU_S))

    def rail_mean(
        self, vin: float, start_s: float, end_s: float, load: ExternalLoad = NO_LOAD
    ) -> float:
        """The rail averaged from `start_s` to `end_s` after the input came up (closed form).

        What an integrating DMM reads: the mean of `rail_voltage` over its aperture. The rise
        is steady * (1 - exp(-t/tau)), whose integral from a to b is
        steady * ((b - a) - tau * (exp(-a/tau) - exp(-b/tau))).
        """
        start_s, end_s = max(start_s, 0.0), max(end_s, 0.0)
        steady = self._steady(vin, load)
        if end_s - start_s <= 1e-12 or steady == 0.0:
            return self.rail_voltage(vin, start_s, load)
        rise = SETTLE_TAU_S * (math.exp(-start_s / SETTLE_TAU_S) - math.exp(-end_s / SETTLE_TAU_S))
        return steady * (1.0 - rise / (end_s - start_s))

    def _steady(self, vin: float, load: ExternalLoad) -> float:
        """The settled rail: the LDO's setpoint, less the droop the external load causes.

        The load draws `load.current(V)`; the LDO can give (setpoint - V) / R_out, at most its
        current limit less what the on-board load takes. The rail settles where the two meet
        (found by bisection: one rises with V, the other falls).
        """
        if self.fault in ("dead_regulator", "shorted_rail") or vin < MIN_INPUT:
            return 0.0
        target = RAIL_LOW if self.fault == "low_rail" else RAIL_NOMINAL
        setpoint = max(0.0, min(target, vin - DROPOUT))
        if not load.on:
            return setpoint
        r_out = WEAK_R_OUT if self.fault == "weak_regulator" else R_OUT

        def available(volts: float) -> float:
            return min(CURRENT_LIMIT - volts / LOAD_OHMS, (setpoint - volts) / r_out)

        low, high = 0.0, setpoint
        if load.current(high) <= available(high):
            return setpoint
        for _ in range(50):
            middle = (low + high) / 2
            if load.current(middle) > available(middle):
                high = middle
            else:
                low = middle
        return low

    # -- ripple -----------------------------------------------------------------------------

    @property
    def ripple_rms(self) -> float:
        """Ripple on the rail (what an AC voltmeter reads while powered)."""
        return NOISY_RIPPLE_RMS if self.fault == "noisy" else RIPPLE_RMS

    def rail_noise(self, nplc: float) -> float:
        """Ripple left in a DC reading integrated over `nplc` power-line cycles."""
        return self._rng.gauss(0.0, self.ripple_rms * 0.5 / math.sqrt(max(nplc, 0.02)))

    def ripple(self, t: float) -> float:
        """The charge pump's sawtooth at bench time `t`: zero mean, `ripple_rms` RMS.

        A linear sawtooth of peak-to-peak A has an RMS of A / (2 sqrt 3), whatever its shape.
        """
        peak_to_peak = 2.0 * math.sqrt(3.0) * self.ripple_rms
        phase = (t * RIPPLE_HZ) % 1.0
        if phase < RIPPLE_RISE:
            fraction = phase / RIPPLE_RISE
        else:
            fraction = 1.0 - (phase - RIPPLE_RISE) / (1.0 - RIPPLE_RISE)
        return peak_to_peak * (fraction - 0.5)

    # -- test points and the EN pin ---------------------------------------------------------

    def test_point(self, name: str, vin: float, rail: float) -> float:
        """The voltage at a test point (see TEST_POINTS), noise-free."""
        if name == "3V3":
            return rail
        if name == "5V0":
            if vin <= 0:
                return 0.0
            return max(0.0, vin - INPUT_OHMS * self.input_current(vin))
        if name == "1V8":
            level = BAD_1V8 if self.fault == "bad_1v8" else RAIL_1V8
            return max(0.0, min(level, rail - DROPOUT_1V8))
        if name == "VREF":
            return max(0.0, min(VREF, rail - DROPOUT_VREF))
        raise ValueError(f"PCBA01 has no test point {name!r}; test points: {TEST_POINTS}")

    def _en_ohms(self) -> float:
        if self.fault == "leaky_enable":
            return 1.0 / (1.0 / EN_PULLDOWN_OHMS + 1.0 / EN_LEAK_OHMS)
        return EN_PULLDOWN_OHMS

    def pin_current(self, volts: float) -> float:
        """Current into the EN pin at `volts`: the pull-down, plus the ESD clamps beyond."""
        amps = volts / self._en_ohms()
        if volts > EN_CLAMP_HIGH:
            amps += (volts - EN_CLAMP_HIGH) / EN_CLAMP_OHMS
        elif volts < EN_CLAMP_LOW:
            amps += (volts - EN_CLAMP_LOW) / EN_CLAMP_OHMS
        return amps

    def pin_voltage(self, amps: float) -> float:
        """The voltage at which the EN pin takes `amps` (the inverse of `pin_current`)."""
        ohms = self._en_ohms()
        volts = amps * ohms
        if volts > EN_CLAMP_HIGH:
            return (amps + EN_CLAMP_HIGH / EN_CLAMP_OHMS) / (1 / ohms + 1 / EN_CLAMP_OHMS)
        if volts < EN_CLAMP_LOW:
            return (amps + EN_CLAMP_LOW / EN_CLAMP_OHMS) / (1 / ohms + 1 / EN_CLAMP_OHMS)
        return volts
