"""A run TofuPilot rejects (400) because of what station.yaml or TofuPilot's setup says is parked
with a hint that names the cause: a missing part number, an unknown sub-unit, a procedure id that
is not TofuPilot's. Only a rejection nobody can explain asks to be reported."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from station.authoring.helpers import Dut
from station.engine.runner import Runner
from station.records.model import RunRecord
from station.storage.journal import Journal
from station.tofupilot.client import ApiError, TofuPilotClient
from station.tofupilot.outbox import PARKED, UPLOADED, Outbox
from station.tofupilot.policy import rejection_hint

PROC = """
from station import phase

@phase
def assemble(dut, log):
    dut.sub_units.extend(SUBS)
    log.info("assembled")
"""


def record(bench, subs: list[str], serial: str = "SN-1", yaml: str = "") -> Path:
    bench.write(f"SUBS = {subs!r}\n" + PROC, procedure_yaml=yaml)
    procedure = bench.load("T1")
    dut = Dut(serial, procedure.part_number, procedure.revision)
    runner = Runner(procedure, dut, listeners=[Journal(bench.root / "runs")], handle_signals=False)
    result = runner.execute()
    (run_dir,) = (bench.root / "runs").glob(f"*_{result.run_id[:8]}")
    return run_dir


def upload(bench, emulator, run_dir: Path, **kw):
    client = lambda: TofuPilotClient(emulator.url, emulator.station_key, timeout_s=5.0)  # noqa: E731
    with Outbox(bench.root / "runs", client) as box:
        return box.upload(run_dir, **kw)


def assert_actionable(hint: str) -> None:
    assert "please report this" not in hint
    assert hint.endswith("then run 'station upload --retry-parked'")


def test_a_missing_part_number_says_to_set_it_or_configure_serial_parsing(bench, emulator):
    emulator.part_number_required = True
    run_dir = record(bench, [])
    status = upload(bench, emulator, run_dir)
    assert status.state == PARKED
    assert status.hint.startswith(
        "TofuPilot needs the unit's part number: set `part_number:` for procedure T1 in "
        "station.yaml (or a part_number group in its serial_pattern), or configure serial number "
        "parsing in TofuPilot so it can derive the part number (the server said: part_number: "
        "part_number is required"
    )
    assert_actionable(status.hint)
    assert status.last_error["status"] == 400

    # Fixed in station.yaml: the parked run is sent again as recorded, so it still lacks it ...
    second = record(bench, [], serial="SN-2", yaml="part_number: PCBA-01\n")
    assert upload(bench, emulator, second).state == UPLOADED  # ... while new runs carry it
    emulator.part_number_required = False  # or TofuPilot parses it from the serial
    assert upload(bench, emulator, run_dir, retry_parked=True).state == UPLOADED


def test_an_unknown_sub_unit_must_exist_in_tofupilot_first(bench, emulator):
    emulator.strict_sub_units = True
    run_dir = record(bench, ["SUB-KNOWN", "SUB-NEW"])
    sub = record(bench, [], serial="SUB-KNOWN")
    assert upload(bench, emulator, sub).state == UPLOADED  # SUB-KNOWN now exists
    status = upload(bench, emulator, run_dir)
    assert status.state == PARKED
    assert status.hint.startswith(
        "sub-unit(s) SUB-NEW unknown to TofuPilot: a sub-unit must exist in TofuPilot before a "
        "run references it (upload the sub-unit's own run first, or create the unit there)"
    )
    assert "SUB-KNOWN unknown" not in status.hint
    assert_actionable(status.hint)
    new = record(bench, [], serial="SUB-NEW")
    assert upload(bench, emulator, new).state == UPLOADED
    assert upload(bench, emulator, run_dir, retry_parked=True).state == UPLOADED


def test_both_causes_at_once_get_both_hints(bench, emulator):
    emulator.strict_sub_units = True
    emulator.part_number_required = True
    status = upload(bench, emulator, record(bench, ["SUB-X"]))
    assert status.state == PARKED
    assert "TofuPilot needs the unit's part number" in status.hint
    assert "sub-unit(s) SUB-X unknown to TofuPilot" in status.hint
    assert_actionable(status.hint)


def a_record() -> RunRecord:
    now = datetime.now(UTC)
    return RunRecord(run_id="r" * 32, procedure_id="FVT1", serial_number="SN-1", started_at=now)


def test_a_procedure_id_that_is_not_a_uuid_is_explained(emulator):
    body = {
        "outcome": "PASS",
        "procedure_id": "FVT1",  # what station sent before it resolved ids
        "started_at": "2026-01-01T00:00:00Z",
        "ended_at": "2026-01-01T00:00:01Z",
        "serial_number": "SN-1",
    }
    with (
        TofuPilotClient(emulator.url, emulator.station_key) as client,
        pytest.raises(ApiError) as info,
    ):
        client.create_run(body)  # the service's own 400, over HTTP
    hint = rejection_hint(info.value, a_record(), procedure_id="FVT1")
    assert hint.startswith(
        "the procedure id sent (FVT1) is not one TofuPilot accepts: it must be TofuPilot's id of "
        "the procedure, a UUID; pin it as `tofupilot_id:` under procedures.FVT1 in station.yaml, "
        "or leave it out to have it resolved by name ('station check' prints the id) (the server "
        "said: procedure_id: Invalid uuid)"
    )
    assert_actionable(hint)


def test_a_rejection_nobody_can_explain_asks_to_be_reported():
    error = ApiError(400, "BAD_REQUEST", "invalid run", ["phases.0.outcome: Invalid enum value"])
    hint = rejection_hint(error, a_record())
    assert hint == (
        "the server rejected the run: phases.0.outcome: Invalid enum value; please report this"
    )
    # A field name inside another word is not that field.
    error = ApiError(400, "BAD_REQUEST", "invalid run", ["x_part_numbers: bad"])
    assert rejection_hint(error, a_record()).endswith("please report this")


def test_a_server_without_the_v2_api_points_at_the_url_and_the_v1_switch(bench, emulator):
    emulator.faults.plan(["404"], match=r"^GET /api/v2/whoami$")  # as a v1-only server answers
    status = upload(bench, emulator, record(bench, []))
    assert status.state == PARKED
    assert status.hint.startswith(f"the server has no TofuPilot v2 API at {emulator.url}/v2")
    assert "set `api: v1` in its tofupilot section" in status.hint
    assert_actionable(status.hint)
