"""The production loop over 1,000 units (a soak, minutes: `python -m pytest -m soak -s
tests/test_loop_soak.py`): memory, threads and file descriptors stay flat, and every unit is
recorded exactly once, in its own run directory.

The bench is the simulated one with instant DMM readings (SimulatedClock), so the figures are
the station's own cost per unit; they are printed.
"""

from __future__ import annotations

import gc
import json
import os
import threading
import time
from pathlib import Path

import pytest
from test_loop import PROCEDURE, FastBench, write_station

from station.config.model import load_config
from station.line.events import EventBus
from station.line.session import Line

pytestmark = pytest.mark.soak
UNITS = 1000
WARM_UP = 100  # units before the baseline: caches, pools and lazy imports settle


def rss_kib() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.fixture(autouse=True)
def _only_when_asked(request: pytest.FixtureRequest) -> None:
    if "soak" not in (request.config.option.markexpr or ""):
        pytest.skip("a soak: run it with -m soak")


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="reads /proc (Linux)")
def test_a_thousand_units_leave_memory_threads_and_descriptors_flat(tmp_path):
    config = load_config(write_station(tmp_path, {"Q1": PROCEDURE}))
    bus = EventBus()
    events = bus.subscribe(maxsize=1_000)  # a page that reads now and then: bounded
    line = Line(config, sim=True, prompts=None, bus=bus, bench=FastBench(), handle_signals=False)
    outcomes: dict[str, int] = {}
    try:
        baseline: tuple[int, int, int] | None = None
        started = time.perf_counter()
        for n in range(UNITS):
            if n == WARM_UP:
                gc.collect()
                baseline = (rss_kib(), threading.active_count(), open_fds())
                started = time.perf_counter()
            serial = f"SN-{n:05d}" + ("-F" if n % 10 == 9 else "")
            outcome = line.run_unit("Q1", serial).outcome.value
            outcomes[outcome] = outcomes.get(outcome, 0) + 1
            while events.get(0) is not None:
                pass
        per_unit_ms = (time.perf_counter() - started) / (UNITS - WARM_UP) * 1000
        gc.collect()
        after = (rss_kib(), threading.active_count(), open_fds())
    finally:
        line.close()
    assert baseline is not None
    grew_kib = after[0] - baseline[0]
    print(
        f"\n{UNITS} units: {per_unit_ms:.1f} ms per unit; RSS {baseline[0]} -> {after[0]} KiB "
        f"({grew_kib:+d}); threads {baseline[1]} -> {after[1]}; fds {baseline[2]} -> {after[2]}"
    )
    assert outcomes == {"PASS": 900, "FAIL": 100}
    assert after[1] == baseline[1], "threads grew"
    assert after[2] == baseline[2], "file descriptors grew"
    # 900 units after the warm-up: a leak of even 10 kB per unit would show as 9 MB.
    assert grew_kib < 4_000, f"RSS grew {grew_kib} KiB over {UNITS - WARM_UP} units"

    run_dirs = [d for d in (tmp_path / "runs").iterdir() if (d / "journal.jsonl").is_file()]
    serials = [json.loads((d / "run.json").read_text())["serial_number"] for d in run_dirs]
    assert len(serials) == UNITS and len(set(serials)) == UNITS  # each once, none twice
    assert line.counters.tested == UNITS and len(line.recent) <= 50
