"""TofuPilot's id of a procedure (a UUID), resolved by name at upload time, against the strict
emulator over real HTTP: runs go out with the UUID, an unlinked procedure parks the run with a
hint naming the station, the procedure and the candidates, and linking it then retrying uploads
it once. Resolved ids are remembered in the data directory and forgotten when refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from station.authoring.helpers import Dut
from station.engine.runner import Runner
from station.storage.journal import Journal
from station.tofupilot.client import TofuPilotClient
from station.tofupilot.outbox import PARKED, UPLOADED, Outbox
from station.tofupilot.resolve import (
    CACHE_DIR,
    CACHE_FILE,
    ProcedureCache,
    ProcedureLink,
    Unresolved,
    UploadTarget,
    resolve_procedure,
)

PROC = """
from station import phase

@phase
def only(log):
    log.info("measured")
"""
RESOLUTION = ("/api/v2/whoami", "/api/v2/stations/current", "/api/v2/procedures")


def record(bench, name: str = "T1", serial: str = "SN-1") -> Path:
    """Run a one-phase procedure `name` for real, journaled into `<bench>/runs`."""
    bench.write(PROC, name=name)
    procedure = bench.load(name)
    runner = Runner(
        procedure,
        Dut(serial),
        listeners=[Journal(bench.root / "runs")],
        handle_signals=False,
    )
    result = runner.execute()
    (run_dir,) = (bench.root / "runs").glob(f"*_{result.run_id[:8]}")
    return run_dir


def outbox(bench, emulator, key: str | None = None, **target) -> Outbox:
    data_dir = bench.root / "runs"
    target.setdefault("cache_dir", data_dir / CACHE_DIR)
    return Outbox(
        data_dir,
        lambda: TofuPilotClient(emulator.url, key or emulator.station_key, timeout_s=5.0),
        target=UploadTarget(**target),
    )


def resolution_requests(emulator) -> int:
    return sum(1 for r in emulator.requests if r.path in RESOLUTION)


def cache_of(bench) -> dict:
    return json.loads((bench.root / "runs" / CACHE_DIR / CACHE_FILE).read_text())


# -- acceptance ------------------------------------------------------------------------------------


def test_a_procedure_resolved_by_name_uploads_with_its_uuid(bench, emulator):
    run_dir = record(bench, "T1")
    with outbox(bench, emulator) as box:
        status = box.upload(run_dir)
    assert status.state == UPLOADED, status
    (stored,) = emulator.runs.values()
    t1 = emulator.procedure_id("T1")
    assert stored.body["procedure_id"] == t1  # stored under TofuPilot's id
    assert emulator.procedure(t1).name == "T1"
    # The record keeps its local procedure id: the station.yaml key.
    assert json.loads((run_dir / "run.json").read_text())["procedure_id"] == "T1"
    # Remembered in the data directory by server and name.
    (entry,) = cache_of(bench)["procedures"].values()
    assert entry["id"] == t1 and entry["found_in"] == "station 'Demo bench'"


def test_a_run_recorded_while_unlinked_parks_then_uploads_once_after_linking(bench, emulator):
    emulator.unlink("T1")
    run_dir = record(bench, "T1")
    with outbox(bench, emulator) as box:
        status = box.upload(run_dir)
        assert status.state == PARKED
        hint = status.hint
        # The station, the procedure, the candidates (name and id), how to pin the id.
        assert "procedure 'T1' is not linked to station 'Demo bench' in TofuPilot" in hint
        assert f"available: FVT1 ({emulator.procedure_id('FVT1')})" in hint
        assert "`tofupilot_id:` under procedures.T1 in station.yaml" in hint
        assert hint.endswith("then run 'station upload --retry-parked'")
        assert status.last_error["kind"] == "procedure"
        assert emulator.requests_to("POST", "/api/v2/runs") == []  # nothing sent for it

        emulator.link("T1")
        assert box.upload(run_dir).state == PARKED  # parked runs wait to be asked for
        assert box.upload(run_dir, retry_parked=True).state == UPLOADED
        assert box.drain(retry_parked=True) == []
    (stored,) = emulator.runs.values()
    assert stored.body["procedure_id"] == emulator.procedure_id("T1")
    assert len(emulator.requests_to("POST", "/api/v2/runs")) == 1


def test_runs_recorded_offline_upload_once_the_server_is_back(bench, emulator):
    emulator.stop()
    dirs = [record(bench, "T1", serial=f"SN-{n}") for n in range(3)]
    with outbox(bench, emulator) as box:
        first, *others = box.drain()
        assert first.last_error["kind"] == "connect" and len(others) == 2
        emulator.start()
        assert [s.state for s in box.drain()] == [UPLOADED] * 3
    assert {r.body["procedure_id"] for r in emulator.runs.values()} == {emulator.procedure_id("T1")}
    assert len(emulator.runs) == len(dirs)
    assert resolution_requests(emulator) == 2  # whoami and stations/current, once for all


# -- how the id is found ---------------------------------------------------------------------------


def test_the_name_matches_case_insensitively_and_tofupilot_name_overrides_the_key(emulator):
    pcba = emulator.link("PCBA functional test")
    with TofuPilotClient(emulator.url, emulator.station_key) as client:
        resolved = resolve_procedure(client, ProcedureLink("fvt1"))
        assert (resolved.id, resolved.name) == (emulator.procedure_id("FVT1"), "FVT1")
        assert resolved.source == "server" and resolved.via == "station 'Demo bench'"
        named = ProcedureLink("FVT3", tofupilot_name="pcba FUNCTIONAL test")
        assert resolve_procedure(client, named).id == pcba


def test_a_pinned_id_is_used_as_it_is_without_asking(emulator):
    pinned = emulator.procedure_id("FVT1")
    with TofuPilotClient(emulator.url, emulator.station_key) as client:
        resolved = resolve_procedure(client, ProcedureLink("X", tofupilot_id=pinned))
    assert (resolved.id, resolved.source) == (pinned, "station.yaml")
    assert emulator.requests == []


def test_two_linked_procedures_of_one_name_are_ambiguous_with_both_ids(emulator):
    first = emulator.procedure_id("T1")
    second = emulator.create_procedure("t1")
    emulator.link(second)
    with (
        TofuPilotClient(emulator.url, emulator.station_key) as client,
        pytest.raises(Unresolved) as info,
    ):
        resolve_procedure(client, ProcedureLink("T1"))
    assert {pid for pid, _ in info.value.candidates} == {first, second}
    assert (
        info.value.message == f"2 procedures named 'T1' in station 'Demo bench': {first}, {second}"
    )
    assert "pin the right one in station.yaml as `procedures.T1.tofupilot_id: <id>`" in (
        info.value.hint
    )


def test_a_user_key_resolves_among_every_page_of_the_organizations_procedures(emulator):
    for n in range(130):  # more than one page of 100
        emulator.create_procedure(f"P{n:03}")
    wanted = emulator.create_procedure("Final test")
    with TofuPilotClient(emulator.url, emulator.user_key) as client:
        resolved = resolve_procedure(client, ProcedureLink("final TEST"))
        assert resolved.id == wanted and resolved.via == "organization 'Demo organisation'"
        with pytest.raises(Unresolved) as info:
            resolve_procedure(client, ProcedureLink("NOPE"))
    assert "procedure 'NOPE' does not exist in organization 'Demo organisation'" in str(info.value)
    assert "create it in TofuPilot" in info.value.hint
    pages = emulator.requests_to("GET", "/api/v2/procedures")
    assert len(pages) == 4  # two resolutions, two pages each


def test_a_user_key_uploads_through_the_outbox(bench, emulator):
    run_dir = record(bench, "T1")
    with outbox(bench, emulator, key=emulator.user_key) as box:
        assert box.upload(run_dir).state == UPLOADED
    (stored,) = emulator.runs.values()
    assert stored.body["procedure_id"] == emulator.procedure_id("T1")


# -- the cache -------------------------------------------------------------------------------------


def test_the_resolved_id_is_remembered_and_not_asked_again(bench, emulator):
    first = record(bench, "T1", serial="SN-1")
    with outbox(bench, emulator) as box:
        assert box.upload(first).state == UPLOADED
    assert resolution_requests(emulator) == 2
    second = record(bench, "T1", serial="SN-2")
    with outbox(bench, emulator) as box:  # a new process, as the next `station run`
        assert box.upload(second).state == UPLOADED
    assert resolution_requests(emulator) == 2  # the id came from the data directory
    data = cache_of(bench)
    assert data["version"] == 1
    assert list(data["procedures"]) == [f"{emulator.url} t1"]
    leftovers = [p.name for p in (bench.root / "runs" / CACHE_DIR).iterdir()]
    assert leftovers == [CACHE_FILE]  # written atomically: no temp file left behind


def test_a_remembered_id_the_server_refuses_is_forgotten_and_resolved_afresh(bench, emulator):
    run_dir = record(bench, "T1")
    stale = emulator.create_procedure("T1 (archived)")  # known, not linked: a 403 for the station
    ProcedureCache(bench.root / "runs" / CACHE_DIR).put(emulator.url, "T1", stale)
    with outbox(bench, emulator) as box:
        status = box.upload(run_dir)
    assert status.state == UPLOADED, status
    t1 = emulator.procedure_id("T1")
    assert [r.body["procedure_id"] for r in emulator.runs.values()] == [t1]
    assert len(emulator.requests_to("POST", "/api/v2/runs")) == 2  # refused, then the fresh id
    (entry,) = cache_of(bench)["procedures"].values()
    assert entry["id"] == t1


def test_a_remembered_id_that_is_refused_and_no_longer_resolves_parks(bench, emulator):
    run_dir = record(bench, "T1")
    t1 = emulator.procedure_id("T1")
    ProcedureCache(bench.root / "runs" / CACHE_DIR).put(emulator.url, "T1", t1)
    emulator.unlink("T1")
    with outbox(bench, emulator) as box:
        status = box.upload(run_dir)
    assert status.state == PARKED
    assert "procedure 'T1' is not linked to station 'Demo bench'" in status.hint
    assert not cache_of(bench)["procedures"]  # forgotten: the next try asks again


def test_a_damaged_cache_is_ignored_and_rewritten(bench, emulator):
    run_dir = record(bench, "T1")
    cache_dir = bench.root / "runs" / CACHE_DIR
    cache_dir.mkdir()
    (cache_dir / CACHE_FILE).write_text("{not json")
    with outbox(bench, emulator) as box:
        assert box.upload(run_dir).state == UPLOADED
    (entry,) = cache_of(bench)["procedures"].values()
    assert entry["id"] == emulator.procedure_id("T1")


def test_a_pinned_id_that_is_not_linked_parks_with_a_hint_naming_it(bench, emulator):
    run_dir = record(bench, "T1")
    ict1 = emulator.procedure_id("ICT1")  # linked to the other station only
    links = {"T1": ProcedureLink("T1", tofupilot_id=ict1)}
    with outbox(bench, emulator, procedures=links) as box:
        status = box.upload(run_dir)
    assert status.state == PARKED
    assert status.hint.startswith(
        f"procedure T1's tofupilot_id {ict1} (station.yaml) is not linked to this station in "
        "TofuPilot (HTTP 403"
    )
    assert resolution_requests(emulator) == 0  # a pinned id is never looked up
