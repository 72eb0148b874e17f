"""Oscilloscopes: the Oscilloscope capability, the Waveform it captures, and the Rigol DS1054Z.

A test sets up a channel (volts per division, offset, coupling), the timebase and an edge
trigger, then either asks the scope's own measurements (`measure_vpp`, `measure_frequency`,
`measure_rise_time`) or captures one single-shot acquisition (`capture`, or `arm_single` and
`wait_for_trigger` around the stimulus) and reads it back as a `Waveform`: times and volts as
`array('d')`, written to CSV for the run with `Waveform.write_csv`. `screenshot()` returns the
screen as PNG bytes. Binary transfers are IEEE 488.2 blocks read by the transport in one call.
"""

from __future__ import annotations

import abc
import csv
import enum
import re
import time
from array import array
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from drivers.errors import KIND_GARBAGE, KIND_TIMEOUT, KIND_WRONG_MODEL, InstrumentError
from drivers.models.confirm import ConfirmingScpiInstrument, number
from drivers.transport.seam import BlockTransport

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class Coupling(enum.StrEnum):
    """Channel input coupling. Plain strings work too: "ac"."""

    DC = "dc"
    AC = "ac"
    GND = "gnd"


class Slope(enum.StrEnum):
    """Which edge triggers."""

    RISING = "rising"
    FALLING = "falling"


@dataclass(frozen=True)
class Waveform:
    """One channel of one acquisition: `time[i]` seconds from the trigger, `volts[i]` volts."""

    channel: int
    time: array[float]
    volts: array[float]

    def __post_init__(self) -> None:
        if len(self.time) != len(self.volts):
            raise ValueError(f"{len(self.time)} times for {len(self.volts)} voltages")

    def __len__(self) -> int:
        return len(self.volts)

    @property
    def sample_interval(self) -> float:
        """Seconds between samples (0 for fewer than two)."""
        return self.time[1] - self.time[0] if len(self.time) > 1 else 0.0

    @property
    def vpp(self) -> float:
        """Peak to peak of the samples, in volts."""
        return max(self.volts) - min(self.volts) if len(self.volts) else 0.0

    def write_csv(self, path: str | Path) -> Path:
        """Write `time_s,volts` rows (with that header) to `path`; returns it, ready for
        `run.attach(path)`. Values keep full precision (repr of the float)."""
        target = Path(path)
        with target.open("w", newline="", encoding="ascii") as handle:
            writer = csv.writer(handle, lineterminator="\n")
            writer.writerow(("time_s", f"ch{self.channel}_volts"))
            writer.writerows(zip(map(repr, self.time), map(repr, self.volts), strict=True))
        return target


@dataclass(frozen=True)
class Preamble:
    """How to turn a waveform's sample codes into times and volts (`:WAV:PRE?`)."""

    points: int
    x_increment: float
    x_origin: float
    x_reference: float
    y_increment: float
    y_origin: float
    y_reference: float


