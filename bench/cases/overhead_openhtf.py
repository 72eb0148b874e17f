"""Child side of the runner-overhead case, for OpenHTF: time `Test.execute()` only.

The import and the construction of the `Test` are excluded. The record on disk is OpenHTF's own
JSON output callback (`json_factory.OutputToJSON`), which runs inside `execute()`.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from bench.cases.workloads import Shape, openhtf_phases


def run(args: dict[str, Any]) -> dict[str, Any]:
    """Seconds per `Test.execute()`, `reps` times after `warmup` untimed runs."""
    import openhtf as htf
    from openhtf.output.callbacks import json_factory

    shape = Shape.from_args(args)
    phases = openhtf_phases(shape)
    with tempfile.TemporaryDirectory(prefix="bench-openhtf-") as tmp:
        counter = iter(range(1_000_000))

        def once() -> float:
            test = htf.Test(*phases)
            if args["record"]:
                pattern = str(Path(tmp) / f"run{next(counter)}.{{dut_id}}.json")
                test.add_output_callbacks(json_factory.OutputToJSON(pattern))
            started = time.perf_counter()
            passed = test.execute(test_start=lambda: "SN-BENCH")
            elapsed = time.perf_counter() - started
            if not passed:
                raise RuntimeError("OpenHTF benchmark run did not PASS")
            return elapsed

        for _ in range(args["warmup"]):
            once()
        return {
            "seconds": [once() for _ in range(args["reps"])],
            "version": htf.__version__ if hasattr(htf, "__version__") else None,
        }
