"""`station run` / `station upload` / `station runs` as the operator runs them (subprocesses), with
the TofuPilot emulator misbehaving in every way we know of. Each test ends with exactly the runs
it recorded on the server, once each, and nothing lost; no test output or file holds the key."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow
WRONG_KEY = "tp_station_wrong_key_0123456789"
CREATE = r"^POST /api/v2/runs$"  # faults meant for run creation (not procedure resolution)


class Site:
    """A temp copy of the example station pointed at the emulator; runs `station` for real."""

    def __init__(self, root: Path, emulator) -> None:
        self.root, self.emulator = root, emulator
        self.key: str | None = emulator.station_key
        self.outputs: list[str] = []
        text = (REPO / "station.yaml").read_text()
        text = text.replace("https://www.tofupilot.app/api", emulator.url)
        assert emulator.url in text
        (root / "station.yaml").write_text(text)

    def station(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        env = {**os.environ, "STATION_OPERATOR": "tester", "NO_COLOR": "1"}
        env.pop("STATION_CONFIG", None)
        env.pop("TOFUPILOT_API_KEY", None)
        if self.key is not None:
            env["TOFUPILOT_API_KEY"] = self.key
        result = subprocess.run(
            [sys.executable, "-m", "station", *args],
            cwd=self.root,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
        )
        self.outputs += [result.stdout, result.stderr]
        return result

    def run(self, serial: str = "SN-0001", *extra: str) -> subprocess.CompletedProcess:
        return self.station("run", "FVT1", "--sim", "--serial", serial, *extra)

    def run_dirs(self) -> list[Path]:
        runs = self.root / "runs"
        if not runs.is_dir():
            return []  # dot directories are the station's own (.tofupilot: resolved ids)
        return sorted(d for d in runs.iterdir() if d.is_dir() and not d.name.startswith("."))

    def upload_state(self, run_dir: Path) -> dict:
        return json.loads((run_dir / "upload.json").read_text())

    def assert_each_run_once(self, expected: int) -> None:
        """Every recorded run is on the server exactly once, under its own client_run_ref."""
        dirs = self.run_dirs()
        assert len(dirs) == expected
        refs = sorted(run.body["client_run_ref"] for run in self.emulator.runs.values())
        records = [json.loads((d / "run.json").read_text()) for d in dirs]
        assert refs == sorted(f"station-{r['run_id']}" for r in records)
        for d in dirs:
            saved = self.upload_state(d)
            assert saved["uploaded_at"] and saved["run_id"] in self.emulator.runs


@pytest.fixture
def site(tmp_path: Path, emulator):
    site = Site(tmp_path, emulator)
    yield site
    # The key never appears in any output, record, upload.json or other file.
    keys = [emulator.station_key, emulator.user_key, WRONG_KEY]
    for text in site.outputs:
        for key in keys:
            assert key not in text, text
    for path in tmp_path.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            for key in keys:
                assert key.encode() not in data, path


def uploaded_id(stdout: str) -> str:
    match = re.search(r"uploaded: run (\S+)", stdout)
    assert match, stdout
    return match.group(1)


def test_run_uploads_exactly_one_valid_run_and_shows_its_id(site, emulator, run_validator):
    result = site.run()
    assert result.returncode == 0, result.stderr
    run_id = uploaded_id(result.stdout)
    (stored,) = emulator.runs.values()
    assert stored.id == run_id
    assert list(run_validator.iter_errors(stored.body)) == []  # the emulator checked it too
    # TofuPilot's id of FVT1, resolved by name among the station's linked procedures.
    assert stored.body["procedure_id"] == emulator.procedure_id("FVT1")
    assert stored.body["serial_number"] == "SN-0001"
    site.assert_each_run_once(1)

    listing = site.station("runs")
    assert listing.returncode == 0
    assert re.search(rf"FVT1\s+SN-0001\s+PASS\s+uploaded: run {run_id}", listing.stdout)
    again = site.station("upload")
    assert (again.returncode, again.stdout.strip()) == (0, "nothing to upload")
    assert len(emulator.runs) == 1


def test_server_down_during_run_queues_then_station_upload_sends_it(site, emulator):
    emulator.stop()
    started = time.monotonic()
    result = site.run()
    assert result.returncode == 0, result.stderr
    assert time.monotonic() - started < 30  # no retry loop; slack for a busy machine
    assert "queued for upload (cannot reach the server); send it with 'station upload'" in (
        result.stdout
    )
    listing = site.station("runs")
    assert "queued (cannot reach the server; next retry" in listing.stdout

    down = site.station("upload")
    assert down.returncode == 5 and re.search(r"^queued\s", down.stdout, re.M)  # retried later
    emulator.start()
    result = site.station("upload")
    assert result.returncode == 0, result.stdout
    assert re.search(r"^uploaded\s+\S+_FVT1_SN-0001_\S+\s+run \S+$", result.stdout, re.M)
    site.assert_each_run_once(1)


def test_a_server_error_then_ok_uploads_during_the_run(site, emulator):
    emulator.faults.plan(["500", "ok"], match=CREATE)
    result = site.run()
    assert uploaded_id(result.stdout) in emulator.runs
    assert len(emulator.requests_to("POST", "/api/v2/runs")) == 2
    site.assert_each_run_once(1)


def test_429_retry_after_is_waited_for_within_the_budget(site, emulator):
    emulator.faults.plan(["429:1"], match=CREATE)
    result = site.run()
    assert uploaded_id(result.stdout) in emulator.runs
    # Too long for the operator: queued with its next retry.
    emulator.faults.plan(["429:60"], match=CREATE)
    result = site.run("SN-0002")
    assert "queued for upload (rate limited by the server (429))" in result.stdout
    (later,) = [d for d in site.run_dirs() if "SN-0002" in d.name]
    saved = site.upload_state(later)
    wait = time.mktime(time.strptime(saved["next_retry_at"], "%Y-%m-%dT%H:%M:%SZ")) - time.mktime(
        time.strptime(saved["last_attempt_at"], "%Y-%m-%dT%H:%M:%SZ")
    )
    assert 59 <= wait <= 60 + 30 + 1  # Retry-After, never sooner, plus up to half of it
    assert site.station("upload").returncode == 0
    site.assert_each_run_once(2)


def test_a_hung_server_does_not_hold_the_operator(site, emulator):
    emulator.faults.plan(["hang:120"], match=CREATE)
    started = time.monotonic()
    result = site.run()
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    # The run is ~0.5 s and the upload budget 5 s; the bound only has to be far below the
    # server's 120 s hang, with room for a machine busy enough to take seconds to start Python.
    assert elapsed < 40, elapsed
    assert "queued for upload (the server did not answer in time)" in result.stdout
    assert site.station("upload").returncode == 0
    site.assert_each_run_once(1)


def test_a_response_lost_after_store_is_not_a_duplicate(site, emulator):
    emulator.faults.plan(["drop_after_store"], match=CREATE)
    result = site.run()
    assert uploaded_id(result.stdout) in emulator.runs
    assert len(emulator.requests_to("POST", "/api/v2/runs")) == 2
    site.assert_each_run_once(1)


def test_a_refused_key_parks_with_a_hint_until_retried(site, emulator):
    site.key = WRONG_KEY
    result = site.run()
    assert result.returncode == 0
    assert "not uploaded (parked): the API key in $TOFUPILOT_API_KEY was refused" in result.stdout
    site.key = emulator.station_key
    parked = site.station("upload")
    assert parked.returncode == 6 and re.search(r"^parked\s.*was refused", parked.stdout, re.M)
    assert emulator.runs == {}
    assert site.station("upload", "--retry-parked").returncode == 0
    site.assert_each_run_once(1)


def test_an_unlinked_procedure_parks_with_the_link_hint(site, emulator):
    emulator.unlink("FVT1")
    result = site.run()
    linked = "procedure 'FVT1' is not linked to station 'Demo bench' in TofuPilot (available: T1 ("
    assert linked in result.stdout and "tofupilot_id:` under procedures.FVT1" in result.stdout
    runs = site.station("runs")
    assert "parked: procedure 'FVT1' is not linked" in runs.stdout
    emulator.link("FVT1")
    assert site.station("upload").returncode == 6  # parked runs wait to be asked for
    assert site.station("upload", "--retry-parked").returncode == 0
    site.assert_each_run_once(1)


def test_an_unknown_procedure_parks_with_the_create_or_fix_hint(site, emulator):
    config = site.root / "station.yaml"
    config.write_text(config.read_text().replace("  FVT1:", "  FVT9:"))
    result = site.station("run", "FVT9", "--sim", "--serial", "SN-0001")
    assert result.returncode == 0, result.stderr
    # A station key sees only its linked procedures: unknown and unlinked look alike.
    assert "procedure 'FVT9' is not linked to station 'Demo bench'" in result.stdout
    assert "set `tofupilot_name:` or `tofupilot_id:` under procedures.FVT9" in result.stdout
    emulator.link("FVT9")
    assert site.station("upload", "--retry-parked").returncode == 0
    site.assert_each_run_once(1)


def test_no_key_records_the_run_and_says_how_to_upload(site, emulator):
    site.key = None
    result = site.run()
    assert result.returncode == 0
    assert (
        "not uploaded: $TOFUPILOT_API_KEY is not set; set it and run 'station upload'"
        in result.stdout
    )
    later = site.station("upload")
    assert later.returncode == 6 and "$TOFUPILOT_API_KEY is not set" in later.stdout
    assert emulator.requests == []
    site.key = emulator.station_key
    assert site.station("upload").returncode == 0
    site.assert_each_run_once(1)


def test_no_upload_flag_and_the_exit_code_never_depend_on_the_upload(site, emulator):
    result = site.run("SN-0001", "--no-upload")
    assert result.returncode == 0 and "upload" not in result.stdout
    assert emulator.requests == []
    emulator.faults.plan(["500"] * 10, match=CREATE)
    failing = site.station("run", "FVT1", "--sim", "--serial", "SN-0002", "--sim-fault", "low_rail")
    assert failing.returncode == 1, failing.stdout + failing.stderr  # FAIL, whatever the upload
    assert "queued for upload (server error 500" in failing.stdout
    emulator.faults.clear()
    assert site.station("upload").returncode == 0
    site.assert_each_run_once(2)


def test_a_killed_run_is_recovered_as_error_and_uploaded(site, emulator):
    site.run("SN-0001", "--no-upload")
    (run_dir,) = site.run_dirs()
    # What kill -9 during the run leaves: the journal up to the last phase, no run.json.
    journal = run_dir / "journal.jsonl"
    lines = journal.read_bytes().split(b"\n")  # \n only: JSON strings may hold U+2028
    journal.write_bytes(b"\n".join(line for line in lines if b'"run_ended"' not in line))
    (run_dir / "run.json").unlink()
    assert "interrupted (recovered and uploaded by 'station upload')" in (
        site.station("runs").stdout
    )

    result = site.station("upload")
    assert result.returncode == 0, result.stdout
    assert f"recovered interrupted run {run_dir.name}: ERROR" in result.stdout
    (stored,) = emulator.runs.values()
    assert stored.body["outcome"] == "ERROR"
    site.assert_each_run_once(1)


def test_two_concurrent_uploads_send_each_run_once(site, emulator):
    for n in range(4):
        assert site.run(f"SN-{n:04}", "--no-upload").returncode == 0
    emulator.faults.random_mix(1, {"slow:0.3": 1})  # long enough for the two to overlap
    env = {**os.environ, "TOFUPILOT_API_KEY": emulator.station_key, "NO_COLOR": "1"}
    env.pop("STATION_CONFIG", None)
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "station", "upload"],
            cwd=site.root,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for _ in range(2)
    ]
    codes = []
    for process in processes:
        out, err = process.communicate(timeout=60)
        site.outputs += [out, err]
        codes.append(process.returncode)
    assert codes == [0, 0], site.outputs
    assert len(emulator.requests_to("POST", "/api/v2/runs")) == 4
    site.assert_each_run_once(4)


def test_station_help_does_not_import_httpx():
    code = (
        "import sys; from station.cli.main import build_parser; build_parser();"
        "print(sorted(m for m in ('httpx', 'pydantic') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True
    )
    assert result.stdout.strip() == "[]"


def test_runs_lists_newest_first_with_a_limit(site, emulator):
    for serial in ("SN-A", "SN-B"):
        site.run(serial, "--no-upload")
        time.sleep(1.05)  # run directories are named by their start second
    listing = site.station("runs", "--limit", "1")
    lines = listing.stdout.splitlines()
    assert len(lines) == 2 and "SN-B" in lines[1] and "queued (not uploaded yet)" in lines[1]
    shutil.rmtree(site.root / "runs")
    assert "no runs in" in site.station("runs").stdout


def test_check_reports_the_station_key_and_linked_procedures(site, emulator):
    emulator.link("FVT2")  # the example station's second procedure
    result = site.station("check", "--sim")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "tofupilot: " + emulator.url + ": station key for 'Demo bench'" in result.stdout
    fvt1 = emulator.procedure_id("FVT1")
    assert (
        f"tofupilot: procedure FVT1: 'FVT1' is linked to station 'Demo bench' with id {fvt1}; "
        f"pin it in station.yaml under procedures.FVT1:\n    tofupilot_id: {fvt1}\n"
    ) in result.stdout

    emulator.unlink("FVT1")
    result = site.station("check", "--sim")
    assert result.returncode == 3
    assert "procedure FVT1: NOT usable: procedure 'FVT1' is not linked to station" in result.stdout
    assert "link it to station 'Demo bench' in TofuPilot" in result.stdout

    site.key = WRONG_KEY
    result = site.station("check", "--sim")
    assert result.returncode == 3 and "was refused: check it" in result.stdout

    site.key = None  # no key: reported, but runs are still recorded, so not a failure
    result = site.station("check", "--sim")
    assert result.returncode == 0 and "$TOFUPILOT_API_KEY is not set" in result.stdout
