"""Shared pieces of the reporting chaos tests: a live TofuPilot emulator, a station directory
pointed at it (`Site`, which runs `station` as real processes), runs recorded in-process, and the
questions every test asks at the end: which runs are on the server, how often was each sent, and
is each stored body the one its run directory holds.

A test module imports the fixtures it uses by their `*_fixture` names (`emulator_fixture`, ...);
pytest knows them as `emulator`, `site` and `soak`.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import textwrap
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from sim.tofupilot import TofuPilotEmulator
from station.authoring.helpers import Dut
from station.config.model import load_config
from station.config.procedure_loader import load_procedure
from station.engine.runner import Runner
from station.storage.journal import JOURNAL, RUN_JSON, Journal, read_record
from station.tofupilot.payload import build_run_body

REPO = Path(__file__).resolve().parents[2]
FVT1_PHASES = ("identify", "power_up", "rail_3v3", "ripple", "power_down")
RUNS_PATH = "/api/v2/runs"


@pytest.fixture(name="emulator")
def emulator_fixture() -> Iterator[TofuPilotEmulator]:
    """A TofuPilot v2 emulator on a free port; hangs hold 0.3 s, 429 asks for no wait."""
    with TofuPilotEmulator(port=0) as tp:
        tp.faults.hang_s = 0.3
        tp.faults.retry_after_s = 0
        yield tp


@pytest.fixture(name="soak")
def soak_fixture(request: pytest.FixtureRequest) -> None:
    """Soak tests run only when asked for (`-m soak`): minutes of work, not for every commit."""
    if "soak" not in (request.config.option.markexpr or ""):
        pytest.skip("a soak: run it with -m soak")


class Site:
    """A temp copy of the example station pointed at the emulator; runs `station` for real."""

    def __init__(self, root: Path, emulator: TofuPilotEmulator) -> None:
        self.root, self.emulator = root, emulator
        text = (REPO / "station.yaml").read_text()
        text = text.replace("https://www.tofupilot.app/api", emulator.url)
        assert emulator.url in text
        (root / "station.yaml").write_text(text)
        (root / "logs").mkdir()

    @property
    def data_dir(self) -> Path:
        return self.root / "runs"

    def env(self, **extra: str) -> dict[str, str]:
        env = {**os.environ, "STATION_OPERATOR": "tester", "NO_COLOR": "1"}
        for name in ("STATION_CONFIG", "STATION_FAULT_POINT", "STATION_FAULT_MARKER"):
            env.pop(name, None)
        env["TOFUPILOT_API_KEY"] = self.emulator.station_key
        return {**env, **extra}

    def spawn(self, *args: str, log: str, **env: str) -> subprocess.Popen:
        """Start `station ARGS` in the background; its output goes to logs/<log>."""
        with open(self.root / "logs" / log, "w") as out:
            return subprocess.Popen(
                [sys.executable, "-m", "station", *args],
                cwd=self.root,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=self.env(**env),
            )

    def station(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "station", *args],
            cwd=self.root,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=self.env(),
        )

    def run_dirs(self) -> list[Path]:
        return run_dirs(self.data_dir)

    def run_dir_of(self, serial: str) -> Path | None:
        found = [d for d in self.run_dirs() if f"_{serial}_" in d.name]
        assert len(found) <= 1, found
        return found[0] if found else None


@pytest.fixture(name="site")
def site_fixture(tmp_path: Path, emulator: TofuPilotEmulator) -> Site:
    return Site(tmp_path, emulator)


def run_dirs(data_dir: Path) -> list[Path]:
    if not data_dir.is_dir():
        return []
    return sorted(d for d in data_dir.iterdir() if d.is_dir() and not d.name.startswith("."))


def wait_for(condition: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


# -- what the server holds ---------------------------------------------------------------------


def ref_of(run_dir: Path) -> str:
    """The client_run_ref of a run directory: from its upload state, else from its record."""
    state = run_dir / "upload.json"
    if state.is_file():
        return json.loads(state.read_text())["client_run_ref"]
    return f"station-{read_record(run_dir).run_id}"


def stored_refs(emulator: TofuPilotEmulator) -> Counter[str]:
    """How many runs the server holds under each client_run_ref."""
    with emulator._lock:
        return Counter(run.body.get("client_run_ref") for run in emulator.runs.values())


def run_posts(emulator: TofuPilotEmulator) -> Counter[str]:
    """How many `POST /v2/runs` requests carried each client_run_ref (whatever the answer)."""
    with emulator._lock:
        return Counter(r.client_run_ref for r in emulator.requests_to("POST", RUNS_PATH))


def stored_body(emulator: TofuPilotEmulator, ref: str) -> dict[str, Any]:
    (body,) = [r.body for r in emulator.runs.values() if r.body.get("client_run_ref") == ref]
    return body


def expected_body(run_dir: Path, emulator: TofuPilotEmulator) -> dict[str, Any]:
    """The body the run directory stands for, rebuilt from its run.json, with the emulator's id
    of its procedure (what the outbox resolved by name)."""
    record = read_record(run_dir)
    return build_run_body(
        record,
        client_run_ref=ref_of(run_dir),
        procedure_id=emulator.procedure_id(record.procedure_id),
    )


def ledger(emulator: TofuPilotEmulator, dirs: list[Path]) -> dict[str, int]:
    """Runs on the server against run directories: uploaded, duplicates, lost, strays."""
    stored = stored_refs(emulator)
    refs = [ref_of(d) for d in dirs if (d / RUN_JSON).is_file()]
    uploaded = [d for d in dirs if _uploaded(d)]
    return {
        "run directories": len(dirs),
        "on server": sum(stored.values()),
        "uploaded": len(uploaded),
        "duplicates": sum(n - 1 for n in stored.values() if n > 1),
        "lost": len(dirs) - sum(1 for r in refs if stored[r] >= 1),
        "strays": sum(n for ref, n in stored.items() if ref not in set(refs)),
    }


def _uploaded(run_dir: Path) -> bool:
    state = run_dir / "upload.json"
    return state.is_file() and bool(json.loads(state.read_text()).get("uploaded_at"))


# -- the journal -------------------------------------------------------------------------------


def journal_events(run_dir: Path) -> list[dict[str, Any]]:
    """The journal's events. Lines end at `\\n` only: JSON strings may hold U+0085, U+2028
    and U+2029 raw."""
    events = []
    for line in (run_dir / JOURNAL).read_bytes().split(b"\n"):
        with contextlib.suppress(ValueError):  # the line being written when the process died
            events.append(json.loads(line))
    return events


def journal_phases(run_dir: Path) -> tuple[list[tuple[str, str]], str | None]:
    """(name, outcome) of every phase the journal saw end, and the phase left running, if any."""
    ended, running = [], None
    for event in journal_events(run_dir):
        if event["event"] == "phase_started":
            running = event["phase"]["name"]
        elif event["event"] == "phase_ended":
            ended.append((event["phase"]["name"], event["phase"]["outcome"]))
            running = None
    return ended, running


# -- runs recorded in-process ------------------------------------------------------------------

TINY_PROCEDURE = '''
"""A tiny procedure: two measured phases and a teardown that attaches a report; values are
drawn from the serial."""
import pathlib
import random

from station import measure, phase


@phase
@measure("rail", unit="V", low=3.2, high=3.4)
@measure("fw", matches=r"1\\.\\d+")
def measure_rail(dut, measurements, log):
    """Measure the rail."""
    rng = random.Random(dut.serial_number)
    measurements.rail = round(rng.uniform(3.15, 3.45), 4)
    measurements.fw = rng.choice(["1.2", "1.3", "2.0"])
    log.info("rail measured on %s", dut.serial_number)


@phase
@measure("current", unit="A", high=0.1)
def measure_current(dut, measurements, run):
    rng = random.Random(dut.serial_number + "i")
    measurements.current = round(rng.uniform(0.02, 0.11), 4)
    run.metadata["fixture"] = "F-" + dut.serial_number[-2:]


@phase(teardown=True)
def power_down(dut, run, log):
    report = pathlib.Path(__file__).parent / "reports" / f"{dut.serial_number}.txt"
    report.parent.mkdir(exist_ok=True)
    report.write_text(attachment_text(dut.serial_number))
    run.attach(report)
    log.warning("power off")


def attachment_text(serial):
    return f"report of {serial}\\n"
'''


def attachment_bytes(serial: str) -> bytes:
    """What the tiny procedure attaches to the run of `serial` (as `<serial>.txt`)."""
    return f"report of {serial}\n".encode()


def record_runs(root: Path, count: int, *, prefix: str = "SN") -> Path:
    """Record `count` runs of a tiny procedure in `root/runs`, in-process; return that dir."""
    (root / "proc_tiny.py").write_text(textwrap.dedent(TINY_PROCEDURE), encoding="utf-8")
    (root / "station.yaml").write_text(
        "station: {name: Chaos bench}\n"
        "instruments: {}\n"
        "procedures:\n"
        "  T1:\n"
        "    module: proc_tiny.py\n"
        "    part_number: PCBA-T\n"
        "    revision: A\n",
        encoding="utf-8",
    )
    procedure = load_procedure("T1", load_config(root / "station.yaml"))
    data_dir = root / "runs"
    for n in range(count):
        serial = f"{prefix}-{n:04}"
        Runner(
            procedure,
            Dut(serial, procedure.part_number, procedure.revision),
            instruments={},
            listeners=[Journal(data_dir)],
            operator="tester",
            station_name="Chaos bench",
            handle_signals=False,
        ).execute()
    assert len(run_dirs(data_dir)) == count
    return data_dir
