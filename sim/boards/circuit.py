"""What a board model is to the bench: the `Board` protocol, and the external load on a rail.

The bench (sim/bench.py) owns the instruments' state and asks the board on its fixture what the
circuit does: what VIN draws, what the rail is (settling after power-on, drooping under the
electronic load), the ripple on it, the voltages at the test points behind the multiplexer, and
the current into the pin the SMU drives. A new board model implements these members (see
`sim/boards/pcba01.py`) and is registered by name in `sim.boards.BOARDS`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

LOAD_MODES = ("cc", "cv", "cr")
# The electronic load cannot sink its set current below this resistance (DL3021: about 50 mOhm
# in its 4 A range): near 0 V a CC load draws V / R_MIN, so a collapsed rail draws nothing.
LOAD_MIN_OHMS = 0.05
# A CV load sinks whatever holds its voltage: modelled as this steep a slope above its level.
LOAD_CV_OHMS = 0.001


@dataclass(frozen=True)
class ExternalLoad:
    """The electronic load on a rail, as the circuit sees it: its mode, level and input state.

    `level` is amperes in "cc", volts in "cv", ohms in "cr". Frozen, so the bench can keep the
    load each stretch of time saw (for readings that integrate over time).
    """

    mode: str = "cc"
    level: float = 0.0
    on: bool = False

    def current(self, volts: float) -> float:
        """What the load sinks at `volts` across its input (never negative, rising with volts)."""
        if not self.on or volts <= 0:
            return 0.0
        if self.mode == "cc":
            return min(self.level, volts / LOAD_MIN_OHMS)
        if self.mode == "cr":
            return volts / self.level if self.level > 0 else volts / LOAD_MIN_OHMS
        return max(0.0, volts - self.level) / LOAD_CV_OHMS  # "cv"


NO_LOAD = ExternalLoad()


class Board(Protocol):
    """What the bench asks of the board on its fixture. Times are seconds since VIN came on."""

    name: str
    fault: str | None
    test_points: tuple[str, ...]  # the named voltages the multiplexer can reach
    ripple_hz: float

    def input_current(self, vin: float, load: ExternalLoad = NO_LOAD) -> float:
        """Current drawn from VIN at steady state."""
        ...

    def rail_voltage(
        self, vin: float, since_power_on_s: float = ..., load: ExternalLoad = NO_LOAD
    ) -> float:
        """The main rail (noise-free), `since_power_on_s` after VIN came up."""
        ...

    def rail_mean(
        self, vin: float, start_s: float, end_s: float, load: ExternalLoad = NO_LOAD
    ) -> float:
        """The main rail averaged over [start_s, end_s] after VIN came up."""
        ...

    @property
    def ripple_rms(self) -> float:
        """RMS ripple on the rail while powered."""
        ...

    def rail_noise(self, nplc: float) -> float:
        """Ripple left in a DC reading integrated over `nplc` power-line cycles."""
        ...

    def ripple(self, t: float) -> float:
        """The ripple on the rail at bench time `t` (zero mean), while powered."""
        ...

    def test_point(self, name: str, vin: float, rail: float) -> float:
        """The voltage at test point `name` with VIN at `vin` and the main rail at `rail`."""
        ...

    def pin_current(self, volts: float) -> float:
        """Current into the SMU's pin at `volts` (rising with volts)."""
        ...

    def pin_voltage(self, amps: float) -> float:
        """The inverse of `pin_current`: the voltage at which the pin takes `amps`."""
        ...
