"""Rigol DS1054Z twin: a 4-channel scope whose CH1 probes the board's 3.3 V rail.

What it shows is computed from the bench: the rail as it rose, drooped and switched off (the
bench keeps its recent history) plus the board's ripple, with AC coupling the ripple alone, and
a little noise; CH2-CH4 are not connected. An acquisition is 1200 points over the 12 divisions
of the screen, centred on the trigger (moved by `:TIM:MAIN:OFFS`), quantised to 8-bit codes
(25 codes per division, code 127 at the screen's centre, clipped at 0 and 255).

Acquiring: running (`:RUN`, the power-on state) shows the latest screen; `:SING` arms one
acquisition, which the first edge through the trigger level completes once its post-trigger
half has passed (`:TRIG:STAT?` WAIT, then TD, then STOP); `:STOP` freezes the screen. The edge is
found in the bench's history: on the rail for a DC-coupled source, on the ripple for an
AC-coupled one. `:MEAS:ITEM? <item>,CHAN<n>` measures the screen (VPP, VMAX, VMIN, VAVG,
VRMS, FREQ, PER, RTIM, FTIM), 9.9E37 when it cannot (no edge, clipped). `:WAV:DATA?` and
`:DISP:DATA?` answer IEEE 488.2 blocks (`#9` + nine digits of length).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

from sim.bench import Bench
from sim.twins.png import render_screen
from sim.twins.scpi import DATA_OUT_OF_RANGE, DATA_TYPE_ERROR, Call, ScpiError, ScpiTwin

POINTS = 1200
DIVISIONS_X = 12
CODES_PER_DIV = 25
CODE_CENTRE = 127
INVALID = "9.9E37"
CHANNELS = (1, 2, 3, 4)
PROBED_CHANNEL = 1  # CH1 probes the 3.3 V rail
NOISE_DIVS = 0.01  # noise on a trace, in divisions (RMS)
MEASURE_ITEMS = ("VPP", "VMAX", "VMIN", "VAVG", "VRMS", "FREQ", "PER", "RTIM", "FTIM")


def block(data: bytes) -> bytes:
    """`data` as an IEEE 488.2 definite-length block, as the DS1000Z sends it (#9...)."""
    return b"#9" + f"{len(data):09d}".encode("ascii") + data


@dataclass
class ChannelSetup:
    """One channel's vertical settings (power-on defaults)."""

    display: bool = False
    scale: float = 1.0  # volts per division
    offset: float = 0.0
    coupling: str = "DC"
    probe: float = 10.0


@dataclass
class Acquisition:
    """One screenful: the bench time of its trigger point and each channel's codes."""

    trigger_time: float
    codes: dict[int, list[int]] = field(default_factory=dict)


class SimRigolDS1054Z(ScpiTwin):
    """A DS1054Z with CH1 on the board's 3.3 V rail."""

    IDN = "RIGOL TECHNOLOGIES,DS1054Z,DS1ZA000000001,00.04.04.SP4"
    NO_ERROR = '0,"No error"'

    def __init__(self, bench: Bench) -> None:
        super().__init__()
        self.bench = bench
        self._rng = random.Random(1054)
        self.reset_state()
        for name in ("DISPlay", "SCALe", "OFFSet", "COUPling", "PROBe"):
            self.command(f"CHANnel#:{name}", self._channel_setter(name.lower()[:4]))
            self.command(f"CHANnel#:{name}?", self._channel_getter(name.lower()[:4]))
        self.command("TIMebase[:MAIN]:SCALe", self._set_timebase("scale"))
        self.command("TIMebase[:MAIN]:SCALe?", lambda call: f"{self.time_scale:.6e}")
        self.command("TIMebase[:MAIN]:OFFSet", self._set_timebase("offset"))
        self.command("TIMebase[:MAIN]:OFFSet?", lambda call: f"{self.time_offset:.6e}")
        self.command("TRIGger:MODE", self._set_trigger_mode)
        self.command("TRIGger:MODE?", lambda call: "EDGE")
        self.command("TRIGger:EDGe:SOURce", self._set_trigger_source)
        self.command("TRIGger:EDGe:SOURce?", lambda call: f"CHAN{self.trigger_source}")
        self.command("TRIGger:EDGe:SLOPe", self._set_slope)
        self.command("TRIGger:EDGe:SLOPe?", lambda call: self.trigger_slope)
        self.command("TRIGger:EDGe:LEVel", self._set_level)
        self.command("TRIGger:EDGe:LEVel?", lambda call: f"{self.trigger_level:.6e}")
        self.command("TRIGger:STATus?", lambda call: self.status())
        self.command("SINGle", lambda call: self.arm())
        self.command("RUN", lambda call: self._run())
        self.command("STOP", lambda call: self._stop())
        self.command("MEASure:ITEM?", self._measure)
        self.command("WAVeform:SOURce", self._set_wave_source)
        self.command("WAVeform:SOURce?", lambda call: f"CHAN{self.wave_source}")
        self.command("WAVeform:MODE", self._set_wave_mode)
        self.command("WAVeform:FORMat", self._set_wave_format)
        self.command("WAVeform:PREamble?", self._preamble)
        self.command("WAVeform:DATA?", self._data)
        self.command("DISPlay:DATA?", self._screenshot)

    def reset_state(self) -> None:
        self.setups = {channel: ChannelSetup(display=channel == 1) for channel in CHANNELS}
        self.time_scale = 1e-6
        self.time_offset = 0.0
        self.trigger_source = 1
        self.trigger_slope = "POS"
        self.trigger_level = 0.0
        self.wave_source = 1
        self.running = True
        self.armed_at: float | None = None
        self.acquisition: Acquisition | None = None

    # -- settings ---------------------------------------------------------------------------

    @staticmethod
    def _channel(call: Call) -> int:
        if call.suffix not in CHANNELS:
            raise ScpiError(*DATA_OUT_OF_RANGE)
        return call.suffix

    def _channel_setter(self, name: str):
        def set_value(call: Call) -> None:
            setup = self.setups[self._channel(call)]
            if name == "disp":
                setup.display = call.choice(0, "ON", "OFF", "1", "0") in ("ON", "1")
            elif name == "coup":
                setup.coupling = call.choice(0, "DC", "AC", "GND")
            elif name == "scal":
                setup.scale = call.number(0, 1e-3, 10.0)
            elif name == "offs":
                setup.offset = call.number(0, -100.0, 100.0)
            else:
                probe = call.number(0)
                if probe not in (0.01, 0.1, 1, 10, 100, 1000):
                    raise ScpiError(*DATA_OUT_OF_RANGE)
                setup.probe = probe
            self._settings_changed()

        return set_value

    def _channel_getter(self, name: str):
        attribute = {"disp": "display", "scal": "scale", "offs": "offset", "coup": "coupling",
                     "prob": "probe"}[name]  # fmt: skip

        def get_value(call: Call) -> str:
            value = getattr(self.setups[self._channel(call)], attribute)
            if isinstance(value, bool):
                return "1" if value else "0"
            return value if isinstance(value, str) else f"{value:.6e}"

        return get_value

    def _set_timebase(self, name: str):
        def set_value(call: Call) -> None:
            if name == "scale":
                self.time_scale = call.number(0, 5e-9, 50.0)
            else:
                self.time_offset = call.number(0, -50.0, 50.0)
            self._settings_changed()

        return set_value

    def _set_trigger_mode(self, call: Call) -> None:
        call.choice(0, "EDGE")  # pulse, slope, video...: not modelled

    def _set_trigger_source(self, call: Call) -> None:
        self.trigger_source = self._source(call.arg(0))

    def _set_slope(self, call: Call) -> None:
        self.trigger_slope = call.choice(0, "POS", "POSITIVE", "NEG", "NEGATIVE")[:3]

    def _set_level(self, call: Call) -> None:
        self.trigger_level = call.number(0, -1000.0, 1000.0)

    def _settings_changed(self) -> None:
        """A running screen shows the new settings at once; a stopped one keeps its trace."""
        if self.running:
            self.acquisition = None

    @staticmethod
    def _source(text: str) -> int:
        name = text.upper()
        for prefix in ("CHANNEL", "CHAN"):
            if name.startswith(prefix) and name[len(prefix) :].isdigit():
                channel = int(name[len(prefix) :])
                if channel in CHANNELS:
                    return channel
                raise ScpiError(*DATA_OUT_OF_RANGE)
        raise ScpiError(*DATA_TYPE_ERROR)

    # -- acquiring --------------------------------------------------------------------------

    @property
    def _post_trigger_s(self) -> float:
        """How long after its trigger point a screen ends."""
        return DIVISIONS_X / 2 * self.time_scale + self.time_offset

    def arm(self) -> None:
        """`:SING`: wait for the next trigger, then stop."""
        self.running = False
        self.armed_at = self.bench.clock.now()
        self.acquisition = None

    def _run(self) -> None:
        self.running, self.armed_at, self.acquisition = True, None, None

    def _stop(self) -> None:
        if self.armed_at is None and self.acquisition is None:
            self.acquisition = Acquisition(self.bench.clock.now() - self._post_trigger_s)
        self.running, self.armed_at = False, None

    def _trigger_time(self, start: float, end: float) -> float | None:
        """The first trigger edge in the bench's history between `start` and `end`."""
        if self.trigger_source != PROBED_CHANNEL:
            return None  # nothing connected: no edge ever
        setup = self.setups[self.trigger_source]
        rising = self.trigger_slope == "POS"
        if setup.coupling == "AC":
            return self.bench.ripple_crossing(start, end, self.trigger_level, rising)
        if setup.coupling == "GND":
            return None
        return self.bench.rail_crossing(start, end, self.trigger_level, rising)

    def status(self) -> str:
        """`:TRIG:STAT?`: WAIT for the edge, TD while the screen fills after it, then STOP."""
        if self.running:
            return "AUTO"
        if self.armed_at is None:
            return "STOP"
        now = self.bench.clock.now()
        trigger = self._trigger_time(self.armed_at, now)
        if trigger is None:
            return "WAIT"
        if now < trigger + self._post_trigger_s:
            return "TD"
        self.acquisition = Acquisition(trigger)
        self.armed_at = None
        return "STOP"

    def _screen(self) -> Acquisition:
        """What the screen shows: the frozen acquisition, or (running) the latest screenful;
        while armed and not yet triggered, the screen before arming stays."""
        if self.armed_at is not None:
            self.status()
        if self.acquisition is None:
            latest = self.bench.clock.now() - self._post_trigger_s
            acquisition = Acquisition(latest)
            if not self.running:
                self.acquisition = acquisition
            return acquisition
        return self.acquisition

    def _times(self, acquisition: Acquisition) -> list[float]:
        start = acquisition.trigger_time - DIVISIONS_X / 2 * self.time_scale + self.time_offset
        step = DIVISIONS_X * self.time_scale / POINTS
        return [start + index * step for index in range(POINTS)]

    def _codes(self, acquisition: Acquisition, channel: int) -> list[int]:
        """The channel's 8-bit codes in `acquisition` (computed once per acquisition)."""
        if channel in acquisition.codes:
            return acquisition.codes[channel]
        setup = self.setups[channel]
        if channel == PROBED_CHANNEL and setup.coupling != "GND":
            volts = self.bench.rail_waveform(
                self._times(acquisition), ac_coupled=setup.coupling == "AC"
            )
        else:
            volts = [0.0] * POINTS
        increment = setup.scale / CODES_PER_DIV
        origin = round(setup.offset / increment)
        noise = NOISE_DIVS * CODES_PER_DIV
        codes = [
            min(
                255, max(0, round(v / increment + origin + CODE_CENTRE + self._rng.gauss(0, noise)))
            )
            for v in volts
        ]
        acquisition.codes[channel] = codes
        return codes

    def _volts(self, acquisition: Acquisition, channel: int) -> tuple[list[float], bool]:
        """The channel's samples in volts, and whether any of them is clipped."""
        setup = self.setups[channel]
        increment = setup.scale / CODES_PER_DIV
        origin = round(setup.offset / increment)
        codes = self._codes(acquisition, channel)
        clipped = any(code in (0, 255) for code in codes)
        return [(code - origin - CODE_CENTRE) * increment for code in codes], clipped

    # -- measurements -----------------------------------------------------------------------

    def _measure(self, call: Call) -> str:
        item = call.arg(0).upper()
        if item not in MEASURE_ITEMS:
            raise ScpiError(*DATA_TYPE_ERROR)
        channel = self._source(call.arg(1)) if len(call.args) > 1 else 1
        volts, clipped = self._volts(self._screen(), channel)
        value = _measure(item, volts, DIVISIONS_X * self.time_scale / POINTS, clipped)
        return INVALID if value is None else f"{value:.6e}"

    # -- waveform and screen ----------------------------------------------------------------

    def _set_wave_source(self, call: Call) -> None:
        self.wave_source = self._source(call.arg(0))

    def _set_wave_mode(self, call: Call) -> None:
        call.choice(0, "NORM", "NORMAL")  # the screen's 1200 points; RAW/MAX not modelled

    def _set_wave_format(self, call: Call) -> None:
        call.choice(0, "BYTE")  # WORD and ASCii not modelled

    def _preamble(self, call: Call) -> str:
        setup = self.setups[self.wave_source]
        increment = setup.scale / CODES_PER_DIV
        x_increment = DIVISIONS_X * self.time_scale / POINTS
        x_origin = -DIVISIONS_X / 2 * self.time_scale + self.time_offset
        fields = [
            "0",  # format: BYTE
            "0",  # type: NORMal
            str(POINTS),
            "1",  # count
            f"{x_increment:.6e}",
            f"{x_origin:.6e}",
            "0",  # x reference
            f"{increment:.6e}",
            str(round(setup.offset / increment)),  # y origin
            str(CODE_CENTRE),  # y reference
        ]
        return ",".join(fields)

    def _data(self, call: Call) -> bytes:
        return block(bytes(self._codes(self._screen(), self.wave_source)))

    def _screenshot(self, call: Call) -> bytes:
        if call.args and call.args[-1].upper() not in ("PNG",):
            raise ScpiError(*DATA_OUT_OF_RANGE)  # BMP, JPEG, TIFF: not modelled
        screen = self._screen()
        traces = {c: self._codes(screen, c) for c in CHANNELS if self.setups[c].display}
        return block(render_screen(traces))


def _measure(item: str, volts: list[float], dt: float, clipped: bool) -> float | None:
    """A scope measurement of `volts` sampled every `dt` seconds; None when it cannot be made."""
    if not volts or clipped:
        return None
    high, low = max(volts), min(volts)
    if item == "VPP":
        return high - low
    if item == "VMAX":
        return high
    if item == "VMIN":
        return low
    if item == "VAVG":
        return sum(volts) / len(volts)
    if item == "VRMS":
        return math.sqrt(sum(v * v for v in volts) / len(volts))
    span = high - low
    if span <= 0:
        return None
    if item in ("FREQ", "PER"):
        # Rising crossings of the middle, with 10 % hysteresis so noise does not count twice.
        middle, band = (high + low) / 2, span * 0.1
        crossings: list[float] = []
        armed = False
        for index, value in enumerate(volts):
            if value < middle - band:
                armed = True
            elif armed and value >= middle:
                previous = volts[index - 1]
                fraction = (middle - previous) / (value - previous) if value != previous else 0.0
                crossings.append((index - 1 + fraction) * dt)
                armed = False
        if len(crossings) < 2:
            return None
        period = (crossings[-1] - crossings[0]) / (len(crossings) - 1)
        return 1.0 / period if item == "FREQ" else period
    rising = item == "RTIM"
    samples = volts if rising else [-v for v in volts]
    low_level, high_level = (
        (low + 0.1 * span, low + 0.9 * span)
        if rising
        else (
            -high + 0.1 * span,
            -high + 0.9 * span,
        )
    )
    start: float | None = None
    for index, value in enumerate(samples):
        if value <= low_level:
            start = None
        elif start is None and index and samples[index - 1] <= low_level:
            previous = samples[index - 1]
            start = (index - 1 + (low_level - previous) / (value - previous)) * dt
        if start is not None and value >= high_level:
            previous = samples[index - 1]
            fraction = (high_level - previous) / (value - previous) if value != previous else 0.0
            return (index - 1 + fraction) * dt - start
    return None
