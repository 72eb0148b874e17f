"""Case 5, memory: the peak of one large run, and whether RSS keeps growing over many runs.

- peak RSS (VmHWM; `_peak_mib` says why not `ru_maxrss`) of a process that loads and runs one
  procedure of 10,000 measurements (100 phases x 100) with its run directory; OpenHTF runs the
  same test with its JSON output in its own process for reference;
- RSS (`/proc/self/statm`) every 100 runs over 1,000 consecutive runs of a small procedure
  (10 phases x 10 measurements, run directory written) in one process: the curve, and the growth
  after the first 100 runs.
Target: no growth beyond noise after the first 100 runs. RSS rises for the first ~150 runs as the
allocator and thread stacks warm up (about 1 MiB, then flat; tracemalloc sees only tens of KiB of
Python objects), so the verdict allows GROWTH_NOISE_MIB after run 100 and requires the last half
of the runs to stay within LAST_HALF_NOISE_MIB, which a leak of 1 KiB per run would exceed.
"""

from __future__ import annotations

import os
import resource
import tempfile
from pathlib import Path
from typing import Any

from bench.cases.workloads import Shape, load_station_procedure, openhtf_phases
from bench.child import ChildError, run_child
from bench.report import OPENHTF_MISSING, CaseResult, Row, Stats, Target, fmt
from bench.settings import Settings

NAME = "memory"
TITLE = "5. Memory: peak RSS of a 10,000-measurement run; RSS over many consecutive runs"
PEAK_SHAPE = Shape(100, 100)
SOAK_SHAPE = Shape(10, 10)
GROWTH_NOISE_MIB = 2.0
LAST_HALF_NOISE_MIB = 0.5
MIB = 1024 * 1024


def _peak_mib() -> float:
    """Peak RSS of this process image: VmHWM, else `ru_maxrss`.

    On Linux `getrusage(RUSAGE_SELF).ru_maxrss` survives fork and exec, so a child started by a
    bench process of 70 MiB reports at least 70 MiB whatever it does; VmHWM belongs to the memory
    map made at exec and is the child's own high-water mark (the same figure otherwise).
    """
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024 / MIB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / MIB  # KiB on Linux


def _rss_mib() -> float:
    with open("/proc/self/statm", encoding="ascii") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / MIB


def peak_station(args: dict[str, Any]) -> dict[str, Any]:
    """Child: peak RSS before and after one run of the large procedure, with its run directory."""
    from station.authoring.helpers import Dut
    from station.engine.runner import Runner
    from station.storage.journal import Journal

    with tempfile.TemporaryDirectory(prefix="bench-mem-") as tmp:
        procedure = load_station_procedure(Path(tmp), Shape.from_args(args))
        before = _peak_mib()
        runner = Runner(procedure, Dut("SN-BENCH"), listeners=[Journal(Path(tmp) / "runs")])
        record = runner.execute()
        if record.outcome != "PASS":
            raise RuntimeError(f"run ended {record.outcome}")
        return {"before": before, "peak": _peak_mib()}


def peak_openhtf(args: dict[str, Any]) -> dict[str, Any]:
    """Child: the same for OpenHTF, its JSON output callback writing the record."""
    import openhtf as htf
    from openhtf.output.callbacks import json_factory

    with tempfile.TemporaryDirectory(prefix="bench-mem-") as tmp:
        test = htf.Test(*openhtf_phases(Shape.from_args(args)))
        test.add_output_callbacks(json_factory.OutputToJSON(str(Path(tmp) / "{dut_id}.json")))
        before = _peak_mib()
        if not test.execute(test_start=lambda: "SN-BENCH"):
            raise RuntimeError("OpenHTF run did not PASS")
        return {"before": before, "peak": _peak_mib()}


