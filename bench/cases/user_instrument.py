"""Case: a plain instrument class of yours, called through the framework or directly.

Phases receive a plain class wrapped (`station.bench.guarded.GuardedInstrument`): each method
call runs the stop guard the runner installs (`refuse_stopped_phase_io`) and takes the
instrument's lock, nothing else. Ours: the call through the `InstrumentSet` a run uses, guard
installed; reference: the same method on the same object, called directly. Two methods: one
that does no I/O (what the framework adds, in absolute terms) and one that asks a line console
on a pty through pyserial (what it adds to a real call, as a ratio).
Target: at most 5 % on the call that does I/O.
"""

from __future__ import annotations

import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

from bench.child import ChildError, run_child
from bench.report import CaseResult, Row, Stats, Target, fmt
from bench.settings import Settings

NAME = "user_instrument"
TITLE = "7. A user instrument class: calls through the framework (guard + lock) vs direct"
MAX_IO_RATIO = 1.05  # through the framework / direct, on a call that does I/O

BOARD = '''
import serial


class Board:
    """A plain class: a counter, and a line console asked through pyserial."""

    def __init__(self, resource=None):
        self.resource = resource
        self.count = 0
        self._port = None

    def open(self):
        if self.resource:
            self._port = serial.serial_for_url(self.resource, baudrate=115200, timeout=2)

    def bump(self, step):
        self.count += step
        return self.count

    def ask(self, line):
        self._port.write(line.encode() + b"\\n")
        return self._port.readline()

    def close(self):
        if self._port is not None:
            self._port.close()
'''


def measure(args: dict[str, Any]) -> dict[str, Any]:
    """Child: calls per second, through the framework and direct, alternating repetitions."""
    from sim.pty_server import PtyServer
    from sim.twins.generic import ScriptedConsole
    from station.bench.instruments import InstrumentSet
    from station.config.model import load_config
    from station.engine.worker import refuse_stopped_phase_io

    console_twin = ScriptedConsole(replies={"ping": "pong"}, prompt="")
    with (
        tempfile.TemporaryDirectory(prefix="bench-user-") as tmp,
        PtyServer(console_twin) as console,
    ):
        root = Path(tmp)
        (root / "board_mod.py").write_text(textwrap.dedent(BOARD), encoding="utf-8")
        (root / "proc.py").write_text("", encoding="utf-8")
        (root / "station.yaml").write_text(
            "station: {name: bench}\n"
            "instruments:\n"
            f"  board: {{driver: 'board_mod:Board', resource: {console.resource}}}\n"
            "procedures:\n  T: {module: proc.py}\n",
            encoding="utf-8",
        )
        config = load_config(root / "station.yaml")
        with InstrumentSet(config, ["board"]) as instruments:
            instruments.set_call_guard(refuse_stopped_phase_io)
            wrapped = instruments["board"]
            direct = instruments.opened[0].target
            results: dict[str, list[float]] = {}
            for label, count, call in (
                ("bump", args["count"] * 20, lambda board: board.bump(1)),
                ("ask", args["count"], lambda board: board.ask("ping")),
            ):
                for board in (wrapped, direct):
                    for _ in range(50):
                        call(board)  # warm-up
                for _ in range(args["reps"]):
                    for side, board in (("through", wrapped), ("direct", direct)):
                        started = time.perf_counter()
                        for _ in range(count):
                            call(board)
                        elapsed = time.perf_counter() - started
                        results.setdefault(f"{label} {side}", []).append(count / elapsed)
            return results


def run(settings: Settings) -> CaseResult:
    result = CaseResult(NAME, TITLE)
    try:
        data = run_child(
            "bench.cases.user_instrument:measure",
            {"count": settings.io_queries, "reps": settings.io_reps},
        )
    except ChildError as exc:
        result.notes.append(f"case failed: {exc}")
        return result
    for label, text in (
        ("bump", "method without I/O (ref: direct call)"),
        ("ask", "method asking a pty console via pyserial (ref: direct)"),
    ):
        ours, ref = Stats.of(data[f"{label} through"]), Stats.of(data[f"{label} direct"])
        row = Row(NAME, text, "calls/s", ours=ours, reference=ref, higher_is_better=True)
        result.rows.append(row)
        added_us = 1e6 / ours.median - 1e6 / ref.median
        if label == "bump":
            result.notes.append(
                f"the framework adds {fmt(added_us)} us per call (guard + lock + bookkeeping): "
                f"{fmt(1e6 / ours.median)} us through it, {fmt(1e6 / ref.median)} us direct"
            )
        else:
            assert row.ratio is not None
            result.targets.append(
                Target(
                    NAME,
                    f"a call doing I/O costs at most {MAX_IO_RATIO:g}x through the framework",
                    row.ratio <= MAX_IO_RATIO,
                    f"{fmt(1e6 / ours.median)} us through vs {fmt(1e6 / ref.median)} us direct "
                    f"= {fmt(row.ratio)}x ({fmt(added_us)} us added)",
                )
            )
    return result