class Oscilloscope(abc.ABC):
    """What a test asks of an oscilloscope. Channels are 1-based; values in volts and seconds.

    The measurements return math.inf when the scope cannot make them (no edge on screen, a
    clipped trace): a limit check then fails, it never passes.
    """

    CHANNELS: ClassVar[tuple[int, ...]] = (1,)

    @abc.abstractmethod
    def configure_channel(
        self,
        channel: int,
        volts_per_div: float,
        offset: float = 0.0,
        coupling: Coupling | str = Coupling.DC,
    ) -> None:
        """Show `channel` at `volts_per_div`, shifted by `offset` volts, with `coupling`."""

    @abc.abstractmethod
    def set_timebase(self, seconds_per_div: float, delay: float = 0.0) -> None:
        """Horizontal scale; `delay` moves the trigger point (seconds, positive = later)."""

    @abc.abstractmethod
    def set_trigger(self, channel: int, level: float, slope: Slope | str = Slope.RISING) -> None:
        """Trigger on an edge of `channel` through `level` volts."""

    @abc.abstractmethod
    def measure_vpp(self, channel: int) -> float:
        """Peak-to-peak voltage on screen."""

    @abc.abstractmethod
    def measure_frequency(self, channel: int) -> float:
        """Frequency of the signal on screen, in hertz."""

    @abc.abstractmethod
    def measure_rise_time(self, channel: int) -> float:
        """10 %-90 % rise time of the first rising edge on screen, in seconds."""

    @abc.abstractmethod
    def arm_single(self) -> None:
        """Arm one single-shot acquisition (it ends at the next trigger)."""

    @abc.abstractmethod
    def wait_for_trigger(self, timeout_s: float = 2.0) -> bool:
        """Wait until the armed acquisition is complete: True, or False if no trigger came
        within `timeout_s` (a result, e.g. a rail that never rose; the scope stays armed)."""

    @abc.abstractmethod
    def waveform(self, channel: int) -> Waveform:
        """The last acquisition of `channel`."""

    @abc.abstractmethod
    def screenshot(self) -> bytes:
        """The screen as a PNG image."""

    def capture(self, channel: int, timeout_s: float = 2.0) -> Waveform:
        """One single-shot acquisition of `channel`: arm, wait for the trigger, read it.

        InstrumentError of kind "timeout" if no trigger came within `timeout_s`.
        """
        self.arm_single()
        if not self.wait_for_trigger(timeout_s):
            raise self._error(f"no trigger within {timeout_s:g} s: is the trigger level on "
                              "the signal?", None, KIND_TIMEOUT)  # fmt: skip
        return self.waveform(channel)

    @abc.abstractmethod
    def _error(
        self, message: str, command: str | None = None, kind: str | None = None
    ) -> InstrumentError:
        """An InstrumentError naming this instrument (`ScpiInstrument` provides it)."""

    def _check_channel(self, channel: int) -> int:
        if channel not in self.CHANNELS:
            valid = ", ".join(str(c) for c in self.CHANNELS)
            raise ValueError(f"no channel {channel!r} on this scope; valid channels: {valid}")
        return channel


