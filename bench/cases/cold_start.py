"""Case 2, cold start: wall time of a fresh interpreter doing one thing.

`python -m station --help`, `python -m station list` (the repo's station.yaml), `python -c
"import openhtf"` and the bare interpreter (`python -c pass`), all with this venv's python from the
repo root. One untimed round first (bytecode caches), then the commands are interleaved round by
round so that background noise spreads over all of them alike.
Targets: `station --help` under 100 ms, and under half of OpenHTF's import.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

from bench.child import REPO
from bench.report import OPENHTF_MISSING, CaseResult, Row, Stats, Target, fmt
from bench.settings import Settings

NAME = "cold_start"
TITLE = "2. Cold start: wall time of a fresh process (interpreter start-up included)"
HELP_BUDGET_MS = 100.0
MAX_RATIO = 0.5  # station --help / import openhtf

COMMANDS = {
    "help": [sys.executable, "-m", "station", "--help"],
    "list": [sys.executable, "-m", "station", "list"],
    "openhtf": [sys.executable, "-c", "import openhtf"],
    "pass": [sys.executable, "-c", "pass"],
}


def _time(argv: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    proc = subprocess.run(
        argv, cwd=REPO, env=env, stdin=subprocess.DEVNULL, capture_output=True, check=False
    )
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        tail = proc.stderr.decode(errors="replace").strip().splitlines()[-1:]
        raise RuntimeError(f"{' '.join(argv[1:])} exited {proc.returncode}: {' '.join(tail)}")
    return elapsed


def run(settings: Settings) -> CaseResult:
    result = CaseResult(NAME, TITLE)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BENCH_", "STATION_"))}
    commands = {k: v for k, v in COMMANDS.items() if k != "openhtf" or settings.openhtf}
    times: dict[str, list[float]] = {k: [] for k in commands}
    errors: dict[str, str] = {}
    for round_ in range(settings.cold_reps + 1):
        for key, argv in commands.items():
            if key in errors:
                continue
            try:
                elapsed = _time(argv, env)
            except RuntimeError as exc:
                errors[key] = f"failed: {exc}"
                continue
            if round_:  # round 0 warms the bytecode and page caches
                times[key].append(elapsed * 1e3)
    stats = {k: Stats.of(v) for k, v in times.items() if v}
    ref = stats.get("openhtf")
    ref_note = None if settings.openhtf else OPENHTF_MISSING
    if settings.openhtf and ref is None:
        ref_note = errors.get("openhtf", "failed")
    for key, label in (("help", "python -m station --help"), ("list", "python -m station list")):
        result.rows.append(
            Row(
                NAME,
                f"{label} (ref: python -c 'import openhtf')",
                "ms",
                ours=stats.get(key),
                reference=ref,
                reference_note=ref_note,
                error=errors.get(key),
            )
        )
    result.rows.append(
        Row(
            NAME,
            "python -c pass (interpreter alone, both sides)",
            "ms",
            ours=stats.get("pass"),
            reference=stats.get("pass"),
            error=errors.get("pass"),
        )
    )
    result.extra["ms"] = times
    base = stats.get("pass")
    if base:
        for key, label in (("help", "station --help"), ("list", "station list")):
            if key in stats:
                result.notes.append(
                    f"{label} minus bare interpreter: {fmt(stats[key].median - base.median)} ms"
                )
        if ref:
            result.notes.append(
                f"import openhtf minus bare interpreter: {fmt(ref.median - base.median)} ms"
            )

    help_ = stats.get("help")
    result.targets.append(
        Target(
            NAME,
            f"python -m station --help < {HELP_BUDGET_MS:g} ms",
            None if help_ is None else help_.median < HELP_BUDGET_MS,
            f"{fmt(help_.median)} ms" if help_ else errors.get("help", "no figure"),
        )
    )
    if help_ and ref:
        ratio = help_.median / ref.median
        result.targets.append(
            Target(
                NAME,
                f"station --help < {MAX_RATIO:g}x python -c 'import openhtf'",
                ratio < MAX_RATIO,
                f"{fmt(help_.median)} ms vs {fmt(ref.median)} ms = {fmt(ratio)}x",
            )
        )
    else:
        result.targets.append(
            Target(NAME, "station --help < 0.5x import openhtf", None, ref_note or "no figure")
        )
    return result
