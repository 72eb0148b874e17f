"""`python -m bench`: station against OpenHTF and against its budgets, on this machine, now.

    python -m bench                   # every case, about 3-4 minutes on 2 cores
    python -m bench --quick           # fewer repetitions, about 1 minute
    python -m bench --only overhead   # one case (repeatable); see --help for the names
    python -m bench --profile         # also cProfile one repetition of our side, printed last

Prints a table (median [min-max] of the repetitions, and ours / reference) and the targets, MET or
MISSED with the figure, and writes the same figures to bench/results.json. Figures, never
assertions: it exits 0 whatever the numbers, and a case that crashes is reported, not raised.
Every measurement runs in its own subprocess (see bench/child.py).
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import os
import platform
import sys
import time
import traceback
from pathlib import Path

from bench.report import (
    OPENHTF_MISSING,
    CaseResult,
    Target,
    render,
    render_profiles,
    to_json,
    write_json,
)
from bench.settings import Settings, openhtf_version

CASES = {
    "overhead": "bench.cases.overhead",
    "cold_start": "bench.cases.cold_start",
    "instrument_io": "bench.cases.instrument_io",
    "reporting": "bench.cases.reporting",
    "memory": "bench.cases.memory",
    "page_latency": "bench.cases.page_latency",
    "outbox": "bench.cases.outbox",
    "line_loop": "bench.cases.line_loop",
    "user_instrument": "bench.cases.user_instrument",
    "io_trace": "bench.cases.io_trace",
}
RESULTS = Path(__file__).resolve().parent / "results.json"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description="Benchmark station against OpenHTF and its budgets."
    )
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (~1 minute)")
    parser.add_argument(
        "--only",
        action="append",
        choices=sorted(CASES),
        metavar="CASE",
        help=f"run only this case (repeatable): {', '.join(CASES)}",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="cProfile one extra repetition of our side in each case and print the top functions",
    )
    parser.add_argument(
        "--json", type=Path, default=RESULTS, help=f"where to write the figures ({RESULTS.name})"
    )
    return parser.parse_args(argv)


def run_case(name: str, settings: Settings) -> CaseResult:
    """Run one case; a crash becomes a result saying so, never an exception."""
    started = time.perf_counter()
    module = importlib.import_module(CASES[name])
    try:
        result = module.run(settings)
    except Exception as exc:  # a broken case must not hide the others' figures
        result = CaseResult(name, getattr(module, "TITLE", name))
        result.notes.append(f"case crashed: {type(exc).__name__}: {exc}")
        result.notes.append(traceback.format_exc(limit=3).strip().splitlines()[-1])
        result.targets.append(Target(name, "case ran", None, f"{type(exc).__name__}: {exc}"))
    result.seconds = time.perf_counter() - started
    return result


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    settings = Settings(quick=args.quick, profile=args.profile, openhtf=openhtf_version())
    names = [n for n in CASES if not args.only or n in args.only]
    header = [
        f"station benchmarks, {datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}, "
        f"{'quick' if args.quick else 'full'} run",
        f"python {platform.python_version()} on {platform.system()} {platform.machine()}, "
        f"{os.cpu_count()} CPUs; reference: "
        + (f"OpenHTF {settings.openhtf}" if settings.openhtf else OPENHTF_MISSING),
        "",
    ]
    print(header[0], flush=True)
    started = time.perf_counter()
    results = []
    for name in names:
        print(f"  running {name} ...", end="", flush=True)
        result = run_case(name, settings)
        print(f" {result.seconds:.0f} s", flush=True)
        results.append(result)
    total = time.perf_counter() - started
    print()
    print(render(results, header[1:]))
    print(f"\n{len(names)} case(s) in {total:.0f} s")
    if args.profile:
        print("\n" + render_profiles(results))
    meta = {
        "generated_at": datetime.datetime.now(datetime.UTC).isoformat(),
        "quick": args.quick,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "openhtf": settings.openhtf,
        "seconds": round(total, 1),
    }
    try:
        write_json(args.json, to_json(results, meta))
        print(f"figures written to {args.json}")
    except OSError as exc:
        print(f"could not write {args.json}: {exc}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
