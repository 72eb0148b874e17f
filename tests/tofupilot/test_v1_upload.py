"""The legacy v1 API (`tofupilot.api: v1`), for servers that lack v2: runs go through
`POST /api/v1/runs` in the shape the official v1 client sends, accepted by the emulator's v1
endpoint (which refuses unknown keys), over real HTTP. v2 stays the default."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

from sim.tofupilot.v1 import check_v1_body
from station.authoring.helpers import Dut
from station.engine.runner import Runner
from station.storage.journal import Journal
from station.tofupilot.client import TofuPilotClient
from station.tofupilot.outbox import PARKED, UPLOADED, Outbox
from station.tofupilot.resolve import ProcedureLink, UploadTarget
from station.tofupilot.v1 import iso_duration

REPO = Path(__file__).resolve().parents[2]
PROC = """
from pathlib import Path
from station import phase, measure

@phase
@measure("rail_3v3", unit="V", low=3.2, high=3.4)
@measure("current", unit="A", high=0.5)
@measure("fw", matches=r"1\\.\\d+")
def rails(measurements, dut, run):
    measurements.rail_3v3 = RAIL
    measurements.current = 0.12
    measurements.fw = "1.7"
    dut.sub_units.append("SUB-1")
    here = Path(__file__).parent
    (here / "scope.csv").write_text("t,v\\n")
    run.attach(here / "scope.csv")

@phase
def flash(log):
    log.info("flashed")