class RigolDS1054Z(ConfirmingScpiInstrument, Oscilloscope):
    """Rigol DS1054Z (and DS1000Z family) 4-channel oscilloscope.

    Channels are `:CHAN<n>`, sources `CHAN<n>`; measurements `:MEAS:ITEM? <item>,CHAN<n>`
    (9.9E37 when the scope cannot measure: math.inf here). A single shot is `:SING`, complete
    when `:TRIG:STAT?` answers STOP (polled every POLL_S). A waveform is read as bytes of the
    screen's 1200 points (`:WAV:MODE NORM`, `:WAV:FORM BYTE`), scaled by the ten fields of
    `:WAV:PRE?`: volts = (code - y_origin - y_reference) x y_increment, time = (index -
    x_reference) x x_increment + x_origin. The screenshot is `:DISP:DATA? ON,OFF,PNG`. Both come
    as IEEE 488.2 blocks, so the transport must read blocks (VISA). Raw socket port 5555.
    """

    MODEL = "Rigol DS1054Z"
    IDN_PATTERN = re.compile(r"rigol technologies,(ds|mso)1[01][05]4z", re.IGNORECASE)
    DEFAULT_OPTIONS: ClassVar[dict[str, Any]] = {
        "read_termination": "\n",
        "write_termination": "\n",
    }
    ERROR_QUERY = ":SYST:ERR?"
    CHANNELS = (1, 2, 3, 4)
    VOLTS_PER_DIV = (1e-3, 10.0)  # with a 1x probe
    SECONDS_PER_DIV = (5e-9, 50.0)
    POLL_S = 0.01
    COUPLINGS: ClassVar[dict[Coupling, str]] = {
        Coupling.DC: "DC",
        Coupling.AC: "AC",
        Coupling.GND: "GND",
    }
    SLOPES: ClassVar[dict[Slope, str]] = {Slope.RISING: "POS", Slope.FALLING: "NEG"}
    transport: BlockTransport

    def connect(self) -> str:
        """Open the link and check the model; refuses a transport that cannot read blocks."""
        if not isinstance(self.transport, BlockTransport):
            raise self._error(
                "waveforms and screenshots come as binary blocks, which this transport cannot "
                "read: give the scope a VISA resource (TCPIP::...::5555::SOCKET, ...::INSTR, USB)",
                kind=KIND_WRONG_MODEL,
            )
        return super().connect()

    def configure_channel(
        self,
        channel: int,
        volts_per_div: float,
        offset: float = 0.0,
        coupling: Coupling | str = Coupling.DC,
    ) -> None:
        channel = self._check_channel(channel)
        low, high = self.VOLTS_PER_DIV
        if not low <= volts_per_div <= high:
            raise ValueError(f"{self.MODEL}: volts_per_div must be within {low:g}..{high:g}; "
                             f"got {volts_per_div:g}")  # fmt: skip
        coupling = _enum(Coupling, coupling, self.MODEL, "coupling")
        node = f":CHAN{channel}"
        self._apply(
            f"{node}:DISP ON",
            f"{node}:PROB 1",
            f"{node}:COUP {self.COUPLINGS[coupling]}",
            f"{node}:SCAL {number(volts_per_div)}",
            f"{node}:OFFS {number(offset)}",
        )

    def set_timebase(self, seconds_per_div: float, delay: float = 0.0) -> None:
        low, high = self.SECONDS_PER_DIV
        if not low <= seconds_per_div <= high:
            raise ValueError(f"{self.MODEL}: seconds_per_div must be within {low:g}..{high:g}; "
                             f"got {seconds_per_div:g}")  # fmt: skip
        self._apply(f":TIM:MAIN:SCAL {number(seconds_per_div)}", f":TIM:MAIN:OFFS {number(delay)}")

    def set_trigger(self, channel: int, level: float, slope: Slope | str = Slope.RISING) -> None:
        channel = self._check_channel(channel)
        slope = _enum(Slope, slope, self.MODEL, "slope")
        self._apply(
            ":TRIG:MODE EDGE",
            f":TRIG:EDG:SOUR CHAN{channel}",
            f":TRIG:EDG:SLOP {self.SLOPES[slope]}",
            f":TRIG:EDG:LEV {number(level)}",
        )

    def measure_vpp(self, channel: int) -> float:
        return self._measure("VPP", channel)

    def measure_frequency(self, channel: int) -> float:
        return self._measure("FREQ", channel)

    def measure_rise_time(self, channel: int) -> float:
        return self._measure("RTIM", channel)

    def _measure(self, item: str, channel: int) -> float:
        return self.query_float(f":MEAS:ITEM? {item},CHAN{self._check_channel(channel)}")

    def arm_single(self) -> None:
        self._apply(":SING")

    def trigger_status(self) -> str:
        """`:TRIG:STAT?`: TD, WAIT, RUN, AUTO or STOP."""
        return self.query(":TRIG:STAT?").upper()

    def wait_for_trigger(self, timeout_s: float = 2.0) -> bool:
        deadline = time.monotonic() + timeout_s
        while self.trigger_status() != "STOP":
            if time.monotonic() >= deadline:
                return False
            time.sleep(self.POLL_S)
        return True

    def preamble(self) -> Preamble:
        """`:WAV:PRE?`: format, type, points, count, then the six scale factors."""
        reply = self.query(":WAV:PRE?")
        fields = reply.split(",")
        try:
            if len(fields) != 10:
                raise ValueError
            values = [float(field) for field in fields]
        except ValueError:
            raise self._error(f"expected 10 numbers from ':WAV:PRE?', got {reply!r}",
                              ":WAV:PRE?", KIND_GARBAGE) from None  # fmt: skip
        return Preamble(int(values[2]), *values[4:])

    def waveform(self, channel: int) -> Waveform:
        channel = self._check_channel(channel)
        self._apply(f":WAV:SOUR CHAN{channel}", ":WAV:MODE NORM", ":WAV:FORM BYTE")
        pre = self.preamble()
        codes = self.transport.query_block(":WAV:DATA?")
        if len(codes) != pre.points:
            raise self._error(f"':WAV:DATA?' sent {len(codes)} points, the preamble says "
                              f"{pre.points}", ":WAV:DATA?", KIND_GARBAGE)  # fmt: skip
        offset = pre.y_origin + pre.y_reference
        volts = array("d", ((code - offset) * pre.y_increment for code in codes))
        times = array(
            "d", ((i - pre.x_reference) * pre.x_increment + pre.x_origin for i in range(len(codes)))
        )
        return Waveform(channel, times, volts)

    def screenshot(self) -> bytes:
        image = self.transport.query_block(":DISP:DATA? ON,OFF,PNG")
        if not image.startswith(PNG_SIGNATURE):
            raise self._error(f"':DISP:DATA?' did not send a PNG (starts {image[:8]!r})",
                              ":DISP:DATA?", KIND_GARBAGE)  # fmt: skip
        return image


_E = TypeVar("_E", bound=enum.StrEnum)


def _enum(kind: type[_E], value: _E | str, model: str, what: str) -> _E:
    try:
        return kind(str(value).lower())
    except ValueError:
        valid = ", ".join(member.value for member in kind)
        raise ValueError(f"{model}: unknown {what} {value!r}; use one of {valid}") from None
