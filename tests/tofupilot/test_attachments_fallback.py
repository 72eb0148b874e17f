"""Attachments when the run-scoped create is refused (403, as for some station keys): the generic
flow (`POST /v2/attachments`, PUT, finalize, `PATCH /v2/runs/{id}`) over real HTTP against the
emulator. Only finalized uploads are linked, so a refused PUT leaves no empty attachment on the
run, and an upload interrupted at any step resumes there without sending anything twice."""

from __future__ import annotations

import json
from pathlib import Path

from station.authoring.helpers import Dut
from station.engine.runner import Runner
from station.storage.journal import Journal
from station.tofupilot.client import TofuPilotClient
from station.tofupilot.outbox import QUEUED, UPLOADED, Outbox

PROC = """
from pathlib import Path
from station import phase

@phase
def capture(run):
    here = Path(__file__).parent
    (here / "trace.csv").write_text("t,v\\n0,1\\n")
    (here / "notes.txt").write_text("fixture 7")
    run.attach(here / "trace.csv")
    run.attach(here / "notes.txt")
"""
GENERIC = r"/api/v2/attachments"
RUN_SCOPED = r"/api/v2/runs/[^/]+/attachments"


def record(bench) -> Path:
    bench.write(PROC)
    runner = Runner(
        bench.load("T1"),
        Dut("SN-1"),
        listeners=[Journal(bench.root / "runs")],
        handle_signals=False,
    )
    result = runner.execute()
    (run_dir,) = (bench.root / "runs").glob(f"*_{result.run_id[:8]}")
    return run_dir


def outbox(bench, emulator) -> Outbox:
    return Outbox(
        bench.root / "runs",
        lambda: TofuPilotClient(emulator.url, emulator.station_key, timeout_s=5.0),
    )


def saved(run_dir: Path) -> dict:
    return json.loads((run_dir / "upload.json").read_text())


def count(emulator, method: str, path: str) -> int:
    return len(emulator.requests_to(method, path))


def assert_complete(emulator, run_id: str) -> None:
    """The run holds exactly its two attachments, each with its bytes and finalized."""
    run = emulator.runs[run_id]
    assert sorted((a.name, a.data, a.finalized) for a in run.attachments) == [
        ("notes.txt", b"fixture 7", True),
        ("trace.csv", b"t,v\n0,1\n", True),
    ]


def test_a_refused_run_scoped_create_falls_back_to_the_generic_flow(bench, emulator):
    emulator.forbid_run_attachments = True
    run_dir = record(bench)
    with outbox(bench, emulator) as box:
        status = box.upload(run_dir)
    assert status.state == UPLOADED, status
    assert_complete(emulator, status.run_id)
    assert count(emulator, "POST", RUN_SCOPED) == 1  # refused once; the second goes generic
    assert count(emulator, "POST", GENERIC) == 2
    assert count(emulator, "PUT", r"/uploads/.+") == 2
    assert count(emulator, "POST", GENERIC + r"/[^/]+/finalize") == 2
    assert count(emulator, "PATCH", r"/api/v2/runs/[^/]+") == 1  # both linked at once
    state = saved(run_dir)
    assert [(a["flow"], a["linked"], a["finalized"]) for a in state["attachments"]] == [
        ("generic", True, True),
        ("generic", True, True),
    ]
    with outbox(bench, emulator) as box:
        assert box.upload(run_dir).state == UPLOADED
    assert count(emulator, "PATCH", r"/api/v2/runs/[^/]+") == 1  # nothing sent again


def test_a_refused_put_leaves_no_empty_attachment_on_the_run(bench, emulator):
    emulator.forbid_run_attachments = True
    emulator.faults.plan(["403"], match=r"^PUT /uploads/")  # the first grant is refused
    run_dir = record(bench)
    with outbox(bench, emulator) as box:
        status = box.upload(run_dir)
    assert status.state == UPLOADED, status
    assert_complete(emulator, status.run_id)  # no third, empty row
    (abandoned,) = saved(run_dir)["attachments"][0]["abandoned_ids"]
    orphan = emulator.attachments[abandoned]
    assert orphan.run_id is None and orphan.data is None  # an upload on no run
    assert count(emulator, "POST", GENERIC) == 3


def test_a_refused_finalize_is_never_linked_and_gets_a_new_upload(bench, emulator):
    emulator.forbid_run_attachments = True
    emulator.faults.plan(["400"], match=r"^POST /api/v2/attachments/[^/]+/finalize$")
    run_dir = record(bench)
    with outbox(bench, emulator) as box:
        status = box.upload(run_dir)
    assert status.state == UPLOADED, status
    assert_complete(emulator, status.run_id)
    (abandoned,) = saved(run_dir)["attachments"][0]["abandoned_ids"]
    assert emulator.attachments[abandoned].run_id is None


def test_a_failed_link_resumes_with_the_link_only(bench, emulator):
    emulator.forbid_run_attachments = True
    emulator.faults.plan(["503"] * 3, match=r"^PATCH /api/v2/runs/")
    run_dir = record(bench)
    with outbox(bench, emulator) as box:
        status = box.upload(run_dir)
    assert status.state == QUEUED and status.run_id, status  # not uploaded until linked
    assert emulator.runs[status.run_id].attachments == []  # nothing on the run yet
    state = saved(run_dir)
    assert [(a["finalized"], a["linked"]) for a in state["attachments"]] == [(True, False)] * 2
    puts = count(emulator, "PUT", r"/uploads/.+")
    with outbox(bench, emulator) as box:
        status = box.upload(run_dir)
    assert status.state == UPLOADED, status
    assert_complete(emulator, status.run_id)
    assert count(emulator, "PUT", r"/uploads/.+") == puts  # the bytes were not sent again
    assert count(emulator, "POST", r"/api/v2/runs") == 1  # nor the run
    assert len(emulator.runs) == 1


def test_a_failed_finalize_resumes_at_finalize(bench, emulator):
    emulator.forbid_run_attachments = True
    emulator.faults.plan(["500"] * 3, match=r"^POST /api/v2/attachments/[^/]+/finalize$")
    run_dir = record(bench)
    with outbox(bench, emulator) as box:
        status = box.upload(run_dir)
    assert status.state == QUEUED, status
    assert emulator.runs[status.run_id].attachments == []
    with outbox(bench, emulator) as box:
        status = box.upload(run_dir)
    assert status.state == UPLOADED, status
    assert_complete(emulator, status.run_id)
    assert count(emulator, "POST", GENERIC) == 2  # no upload made twice
    assert count(emulator, "PUT", r"/uploads/.+") == 2


def test_a_key_allowed_the_run_scoped_flow_keeps_using_it(bench, emulator):
    run_dir = record(bench)
    with outbox(bench, emulator) as box:
        status = box.upload(run_dir)
    assert status.state == UPLOADED
    assert_complete(emulator, status.run_id)
    assert count(emulator, "POST", GENERIC) == 0
    assert count(emulator, "PATCH", r"/api/v2/runs/[^/]+") == 0
    assert {a["flow"] for a in saved(run_dir)["attachments"]} == {"run"}
