"""The simulated bench: one circuit shared by every twin.

Wiring: PSU CH1 -> board VIN; the DMM's input is across the board's 3.3 V rail. PSU CH2 and
CH3 are unloaded. The PSU state lives here, not in the PSU twin, so that every connection and
every twin sees the same circuit. All methods are thread-safe.

Time: everything happens on the bench's clock (`RealClock` by default; `SimulatedClock` for
tests that must not wait). A DC reading integrates like a real DMM's: its value is the rail
averaged over the aperture, NPLC power-line cycles (10 PLC = 200 ms at 50 Hz), starting when
the reading starts, and it is ready only when the aperture is over. So a reading taken right
after the supply comes on includes the rail's rise, exactly as on a real bench. To average over
the past, the bench keeps what VIN was over the last `HISTORY_S` seconds.
"""

from __future__ import annotations

import math
import random
import threading
import time
from dataclasses import dataclass
from typing import Protocol

from sim.boards.pcba01 import Pcba01

PSU_CHANNELS = (1, 2, 3)
DUT_CHANNEL = 1
OVERLOAD = 9.9e37  # what a DMM reads on an open input
LINE_FREQUENCIES_HZ = (50.0, 60.0)  # the mains the bench can be plugged into
HISTORY_S = 10.0  # VIN history kept: longer than any aperture (100 PLC at 50 Hz is 2 s)
_DMM_NOISE_V = 20e-6
_PSU_NOISE_V = 0.0005
_PSU_NOISE_A = 0.0001


class Clock(Protocol):
    """Where bench time comes from, and how a twin waits for it to pass."""

    def now(self) -> float:
        """Bench time in seconds (any origin; only differences matter)."""
        ...

    def sleep(self, seconds: float) -> None:
        """Let `seconds` of bench time pass (a reading's aperture)."""
        ...

    def interrupt(self) -> None:
        """The bench is closing: end every sleep at once, now and later."""
        ...


