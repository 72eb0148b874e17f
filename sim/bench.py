"""The simulated bench: one circuit shared by every twin.

Wiring: PSU CH1 -> board VIN; the DMM's input is across the board's 3.3 V rail. PSU CH2 and
CH3 are unloaded. The electronic load's input is across the 3.3 V rail too; scope CH1 probes
the 3.3 V rail (CH2-CH4 are not connected); the multiplexer's channels reach the board's test
points (`MUX_WIRING`: 101 1V8, 102 5V0, 103 VREF, 104 3V3; the others are not wired); the SMU
drives the board's EN pin. The instruments' state that the circuit depends on (PSU channels,
the load, the SMU) lives here, not in the twins, so that every connection and every twin sees
the same circuit. All methods are thread-safe.

Time: everything happens on the bench's clock (`RealClock` by default; `SimulatedClock` for
tests that must not wait). A DC reading integrates like a real DMM's: its value is the rail
averaged over the aperture, NPLC power-line cycles (10 PLC = 200 ms at 50 Hz), starting when
the reading starts, and it is ready only when the aperture is over. So a reading taken right
after the supply comes on includes the rail's rise, exactly as on a real bench. To average over
the past (and to show a scope what the rail did), the bench keeps what VIN and the load were
over the last `HISTORY_S` seconds.
"""

from __future__ import annotations

import bisect
import math
import random
import threading
import time
from dataclasses import dataclass
from typing import Protocol

from sim.boards.circuit import LOAD_MODES, NO_LOAD, Board, ExternalLoad

PSU_CHANNELS = (1, 2, 3)
DUT_CHANNEL = 1
OVERLOAD = 9.9e37  # what a DMM reads on an open input
LINE_FREQUENCIES_HZ = (50.0, 60.0)  # the mains the bench can be plugged into
HISTORY_S = 10.0  # VIN history kept: longer than any aperture (100 PLC at 50 Hz is 2 s)
_DMM_NOISE_V = 20e-6
_PSU_NOISE_V = 0.0005
_PSU_NOISE_A = 0.0001
_LOAD_NOISE_V = 0.0003
_LOAD_NOISE_A = 0.0002
_SMU_NOISE_V = 10e-6
_SMU_NOISE_A = 50e-12
_MUX_NOISE_V = 30e-6  # the multiplexer's internal DMM at 1 PLC
# The multiplexer's channels and the test points they reach (the fixture's wiring).
MUX_WIRING = {101: "1V8", 102: "5V0", 103: "VREF", 104: "3V3"}
SMU_FUNCTIONS = ("VOLT", "CURR")


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


@dataclass
class SmuState:
    """The SMU's source settings, at their power-on defaults: source `function` ("VOLT" or
    "CURR") at `level`, with `limit` the compliance (amperes when sourcing volts, volts when
    sourcing amperes)."""

    function: str = "VOLT"
    level: float = 0.0
    limit: float = 105e-6  # the 2450's default current limit
    enabled: bool = False


@dataclass(frozen=True)
class SmuReading:
    """What the SMU's terminals see: volts, amperes, and whether the compliance limit holds
    them (the source could not reach its level)."""

    volts: float
    amps: float
    in_compliance: bool


@dataclass(frozen=True)
class _VinSpan:
    """From `start` on (bench time), this board saw `vin` volts, first applied at `powered_at`,
    with `load` on its rail."""

    start: float
    board: Board
    vin: float
    powered_at: float
    load: ExternalLoad = NO_LOAD


