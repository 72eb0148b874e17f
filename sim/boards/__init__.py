"""DUT models the simulated bench can put on its fixture.

A board model turns what the bench's instruments apply into what its test points show (rails
that settle and droop under load, ripple, input current, named test points, the pin the SMU
drives) and carries the fault modes a serial number or `--sim-fault` selects. `circuit.Board`
says what a model provides; `make_board` builds one by name; the twins read it through
`sim.bench.Bench`. To add a board: write a class like `pcba01.Pcba01` and register it in BOARDS.
"""

from __future__ import annotations

from collections.abc import Callable

from sim.boards.circuit import Board
from sim.boards.pcba01 import FAULTS as PCBA01_FAULTS
from sim.boards.pcba01 import Pcba01

# board name -> (model class, its fault modes)
BOARDS: dict[str, tuple[Callable[..., Board], tuple[str, ...]]] = {
    "pcba01": (Pcba01, PCBA01_FAULTS),
}


def make_board(name: str, fault: str | None = None, seed: int = 0) -> Board:
    """A board model by name; clear errors list the valid boards and faults."""
    if name not in BOARDS:
        raise ValueError(f"unknown board {name!r}; valid boards: {', '.join(sorted(BOARDS))}")
    cls, faults = BOARDS[name]
    if fault is not None and fault not in faults:
        raise ValueError(f"unknown fault {fault!r} for {name}; valid faults: {', '.join(faults)}")
    return cls(fault=fault, seed=seed)