class RealClock:
    """Wall time (`time.monotonic`); `interrupt()` wakes sleeping twins so servers stop fast."""

    def __init__(self) -> None:
        self._interrupted = threading.Event()

    def now(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        self._interrupted.wait(max(seconds, 0.0))

    def interrupt(self) -> None:
        self._interrupted.set()


class SimulatedClock:
    """Bench time that moves only when told: `sleep()` and `advance()` move it on at once.

    For tests of the bench's physics (deterministic, no waiting), and for benchmarks of the
    I/O path that must not measure apertures. Not for a bench a station runs against: the
    station's own waits (`run.sleep`) are in wall time and would not move this clock.
    """

    def __init__(self, start: float = 0.0) -> None:
        self._now = start
        self._lock = threading.Lock()

    def now(self) -> float:
        with self._lock:
            return self._now

    def sleep(self, seconds: float) -> None:
        self.advance(seconds)

    def advance(self, seconds: float) -> None:
        """Move bench time on by `seconds`."""
        with self._lock:
            self._now += max(seconds, 0.0)

    def interrupt(self) -> None:
        """Nothing to wake: this clock never blocks."""


@dataclass
class PsuChannel:
    """Settings of one PSU output, at their power-on defaults."""

    voltage: float = 0.0
    current_limit: float = 1.0
    ovp_level: float = 33.0
    ovp_enabled: bool = False
    enabled: bool = False
    ovp_tripped: bool = False
    enabled_at: float = 0.0  # bench time when the output last came on


@dataclass(frozen=True)
class _VinSpan:
    """From `start` on (bench time), this board saw `vin` volts, first applied at `powered_at`."""

    start: float
    board: Pcba01
    vin: float
    powered_at: float


class Bench:
    """PSU channels -> DUT model -> DMM input, with seeded noise.

    `line_frequency_hz` is the mains the bench is plugged into (what the DMMs answer to
    `SYST:LFR?`): it sets how long a power-line cycle, and so a reading's aperture, is.
    """

    def __init__(
        self,
        board: Pcba01,
        seed: int = 0,
        *,
        line_frequency_hz: float = 50.0,
        clock: Clock | None = None,
    ) -> None:
        if line_frequency_hz not in LINE_FREQUENCIES_HZ:
            valid = ", ".join(f"{f:g}" for f in LINE_FREQUENCIES_HZ)
            raise ValueError(f"line frequency {line_frequency_hz!r} Hz: use one of {valid}")
        self._lock = threading.RLock()
        self._rng = random.Random(seed)
        self.clock: Clock = clock if clock is not None else RealClock()
        self.line_frequency_hz = line_frequency_hz
        self.board = board
        self.channels: dict[int, PsuChannel] = {}
        self._spans: list[_VinSpan] = []
        self.reset_psu()

    def close(self) -> None:
        """Wake every reading still integrating; the bench is being taken down."""
        self.clock.interrupt()

    def aperture_s(self, nplc: float) -> float:
        """How long a reading at `nplc` power-line cycles integrates, in seconds."""
        return nplc / self.line_frequency_hz

    # -- fixture ----------------------------------------------------------------------------

    def insert_board(self, board: Pcba01) -> None:
        """Put another unit on the fixture; if VIN is on it powers up from now."""
        with self._lock:
            self.board = board
            channel = self.channels[DUT_CHANNEL]
            if channel.enabled:
                channel.enabled_at = self.clock.now()
            self._note_vin()

    # -- PSU --------------------------------------------------------------------------------

    def reset_psu(self) -> None:
        with self._lock:
            self.channels = {n: PsuChannel() for n in PSU_CHANNELS}
            self._note_vin()

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
                channel.enabled_at = self.clock.now()
                channel.ovp_tripped = False
            if channel.enabled and channel.ovp_enabled and channel.voltage > channel.ovp_level:
                channel.enabled = False  # over-voltage protection trips the output
                channel.ovp_tripped = True
            if number == DUT_CHANNEL:
                self._note_vin()

    def _note_vin(self) -> None:
        """Remember VIN from now on (after anything that may change it), for averaging."""
        now = self.clock.now()
        vin, _ = self.psu_output(DUT_CHANNEL)
        span = _VinSpan(now, self.board, vin, self.channels[DUT_CHANNEL].enabled_at)
        last = self._spans[-1] if self._spans else None
        if last is not None and (last.board, last.vin, last.powered_at) == (
            span.board,
            span.vin,
            span.powered_at,
        ):
            return
        self._spans.append(span)
        # Forget spans that ended before any reading still integrating could have started.
        while len(self._spans) > 1 and self._spans[1].start < now - HISTORY_S:
            del self._spans[0]

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
            since = self.clock.now() - self.channels[DUT_CHANNEL].enabled_at
            return self.board.rail_voltage(vin, since)

    def rail_mean(self, start: float, end: float) -> float:
        """The rail (noise-free) averaged over bench time [start, end]: piecewise, over every
        VIN the board saw in that window, each with its rise since power-on."""
        with self._lock:
            if end <= start:
                end = start + 1e-12
            total = 0.0
            for index, span in enumerate(self._spans):
                span_start = -math.inf if index == 0 else span.start
                span_end = self._spans[index + 1].start if index + 1 < len(self._spans) else end
                low, high = max(start, span_start), min(end, span_end)
                if high <= low:
                    continue
                since_on = (low - span.powered_at, high - span.powered_at)
                total += span.board.rail_mean(span.vin, *since_on) * (high - low)
            return total / (end - start)

    def _integrate(self, nplc: float) -> tuple[float, float]:
        """Wait out a reading's aperture on the bench clock (the lock is not held meanwhile,
        so the supply can change during it); the window (start, end) it integrated over."""
        aperture = self.aperture_s(nplc)
        start = self.clock.now()
        self.clock.sleep(aperture)
        return start, start + aperture

    def dmm_dc_volts(self, nplc: float) -> float:
        """A DC reading of the rail: its mean over the aperture (`nplc` power-line cycles from
        now), returned when the aperture is over. Longer apertures also average noise out."""
        start, end = self._integrate(nplc)
        with self._lock:
            rail = self.rail_mean(start, end)
            ripple = self.board.rail_noise(nplc) if rail > 0 else 0.0
            return rail + ripple + self._rng.gauss(0, _DMM_NOISE_V / math.sqrt(nplc))

    def dmm_ac_volts(self) -> float:
        """True-rms AC reading of the rail: its ripple while powered."""
        with self._lock:
            ripple = self.board.ripple_rms if self.rail_voltage() > 0 else 0.0
            return abs(ripple * (1 + self._rng.gauss(0, 0.02)) + self._rng.gauss(0, _DMM_NOISE_V))

    def dmm_dc_amps(self, nplc: float) -> float:
        """The DMM's current input is not wired on this fixture: noise around zero, after the
        aperture."""
        self._integrate(nplc)
        with self._lock:
            return self._rng.gauss(0, 1e-7)

    def dmm_ohms(self, nplc: float) -> float:
        """Nothing is wired for resistance: an open input reads overload, after the aperture."""
        self._integrate(nplc)
        return OVERLOAD
