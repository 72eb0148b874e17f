"""The simulated bench: one circuit shared by every twin.

Wiring: PSU CH1 -> board VIN; the DMM's input is across the board's 3.3 V rail. PSU CH2 and
CH3 are unloaded. The PSU state lives here, not in the PSU twin, so that every connection and
every twin sees the same circuit. All methods are thread-safe.
"""

from __future__ import annotations

import math
import random
import threading
import time
from dataclasses import dataclass

from sim.boards.pcba01 import Pcba01

PSU_CHANNELS = (1, 2, 3)
DUT_CHANNEL = 1
OVERLOAD = 9.9e37  # what a DMM reads on an open input
_DMM_NOISE_V = 20e-6
_PSU_NOISE_V = 0.0005
_PSU_NOISE_A = 0.0001


@dataclass
class PsuChannel:
    """Settings of one PSU output, at their power-on defaults."""

    voltage: float = 0.0
    current_limit: float = 1.0
    ovp_level: float = 33.0
    ovp_enabled: bool = False
    enabled: bool = False
    ovp_tripped: bool = False
    enabled_at: float = 0.0  # time.monotonic() when the output last came on


class Bench:
    """PSU channels -> DUT model -> DMM input, with seeded noise."""

    def __init__(self, board: Pcba01, seed: int = 0) -> None:
        self._lock = threading.RLock()
        self._rng = random.Random(seed)
        self.board = board
        self.channels: dict[int, PsuChannel] = {}
        self.reset_psu()

    # -- fixture ----------------------------------------------------------------------------

    def insert_board(self, board: Pcba01) -> None:
        """Put another unit on the fixture; if VIN is on it powers up from now."""
        with self._lock:
            self.board = board
            channel = self.channels[DUT_CHANNEL]
            if channel.enabled:
                channel.enabled_at = time.monotonic()

    # -- PSU --------------------------------------------------------------------------------

    def reset_psu(self) -> None:
        with self._lock:
            self.channels = {n: PsuChannel() for n in PSU_CHANNELS}

    def channel(self, number: int) -> PsuChannel:
        """A copy of a channel's settings (for twins and tests)."""
        with self._lock:
            return PsuChannel(**vars(self.channels[number]))

    def configure(self, number: int, **settings: float | bool) -> None:
        """Change channel settings (voltage, current_limit, ovp_level, ovp_enabled, enabled)."""
        with self._lock:
            channel = self.channels[number]
            was_on = channel.enabled
            for key, value in settings.items():
                if not hasattr(channel, key):
                    raise AttributeError(key)
                setattr(channel, key, value)
            if channel.enabled and not was_on:
                channel.enabled_at = time.monotonic()
                channel.ovp_tripped = False
            if channel.enabled and channel.ovp_enabled and channel.voltage > channel.ovp_level:
                channel.enabled = False  # over-voltage protection trips the output
                channel.ovp_tripped = True

    def psu_output(self, number: int) -> tuple[float, float]:
        """Actual (volts, amps) at the terminals: constant voltage or constant current."""
        with self._lock:
            channel = self.channels[number]
            if not channel.enabled:
                return 0.0, 0.0
            if number != DUT_CHANNEL:
                return channel.voltage, 0.0
            demand = self.board.input_current(channel.voltage)
            if demand <= channel.current_limit:
                return channel.voltage, demand
            return self._cc_voltage(channel), channel.current_limit

    def _cc_voltage(self, channel: PsuChannel) -> float:
        """The voltage at which the board draws exactly the current limit (bisection)."""
        low, high = 0.0, channel.voltage
        for _ in range(40):
            middle = (low + high) / 2
            if self.board.input_current(middle) > channel.current_limit:
                high = middle
            else:
                low = middle
        return low

    def measure_psu_voltage(self, number: int) -> float:
        with self._lock:
            volts, _ = self.psu_output(number)
            return max(0.0, volts + self._rng.gauss(0, _PSU_NOISE_V)) if volts else 0.0

    def measure_psu_current(self, number: int) -> float:
        with self._lock:
            _, amps = self.psu_output(number)
            return max(0.0, amps + self._rng.gauss(0, _PSU_NOISE_A)) if amps else 0.0

    # -- DUT and DMM ------------------------------------------------------------------------

    def rail_voltage(self) -> float:
        """The board's 3.3 V rail right now (noise-free)."""
        with self._lock:
            vin, _ = self.psu_output(DUT_CHANNEL)
            since = time.monotonic() - self.channels[DUT_CHANNEL].enabled_at
            return self.board.rail_voltage(vin, since)

    def dmm_dc_volts(self, nplc: float) -> float:
        """A DC reading of the rail; integrating longer (higher NPLC) averages noise out."""
        with self._lock:
            rail = self.rail_voltage()
            ripple = self.board.rail_noise(nplc) if rail > 0 else 0.0
            return rail + ripple + self._rng.gauss(0, _DMM_NOISE_V / math.sqrt(nplc))

    def dmm_ac_volts(self) -> float:
        """True-rms AC reading of the rail: its ripple while powered."""
        with self._lock:
            ripple = self.board.ripple_rms if self.rail_voltage() > 0 else 0.0
            return abs(ripple * (1 + self._rng.gauss(0, 0.02)) + self._rng.gauss(0, _DMM_NOISE_V))

    def dmm_dc_amps(self) -> float:
        """The DMM's current input is not wired on this fixture: noise around zero."""
        with self._lock:
            return self._rng.gauss(0, 1e-7)

    def dmm_ohms(self) -> float:
        """Nothing is wired for resistance: an open input reads overload."""
        return OVERLOAD
