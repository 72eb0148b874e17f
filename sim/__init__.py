"""The simulated bench: twins of the configured instruments, served on loopback.

`start_bench({"dmm": "keysight-34461a", "psu": "rigol-dp832"})` returns a SimBench whose
`resources` replace the configured ones; drivers, pyvisa-py and the sockets run unchanged.
SCPI twins are served on loopback TCP (`TCPIP::127.0.0.1::<port>::SOCKET`); serial twins
(`SERIAL_MODELS`) on a pty, whose device path (`/dev/pts/N`) is then the resource.
The DMM twins integrate like real ones: a reading is the rail averaged over its aperture (NPLC
power-line cycles at `line_frequency_hz`) and takes that long to come back (see sim/bench.py).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sim.bench import Bench, Clock
from sim.boards import BOARDS, make_board
from sim.instruments import SIM_MODELS
from sim.pty_server import PtyServer
from sim.server import FAULT_KINDS, TwinServer
from sim.twins.generic import GenericScpiTwin, ScriptedConsole
from sim.twins.korad import SimKoradKA3005P

__all__ = [
    "GENERIC_MODELS",
    "SERIAL_MODELS",
    "SimBench",
    "Twin",
    "TwinSpec",
    "parse_wire_fault",
    "start_bench",
]

# Twins of raw-serial models, keyed by registry driver name: served on a pty, not TCP.
SERIAL_MODELS: dict[str, type] = {
    "korad-ka3005p": SimKoradKA3005P,
}
# Twins of the generic drivers, configured by the instrument's `sim_config` (sim/twins/generic).
GENERIC_MODELS: dict[str, type] = {
    "scpi": GenericScpiTwin,
    "serial-line": ScriptedConsole,
}


@dataclass(frozen=True)
class TwinSpec:
    """How to simulate one instrument, when a driver name alone does not say it.

    `twin` is a twin class of the user's (an `ScpiTwin` subclass served on loopback TCP, or a
    stream twin with `split()` and `handle()` served on a pty); otherwise `driver` names a
    simulated model (`SIM_MODELS`, `SERIAL_MODELS`, `GENERIC_MODELS`). `options` are keyword
    arguments for the twin (station.yaml's `sim_config`); a twin that takes a `bench` argument
    is given the simulated bench, so it can see and drive the simulated board.
    """

    driver: str | None = None
    twin: Callable[..., Any] | None = None
    options: Mapping[str, Any] = field(default_factory=dict)

    def build(self, bench: Bench) -> Any:
        """The twin, wired into `bench`."""
        options = dict(self.options)
        if self.twin is None:
            models: dict[str, Callable[..., Any]] = {
                **SIM_MODELS,
                **SERIAL_MODELS,
                **GENERIC_MODELS,
            }
            return models[str(self.driver)](bench, **options)
        try:
            takes_bench = "bench" in inspect.signature(self.twin).parameters
        except (TypeError, ValueError):
            takes_bench = False
        if takes_bench:
            options.setdefault("bench", bench)
        return self.twin(**options)

    @property
    def label(self) -> str:
        twin = self.twin
        return str(getattr(twin, "__qualname__", twin)) if twin is not None else str(self.driver)


FAULT_SUFFIX = "-F"
DEFAULT_SERIAL_FAULT = "low_rail"


@dataclass
class Twin:
    """One simulated instrument: its personality (state) and the server it is reached by."""

    personality: Any  # an ScpiTwin, or a stream twin (split/handle) for serial models
    server: TwinServer | PtyServer

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
        self._wire_faults: list[tuple[str, str, str]] = []  # (spec, instrument, kind)

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

    def set_wire_fault(self, spec: str) -> None:
        """Inject a fault given as INSTRUMENT:KIND[:PATTERN] (see `parse_wire_fault`)."""
        name, kind, pattern = parse_wire_fault(spec)
        if name not in self.twins:
            raise ValueError(
                f"wire fault {spec!r}: no instrument {name!r}; "
                f"instruments: {', '.join(sorted(self.twins))}"
            )
        if kind == "error" and isinstance(self.twins[name].server, PtyServer):
            raise ValueError(f"wire fault {spec!r}: {name} has no error queue")
        self.twins[name].server.faults.set(kind, pattern)
        self._wire_faults.append((spec, name, kind))

    def unfired_faults(self) -> list[str]:
        """The `set_wire_fault` specs that never acted: their pattern matched no command (a typo,
        or a command the procedure never sends), so they tested nothing."""
        return [
            spec
            for spec, name, kind in self._wire_faults
            if not self.twins[name].server.faults.fired.get(kind)
        ]

    def close(self) -> None:
        """Stop every server; readings still integrating end at once."""
        self.bench.close()
        for twin in self.twins.values():
            twin.server.stop()

    def __enter__(self) -> SimBench:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def start_bench(
    instruments: Mapping[str, str | TwinSpec],
    *,
    board: str = "pcba01",
    fault: str | None = None,
    seed: int = 0,
    line_frequency_hz: float = 50.0,
    clock: Clock | None = None,
    port_base: int | None = None,
    trace: Callable[[str, str], None] | None = None,
) -> SimBench:
    """Serve a twin for each instrument around one simulated board.

    `instruments` maps each name to a driver name with a simulated model (`SIM_MODELS`,
    `SERIAL_MODELS`, `GENERIC_MODELS`) or to a `TwinSpec` (a twin class of the user's, or a
    model with options). A twin with `split()` (a stream twin) is served on a pty, any other
    on loopback TCP.

    `line_frequency_hz` (50 or 60) is the bench's mains, which sets the DMMs' apertures;
    `clock` defaults to wall time (a `sim.bench.SimulatedClock` makes readings instant).
    `port_base` serves the TCP twins on stable ports: the Nth instrument (from 0, in the order
    given) on BASE+N (an instrument served on a pty leaves its number unused). `trace(name,
    message)` is called with every message a twin receives, in the twin's thread.
    """
    models = {**SIM_MODELS, **SERIAL_MODELS, **GENERIC_MODELS}
    specs = {
        name: spec if isinstance(spec, TwinSpec) else TwinSpec(driver=spec)
        for name, spec in instruments.items()
    }
    unknown = sorted(
        str(spec.driver)
        for spec in specs.values()
        if spec.twin is None and spec.driver not in models
    )
    if unknown:
        raise ValueError(
            f"no simulated model for driver {unknown[0]!r}; "
            f"simulated models: {', '.join(sorted(models))}"
        )
    if board not in BOARDS:
        raise ValueError(f"unknown board {board!r}; valid boards: {', '.join(sorted(BOARDS))}")
    bench = Bench(
        make_board(board, fault, seed), seed=seed, line_frequency_hz=line_frequency_hz, clock=clock
    )
    twins: dict[str, Twin] = {}
    try:
        for offset, (name, spec) in enumerate(specs.items()):
            server: TwinServer | PtyServer
            twin = spec.build(bench)
            if callable(getattr(twin, "split", None)):  # a stream twin: a serial line
                server = PtyServer(twin)
            else:
                port = port_base + offset if port_base is not None else 0
                server = TwinServer(twin, port=port)
            if trace is not None:
                server.on_message = functools.partial(trace, name)
            server.start()
            twins[name] = Twin(server.twin, server)
    except BaseException:
        for twin in twins.values():
            twin.server.stop()
        raise
    return SimBench(bench, twins, board, fault, seed)


def parse_wire_fault(spec: str) -> tuple[str, str, str | None]:
    """Split INSTRUMENT:KIND[:PATTERN] (e.g. `dmm:no-reply:READ`, `psu:slow:0.5`).

    KIND is one of no-reply, slow, garbage, drop, refuse, error; PATTERN may contain colons.
    """
    name, sep, rest = spec.partition(":")
    kind, _, pattern = rest.partition(":")
    if not name or not sep or kind not in FAULT_KINDS:
        raise ValueError(
            f"wire fault {spec!r} is not INSTRUMENT:KIND[:PATTERN] with KIND one of "
            f"{', '.join(FAULT_KINDS)} (e.g. dmm:no-reply:READ, psu:drop, dmm:slow:0.5)"
        )
    return name, kind, pattern or None
