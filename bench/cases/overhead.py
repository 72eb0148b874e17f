"""Case 1, runner overhead: the same test run by station and by OpenHTF, each in its own process.

Three shapes (1,000 trivial phases; 1 phase x 1,000 measurements; 100 phases x 10 measurements),
each without output and with the framework's native record written to disk (ours: the run
directory through `Journal`; OpenHTF: `OutputToJSON`). The figure is the wall time of executing
the test divided by the number of phases or measurements: nothing subtracted.
Budget (issue 10, simplicity where safety lives): ours at most 0.2x OpenHTF's cost, per phase and
per measurement, with and without the record on disk.
"""

from __future__ import annotations

from typing import Any

from bench.cases.workloads import Shape
from bench.child import ChildError, run_child
from bench.report import OPENHTF_MISSING, CaseResult, Row, Stats, Target, fmt
from bench.settings import Settings

NAME = "overhead"
TITLE = "1. Runner overhead: the same test, station vs OpenHTF (time of execute() / count)"
SHAPES = (Shape(1000, 0), Shape(1, 1000), Shape(100, 10))
MAX_RATIO = 0.2  # ours / OpenHTF
RECORDS = {False: "no output", True: "record on disk"}


def run(settings: Settings) -> CaseResult:
    result = CaseResult(NAME, TITLE)
    ref_name = f"OpenHTF {settings.openhtf}" if settings.openhtf else None
    for shape in SHAPES:
        for record in (False, True):
            args: dict[str, Any] = {
                **shape.as_args(),
                "record": record,
                "reps": settings.overhead_reps,
                "warmup": settings.warmup,
            }
            ours, ours_error = _measure(
                "bench.cases.overhead_station:run", {**args, "profile": settings.profile}
            )
            ref, ref_error = (None, OPENHTF_MISSING)
            if settings.openhtf:
                ref, ref_error = _measure("bench.cases.overhead_openhtf:run", args)
            label = f"{shape.label}, {RECORDS[record]}"
            if ours and "profile" in ours:
                result.profiles[label] = ours["profile"]
            result.extra[label] = {
                "ours_seconds": ours and ours["seconds"],
                "openhtf_seconds": ref and ref["seconds"],
            }
            per = []
            if shape.measurements == 0 or shape.phases > 1:
                per.append(("per phase", shape.phases))
            if shape.measurements:
                per.append(("per measurement", shape.total_measurements))
            for what, count in per:
                row = Row(
                    NAME,
                    f"{label}: {what}",
                    "us",
                    ours=_per(ours, count),
                    reference=_per(ref, count),
                    reference_note=ref_error,
                    error=ours_error,
                )
                result.rows.append(row)
                result.targets.append(_target(row, ref_name))
    result.notes.append(
        "record on disk: ours fsyncs the journal at every phase end and writes run.json "
        "atomically; OpenHTF writes one JSON file after the run, without fsync"
    )
    return result


def _measure(target: str, args: dict[str, Any]) -> tuple[dict[str, Any] | None, str | None]:
    try:
        return run_child(target, args), None
    except ChildError as exc:
        return None, f"failed: {exc}"


def _per(data: dict[str, Any] | None, count: int) -> Stats | None:
    if data is None:
        return None
    return Stats.of(data["seconds"]).scaled(1e6 / count)


def _target(row: Row, ref_name: str | None) -> Target:
    text = f"{row.label} <= {MAX_RATIO:g}x OpenHTF"
    if row.ours is None or row.reference is None:
        why = row.error or row.reference_note or "no figure"
        return Target(NAME, text, None, why)
    ratio = row.ratio or 0.0
    figure = (
        f"{fmt(row.ours.median)} us vs {fmt(row.reference.median)} us ({ref_name}) "
        f"= {fmt(ratio)}x, i.e. {fmt(1 / ratio) if ratio else 'inf'}x less"
    )
    return Target(NAME, text, ratio <= MAX_RATIO, figure)
