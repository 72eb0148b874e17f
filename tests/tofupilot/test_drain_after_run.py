"""Queued runs drain by themselves: `station run` also sends the runs whose retry time has come
(after the verdict, within its bound), a production loop's `BackgroundUploader` sends submitted
runs and the due backlog without holding anyone, and `station upload` ends with one summary line
and an exit code a script can branch on. Real HTTP to the emulator throughout."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from station.authoring.helpers import Dut
from station.cli.upload import (
    EXIT_PARKED,
    EXIT_QUEUED,
    RUN_UPLOAD_BUDGET_S,
    BackgroundUploader,
    summary_line,
    upload_exit_code,
)
from station.engine.runner import Runner
from station.storage.journal import Journal, read_record
from station.storage.runlock import held_elsewhere
from station.tofupilot.client import TofuPilotClient
from station.tofupilot.outbox import PARKED, QUEUED, UPLOADED, Outbox, RunStatus
from station.tofupilot.upload_state import UploadState, client_run_ref_for, iso, save_state

REPO = Path(__file__).resolve().parents[2]
CREATE = "POST /api/v2/runs$"

PROC = """
from station import phase

@phase
def only(log):
    log.info("fine")
"""


class Site:
    """A station directory (procedure T1, no instruments) pointed at the emulator."""

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

    @property
    def data_dir(self) -> Path:
        return self.root / "runs"

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

    def record(self, serial: str) -> Path:
        from station.config.model import load_config
        from station.config.procedure_loader import load_procedure

        procedure = load_procedure("T1", load_config(self.root / "station.yaml"))
        journal = Journal(self.data_dir)
        Runner(procedure, Dut(serial), listeners=[journal], handle_signals=False).execute()
        assert journal.run_dir is not None
        return journal.run_dir

    def outbox(self) -> Outbox:
        key = self.emulator.station_key
        return Outbox(self.data_dir, lambda: TofuPilotClient(self.emulator.url, key))

    def state(self, run_dir: Path) -> dict:
        return json.loads((run_dir / "upload.json").read_text())


def queue_with_retry_at(site: Site, run_dir: Path, at: float) -> None:
    """Make `run_dir` a run whose upload failed once (a 503) and is due again at `at`."""
    state = UploadState(
        client_run_ref=client_run_ref_for(read_record(run_dir)),
        attempts=1,
        failures=1,
        next_retry_at=iso(at),
        last_error={"kind": "http", "status": 503, "code": None, "message": "unavailable"},
    )
    save_state(run_dir, state)


@pytest.mark.slow
def test_station_run_also_sends_the_queued_runs_that_are_due_and_leaves_the_others(
    tmp_path, emulator
):
    site = Site(tmp_path, emulator)
    due = [site.record(f"SN-DUE{n}") for n in range(2)]
    for run_dir in due:
        queue_with_retry_at(site, run_dir, time.time() - 60)
    later = site.record("SN-LATER")
    queue_with_retry_at(site, later, time.time() + 3600)
    posts = len(emulator.requests_to("POST", "/api/v2/runs"))

    result = site.station("run", "T1", "--serial", "SN-NEW")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    verdict = out.index("T1 PASS")
    assert out.index("uploaded: run") > verdict  # the verdict first, then the uploads
    assert "earlier runs due for upload: 2 uploaded" in out, out
    for run_dir in due:
        assert site.state(run_dir)["uploaded_at"]
    assert not site.state(later).get("uploaded_at")  # not due: not sent
    assert len(emulator.requests_to("POST", "/api/v2/runs")) == posts + 3
    assert len(emulator.runs) == 3
    assert [s.run_dir for s in site.outbox().pending()] == [later]


@pytest.mark.slow
def test_a_slow_server_never_holds_the_operator_beyond_the_bound(tmp_path, emulator):
    site = Site(tmp_path, emulator)
    backlog = [site.record(f"SN-{n}") for n in range(8)]
    for run_dir in backlog:
        queue_with_retry_at(site, run_dir, time.time() - 60)
    emulator.faults.random_mix(1, {"slow:2": 1}, match=CREATE)  # every create takes 2 s
    result = site.station("run", "T1", "--serial", "SN-NEW")
    assert result.returncode == 0, result.stderr
    # 9 runs x 2 s would be 18 s: the bound stops the backlog, whatever is left stays queued.
    sent = sum(bool(site.state(d).get("uploaded_at")) for d in backlog)
    assert sent <= RUN_UPLOAD_BUDGET_S / 2, sent
    emulator.faults.clear()
    finish = site.station("upload")
    assert finish.returncode == 0, finish.stdout
    assert len(emulator.runs) == 9  # each once, whatever was cut short


def test_the_background_uploader_sends_submitted_runs_and_the_due_backlog(tmp_path, emulator):
    site = Site(tmp_path, emulator)
    backlog = site.record("SN-OLD")
    queue_with_retry_at(site, backlog, time.time() - 60)
    seen: list[RunStatus] = []
    uploader = BackgroundUploader(site.outbox(), on_status=seen.append, poll_s=0.2)
    fresh = [site.record(f"SN-{n}") for n in range(3)]
    for run_dir in fresh:
        uploader.submit(run_dir)
    deadline = time.monotonic() + 60
    while len(emulator.runs) < 4 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert uploader.close(5.0)
    assert len(emulator.runs) == 4
    assert {s.run_dir for s in seen if s.state == UPLOADED} == {*fresh, backlog}
    assert site.outbox().pending() == []


def test_closing_the_background_uploader_with_the_server_down_is_bounded(tmp_path, emulator):
    site = Site(tmp_path, emulator)
    emulator.faults.plan(["hang:30"] * 10, match=CREATE)
    uploader = BackgroundUploader(site.outbox())
    run_dir = site.record("SN-1")
    uploader.submit(run_dir)
    deadline = time.monotonic() + 30
    while emulator.faults.pending == ["hang:30"] * 10 and time.monotonic() < deadline:
        time.sleep(0.02)  # the create is hanging
    started = time.monotonic()
    ended = uploader.close(1.0)
    assert time.monotonic() - started < 5
    assert not ended  # abandoned in flight: a daemon thread (the process may exit now)
    emulator.faults.clear()
    emulator.stop()  # releases the hung request; the abandoned thread finishes its call
    emulator.start()
    deadline = time.monotonic() + 60
    while held_elsewhere(run_dir) and time.monotonic() < deadline:
        time.sleep(0.05)
    with site.outbox() as outbox:
        assert outbox.upload(run_dir).state == UPLOADED
    assert len(emulator.runs) == 1


def status(state: str, **kw) -> RunStatus:
    return RunStatus(Path("/runs/x"), state, **kw)


def test_the_summary_line_and_the_exit_codes():
    assert summary_line([]) == "nothing to upload" and upload_exit_code([]) == 0
    results = [status(UPLOADED)] * 8 + [status(PARKED)] + [status(QUEUED)] * 2
    assert summary_line(results) == "8 uploaded, 1 parked, 2 queued"
    assert upload_exit_code(results) == EXIT_PARKED == 6  # a person is needed: wins
    assert upload_exit_code([status(UPLOADED), status(QUEUED)]) == EXIT_QUEUED == 5
    assert upload_exit_code([status(UPLOADED), status("busy")]) == 0  # another process's run
    assert summary_line([status(UPLOADED), status("busy")]) == "1 uploaded, 1 in progress"
    no_key = [status("not-configured")]
    assert upload_exit_code(no_key) == EXIT_PARKED and summary_line(no_key) == "1 queued"
    disk = [status(QUEUED, last_error={"kind": "disk", "status": None})]
    assert upload_exit_code(disk) == EXIT_PARKED  # the data directory needs a person
    assert 1 not in {upload_exit_code(r) for r in (results, no_key, disk, [status(QUEUED)])}


@pytest.mark.slow
def test_station_upload_prints_one_summary_line_and_exits_by_what_is_left(tmp_path, emulator):
    site = Site(tmp_path, emulator)
    runs = [site.record(f"SN-{n}") for n in range(3)]
    emulator.faults.plan(["ok"] + ["503"] * 6, match=CREATE)  # 3 quick tries per run
    first = site.station("upload")
    assert first.returncode == EXIT_QUEUED, first.stdout
    assert first.stdout.splitlines()[-1] == "1 uploaded, 2 queued", first.stdout
    assert re.search(r"^queued\s.*server error 503", first.stdout, re.M)
    emulator.faults.clear()
    again = site.station("upload")
    assert again.returncode == 0 and again.stdout.splitlines()[-1] == "2 uploaded"
    assert len(emulator.runs) == len(runs)
