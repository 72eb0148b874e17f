"""`station prune --uploaded-before DATE`: a dry run by default, listing what would go and the
space freed; `--delete` removes only runs TofuPilot has in full, uploaded before DATE; never a
queued, parked, local-only or in-use run. Runs are recorded for real and uploaded to the
emulator; only their upload dates are moved back."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from station.authoring.helpers import Dut
from station.cli.main import main
from station.engine.runner import Runner
from station.storage.journal import Journal
from station.tofupilot.client import TofuPilotClient
from station.tofupilot.outbox import PARKED, UPLOADED, Outbox

PROC = """
from station import phase

@phase
def only(log):
    log.info("fine")
"""


class Station:
    def __init__(self, bench, emulator) -> None:
        self.bench, self.emulator = bench, emulator
        self.config = bench.write(PROC)
        self.procedure = bench.load()
        self.data_dir = bench.root / "runs"

    def record(self, serial: str) -> Path:
        journal = Journal(self.data_dir)
        Runner(self.procedure, Dut(serial), listeners=[journal], handle_signals=False).execute()
        assert journal.run_dir is not None
        return journal.run_dir

    def outbox(self) -> Outbox:
        key = self.emulator.station_key
        return Outbox(self.data_dir, lambda: TofuPilotClient(self.emulator.url, key))

    def uploaded_on(self, run_dir: Path, day: str) -> None:
        with self.outbox() as outbox:
            assert outbox.upload(run_dir).state == UPLOADED
        state = json.loads((run_dir / "upload.json").read_text())
        state["uploaded_at"] = f"{day}T12:00:00Z"
        (run_dir / "upload.json").write_text(json.dumps(state))

    def prune(self, *args: str) -> int:
        return main(["prune", "--config", str(self.config), *args])


@pytest.fixture
def station(bench, emulator) -> Station:
    return Station(bench, emulator)


def test_prune_lists_by_default_and_deletes_only_runs_uploaded_before_the_date(
    station, emulator, capsys
):
    old = [station.record(f"SN-OLD{n}") for n in range(2)]
    for run_dir in old:
        station.uploaded_on(run_dir, "2025-06-01")
    recent = station.record("SN-RECENT")
    station.uploaded_on(recent, "2026-02-01")
    queued = station.record("SN-QUEUED")  # never uploaded
    parked = station.record("SN-PARKED")
    state = {"client_run_ref": "station-x", "parked": True, "hint": "fix it"}
    (parked / "upload.json").write_text(json.dumps(state))
    in_use = station.record("SN-IN-USE")
    station.uploaded_on(in_use, "2025-06-01")

    assert station.prune("--uploaded-before", "2026-01-01") == 0
    out = capsys.readouterr().out
    for run_dir in [*old, in_use]:
        assert f"would delete {run_dir.name}  (uploaded 2025-06-01, run " in out
    for run_dir in (recent, queued, parked):
        assert run_dir.name not in out
    last = out.splitlines()[-1]
    assert last.startswith("3 runs uploaded before 2026-01-01 would be deleted, freeing ")
    assert "KiB" in last and last.endswith("(dry run: add --delete)")
    assert all(d.is_dir() for d in [*old, recent, queued, parked, in_use])  # a dry run

    holder = station.outbox()
    assert holder.claim(in_use)  # another process is using it
    try:
        assert station.prune("--uploaded-before", "2026-01-01", "--delete") == 0
    finally:
        holder.close()
    out = capsys.readouterr().out
    assert not any(d.exists() for d in old)
    assert in_use.is_dir() and f"kept {in_use.name}: in use" in out
    assert all(d.is_dir() for d in (recent, queued, parked))
    assert out.splitlines()[-1].startswith("deleted 2 runs uploaded before 2026-01-01, freed ")
    assert out.splitlines()[-1].endswith("; 1 kept")
    with station.outbox() as outbox:  # the pending runs are untouched and still pending
        assert {s.run_dir: s.state for s in outbox.pending()}[parked] == PARKED
        assert {s.run_dir for s in outbox.pending()} == {queued, parked}


def test_a_run_with_an_attachment_still_to_finalize_or_no_run_id_is_never_pruned(station, capsys):
    finalize = station.record("SN-FINALIZE")
    state = {
        "client_run_ref": "station-a",
        "run_id": "r-1",
        "uploaded_at": "2020-01-01T00:00:00Z",
        "attachments": [{"path": "a.csv", "name": "a.csv", "id": "att", "uploaded": True}],
    }
    (finalize / "upload.json").write_text(json.dumps(state))
    no_id = station.record("SN-NO-ID")
    state = {"client_run_ref": "station-b", "uploaded_at": "2020-01-01T00:00:00Z"}
    (no_id / "upload.json").write_text(json.dumps(state))
    assert station.prune("--uploaded-before", "2026-01-01", "--delete") == 0
    out = capsys.readouterr().out
    assert out.strip() == "deleted 0 runs uploaded before 2026-01-01, freed 0 B"
    assert finalize.is_dir() and no_id.is_dir()


def test_a_bad_date_is_a_usage_error(station, capsys):
    assert station.prune("--uploaded-before", "last week") == 2
    assert "not a date; use YYYY-MM-DD" in capsys.readouterr().err
