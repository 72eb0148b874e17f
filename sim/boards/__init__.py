"""DUT models the simulated bench can put on its fixture.

A board model turns what the bench's supplies apply into what its test points show (rails that
settle, ripple, input current) and carries the fault modes a serial number or `--sim-fault`
selects. `make_board` builds one by name; the twins read it through `sim.bench.Bench`.
"""

from __future__ import annotations

from sim.boards.pcba01 import FAULTS as PCBA01_FAULTS
from sim.boards.pcba01 import Pcba01

# board name -> (model class, its fault modes)
BOARDS: dict[str, tuple[type[Pcba01], tuple[str, ...]]] = {
    "pcba01": (Pcba01, PCBA01_FAULTS),
}


def make_board(name: str, fault: str | None = None, seed: int = 0) -> Pcba01:
    """A board model by name; clear errors list the valid boards and faults."""
    if name not in BOARDS:
        raise ValueError(f"unknown board {name!r}; valid boards: {', '.join(sorted(BOARDS))}")
    cls, faults = BOARDS[name]
    if fault is not None and fault not in faults:
        raise ValueError(f"unknown fault {fault!r} for {name}; valid faults: {', '.join(faults)}")
    return cls(fault=fault, seed=seed)
