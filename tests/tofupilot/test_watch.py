"""`station upload --watch`: a service that drains queued runs by itself.

In simulated time (the real `watch()` loop and outbox, a fake clock that jumps ahead whenever
the loop sleeps, real HTTP to the emulator): a backlog recorded during an outage drains once the
server is back, with nobody typing, and a Retry-After is honoured. As a process: a run recorded
while it watches is uploaded, SIGTERM stops it cleanly (also with a request hanging), and
nothing is lost or sent twice.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from station.authoring.helpers import Dut
from station.cli.main import build_parser
from station.cli.upload import watch
from station.engine.runner import Runner
from station.storage.journal import Journal
from station.tofupilot.client import TofuPilotClient
from station.tofupilot.outbox import Outbox

REPO = Path(__file__).resolve().parents[2]
CREATE = "POST /api/v2/runs$"

PROC = """
from station import phase

@phase
def only(log):
    log.info("fine")
"""


class SimulatedTime:
    """A clock for the outbox and the loop; `wait()` jumps it ahead instead of sleeping and
    calls `each(now)` so a test can change the world at a given simulated time."""

    def __init__(self, stop: threading.Event, each) -> None:
        self.now = 1_900_000_000.0
        self.start = self.now
        self.stop, self.each = stop, each
        self.waits = 0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds

    def wait(self, seconds: float) -> bool:
        self.waits += 1
        self.now += max(seconds, 0.001)
        self.each(self.now - self.start)
        if self.waits > 20_000 or self.now - self.start > 86_400:
            self.stop.set()  # a loop that never gets there must not hang the test
        return self.stop.is_set()


def record(bench, count: int) -> list[Path]:
    bench.write(PROC)
    procedure = bench.load()
    dirs = []
    for n in range(count):
        journal = Journal(bench.root / "runs")
        Runner(
            procedure,
            Dut(f"SN-{n:04}", procedure.part_number, procedure.revision),
            listeners=[journal],
            handle_signals=False,
        ).execute()
        assert journal.run_dir is not None
        dirs.append(journal.run_dir)
    return dirs


def outbox_on(bench, emulator, clock: SimulatedTime) -> Outbox:
    return Outbox(
        bench.root / "runs",
        lambda: TofuPilotClient(emulator.url, emulator.station_key, timeout_s=5),
        clock=clock,
        sleep=clock.sleep,
    )


def test_a_backlog_recorded_during_an_outage_drains_by_itself_once_the_server_is_back(
    bench, emulator
):
    dirs = record(bench, 4)
    emulator.stop()  # the outage: connections refused
    stop = threading.Event()
    back_at = 600.0  # simulated seconds

    def world(elapsed: float) -> None:
        if elapsed >= back_at:
            emulator.start()  # back (a no-op once it is)
        if len(emulator.runs) == len(dirs):
            stop.set()

    clock = SimulatedTime(stop, world)
    lines: list[str] = []
    with outbox_on(bench, emulator, clock) as outbox:
        watch(outbox, stop=stop, say=lines.append, clock=clock, wait=clock.wait)
        assert outbox.pending() == []
    assert len(emulator.runs) == len(dirs)  # every run, once
    refs = sorted(run.body["client_run_ref"] for run in emulator.runs.values())
    assert len(set(refs)) == len(dirs)
    uploaded = [line for line in lines if line.startswith("uploaded")]
    assert len(uploaded) == len(dirs) and all(re.search(r"run \S+$", u) for u in uploaded)
    down = [line for line in lines if line.startswith("queued")]
    # While the server was down, one run per pass was tried (the pass stops at a refused
    # connection), on the backoff schedule: a handful of tries, not one per poll.
    assert 2 <= len(down) <= 6, lines
    assert all("cannot reach the server" in line for line in down)
    elapsed = clock.now - clock.start
    assert back_at <= elapsed <= back_at + 900 * 1.5 + 60  # the next backoff step after it


def test_retry_after_is_honoured_nothing_is_sent_before_it(bench, emulator):
    (run_dir,) = record(bench, 1)
    emulator.faults.plan(["429:120"], match=CREATE)
    stop = threading.Event()
    posts: list[tuple[float, int]] = []

    def world(elapsed: float) -> None:
        posts.append((elapsed, len(emulator.requests_to("POST", "/api/v2/runs"))))
        if emulator.runs:
            stop.set()

    clock = SimulatedTime(stop, world)
    lines: list[str] = []
    with outbox_on(bench, emulator, clock) as outbox:
        watch(outbox, stop=stop, say=lines.append, clock=clock, wait=clock.wait)
    assert len(emulator.runs) == 1
    second = min(t for t, n in posts if n == 2)
    assert all(n == 1 for t, n in posts if t < 120)  # the refused one only, for 120 s
    assert 120 <= second <= 120 + 60 + 2 * 2  # Retry-After, its jitter, a poll
    assert lines[0].startswith("queued") and "429" in lines[0]
    assert lines[1].startswith("uploaded") and run_dir.name in lines[1]


# -- the command, as a service manager runs it ---------------------------------------------------


class Site:
    def __init__(self, root: Path, emulator) -> None:
        self.root, self.emulator = root, emulator
        (root / "proc_t.py").write_text(textwrap.dedent(PROC), encoding="utf-8")
        (root / "station.yaml").write_text(
            "station: {name: Demo bench}\n"
            "instruments: {}\n"
            "data_dir: runs\n"
            f"tofupilot: {{url: {emulator.url!r}}}\n"
            "procedures:\n"
            "  T1: {module: proc_t.py}\n",
            encoding="utf-8",
        )
        self.env = {**os.environ, "STATION_OPERATOR": "tester", "NO_COLOR": "1"}
        self.env["TOFUPILOT_API_KEY"] = emulator.station_key
        self.env["PYTHONPATH"] = os.pathsep.join(
            filter(None, [str(REPO), self.env.get("PYTHONPATH")])
        )

    def station(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "station", *args],
            cwd=self.root,
            env=self.env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=120,
        )

    def watch(self) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "station", "upload", "--watch"],
            cwd=self.root,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )


def wait_for(condition, what: str, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def stop(process: subprocess.Popen[str]) -> tuple[int, str]:
    process.send_signal(signal.SIGTERM)
    try:
        out, _ = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    return process.returncode, out


@pytest.mark.slow
def test_the_service_uploads_a_run_recorded_while_it_watches_and_stops_on_sigterm(
    tmp_path, emulator
):
    site = Site(tmp_path, emulator)
    watcher = site.watch()
    try:
        assert site.station("run", "T1", "--serial", "SN-1", "--no-upload").returncode == 0
        wait_for(lambda: len(emulator.runs) == 1, "the run to be uploaded by the service")
    finally:
        code, out = stop(watcher)
    assert code == 0, out
    assert re.search(r"^\S+Z uploaded\s+\S+_T1_SN-1_\S+\s+run \S+$", out, re.M), out
    assert out.rstrip().endswith("stopped"), out
    assert site.station("upload").stdout.strip() == "nothing to upload"


@pytest.mark.slow
def test_sigterm_with_a_request_hanging_stops_within_the_bound_and_loses_nothing(
    tmp_path, emulator
):
    site = Site(tmp_path, emulator)
    assert site.station("run", "T1", "--serial", "SN-1", "--no-upload").returncode == 0
    emulator.faults.plan(["hang:60"], match=CREATE)
    watcher = site.watch()
    try:
        wait_for(lambda: emulator.faults.pending == [], "the create request to hang")
        started = time.monotonic()
        code, out = stop(watcher)
        stopped_in = time.monotonic() - started
    finally:
        if watcher.poll() is None:
            watcher.kill()
    assert code == 0, out
    assert stopped_in < 40, out  # the request's own timeout (10 s), not the 60 s hang
    assert "stopped" in out
    emulator.faults.clear()
    again = site.station("upload")
    assert again.returncode == 0, again.stdout
    assert again.stdout.strip().endswith("1 uploaded")
    assert len(emulator.runs) == 1


def readme_unit() -> str:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```text\n(.*?)```", text, re.S)
    (unit,) = [b for b in blocks if "[Service]" in b]
    return unit


def test_the_readme_systemd_unit_runs_a_command_that_exists_and_stops_it_with_sigterm():
    unit = readme_unit()
    (exec_start,) = re.findall(r"^ExecStart=(.*)$", unit, re.M)
    words = exec_start.split()
    at = next(i for i, word in enumerate(words) if Path(word).name == "station")
    args = build_parser().parse_args(words[at + 1 :])
    assert args.command == "upload" and args.watch and not args.retry_parked
    assert re.search(r"^KillSignal=SIGTERM$", unit, re.M)
    assert re.search(r"^Restart=(always|on-failure)$", unit, re.M)
    (grace,) = re.findall(r"^TimeoutStopSec=(\d+)$", unit, re.M)
    from station.cli.upload import WATCH_STOP_GRACE_S

    assert int(grace) > WATCH_STOP_GRACE_S  # systemd never kills it mid-request
