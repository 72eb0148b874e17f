"""The simulated bench: twins of the configured instruments, served on loopback (DESIGN.md §8).

`start_bench({"dmm": "keysight-34461a", "psu": "rigol-dp832"})` returns a SimBench whose
`resources` replace the configured ones; drivers, pyvisa-py and the sockets run unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

from sim.bench import Bench
from sim.boards import BOARDS, make_board
from sim.instruments import SIM_MODELS
from sim.scpi import ScpiTwin
from sim.server import TwinServer

__all__ = ["SimBench", "Twin", "start_bench"]

FAULT_SUFFIX = "-F"
DEFAULT_SERIAL_FAULT = "low_rail"


@dataclass
class Twin:
    """One simulated instrument: its personality (state) and the server it is reached by."""

    personality: ScpiTwin
    server: TwinServer

    @property
    def resource(self) -> str:
        return self.server.resource


class SimBench:
    """Running twins sharing one `Bench`; close it (or use `with`) to stop the servers."""

    def __init__(self, bench: Bench, twins: dict[str, Twin], board: str, fault: str | None,
                 seed: int) -> None:  # fmt: skip
        self.bench = bench
        self.twins = twins
        self.resources = {name: twin.resource for name, twin in twins.items()}
        self._board = board
        self._fault = fault
        self._seed = seed
        self._inserted = 0

    def insert_dut(self, serial_number: str) -> None:
        """Put a new unit on the fixture; its serial number may choose its fault.

        Unless the bench was started with an explicit fault: `...-F` is a `low_rail` board,
        `...-F:<mode>` a board with that fault, anything else a good board.
        """
        fault = self._fault
        if fault is None:
            head, sep, mode = serial_number.rpartition(f"{FAULT_SUFFIX}:")
            if sep and head:
                fault = mode
            elif serial_number.endswith(FAULT_SUFFIX):
                fault = DEFAULT_SERIAL_FAULT
        self._inserted += 1
        self.bench.insert_board(make_board(self._board, fault, self._seed + self._inserted))

    def close(self) -> None:
        for twin in self.twins.values():
            twin.server.stop()

    def __enter__(self) -> SimBench:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def start_bench(
    instruments: dict[str, str],
    *,
    board: str = "pcba01",
    fault: str | None = None,
    seed: int = 0,
) -> SimBench:
    """Serve a twin for each instrument (name -> driver name) around one simulated board."""
    unknown = sorted(driver for driver in instruments.values() if driver not in SIM_MODELS)
    if unknown:
        raise ValueError(
            f"no simulated model for driver {unknown[0]!r}; "
            f"simulated models: {', '.join(sorted(SIM_MODELS))}"
        )
    if board not in BOARDS:
        raise ValueError(f"unknown board {board!r}; valid boards: {', '.join(sorted(BOARDS))}")
    bench = Bench(make_board(board, fault, seed), seed=seed)
    twins: dict[str, Twin] = {}
    try:
        for name, driver in instruments.items():
            server = TwinServer(SIM_MODELS[driver](bench)).start()
            twins[name] = Twin(server.twin, server)
    except BaseException:
        for twin in twins.values():
            twin.server.stop()
        raise
    return SimBench(bench, twins, board, fault, seed)
