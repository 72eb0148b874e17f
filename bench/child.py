"""Running one measurement in a fresh interpreter, and the entry point of that interpreter.

Every measurement runs in its own subprocess (`python -m bench.child`), ours and OpenHTF's alike:
OpenHTF installs a SIGINT handler at import and parses sys.argv in `configure()`, and neither must
leak into the other's numbers; a fresh process also means no warm caches carried across cases.

The target function and its arguments travel in environment variables, not argv, so OpenHTF's
argument parser sees an empty command line. The function returns a JSON-able dict, which the
child writes to the file named by BENCH_OUT. This module imports only the standard library, so a
child measuring OpenHTF never imports station (and vice versa).
"""

from __future__ import annotations

import cProfile
import importlib
import io
import json
import os
import pstats
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

TARGET_ENV = "BENCH_TARGET"  # "module:function"
ARGS_ENV = "BENCH_ARGS"  # JSON object passed to the function
OUT_ENV = "BENCH_OUT"  # file the result is written to
REPO = Path(__file__).resolve().parent.parent


class ChildError(RuntimeError):
    """The child process failed; the message is the end of its stderr."""


def run_child(
    target: str, args: dict[str, Any], *, timeout_s: float = 240.0, cwd: Path = REPO
) -> dict[str, Any]:
    """Run `target(args)` in a new interpreter and return its result dict."""
    with tempfile.TemporaryDirectory(prefix="bench-child-") as tmp:
        out = Path(tmp) / "result.json"
        env = {
            **os.environ,
            TARGET_ENV: target,
            ARGS_ENV: json.dumps(args),
            OUT_ENV: str(out),
            "PYTHONPATH": os.pathsep.join(
                p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p
            ),
        }
        try:
            proc = subprocess.run(
                [sys.executable, "-m", "bench.child"],
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=timeout_s,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise ChildError(f"{target}: no result after {timeout_s:g} s") from None
        if proc.returncode != 0 or not out.exists():
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
            raise ChildError(f"{target} exited {proc.returncode}: {' | '.join(tail)}")
        return json.loads(out.read_text(encoding="utf-8"))


def profile_text(func: Callable[[], Any], limit: int = 20) -> str:
    """cProfile of one call of `func`: the top functions by own time, then by cumulative time."""
    profiler = cProfile.Profile()
    profiler.enable()
    try:
        func()
    finally:
        profiler.disable()
    text = io.StringIO()
    stats = pstats.Stats(profiler, stream=text)
    stats.strip_dirs().sort_stats("tottime").print_stats(limit)
    stats.sort_stats("cumulative").print_stats(limit)
    return _trim(text.getvalue())


def _trim(text: str) -> str:
    """Drop pstats' preamble lines that carry no information."""
    keep = [
        line
        for line in text.splitlines()
        if line.strip() and not line.strip().startswith(("Ordered by", "List reduced"))
    ]
    return "\n".join(keep)


def main() -> int:
    module_name, _, function_name = os.environ[TARGET_ENV].partition(":")
    args = json.loads(os.environ.get(ARGS_ENV, "{}"))
    function = getattr(importlib.import_module(module_name), function_name)
    result = function(args)
    Path(os.environ[OUT_ENV]).write_text(json.dumps(result), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
