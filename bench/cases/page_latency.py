"""Case: the operator page's latency, from a phase's end to the browser showing it.

In a child process: the station served as `station serve --sim` does (the line, the hub, the
Starlette app under uvicorn, on loopback), a procedure of PHASES short phases with one
measurement each, and Debian's headless chromium on the page (Playwright). For each phase:

- the phase's end: `PhaseRecord.ended_at`, the instant the runner closed the phase (wall clock);
- shown: the page's clock (`performance.timeOrigin + performance.now()`, the same wall clock)
  right after its script put the phase's outcome into the DOM (`station:rendered`), and at the
  next animation frame (the first paint that can show it).

Both clocks are the system's real-time clock, read by two processes on one machine; the figure
includes the journal, the event bus, the hub's thread, uvicorn, loopback TCP, EventSource and
the DOM update. Target: <= 50 ms. Without chromium (/usr/bin/chromium) the case reports that
and measures nothing.
"""

from __future__ import annotations

import contextlib
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench.child import ChildError, run_child
from bench.report import CaseResult, Row, Stats, Target, fmt
from bench.settings import Settings

NAME = "page_latency"
TITLE = "Operator page: from a phase's end to the browser showing it (loopback)"
BUDGET_MS = 50.0
PHASES = 60
PHASE_S = 0.03  # each phase's own time: the events of one phase do not pile onto the next
CHROMIUM = Path("/usr/bin/chromium")

_PROCEDURE = '''\
"""LATENCY: {phases} short phases, one measurement each."""

from station import measure, phase


def _make(n):
    @phase(name=f"p{{n:03d}}", timeout_s=10)
    @measure(f"m{{n:03d}}", unit="V", low=0.0, high=10.0)
    def step(run, measurements):
        run.sleep({phase_s})
        measurements[f"m{{n:03d}}"] = 1.0 + n / 1000

    return step


PHASES = [_make(n) for n in range({phases})]
'''

_STATION = """\
station:
  name: Latency bench
tofupilot:
  url: http://127.0.0.1:9
  api_key_env: STATION_BENCH_NO_KEY
data_dir: runs
instruments:
  psu:
    driver: rigol-dp832
    resource: "USB0::0x1AB1::0x0E11::DP8C000000000::INSTR"
procedures:
  LATENCY:
    module: procedures.latency
sim:
  board: pcba01
  seed: 1
"""

_RECORDER = """
window.__shown = {};
document.addEventListener("station:rendered", (event) => {
  const e = event.detail;
  if (e.type !== "phase_ended") return;
  const dom = performance.timeOrigin + performance.now();
  requestAnimationFrame(() => {
    window.__shown[e.phase] = [dom, performance.timeOrigin + performance.now()];
  });
});
"""


def measure(args: dict[str, Any]) -> dict[str, Any]:
    """Child: serve a station, run one unit of `phases` phases with the page open, and return
    each phase's end and the page's times (epoch seconds / milliseconds)."""
    import uvicorn
    from playwright.sync_api import sync_playwright

    from station.cli.common import bench_resources
    from station.cli.serve import build_hub, listen_socket
    from station.config.model import load_config
    from station.line.events import EventBus
    from station.line.prompts import PagePrompts
    from station.line.session import Line
    from station.records.listener import RunListener
    from station.records.model import PhaseRecord
    from station.web.app import create_app
    from station.web.security import Guard

    ends: dict[str, float] = {}

    class PhaseEnds(RunListener):
        def phase_ended(self, record: PhaseRecord) -> None:
            ends[record.name] = record.ended_at.timestamp()

    with tempfile.TemporaryDirectory(prefix="bench-page-") as tmp:
        root = Path(tmp)
        (root / "procedures").mkdir()
        (root / "procedures" / "latency.py").write_text(
            _PROCEDURE.format(phases=args["phases"], phase_s=args["phase_s"]), encoding="utf-8"
        )
        (root / "station.yaml").write_text(_STATION, encoding="utf-8")
        config = load_config(root / "station.yaml")
        bus, prompts = EventBus(), PagePrompts()
        line = Line(
            config,
            sim=True,
            prompts=prompts,
            bus=bus,
            bench=bench_resources,
            upload=False,
            listeners=[PhaseEnds()],
            handle_signals=False,
        )
        hub = build_hub(line, config, bus, prompts)
        sock = listen_socket("127.0.0.1", 0)
        server = uvicorn.Server(
            uvicorn.Config(
                create_app(hub, Guard("127.0.0.1", None)), log_level="warning", access_log=False
            )
        )
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        try:
            while not server.started:
                time.sleep(0.01)
            url = f"http://127.0.0.1:{sock.getsockname()[1]}/"
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(
                    executable_path=str(CHROMIUM),
                    args=["--no-sandbox", "--disable-background-networking"],
                )
                page = browser.new_page()
                page.add_init_script(_RECORDER)
                page.goto(url)
                page.wait_for_selector("#connection.online")
                page.fill("#serial", "SN-LATENCY")
                page.click("#start")
                page.wait_for_selector('#verdict[data-verdict="PASS"]', timeout=120_000)
                page.wait_for_timeout(200)
                shown = page.evaluate("() => window.__shown")
                browser.close()
        finally:
            hub.stop_streams()
            server.should_exit = True
            thread.join(30)
            hub.close()
            line.close()
            with contextlib.suppress(OSError):
                sock.close()
    return {"ends": ends, "shown": shown}


def run(settings: Settings) -> CaseResult:
    result = CaseResult(NAME, TITLE)
    label = f"phase end -> shown in the page, {PHASES} phases"
    if not CHROMIUM.exists():
        why = f"{CHROMIUM} not installed (apt-get install chromium)"
        result.rows.append(Row(NAME, label, "ms", error=why))
        result.targets.append(Target(NAME, f"phase end -> page <= {BUDGET_MS:g} ms", None, why))
        return result
    reps = 1 if settings.quick else 3
    dom: list[float] = []
    paint: list[float] = []
    try:
        for _ in range(reps):
            data = run_child(
                "bench.cases.page_latency:measure",
                {"phases": PHASES, "phase_s": PHASE_S},
                timeout_s=240,
            )
            for phase, end in data["ends"].items():
                times = data["shown"].get(phase)
                if times is None:
                    raise ChildError(f"the page never showed the end of phase {phase}")
                dom.append(times[0] - end * 1000)
                paint.append(times[1] - end * 1000)
    except ChildError as exc:
        result.rows.append(Row(NAME, label, "ms", error=f"failed: {exc}"))
        result.targets.append(
            Target(NAME, f"phase end -> page <= {BUDGET_MS:g} ms", None, str(exc))
        )
        return result
    dom_stats, paint_stats = Stats.of(dom), Stats.of(paint)
    result.rows += [
        Row(NAME, f"{label}: in the DOM", "ms", ours=dom_stats),
        Row(NAME, f"{label}: next frame painted", "ms", ours=paint_stats),
    ]
    p95 = statistics.quantiles(paint, n=20)[-1] if len(paint) >= 20 else max(paint)
    result.notes.append(
        f"{len(paint)} phases over {reps} run(s); painted: median {fmt(paint_stats.median)} ms, "
        f"95th percentile {fmt(p95)} ms, max {fmt(paint_stats.high)} ms"
    )
    result.extra["latency_ms"] = {"dom": dom, "paint": paint}
    result.targets.append(
        Target(
            NAME,
            f"phase end -> page painted <= {BUDGET_MS:g} ms (median; loopback)",
            paint_stats.median <= BUDGET_MS,
            f"median {fmt(paint_stats.median)} ms, 95th percentile {fmt(p95)} ms",
        )
    )
    return result
