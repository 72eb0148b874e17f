"""Child side of the runner-overhead case, for station: time `Runner.execute()` only.

Loading the procedure (import, checks, `git describe`) and building the Runner are excluded, as
OpenHTF's import and `Test` construction are on the other side.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from bench.cases.workloads import Shape, load_station_procedure
from bench.child import profile_text


def run(args: dict[str, Any]) -> dict[str, Any]:
    """Seconds per `Runner.execute()`, `reps` times after `warmup` untimed runs."""
    from station.authoring.helpers import Dut
    from station.engine.runner import Runner
    from station.storage.journal import Journal

    shape = Shape.from_args(args)
    with tempfile.TemporaryDirectory(prefix="bench-station-") as tmp:
        root = Path(tmp)
        procedure = load_station_procedure(root, shape)
        data_dir = root / "runs"

        def once() -> float:
            listeners = [Journal(data_dir)] if args["record"] else []
            runner = Runner(procedure, Dut("SN-BENCH"), listeners=listeners)
            started = time.perf_counter()
            record = runner.execute()
            elapsed = time.perf_counter() - started
            if record.outcome != "PASS":
                raise RuntimeError(f"benchmark run ended {record.outcome}: {record.outcome_reason}")
            return elapsed

        for _ in range(args["warmup"]):
            once()
        result: dict[str, Any] = {"seconds": [once() for _ in range(args["reps"])]}
        if args.get("profile"):
            result["profile"] = profile_text(once)
    return result
