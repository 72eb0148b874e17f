"""Case: station overhead per unit in the production loop (`station run --loop`, `Line`).

The same one-phase, ten-measurement test, unit after unit, three ways:
- ours in the loop: `Line.run_unit` in one process, each unit its own run directory (journal
  fsyncs, run.json, the pending-upload marker), uploads off; wall time per unit;
- ours as one `station run ... --no-upload` process per unit (what the loop replaces);
- OpenHTF executing the same test repeatedly in one process, with its JSON output.
The phase body only sets ten numbers, so the figure is the framework's cost per unit.
Target (issue 13): 5 ms per unit or less in the loop.

A unit's record costs three fsyncs on the runner's thread (the pending marker before the
journal; run.json and its directory before the verdict), so the loop's figure moves with the
disk: the case also prints the disk's fsync latency, measured in the same data directory just
before, and the loop's figure with the data directory in memory (`/dev/shm`, where an fsync
costs nothing), which is the framework's own cost.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.cases.workloads import Shape
from bench.child import ChildError, run_child
from bench.report import OPENHTF_MISSING, CaseResult, Row, Stats, Target, fmt
from bench.settings import Settings

NAME = "line_loop"
MEMORY_DIR = "/dev/shm"
TITLE = "Production loop: station overhead per unit (--loop vs a process per unit vs OpenHTF)"
SHAPE = Shape(1, 10)
TARGET_MS = 5.0


def run(settings: Settings) -> CaseResult:
    result = CaseResult(NAME, TITLE)
    units = 20 if settings.quick else 100
    processes = 5 if settings.quick else 100
    ours, ours_error = _measure("bench.cases.line_loop:loop_child", {"units": units})
    memory, memory_error = (None, "no /dev/shm on this machine")
    if Path(MEMORY_DIR).is_dir():
        memory, memory_error = _measure(
            "bench.cases.line_loop:loop_child", {"units": units, "dir": MEMORY_DIR}
        )
    procs, procs_error = _measure(
        "bench.cases.line_loop:process_child", {"units": processes}, timeout_s=1800
    )
    ref, ref_error = (None, OPENHTF_MISSING)
    if settings.openhtf:
        ref, ref_error = _measure(
            "bench.cases.overhead_openhtf:run",
            {**SHAPE.as_args(), "record": True, "reps": units, "warmup": 3},
        )
    loop = _ms(ours)
    result.rows.append(
        Row(
            NAME,
            "per unit, --loop vs OpenHTF in one process",
            "ms",
            ours=loop,
            reference=_ms(ref),
            reference_note=ref_error,
            error=ours_error,
        )
    )
    result.rows.append(
        Row(
            NAME,
            "per unit, --loop vs one `station run` process per unit",
            "ms",
            ours=loop,
            reference=_ms(procs),
            reference_note=procs_error,
            error=ours_error,
        )
    )
    result.rows.append(
        Row(
            NAME,
            "per unit, --loop with the data directory in memory (no disk)",
            "ms",
            ours=_ms(memory),
            reference=_ms(ref),
            reference_note=ref_error,
            error=memory_error,
        )
    )
    if ours is not None:
        result.rows.append(
            Row(
                NAME,
                "fsync on the data directory's disk (a file, then its directory)",
                "ms",
                ours=Stats.of(ours["fsync_seconds"]).scaled(1e3),
                reference=None,
                reference_note="the machine's disk, measured just before the loop",
            )
        )
    if loop is None:
        result.targets.append(
            Target(NAME, f"--loop <= {TARGET_MS:g} ms per unit", None, ours_error or "no figure")
        )
    else:
        result.targets.append(
            Target(
                NAME,
                f"--loop <= {TARGET_MS:g} ms per unit",
                loop.median <= TARGET_MS,
                f"{fmt(loop.median)} ms per unit over {units} units",
            )
        )
    result.notes.append(
        "each unit in the loop gets its own run directory, journal, pending-upload marker and "
        "atomic run.json: three fsyncs on the runner's thread; OpenHTF writes one JSON file per "
        "run without fsync"
    )
    return result


def _measure(
    target: str, args: dict[str, Any], timeout_s: float = 600.0
) -> tuple[dict[str, Any] | None, str | None]:
    try:
        return run_child(target, args, timeout_s=timeout_s), None
    except ChildError as exc:
        return None, f"failed: {exc}"


def _ms(data: dict[str, Any] | None) -> Stats | None:
    return None if data is None else Stats.of(data["seconds"]).scaled(1e3)


def _write_station(root: Path) -> Path:
    from bench.cases.workloads import load_station_procedure

    load_station_procedure(root, SHAPE, "U1")
    return root / "station.yaml"


def loop_child(args: dict[str, Any]) -> dict[str, Any]:
    """Seconds per `Line.run_unit` for `units` units, after three untimed ones."""
    from station.config.model import load_config
    from station.line.session import Line

    with tempfile.TemporaryDirectory(prefix="bench-loop-", dir=args.get("dir")) as tmp:
        fsync_seconds = _fsync_latency(Path(tmp))
        config = load_config(_write_station(Path(tmp)))
        line = Line(
            config, sim=False, prompts=None, upload=False, handle_signals=False, route_checks=False
        )
        try:
            for n in range(3):
                line.run_unit("U1", f"SN-WARM-{n}")
            seconds = []
            for n in range(int(args["units"])):
                started = time.perf_counter()
                record = line.run_unit("U1", f"SN-{n:05}")
                seconds.append(time.perf_counter() - started)
                if record.outcome is None or record.outcome.value != "PASS":
                    raise RuntimeError(f"unit {n} did not PASS: {record.outcome}")
        finally:
            line.close()
    return {"seconds": seconds, "fsync_seconds": fsync_seconds}


def _fsync_latency(directory: Path, samples: int = 30) -> list[float]:
    """Seconds to create a small file and fsync it and its directory, as a run's record does."""
    seconds = []
    for n in range(samples):
        started = time.perf_counter()
        path = directory / f".probe-{n}"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            os.write(fd, b"x" * 2048)
            os.fsync(fd)
        finally:
            os.close(fd)
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        seconds.append(time.perf_counter() - started)
        path.unlink()
    return seconds


def process_child(args: dict[str, Any]) -> dict[str, Any]:
    """Seconds per `python -m station run U1 --no-upload` process, one unit each."""
    with tempfile.TemporaryDirectory(prefix="bench-procs-") as tmp:
        config = _write_station(Path(tmp))
        env = {**os.environ, "TOFUPILOT_API_KEY": ""}
        seconds = []
        for n in range(int(args["units"])):
            started = time.perf_counter()
            done = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "station",
                    "run",
                    "U1",
                    "--serial",
                    f"SN-{n:05}",
                    "--no-upload",
                    "--config",
                    str(config),
                ],
                env=env,
                capture_output=True,
                text=True,
                check=False,
            )
            seconds.append(time.perf_counter() - started)
            if done.returncode != 0:
                raise RuntimeError(f"station run exited {done.returncode}: {done.stderr[-300:]}")
    return {"seconds": seconds}