"""


def record(bench, rail: float = 3.3, serial: str = "SN-V1") -> Path:
    bench.write(f"RAIL = {rail}\n" + PROC, procedure_yaml="part_number: PCBA-01\nrevision: B\n")
    procedure = bench.load("T1")
    dut = Dut(serial, procedure.part_number, procedure.revision)
    runner = Runner(procedure, dut, listeners=[Journal(bench.root / "runs")], handle_signals=False)
    result = runner.execute()
    (run_dir,) = (bench.root / "runs").glob(f"*_{result.run_id[:8]}")
    return run_dir


def outbox(bench, emulator, **links: ProcedureLink) -> Outbox:
    return Outbox(
        bench.root / "runs",
        lambda: TofuPilotClient(emulator.url, emulator.station_key, timeout_s=5.0),
        target=UploadTarget(api="v1", procedures=links),
    )


def test_a_run_goes_through_the_v1_endpoint_in_its_documented_shape(bench, emulator):
    run_dir = record(bench)
    with outbox(bench, emulator) as box:
        status = box.upload(run_dir)
    assert status.state == UPLOADED, status
    (stored,) = emulator.runs.values()
    assert stored.api == "v1" and stored.id == status.run_id
    body = stored.v1_body
    assert check_v1_body(body) == []  # every key one the v1 API knows, of the right type
    assert body["procedure_id"] == "T1"  # the v1 identifier: the key, never a UUID
    assert body["unit_under_test"] == {
        "serial_number": "SN-V1",
        "part_number": "PCBA-01",
        "revision": "B",
    }
    assert body["run_passed"] is True
    assert body["started_at"].endswith("Z") and body["duration"].startswith("PT")
    assert body["sub_units"] == [{"serial_number": "SUB-1"}]
    steps = {step["name"]: step for step in body["steps"]}
    assert set(steps) == {"rail_3v3", "current", "fw", "flash"}
    rail = steps["rail_3v3"]
    assert (rail["measurement_value"], rail["measurement_unit"]) == (3.3, "V")
    assert (rail["limit_low"], rail["limit_high"], rail["step_passed"]) == (3.2, 3.4, True)
    assert "limit_low" not in steps["current"] and steps["current"]["limit_high"] == 0.5
    assert steps["fw"]["measurement_value"] == "1.7" and "limit_low" not in steps["fw"]
    assert steps["flash"] == {**steps["flash"], "step_passed": True}
    assert "measurement_value" not in steps["flash"]
    assert body["report_variables"]["outcome"] == "PASS"
    assert all(isinstance(v, str) for v in body["report_variables"].values())
    assert [r.path for r in emulator.requests if "/v2/" in r.path] == []  # v1 only
    # Attachments stay in the run directory: v1 sends none.
    saved = json.loads((run_dir / "upload.json").read_text())
    assert [a["flow"] for a in saved["attachments"]] == ["not-sent-v1"]
    assert stored.attachments == []


def test_a_failed_run_is_not_passed_and_keeps_its_outcome(bench, emulator):
    run_dir = record(bench, rail=3.6)
    with outbox(bench, emulator) as box:
        assert box.upload(run_dir).state == UPLOADED
    (stored,) = emulator.runs.values()
    body = stored.v1_body
    assert body["run_passed"] is False and stored.body["outcome"] == "FAIL"
    assert body["report_variables"]["outcome"] == "FAIL"
    (rail,) = [s for s in body["steps"] if s["name"] == "rail_3v3"]
    assert rail["step_passed"] is False and rail["measurement_value"] == 3.6


def test_tofupilot_name_is_the_v1_identifier(bench, emulator):
    emulator.link("PCBA functional")
    run_dir = record(bench)
    link = ProcedureLink("T1", tofupilot_name="PCBA functional")
    with outbox(bench, emulator, T1=link) as box:
        assert box.upload(run_dir).state == UPLOADED
    (stored,) = emulator.runs.values()
    assert stored.v1_body["procedure_id"] == "PCBA functional"
    assert stored.body["procedure_id"] == emulator.procedure_id("PCBA functional")


def test_an_unknown_v1_procedure_parks_with_a_hint(bench, emulator):
    run_dir = record(bench)
    link = ProcedureLink("T1", tofupilot_name="Nope")
    with outbox(bench, emulator, T1=link) as box:
        status = box.upload(run_dir)
    assert status.state == PARKED
    assert status.hint.startswith("TofuPilot refused procedure 'Nope' (HTTP 404")
    assert "set `tofupilot_name:` under procedures.T1 in station.yaml" in status.hint


def test_a_lost_answer_is_found_on_the_server_not_sent_twice(bench, emulator):
    run_dir = record(bench)
    emulator.faults.plan(["drop_after_store"], match=r"^POST /api/v1/runs$")
    with outbox(bench, emulator) as box:
        status = box.upload(run_dir)
    assert status.state == UPLOADED, status
    assert len(emulator.runs) == 1 and status.run_id in emulator.runs
    assert len(emulator.requests_to("POST", "/api/v1/runs")) == 1  # found, not re-sent
    assert len(emulator.requests_to("GET", "/api/v1/runs")) == 1


def test_iso_8601_durations():
    assert iso_duration(timedelta(seconds=1.5)) == "PT1.5S"
    assert iso_duration(timedelta(0)) == "PT0S"
    assert iso_duration(timedelta(minutes=2, seconds=3.25)) == "PT2M3.25S"
    assert iso_duration(timedelta(days=1, hours=1)) == "P1DT1H"
    assert iso_duration(timedelta(seconds=-3)) == "PT0S"


def test_station_run_with_api_v1_uploads_through_v1(tmp_path, emulator):
    text = (REPO / "station.yaml").read_text()
    text = text.replace("url: https://www.tofupilot.app/api", f"api: v1\n  url: {emulator.url}/v1")
    (tmp_path / "station.yaml").write_text(text)
    env = {**os.environ, "TOFUPILOT_API_KEY": emulator.station_key, "NO_COLOR": "1"}
    env.pop("STATION_CONFIG", None)

    def station(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "station", *args],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
        )

    result = station("run", "FVT1", "--sim", "--serial", "SN-V1-CLI")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "uploaded: run" in result.stdout
    (stored,) = emulator.runs.values()
    assert stored.api == "v1" and stored.v1_body["procedure_id"] == "FVT1"
    assert stored.v1_body["report_variables"]["simulated"] == "true"
    check = station("check", "--sim")
    assert f"tofupilot: {emulator.url}: the v1 API accepts the key" in check.stdout
