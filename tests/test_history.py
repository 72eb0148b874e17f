"""`station history SN`: TofuPilot's runs of a unit (every page, up to a limit; v1 too) merged
with this station's runs not uploaded yet, newest first; offline, the local ones and why.

Against the TofuPilot emulator over real HTTP; local runs are recorded by the real runner and
journal, so the outbox's pending index lists them as a station's would."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from sim.tofupilot import TofuPilotEmulator
from station.authoring.helpers import Dut
from station.config.model import StationConfig, load_config
from station.config.procedure_loader import load_procedure
from station.engine.runner import Runner
from station.records.model import RunRecord
from station.storage.journal import Journal
from station.tofupilot import history as history_module
from station.tofupilot.history import TOFUPILOT, local_time, unit_history

REPO = Path(__file__).resolve().parents[1]

PROCEDURE = '''
    """A unit test whose outcome the test decides (value.txt: 0 passes, 2 fails)."""
    from pathlib import Path
    from station import phase, measure

    @phase
    @measure("v", high=1)
    def check(measurements, run):
        here = Path(__file__).parent
        measurements.v = float((here / "value.txt").read_text())
        if (here / "attach.txt").exists():
            run.attach(here / "attach.txt")
'''


class RouteSite:
    """A temp station (procedures ICT and FVT1, FVT1 requiring ICT) pointed at the emulator."""

    def __init__(
        self, root: Path, emulator: TofuPilotEmulator, *, api: str = "v2", files: bool = True
    ) -> None:
        """`files`: write proc_u.py and station.yaml (False: `root` has its own station)."""
        self.root, self.emulator = root, emulator
        if files:
            (root / "proc_u.py").write_text(textwrap.dedent(PROCEDURE), encoding="utf-8")
            self.write(api=api)

    def write(self, *, api: str = "v2", requires: str = "[ICT]", ict_extra: str = "") -> None:
        (self.root / "station.yaml").write_text(
            textwrap.dedent(f"""\
                station: {{name: Line 2}}
                tofupilot: {{url: "{self.emulator.url}", api: {api}}}
                data_dir: runs
                instruments: {{}}
                procedures:
                  ICT:
                    module: proc_u.py
                {textwrap.indent(ict_extra, "    ")}
                  FVT1:
                    module: proc_u.py
                    requires_passed: {requires}
            """),
            encoding="utf-8",
        )

    def config(self) -> StationConfig:
        return load_config(self.root / "station.yaml")

    def record_local(self, key: str, serial: str, *, passed: bool) -> RunRecord:
        """A run recorded on this station and not uploaded (the real runner and journal)."""
        (self.root / "value.txt").write_text("0" if passed else "2", encoding="utf-8")
        config = self.config()
        runner = Runner(
            load_procedure(key, config),
            Dut(serial),
            instruments={},
            listeners=[Journal(config.data_path)],
            handle_signals=False,
            station_name=config.station.name,
        )
        return runner.execute()

    def post(self, procedure: str, serial: str, outcome: str, day: str, *, key=None, **extra):
        """A run already in TofuPilot (made by a station key: another station with `key`)."""
        body = {
            "outcome": outcome,
            "procedure_id": self.emulator.procedure_id(procedure),
            "started_at": f"{day}T10:00:00.000Z",
            "ended_at": f"{day}T10:01:00.000Z",
            "serial_number": serial,
            **extra,
        }
        response = httpx.post(
            f"{self.emulator.url}/v2/runs",
            json=body,
            headers={"Authorization": f"Bearer {key or self.emulator.user_key}"},
        )
        assert response.status_code == 200, response.text
        return response.json()["id"]

    def station(self, *args: str, key: str | None = None) -> subprocess.CompletedProcess:
        env = {**os.environ, "NO_COLOR": "1", "STATION_OPERATOR": "tester"}
        env.pop("TOFUPILOT_API_KEY", None)
        if key is not None:
            env["TOFUPILOT_API_KEY"] = key
        return subprocess.run(
            [sys.executable, "-m", "station", *args, "--config", str(self.root / "station.yaml")],
            cwd=self.root,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
        )


@pytest.fixture
def emulator() -> Iterator[TofuPilotEmulator]:
    """The emulator with ICT and FVT1 linked to the demo station (key: `.station_key`), and ICT
    to the rework bench too (the second station key: the ICT station of these tests)."""
    with TofuPilotEmulator(port=0) as tp:
        tp.link("ICT")
        tp.link("FVT1")
        tp.link("ICT", tp.key_of("station", 1))
        yield tp


@pytest.fixture
def site(tmp_path: Path, emulator: TofuPilotEmulator) -> RouteSite:
    return RouteSite(tmp_path, emulator)


def _day(run) -> str:
    return run.started_at.astimezone(UTC).strftime("%Y-%m-%d")


def test_tofupilot_and_local_runs_merged_newest_first(site, emulator):
    site.post("ICT", "SN-1", "PASS", "2026-01-02", key=emulator.key_of("station", 1))
    site.post("FVT1", "SN-1", "FAIL", "2026-01-03", key=emulator.station_key)
    site.post("FVT1", "SN-2", "PASS", "2026-01-04")  # another unit
    site.record_local("FVT1", "sn-1", passed=True)  # serial numbers match case-insensitively
    site.record_local("FVT1", "SN-9", passed=True)

    found = unit_history(site.config(), "SN-1", api_key=emulator.station_key)
    assert found.online and found.note is None
    rows = [(r.procedure, r.outcome, r.station, r.where) for r in found.runs]
    assert rows == [
        ("FVT1", "PASS", "Line 2", "local (queued)"),
        ("FVT1", "FAIL", "Demo bench", TOFUPILOT),
        ("ICT", "PASS", "Rework bench", TOFUPILOT),
    ]
    assert [_day(r) for r in found.runs[1:]] == ["2026-01-03", "2026-01-02"]
    assert found.runs[1].procedure_id == emulator.procedure_id("FVT1")
    (query,) = emulator.requests_to("GET", "/api/v2/runs")
    assert query.status == 200


def test_every_page_is_read_up_to_the_limit(site, emulator, monkeypatch):
    monkeypatch.setattr(history_module, "PAGE_SIZE", 2)
    for day in range(1, 8):
        site.post("FVT1", "SN-P", "PASS" if day % 2 else "FAIL", f"2026-02-0{day}")
    config = site.config()
    everything = unit_history(config, "SN-P", limit=50, api_key=emulator.station_key)
    assert [_day(r) for r in everything.runs] == [f"2026-02-0{d}" for d in range(7, 0, -1)]
    assert not everything.more and len(emulator.requests_to("GET", "/api/v2/runs")) == 4
    some = unit_history(config, "SN-P", limit=3, api_key=emulator.station_key)
    assert [_day(r) for r in some.runs] == ["2026-02-07", "2026-02-06", "2026-02-05"]
    assert some.more and some.note == "TofuPilot has more runs of SN-P than the 3 shown"


def test_offline_shows_the_local_runs_and_says_why(site, emulator):
    site.post("FVT1", "SN-1", "PASS", "2026-01-03")
    site.record_local("ICT", "SN-1", passed=False)
    config = site.config()
    no_key = unit_history(config, "SN-1", api_key="")
    assert not no_key.online and [r.procedure for r in no_key.runs] == ["ICT"]
    assert no_key.note.startswith("$TOFUPILOT_API_KEY is not set")
    assert not emulator.requests_to("GET", "/api/v2/runs")
    emulator.stop()
    down = unit_history(config, "SN-1", api_key=emulator.station_key, timeout_s=2)
    assert not down.online and [r.outcome for r in down.runs] == ["FAIL"]
    assert down.offline_reason == "TofuPilot unreachable"
    assert "showing only the runs recorded here and not uploaded yet" in down.note
    emulator.start()
    refused = unit_history(config, "SN-1", api_key="tp_station_wrong_key_0123456789")
    assert refused.offline_reason == "TofuPilot refused the query" and "401" in refused.note
    assert "tp_station_wrong" not in refused.note


def test_a_server_that_does_not_answer_is_given_up_within_the_bound(site, emulator):
    emulator.faults.plan(["hang:10"])
    started = time.monotonic()
    hung = unit_history(site.config(), "SN-1", api_key=emulator.station_key, timeout_s=0.5)
    assert time.monotonic() - started < 5
    assert hung.offline_reason == "TofuPilot unreachable"


def test_a_pending_run_tofupilot_already_has_is_shown_once(site, emulator):
    """Created in TofuPilot, its attachment not uploaded yet: still pending locally."""
    from station.cli.upload import outbox_for

    (site.root / "attach.txt").write_text("scope trace", encoding="utf-8")
    site.record_local("FVT1", "SN-A", passed=True)
    config = site.config()
    (run_dir,) = [d for d in config.data_path.iterdir() if not d.name.startswith(".")]
    emulator.faults.plan(["500"] * 20, match="POST /api/v2/runs/[^/]+/attachments")
    os.environ["TOFUPILOT_API_KEY"] = emulator.station_key
    try:
        with outbox_for(config) as outbox:
            outbox.upload(run_dir)
            status = outbox.status(run_dir)
    finally:
        del os.environ["TOFUPILOT_API_KEY"]
    assert status.state == "queued" and status.run_id in emulator.runs
    found = unit_history(config, "SN-A", api_key=emulator.station_key)
    assert [(r.where, r.run_id) for r in found.runs] == [(TOFUPILOT, status.run_id)]


def test_v1_history(tmp_path, emulator):
    site = RouteSite(tmp_path, emulator, api="v1")
    body = {
        "unit_under_test": {"serial_number": "SN-V"},
        "run_passed": False,
        "procedure_id": "FVT1",
        "started_at": "2026-03-01T08:00:00Z",
        "duration": "PT30S",
    }
    auth = {"Authorization": f"Bearer {emulator.station_key}"}
    assert httpx.post(f"{emulator.url}/v1/runs", json=body, headers=auth).status_code == 200
    found = unit_history(site.config(), "SN-V", api_key=emulator.station_key)
    assert [(r.procedure, r.outcome, r.station) for r in found.runs] == [
        ("FVT1", "FAIL", "Demo bench")
    ]
    assert emulator.requests_to("GET", "/api/v1/runs") and not emulator.requests_to(
        "GET", "/api/v2/runs"
    )


@pytest.mark.slow
def test_station_history_command_online_and_offline(site, emulator):
    site.post("ICT", "SN-1", "PASS", "2026-01-02", key=emulator.key_of("station", 1))
    local = site.record_local("FVT1", "SN-1", passed=False)
    online = site.station("history", "SN-1", key=emulator.station_key)
    assert online.returncode == 0, online.stderr
    lines = online.stdout.splitlines()
    assert re.match(r"started \(local\)\s+procedure\s+outcome\s+station\s+where$", lines[0])
    assert re.match(
        rf"{re.escape(local_time(local.started_at))}\s+FVT1\s+FAIL\s+Line 2\s+local \(queued\)$",
        lines[1],
    ), lines
    ict_day = local_time(datetime(2026, 1, 2, 10, tzinfo=UTC))
    assert re.match(rf"{ict_day}\s+ICT\s+PASS\s+Rework bench\s+TofuPilot$", lines[2]), lines
    assert len(lines) == 3
    offline = site.station("history", "SN-1")
    assert offline.returncode == 0
    assert offline.stdout.startswith("offline: $TOFUPILOT_API_KEY is not set")
    assert "ICT" not in offline.stdout and "FVT1" in offline.stdout
    nothing = site.station("history", "NOBODY", key=emulator.station_key)
    assert nothing.stdout.strip() == "no runs of NOBODY in TofuPilot or on this station"
    assert site.station("history", "SN-1", "--limit", "0").returncode == 2
    assert emulator.station_key not in online.stdout + online.stderr
