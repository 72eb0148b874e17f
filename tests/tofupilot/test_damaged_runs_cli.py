"""`station upload`, `station runs` and `station run` with damaged run directories beside good
ones, as the operator runs them: no traceback, one line per damaged directory naming it and what
is wrong, and every other run recovered, uploaded and listed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from station.authoring.helpers import Dut
from station.config.model import load_config
from station.config.procedure_loader import load_procedure
from station.engine.runner import Runner
from station.storage.journal import Journal

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow

PROC = """
from station import phase

@phase
def only(log):
    log.info("fine")
"""


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

    def record(self, serial: str) -> Path:
        procedure = load_procedure("T1", load_config(self.root / "station.yaml"))
        record = Runner(
            procedure,
            Dut(serial, procedure.part_number, procedure.revision),
            listeners=[Journal(self.root / "runs")],
            handle_signals=False,
        ).execute()
        (run_dir,) = (self.root / "runs").glob(f"*_{record.run_id[:8]}")
        return run_dir

    def station(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "STATION_OPERATOR": "tester", "NO_COLOR": "1"}
        env["TOFUPILOT_API_KEY"] = self.emulator.station_key
        env["STATION_LOCK_DIR"] = str(self.root / ".locks")
        env.pop("STATION_CONFIG", None)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
        return subprocess.run(
            [sys.executable, "-m", "station", *args],
            cwd=self.root,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
        )


def damage(site: Site) -> dict[str, Path]:
    dirs = {"good": site.record("SN-0")}
    dirs["no start"] = site.record("SN-1")
    journal = dirs["no start"] / "journal.jsonl"
    journal.write_bytes(b"{}\n" + journal.read_bytes().split(b"\n", 1)[1])
    (dirs["no start"] / "run.json").unlink()
    (dirs["no start"] / "upload.lock").write_text("4242\n")  # its process died
    dirs["bad state"] = site.record("SN-2")
    (dirs["bad state"] / "upload.json").write_text('{"client_run_ref": 7}')
    dirs["bad record"] = site.record("SN-3")
    record = json.loads((dirs["bad record"] / "run.json").read_text())
    record["started_at"] = 12.5
    record["serial_number"] = {"not": "text"}
    (dirs["bad record"] / "run.json").write_text(json.dumps(record))
    dirs["good too"] = site.record("SN-4")
    return dirs


def assert_clean(result: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in result.stdout + result.stderr, result.stderr[-3000:]


def test_upload_runs_and_run_set_a_damaged_directory_aside_and_go_on(tmp_path, emulator):
    site = Site(tmp_path, emulator)
    dirs = damage(site)

    listing = site.station("runs")
    assert_clean(listing)
    assert listing.returncode == 0, listing.stderr
    assert listing.stdout.count("parked:") == 3, listing.stdout
    assert listing.stdout.count("queued (not uploaded yet)") == 2
    for name in ("no start", "bad state", "bad record"):
        assert f"{dirs[name].name}/" in listing.stdout  # each named, with what is wrong

    upload = site.station("upload")
    assert_clean(upload)
    assert upload.returncode == 6, upload.stdout  # parked runs need a person: not a clean 0
    lines = upload.stdout.splitlines()
    for name, needle in (
        ("no start", "holds no readable run_started event"),
        ("bad state", "upload.json is damaged (client_run_ref"),
        ("bad record", "run.json is not a valid run record"),
    ):
        (line,) = [line for line in lines if dirs[name].name in line]
        assert line.startswith("parked") and needle in line, line
        assert "delet" not in line.lower()
    assert len(emulator.runs) == 2

    run = site.station("run", "T1", "--serial", "SN-9")
    assert_clean(run)
    assert run.returncode == 0, run.stderr
    assert f"set aside run {dirs['no start'].name}: cannot be recovered: " in run.stdout
    assert "uploaded: run" in run.stdout
    assert len(emulator.runs) == 3
