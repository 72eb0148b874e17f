"""Per-phase and per-measurement overhead of the runner, with and without the run directory.

    python -m bench.runner_overhead

Builds procedures in a temp dir, runs each several times and prints the median cost per phase and
per measurement. No instruments: this is the framework's own cost.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import textwrap
import time
from pathlib import Path

from station.config import load_config
from station.context import Dut
from station.journal import Journal
from station.loader import load_procedure
from station.runner import Runner

REPEATS = 5

CASES = {
    "1000 trivial phases": (
        """
        from station import phase

        def _make(i):
            def trivial():
                pass
            trivial.__name__ = f"p{i}"
            return phase(trivial)

        PHASES = [_make(i) for i in range(1000)]
    """,
        1000,
        0,
    ),
    "1 phase x 1000 measurements": (
        """
        from station import phase, measure

        def many(measurements):
            for i in range(1000):
                measurements[f"m{i}"] = 0.5

        for i in range(1000):
            many = measure(f"m{i}", low=0.0, high=1.0)(many)
        many = phase(many)
    """,
        1,
        1000,
    ),
}


def _procedure(root: Path, source: str):
    (root / "proc_b.py").write_text(textwrap.dedent(source))
    (root / "station.yaml").write_text(
        "station: {name: b}\nprocedures:\n  B: {module: proc_b.py}\n"
    )
    return load_procedure("B", load_config(root / "station.yaml"))


def _time_run(procedure, data_dir: Path | None) -> float:
    listeners = [Journal(data_dir)] if data_dir else []
    runner = Runner(procedure, Dut("SN-BENCH"), listeners=listeners, handle_signals=False)
    started = time.perf_counter()
    runner.execute()
    return time.perf_counter() - started


def main() -> int:
    print(
        f"{'case':<32} {'record':<10} {'median run':>12} {'per phase':>12} {'per measurement':>16}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for name, (source, phases, measurements) in CASES.items():
            procedure = _procedure(root, source)
            for label, data_dir in (("none", None), ("run dir", root / "runs")):
                runs = [_time_run(procedure, data_dir) for _ in range(REPEATS)]
                median = statistics.median(runs)
                per_phase = f"{median / phases * 1e6:9.1f} us" if not measurements else "-"
                per_measurement = f"{median / measurements * 1e6:9.2f} us" if measurements else "-"
                print(
                    f"{name:<32} {label:<10} {median * 1e3:9.1f} ms "
                    f"{per_phase:>12} {per_measurement:>16}"
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
