"""A station served for tests, benchmarks and screenshots: the real line, hub, app and uvicorn.

`station_dir(root)` writes a station directory (station.yaml, FVT1, and the procedures beside
this file: PROMPTED, which asks every kind of question, and SLOW, which waits to be aborted).
`served_station(root)` serves it in this process, on a port the OS chooses, with the simulated
bench started by the line as `station serve --sim` does, and keeps that bench at hand
(`served.bench`) so a test can read the supply's outputs. `launch_chromium(playwright)` starts
Debian's chromium (never a downloaded browser), or says why it cannot.
"""

from __future__ import annotations

import contextlib
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvicorn

import sim
from station.cli.common import bench_resources
from station.cli.serve import build_hub, listen_socket
from station.config.model import load_config
from station.line.events import EventBus
from station.line.prompts import PagePrompts
from station.line.session import Line
from station.web.app import create_app
from station.web.security import Guard

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
CHROMIUM = Path("/usr/bin/chromium")
# Headless, sandbox off (CI runs as root), and nothing a fresh profile would fetch from outside.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-default-apps",
    "--disable-sync",
    "--disable-domain-reliability",
    "--disable-client-side-phishing-detection",
    "--disable-features=Translate,MediaRouter,OptimizationHints,AutofillServerCommunication",
    "--metrics-recording-only",
    "--no-first-run",
    "--no-default-browser-check",
]
PROMPTED_PATTERN = r"PCB-(?P<revision>[A-C])-\d{5}"

STATION_YAML = """\
station:
  name: Bench 7
tofupilot:
  url: {url}
  api_key_env: TOFUPILOT_API_KEY
data_dir: runs
instruments:
  dmm:
    driver: keysight-34461a
    resource: "USB0::0x2A8D::0x1301::MY60012345::INSTR"
    timeout_ms: 3000
  psu:
    driver: rigol-dp832
    resource: "USB0::0x1AB1::0x0E11::DP8C000000000::INSTR"
    timeout_ms: 3000
procedures:
  FVT1:
    module: procedures.fvt1
    part_number: PCBA01
    revision: B
    timeout_s: 120
    limits:
      rail_3v3: {{low: 3.22, high: 3.38}}
  PROMPTED:
    module: procedures.prompted
    part_number: PCBA01
    serial_pattern: '{pattern}'
    timeout_s: 300
  SLOW:
    module: procedures.slow
    part_number: PCBA01
    timeout_s: 300
sim:
  board: pcba01
  seed: 1
"""


def chromium_missing() -> str | None:
    """Why the browser tests cannot run here (None: they can)."""
    if not CHROMIUM.exists():
        return (
            f"{CHROMIUM} is not installed (apt-get install chromium; .ci/run installs it): "
            "the browser tests need Debian's chromium"
        )
    return None


def launch_chromium(playwright: Any) -> Any:
    """Debian's chromium, headless, through Playwright."""
    return playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)


def station_dir(root: Path, *, tofupilot_url: str = "http://127.0.0.1:9") -> Path:
    """A station directory under `root` (the TofuPilot URL is a closed loopback port unless
    given: nothing ever leaves the machine)."""
    procedures = root / "procedures"
    procedures.mkdir(parents=True, exist_ok=True)
    for source in [*(REPO / "procedures").glob("*.py"), *(HERE / "procedures").iterdir()]:
        if source.is_file():
            shutil.copy(source, procedures / source.name)
    (root / "station.yaml").write_text(
        STATION_YAML.format(url=tofupilot_url, pattern=PROMPTED_PATTERN), encoding="utf-8"
    )
    return root


@dataclass
class Served:
    """A station being served: its address, line, hub and (once a unit opened it) sim bench."""

    url: str
    root: Path
    line: Line
    hub: Any
    benches: list[sim.SimBench] = field(default_factory=list)

    @property
    def bench(self) -> sim.SimBench:
        assert self.benches, "the simulated bench starts with the first unit"
        return self.benches[-1]

    def run_dirs(self) -> list[Path]:
        runs = self.root / "runs"
        if not runs.is_dir():
            return []
        return sorted(p for p in runs.iterdir() if p.is_dir() and p.name[0] != ".")


@contextlib.contextmanager
def served_station(
    root: Path,
    *,
    host: str = "127.0.0.1",
    token: str | None = None,
    upload: bool = False,
    wire_faults: tuple[str, ...] = (),
) -> Iterator[Served]:
    """`station serve --sim` for `root`'s station.yaml, in this process (see the module doc);
    `wire_faults` (`station sim --wire-fault` specs) are set on the bench as it starts."""
    config = load_config(root / "station.yaml")
    benches: list[sim.SimBench] = []

    @contextlib.contextmanager
    def bench(cfg: Any, enabled: bool, fault: str | None) -> Iterator[tuple[Any, dict[str, str]]]:
        with bench_resources(cfg, enabled, fault) as (simulated, resources):
            benches.append(simulated)
            for spec in wire_faults:
                simulated.set_wire_fault(spec)
            yield simulated, resources

    bus = EventBus()
    prompts = PagePrompts()
    line = Line(
        config,
        sim=True,
        prompts=prompts,
        bus=bus,
        bench=bench,
        upload=upload,
        operator="tester",
        handle_signals=False,
    )
    sock = listen_socket(host, 0)
    server: uvicorn.Server | None = None
    thread: threading.Thread | None = None
    hub = None
    try:
        hub = build_hub(line, config, bus, prompts)
        app = create_app(hub, Guard(bind_host=host, token=token))
        server = uvicorn.Server(
            uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on")
        )
        thread = threading.Thread(
            target=server.run, kwargs={"sockets": [sock]}, name="test-uvicorn", daemon=True
        )
        thread.start()
        deadline = time.monotonic() + 30
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
            time.sleep(0.01)
        port = sock.getsockname()[1]
        connect = "127.0.0.1" if host in ("0.0.0.0", "::") else host
        yield Served(f"http://{connect}:{port}/", root, line, hub, benches)
    finally:
        if hub is not None:
            hub.stop_streams()
        if server is not None:
            server.should_exit = True
        if thread is not None:
            thread.join(30)
        if hub is not None:
            hub.close()
        line.close()
        sock.close()