def soak_station(args: dict[str, Any]) -> dict[str, Any]:
    """Child: RSS after every `every` runs over `runs` consecutive runs in this process."""
    from station.authoring.helpers import Dut
    from station.engine.runner import Runner
    from station.storage.journal import Journal

    curve: list[tuple[int, float]] = []
    with tempfile.TemporaryDirectory(prefix="bench-soak-") as tmp:
        procedure = load_station_procedure(Path(tmp), Shape.from_args(args))
        data_dir = Path(tmp) / "runs"
        curve.append((0, _rss_mib()))
        for n in range(1, args["runs"] + 1):
            record = Runner(procedure, Dut(f"SN-{n}"), listeners=[Journal(data_dir)]).execute()
            if record.outcome != "PASS":
                raise RuntimeError(f"run {n} ended {record.outcome}")
            if n % args["every"] == 0:
                curve.append((n, _rss_mib()))
    return {"curve": curve, "peak": _peak_mib()}


def run(settings: Settings) -> CaseResult:
    result = CaseResult(NAME, TITLE)
    _peak_rows(result, settings)
    _soak_rows(result, settings)
    return result


def _peak_rows(result: CaseResult, settings: Settings) -> None:
    label = f"peak RSS, one run of {PEAK_SHAPE.total_measurements:,} measurements"
    ours = ref = None
    ours_error, ref_note = None, None if settings.openhtf else OPENHTF_MISSING
    try:
        ours = run_child("bench.cases.memory:peak_station", PEAK_SHAPE.as_args())
    except ChildError as exc:
        ours_error = f"failed: {exc}"
    if settings.openhtf:
        try:
            ref = run_child("bench.cases.memory:peak_openhtf", PEAK_SHAPE.as_args())
        except ChildError as exc:
            ref_note = f"failed: {exc}"
    result.rows.append(
        Row(
            NAME,
            f"{label} (process total)",
            "MiB",
            ours=Stats.of([ours["peak"]]) if ours else None,
            reference=Stats.of([ref["peak"]]) if ref else None,
            reference_note=ref_note,
            error=ours_error,
        )
    )
    result.rows.append(
        Row(
            NAME,
            "  of which the run itself (peak after - peak before execute)",
            "MiB",
            ours=Stats.of([ours["peak"] - ours["before"]]) if ours else None,
            reference=Stats.of([ref["peak"] - ref["before"]]) if ref else None,
            reference_note=ref_note,
            error=ours_error,
        )
    )


def _soak_rows(result: CaseResult, settings: Settings) -> None:
    runs, every = settings.memory_runs, settings.memory_sample_every
    text = (
        f"RSS growth from run {every} to run {runs} <= {GROWTH_NOISE_MIB:g} MiB, "
        f"and over the last half <= {LAST_HALF_NOISE_MIB:g} MiB"
    )
    try:
        data = run_child(
            "bench.cases.memory:soak_station",
            {**SOAK_SHAPE.as_args(), "runs": runs, "every": every},
            timeout_s=280,
        )
    except ChildError as exc:
        result.rows.append(Row(NAME, f"RSS over {runs} runs", "MiB", error=f"failed: {exc}"))
        result.targets.append(Target(NAME, text, None, str(exc)))
        return
    curve = data["curve"]
    result.extra["rss_curve_mib"] = curve
    at = dict(curve)
    growth = at[runs] - at[every]
    half = max(n for n, _ in curve if n <= runs // 2)
    last_half = at[runs] - at[half]
    per_run_kib = last_half * 1024 / (runs - half)
    result.rows += [
        Row(NAME, f"RSS after {every} runs, {SOAK_SHAPE.label}", "MiB", ours=Stats.of([at[every]])),
        Row(NAME, f"RSS growth from run {every} to run {runs}", "MiB", ours=Stats.of([growth])),
        Row(NAME, f"RSS growth from run {half} to run {runs}", "MiB", ours=Stats.of([last_half])),
    ]
    result.notes.append(
        "RSS curve (runs: MiB): " + ", ".join(f"{n}: {fmt(mib)}" for n, mib in curve)
    )
    result.targets.append(
        Target(
            NAME,
            text,
            growth <= GROWTH_NOISE_MIB and last_half <= LAST_HALF_NOISE_MIB,
            f"{fmt(growth)} MiB after run {every}; {fmt(last_half)} MiB from run {half} "
            f"({fmt(per_run_kib)} KiB per run)",
        )
    )