class Bench:
    """PSU channels -> DUT model -> DMM input, with seeded noise.

    `line_frequency_hz` is the mains the bench is plugged into (what the DMMs answer to
    `SYST:LFR?`): it sets how long a power-line cycle, and so a reading's aperture, is.
    """

    def __init__(
        self,
        board: Board,
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
        self.load = NO_LOAD
        self.smu = SmuState()
        self._spans: list[_VinSpan] = []
        self.reset_psu()

    def close(self) -> None:
        """Wake every reading still integrating; the bench is being taken down."""
        self.clock.interrupt()

    def aperture_s(self, nplc: float) -> float:
        """How long a reading at `nplc` power-line cycles integrates, in seconds."""
        return nplc / self.line_frequency_hz

    # -- fixture ----------------------------------------------------------------------------

    def insert_board(self, board: Board) -> None:
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
        span = _VinSpan(now, self.board, vin, self.channels[DUT_CHANNEL].enabled_at, self.load)
        last = self._spans[-1] if self._spans else None
        if last is not None and (last.board, last.vin, last.powered_at, last.load) == (
            span.board,
            span.vin,
            span.powered_at,
            span.load,
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
            demand = self.board.input_current(channel.voltage, self.load)
            if demand <= channel.current_limit:
                return channel.voltage, demand
            return self._cc_voltage(channel), channel.current_limit

    def psu_regulation(self, number: int) -> str:
        """How a channel regulates: "CC" while its current limit holds the output below the set
        voltage, else "CV" (also with the output off: nothing limits it then)."""
        with self._lock:
            channel = self.channels[number]
            if not channel.enabled or number != DUT_CHANNEL:
                return "CV"
            demand = self.board.input_current(channel.voltage, self.load)
            return "CC" if demand > channel.current_limit else "CV"

    def _cc_voltage(self, channel: PsuChannel) -> float:
        """The voltage at which the board draws exactly the current limit (bisection)."""
        low, high = 0.0, channel.voltage
        for _ in range(40):
            middle = (low + high) / 2
            if self.board.input_current(middle, self.load) > channel.current_limit:
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
            return self.board.rail_voltage(vin, since, self.load)

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
                total += span.board.rail_mean(span.vin, *since_on, span.load) * (high - low)
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

    # -- electronic load (on the 3.3 V rail) --------------------------------------------------

    def reset_load(self) -> None:
        """The load's power-on state: CC mode, 0 A, input off."""
        self.configure_load(mode="cc", level=0.0, on=False)

    def configure_load(
        self, *, mode: str | None = None, level: float | None = None, on: bool | None = None
    ) -> None:
        """Change the load's mode ("cc", "cv", "cr"), its level (A, V or Ω) or its input state."""
        if mode is not None and mode not in LOAD_MODES:
            raise ValueError(f"load mode {mode!r}: use one of {', '.join(LOAD_MODES)}")
        with self._lock:
            now = self.load
            self.load = ExternalLoad(
                now.mode if mode is None else mode,
                now.level if level is None else level,
                now.on if on is None else on,
            )
            self._note_vin()

    def measure_load(self) -> tuple[float, float]:
        """What the load reads at its input: (volts across it, amperes it sinks), with noise."""
        with self._lock:
            volts = self.rail_voltage()
            amps = self.load.current(volts)
            noisy_volts = max(0.0, volts + self._rng.gauss(0, _LOAD_NOISE_V)) if volts else 0.0
            noisy_amps = max(0.0, amps + self._rng.gauss(0, _LOAD_NOISE_A)) if amps else 0.0
            return noisy_volts, noisy_amps

    # -- SMU (on the board's EN pin) ----------------------------------------------------------

    def reset_smu(self) -> None:
        with self._lock:
            self.smu = SmuState()

    def configure_smu(self, **settings: float | bool | str) -> None:
        """Change SMU settings (function, level, limit, enabled)."""
        with self._lock:
            for key, value in settings.items():
                if not hasattr(self.smu, key):
                    raise AttributeError(key)
                if key == "function" and value not in SMU_FUNCTIONS:
                    raise ValueError(f"SMU function {value!r}: use one of {SMU_FUNCTIONS}")
                setattr(self.smu, key, value)

    def smu_output(self) -> SmuReading:
        """The SMU's terminals (noise-free): the level it sources, unless the compliance limit
        stops it first; then the other quantity is at its limit."""
        with self._lock:
            smu = self.smu
            if not smu.enabled:
                return SmuReading(0.0, 0.0, False)
            board = self.board
            if smu.function == "VOLT":
                amps = board.pin_current(smu.level)
                if abs(amps) <= smu.limit:
                    return SmuReading(smu.level, amps, False)
                amps = math.copysign(smu.limit, amps)
                return SmuReading(board.pin_voltage(amps), amps, True)
            volts = board.pin_voltage(smu.level)
            if abs(volts) <= smu.limit:
                return SmuReading(volts, smu.level, False)
            volts = math.copysign(smu.limit, volts)
            return SmuReading(volts, board.pin_current(volts), True)

    def measure_smu(self, nplc: float) -> SmuReading:
        """A reading of the SMU's terminals, integrated over `nplc` power-line cycles (so it
        takes that long), with noise."""
        self._integrate(nplc)
        with self._lock:
            actual = self.smu_output()
            scale = 1 / math.sqrt(nplc)
            volts = actual.volts + self._rng.gauss(0, _SMU_NOISE_V * scale)
            amps = actual.amps * (1 + self._rng.gauss(0, 1e-4)) + self._rng.gauss(
                0, _SMU_NOISE_A * scale
            )
            return SmuReading(volts, amps, actual.in_compliance)

    # -- multiplexer (the board's test points) ------------------------------------------------

    def mux_reading(self, channel: int, nplc: float) -> float:
        """A DC reading through multiplexer `channel` by its internal DMM: the test point it is
        wired to (`MUX_WIRING`) averaged over the aperture, or noise around 0 V for a channel
        that is not wired. Takes the aperture's time."""
        start, end = self._integrate(nplc)
        point = MUX_WIRING.get(channel)
        with self._lock:
            noise = self._rng.gauss(0, _MUX_NOISE_V / math.sqrt(nplc))
            if point is None:
                return noise
            vin, _ = self.psu_output(DUT_CHANNEL)
            rail = self.rail_mean(start, end)
            return self.board.test_point(point, vin, rail) + noise

    # -- what a scope probing the 3.3 V rail sees ---------------------------------------------

    def _span_at(self, t: float) -> _VinSpan:
        index = bisect.bisect_right([span.start for span in self._spans], t) - 1
        return self._spans[max(index, 0)]

    def rail_at(self, t: float) -> float:
        """The rail (noise-free, no ripple) at bench time `t` (within the last HISTORY_S)."""
        with self._lock:
            span = self._span_at(t)
            return span.board.rail_voltage(span.vin, t - span.powered_at, span.load)

    def rail_waveform(self, times: list[float], *, ac_coupled: bool) -> list[float]:
        """The rail with its ripple at each bench time in `times` (ascending), noise-free; with
        `ac_coupled`, the ripple alone (the DC level blocked)."""
        with self._lock:
            starts = [span.start for span in self._spans]
            values: list[float] = []
            for t in times:
                span = self._spans[max(bisect.bisect_right(starts, t) - 1, 0)]
                rail = span.board.rail_voltage(span.vin, t - span.powered_at, span.load)
                ripple = span.board.ripple(t) if rail > 0 else 0.0
                values.append(ripple if ac_coupled else rail + ripple)
            return values

    def ripple_crossing(
        self, start: float, end: float, level: float, rising: bool = True
    ) -> float | None:
        """The first bench time in [start, end] at which the ripple alone (AC coupled) crosses
        `level` upwards (`rising`) or downwards, or None (unpowered, or a level outside the
        ripple). The ripple is periodic: one period from `start` is searched."""
        with self._lock:
            board = self.board
            if self.rail_voltage() <= 0:
                return None
            period = 1.0 / board.ripple_hz
            steps = 256
            t, previous = start, board.ripple(start)
            while t < min(end, start + period):
                t_next = t + period / steps
                value = board.ripple(t_next)
                if (previous < level <= value) if rising else (previous >= level > value):
                    return t_next
                t, previous = t_next, value
            return None

    def rail_crossing(self, start: float, end: float, level: float, rising: bool) -> float | None:
        """The first bench time in [start, end] at which the rail (DC, ripple ignored) crosses
        `level` upwards (`rising`) or downwards, or None.

        Within one span of constant VIN and load the rail only rises (towards its settled
        value), so a rising crossing inside a span is found by bisection; a change of VIN or
        load steps the rail, which can cross either way at the span's start.
        """
        with self._lock:
            spans = list(self._spans)
        previous: float | None = None
        for index, span in enumerate(spans):
            span_end = spans[index + 1].start if index + 1 < len(spans) else math.inf
            low, high = max(start, span.start), min(end, span_end)
            if high < low:
                continue

            def rail(t: float, span: _VinSpan = span) -> float:
                return span.board.rail_voltage(span.vin, t - span.powered_at, span.load)

            first, last = rail(low), rail(high)
            if previous is not None:
                if rising and previous < level <= first:
                    return low
                if not rising and previous >= level > first:
                    return low
            if rising and first < level <= last:
                for _ in range(50):
                    middle = (low + high) / 2
                    if rail(middle) < level:
                        low = middle
                    else:
                        high = middle
                return high
            previous = last
        return None
