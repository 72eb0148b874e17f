"""The outbox against the emulator over real HTTP: every run reaches TofuPilot exactly once,
whatever the server does, and what cannot be sent now is kept with a reason and a next step.

Time is a fake clock (backoff is checked without sleeping) except where a deadline must bound
real network waits.
"""

from __future__ import annotations

import json
import time
from datetime import datetime
from pathlib import Path

import pytest

from station.authoring.helpers import Dut
from station.engine.runner import Runner
from station.storage.journal import Journal
from station.tofupilot import outbox as outbox_module
from station.tofupilot import steps as steps_module
from station.tofupilot.client import TofuPilotClient
from station.tofupilot.outbox import (
    BACKOFF_S,
    BUSY,
    INTERRUPTED,
    MAX_FINALIZE_TRIES,
    NOT_CONFIGURED,
    PARKED,
    QUEUED,
    STATE_FILE,
    UPLOADED,
    Outbox,
)

PROC = """
from pathlib import Path
from station import phase

@phase
def measure(run, log):
    log.info("measuring")
    trace = Path(__file__).with_name("trace.csv")
    trace.write_text("t,v\\n0,1\\n")
    run.attach(trace)

@phase
def second(log):
    log.info("second phase")
"""

PLAIN_PROC = """
from station import phase

@phase
def only(log):
    log.info("no attachment")
"""


class FakeClock:
    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def epoch(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def state(run_dir: Path) -> dict:
    return json.loads((run_dir / STATE_FILE).read_text())


def wait_for(condition, timeout: float = 2.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.01)
    return bool(condition())


def count(emulator, method: str, path: str) -> int:
    return len(emulator.requests_to(method, path))


class Station:
    """A temp bench with runs recorded for real, an emulator, and an outbox on a fake clock."""

    def __init__(self, bench, emulator) -> None:
        self.bench, self.emulator = bench, emulator
        self.clock = FakeClock()
        self.key = emulator.station_key
        self.timeout_s = 2.0

    @property
    def data_dir(self) -> Path:
        return self.bench.root / "runs"

    def record(self, serial: str = "SN-1", name: str = "T1", source: str = PROC) -> Path:
        """Run `source` (PROC) for real, journaled into data_dir, as procedure `name`."""
        self.bench.write(source, name=name)
        procedure = self.bench.load(name)
        runner = Runner(
            procedure,
            Dut(serial, procedure.part_number, procedure.revision),
            listeners=[Journal(self.data_dir)],
            handle_signals=False,
        )
        record = runner.execute()
        (run_dir,) = self.data_dir.glob(f"*_{record.run_id[:8]}")
        return run_dir

    def client(self) -> TofuPilotClient:
        return TofuPilotClient(self.emulator.url, self.key, timeout_s=self.timeout_s)

    def outbox(self, **kw) -> Outbox:
        kw.setdefault("clock", self.clock)
        kw.setdefault("sleep", self.clock.sleep)
        return Outbox(self.data_dir, self.client, **kw)


@pytest.fixture
def station(bench, emulator) -> Station:
    return Station(bench, emulator)


def test_uploads_the_run_and_its_attachment_once(station, emulator):
    run_dir = station.record()
    with station.outbox() as outbox:
        status = outbox.upload(run_dir)
    assert status.state == UPLOADED, status
    (run,) = emulator.runs.values()
    assert status.run_id == run.id
    assert run.body["procedure_id"] == "T1" and run.body["serial_number"] == "SN-1"
    record = json.loads((run_dir / "run.json").read_text())
    assert run.body["client_run_ref"] == f"station-{record['run_id']}"
    (attachment,) = run.attachments
    assert attachment.name == "trace.csv" and attachment.data == b"t,v\n0,1\n"
    assert attachment.finalized
    saved = state(run_dir)
    assert saved["run_id"] == run.id and saved["uploaded_at"] and not saved["parked"]
    assert saved["attachments"][0]["finalized"] is True

    wait_for(lambda: len(emulator.requests) == 4)
    with station.outbox() as outbox:
        assert outbox.upload(run_dir).state == UPLOADED
        assert outbox.drain() == []
        assert outbox.pending() == []
    assert len(emulator.requests) == 4  # create, attachment, PUT, finalize: nothing again


def test_client_run_ref_is_on_disk_before_the_first_send_and_run_id_before_attachments(
    station, emulator
):
    run_dir = station.record()
    seen: dict[str, dict] = {}

    class Spy(TofuPilotClient):
        def create_run(self, body, **kw):
            seen["create_run"] = state(run_dir)
            assert body["client_run_ref"] == seen["create_run"]["client_run_ref"]
            return super().create_run(body, **kw)

        def create_attachment(self, run_id, name, **kw):
            seen["create_attachment"] = state(run_dir)
            return super().create_attachment(run_id, name, **kw)

    spy = Outbox(station.data_dir, lambda: Spy(emulator.url, station.key), clock=station.clock)
    with spy:
        assert spy.upload(run_dir).state == UPLOADED
    assert seen["create_run"]["client_run_ref"].startswith("station-")
    assert seen["create_run"]["run_id"] is None and seen["create_run"]["attempts"] == 1
    assert seen["create_attachment"]["run_id"] == next(iter(emulator.runs))


def test_a_response_lost_after_the_run_was_stored_does_not_duplicate_it(station, emulator):
    run_dir = station.record()
    emulator.faults.plan(["drop_after_store"])
    with station.outbox() as outbox:
        status = outbox.upload(run_dir)
    assert status.state == UPLOADED
    assert len(emulator.runs) == 1
    assert count(emulator, "POST", "/api/v2/runs") == 2  # the retry got the same run back
    assert state(run_dir)["attempts"] == 2


def test_a_server_error_then_ok_is_retried_at_once(station, emulator):
    run_dir = station.record()
    emulator.faults.plan(["500"])
    with station.outbox() as outbox:
        assert outbox.upload(run_dir).state == UPLOADED
    assert station.clock.sleeps == [0.5]
    assert len(emulator.runs) == 1


def test_persistent_failures_back_off_15s_30s_5min_15min_then_hourly(station, emulator):
    run_dir = station.record()
    emulator.faults.plan(["503"] * 100, match="POST /api/v2/runs$")
    with station.outbox() as outbox:
        for expected in (*BACKOFF_S, 3600.0):
            status = outbox.upload(run_dir)
            assert status.state == QUEUED
            assert abs(epoch(status.next_retry_at) - (station.clock.now + expected)) < 1
            assert status.last_error["status"] == 503
            assert "server error 503" in status.message
    saved = state(run_dir)
    assert saved["failures"] == 6 and saved["attempts"] == 18  # 3 quick tries per call
    assert saved["run_id"] is None and emulator.runs == {}


def test_drain_with_now_follows_the_backoff_schedule(station, emulator):
    run_dir = station.record()
    emulator.faults.plan(["500"] * 3)
    with station.outbox() as outbox:
        (status,) = outbox.drain(now=station.clock.now)
        assert status.state == QUEUED
        wait_for(lambda: len(emulator.requests) == 3)
        (status,) = outbox.drain(now=station.clock.now + 10)  # not due yet: untouched
        assert status.state == QUEUED and len(emulator.requests) == 3
        (status,) = outbox.drain(now=station.clock.now + 16)
        assert status.state == UPLOADED
    assert len(emulator.runs) == 1
    assert state(run_dir)["uploaded_at"]


def test_429_retry_after_is_honoured(station, emulator):
    run_dir = station.record()
    emulator.faults.plan(["429:120"])
    with station.outbox() as outbox:
        status = outbox.upload(run_dir)
        assert status.state == QUEUED and status.last_error["status"] == 429
        assert abs(epoch(status.next_retry_at) - (station.clock.now + 120)) < 1
        assert station.clock.sleeps == []  # too long to wait for in this call
        emulator.faults.plan(["429:2"])
        assert outbox.upload(run_dir).state == UPLOADED
        assert station.clock.sleeps == [2.0]  # short enough: waited, then sent again
    assert len(emulator.runs) == 1


def test_a_refused_key_parks_the_run_until_asked(station, emulator):
    run_dir = station.record()
    station.key = "tp_station_not_a_real_key"
    with station.outbox() as outbox:
        status = outbox.upload(run_dir)
    assert status.state == PARKED
    assert "the API key in $TOFUPILOT_API_KEY was refused" in status.hint
    assert "station upload --retry-parked" in status.hint
    assert status.last_error["status"] == 401 and status.last_error["code"] == "UNAUTHORIZED"
    assert state(run_dir)["parked"] is True
    station.key = emulator.station_key
    with station.outbox() as outbox:
        (status,) = outbox.drain()
        assert status.state == PARKED  # not retried on its own
        (status,) = outbox.drain(retry_parked=True)
    assert status.state == UPLOADED and len(emulator.runs) == 1


def test_an_unlinked_procedure_parks_with_the_link_hint(station, emulator):
    run_dir = station.record()
    emulator.unlink("T1")
    with station.outbox() as outbox:
        status = outbox.upload(run_dir)
        assert status.state == PARKED
        assert "link procedure T1 to station Demo bench in TofuPilot" in status.hint
        emulator.link("T1")
        assert outbox.upload(run_dir).state == PARKED
        assert outbox.upload(run_dir, retry_parked=True).state == UPLOADED
    assert len(emulator.runs) == 1


def test_an_unknown_procedure_parks_with_the_create_or_fix_hint(station, emulator):
    run_dir = station.record(name="NEW1")
    with station.outbox() as outbox:
        status = outbox.upload(run_dir)
        assert status.state == PARKED
        assert (
            "procedure NEW1 does not exist in TofuPilot" in status.hint
            and "create it or fix procedures.NEW1 in station.yaml" in status.hint
        )
        emulator.link("NEW1")
        (status,) = outbox.drain(retry_parked=True)
    assert status.state == UPLOADED and len(emulator.runs) == 1


def test_a_rejected_body_parks_with_the_servers_issues(station, emulator):
    run_dir = station.record()
    emulator.faults.plan(["422"])
    with station.outbox() as outbox:
        status = outbox.upload(run_dir)
    assert status.state == PARKED
    assert status.hint.startswith("the server rejected the run: injected fault: 422")
    assert status.hint.endswith("please report this")


def test_a_failed_attachment_resumes_without_creating_the_run_again(station, emulator):
    run_dir = station.record()
    emulator.faults.plan(["500"] * 3, match=r"POST /api/v2/runs/[^/]+/attachments")
    with station.outbox() as outbox:
        status = outbox.upload(run_dir)
        assert status.state == QUEUED and status.run_id in emulator.runs
        assert state(run_dir)["attachments"][0]["id"] is None
        status = outbox.upload(run_dir)
    assert status.state == UPLOADED
    assert count(emulator, "POST", "/api/v2/runs") == 1
    (run,) = emulator.runs.values()
    (attachment,) = run.attachments
    assert attachment.data == b"t,v\n0,1\n" and attachment.finalized


def test_a_failed_put_is_resent_to_the_same_attachment(station, emulator):
    run_dir = station.record()
    emulator.faults.plan(["500"] * 3, match="PUT /uploads/")
    with station.outbox() as outbox:
        assert outbox.upload(run_dir).state == QUEUED
        created = state(run_dir)["attachments"][0]
        assert created["id"] and not created["uploaded"]
        assert outbox.upload(run_dir).state == UPLOADED
    (run,) = emulator.runs.values()
    (attachment,) = run.attachments  # not created twice
    assert attachment.id == created["id"] and attachment.data == b"t,v\n0,1\n"


def test_a_refused_upload_grant_gets_a_new_attachment(station, emulator):
    """An expired presigned URL: the bytes go to a new attachment; the empty one is recorded."""
    run_dir = station.record()
    emulator.faults.plan(["403"], match="PUT /uploads/")
    with station.outbox() as outbox:
        assert outbox.upload(run_dir).state == UPLOADED
    (run,) = emulator.runs.values()
    empty, good = run.attachments
    assert empty.data is None and good.data == b"t,v\n0,1\n"
    assert state(run_dir)["attachments"][0]["abandoned_ids"] == [empty.id]


FINALIZE = r"/api/v2/attachments/.*/finalize"


def test_a_failed_finalize_is_retried_on_later_passes_and_never_re_creates(station, emulator):
    run_dir = station.record()
    emulator.faults.plan(["500", "429"], match="/finalize$")
    with station.outbox() as outbox:
        status = outbox.upload(run_dir)
        # The run and its bytes are there: uploaded, with a finalize still to do.
        assert status.state == UPLOADED and status.finalize_pending, status
        item = state(run_dir)["attachments"][0]
        assert item["uploaded"] and item["finalized"] is None and item["finalize_tries"] == 1
        assert "500" in item["finalize_error"]
        assert outbox.pending() == []  # nothing left that matters
        (again,) = outbox.drain()  # a later pass: finalize only
        assert again.state == UPLOADED and again.finalize_pending
        assert again.last_error["status"] == 429
        (done,) = outbox.drain()
        assert done.state == UPLOADED and not done.finalize_pending
        assert outbox.drain() == []
    item = state(run_dir)["attachments"][0]
    assert item["finalized"] is True and item["finalize_tries"] == 3 and not item["finalize_error"]
    assert state(run_dir)["last_error"] is None
    wait_for(lambda: count(emulator, "POST", FINALIZE) == 3)
    assert count(emulator, "POST", FINALIZE) == 3
    assert count(emulator, "POST", r"/api/v2/runs/.*/attachments") == 1
    (run,) = emulator.runs.values()
    (attachment,) = run.attachments
    assert attachment.finalized and attachment.data == b"t,v\n0,1\n"


def test_finalize_is_given_up_after_its_tries_or_a_refusal(station, emulator):
    run_dir = station.record()
    emulator.faults.plan(["503"] * 10, match="/finalize$")
    with station.outbox() as outbox:
        assert outbox.upload(run_dir).state == UPLOADED
        for _ in range(MAX_FINALIZE_TRIES + 2):
            outbox.drain()
        assert outbox.drain() == []
    item = state(run_dir)["attachments"][0]
    assert item["finalized"] is False and item["finalize_tries"] == MAX_FINALIZE_TRIES
    assert count(emulator, "POST", FINALIZE) == MAX_FINALIZE_TRIES

    emulator.faults.clear()
    other = station.record(serial="SN-2")
    emulator.faults.plan(["404"], match="/finalize$")
    with station.outbox() as outbox:
        status = outbox.upload(other)
        assert status.state == UPLOADED and not status.finalize_pending
        assert outbox.drain() == []
    assert state(other)["attachments"][0]["finalized"] is False
    assert len(emulator.runs) == 2


def test_a_missing_attachment_file_uploads_the_run_and_parks_the_rest(station, emulator):
    run_dir = station.record()
    trace = run_dir / "attachments" / "trace.csv"
    saved = trace.read_bytes()
    trace.unlink()
    with station.outbox() as outbox:
        status = outbox.upload(run_dir)
        assert status.state == PARKED and status.run_id in emulator.runs
        assert "attachments/trace.csv" in status.hint and "restore" in status.hint
        trace.write_bytes(saved)
        assert outbox.upload(run_dir, retry_parked=True).state == UPLOADED
    (run,) = emulator.runs.values()
    assert [a.data for a in run.attachments] == [saved]


def test_an_interrupted_run_is_recovered_as_error_and_uploaded(station, emulator):
    run_dir = station.record()
    journal = run_dir / "journal.jsonl"
    lines = journal.read_text().splitlines(keepends=True)
    journal.write_text("".join(line for line in lines if '"run_ended"' not in line))
    (run_dir / "run.json").unlink()
    with station.outbox() as outbox:
        assert outbox.status(run_dir).state == INTERRUPTED
        (status,) = outbox.drain()
    assert status.state == UPLOADED and status.outcome == "ERROR"
    (run,) = emulator.runs.values()
    assert run.body["outcome"] == "ERROR"
    assert "station process ended" in run.body["docstring"]


def test_a_run_claimed_by_another_process_is_left_alone(station, emulator):
    run_dir = station.record()
    live = station.record(serial="SN-LIVE")
    (live / "run.json").unlink()  # looks interrupted, but its process still holds the claim
    other = station.outbox()
    assert other.claim(run_dir) and other.claim(live)
    with station.outbox() as outbox:
        assert outbox.upload(run_dir).state == BUSY
        statuses = {s.run_dir: s.state for s in outbox.drain()}
        assert statuses == {run_dir: BUSY, live: BUSY}
        assert not (live / "run.json").exists()  # not "recovered" under the running process
        assert emulator.requests == []
        other.close()
        assert outbox.upload(run_dir).state == UPLOADED
    assert len(emulator.runs) == 1


def test_drain_stops_trying_after_a_connection_failure(station, emulator):
    dirs = [station.record(serial=f"SN-{n}") for n in range(3)]
    emulator.stop()
    with station.outbox() as outbox:
        statuses = outbox.drain()
        assert [s.state for s in statuses] == [QUEUED] * 3
        assert statuses[0].last_error["kind"] == "connect"
        assert all("not tried" in s.message for s in statuses[1:])
        assert not (dirs[2] / STATE_FILE).exists() or state(dirs[2])["attempts"] == 0
        emulator.start()
        assert [s.state for s in outbox.drain()] == [UPLOADED] * 3
    assert len(emulator.runs) == 3


def test_without_a_key_nothing_is_sent_or_written(station, emulator):
    run_dir = station.record()
    with Outbox(station.data_dir, None) as outbox:
        assert outbox.upload(run_dir).state == NOT_CONFIGURED
        assert [s.state for s in outbox.drain()] == [NOT_CONFIGURED]
        assert [s.state for s in outbox.pending()] == [QUEUED]
    assert not (run_dir / STATE_FILE).exists() and emulator.requests == []


def test_a_deadline_bounds_a_hung_server(station, emulator):
    run_dir = station.record()
    emulator.faults.plan(["hang:5"])
    station.timeout_s = 10.0
    with station.outbox(clock=time.time, sleep=time.sleep) as outbox:
        started = time.monotonic()
        status = outbox.upload(run_dir, deadline=time.time() + 1.0)
        elapsed = time.monotonic() - started
        assert status.state == QUEUED and status.last_error["kind"] == "timeout", status
        assert elapsed < 1.5, elapsed
        assert outbox.upload(run_dir).state == UPLOADED
    assert len(emulator.runs) == 1


def test_a_damaged_state_file_parks_instead_of_guessing(station, emulator):
    run_dir = station.record()
    (run_dir / STATE_FILE).write_text("{not json")
    with station.outbox() as outbox:
        status = outbox.upload(run_dir, retry_parked=True)
    assert status.state == PARKED and "is damaged" in status.hint
    assert emulator.requests == []


def test_a_journal_just_created_and_not_claimed_yet_is_not_recovered(station, emulator):
    """The instant between the journal creating a run directory and `station run` claiming it:
    a fresh journal with no lock file is a run starting, not a dead one."""
    run_dir = station.record()
    (run_dir / "run.json").unlink()
    with station.outbox(clock=time.time) as outbox:
        assert outbox.recover_interrupted() == []
        assert outbox.status(run_dir).state == BUSY
        assert [s.state for s in outbox.drain()] == [BUSY]
        assert outbox.upload(run_dir).state == BUSY
        assert not (run_dir / "run.json").exists() and emulator.requests == []
        (run_dir / "upload.lock").touch()  # opened by its process, not locked yet
        assert outbox.recover_interrupted() == []
        (run_dir / "upload.lock").write_text("4242\n")  # claimed by its process, which died
        assert [d for d, _ in outbox.recover_interrupted()] == [run_dir]
        assert outbox.upload(run_dir).state == UPLOADED


def test_a_run_without_attachments_costs_one_durable_write(station, emulator, monkeypatch):
    run_dir = station.record(source=PLAIN_PROC)
    writes: list[dict] = []
    real = outbox_module.save_state

    def counting(run_dir, state):
        writes.append({"run_id": state.run_id, "uploaded_at": state.uploaded_at})
        real(run_dir, state)

    monkeypatch.setattr(outbox_module, "save_state", counting)
    monkeypatch.setattr(steps_module, "save_state", counting)
    seen: dict[str, object] = {}

    class Spy(TofuPilotClient):
        def create_run(self, body, **kw):
            seen["state_file"] = (run_dir / STATE_FILE).exists()
            seen["ref"] = body["client_run_ref"]
            return super().create_run(body, **kw)

    with Outbox(station.data_dir, lambda: Spy(emulator.url, station.key)) as outbox:
        assert outbox.upload(run_dir).state == UPLOADED
    record = json.loads((run_dir / "run.json").read_text())
    # The ref is derived from run.json (durable already), so nothing had to be written first.
    assert seen == {"state_file": False, "ref": f"station-{record['run_id']}"}
    (run,) = emulator.runs.values()
    assert writes == [{"run_id": run.id, "uploaded_at": writes[0]["uploaded_at"]}]
    saved = state(run_dir)
    assert saved["run_id"] == run.id and saved["uploaded_at"] and saved["attempts"] == 1


def test_a_process_dying_after_the_first_send_sends_the_same_ref_again(station, emulator):
    run_dir = station.record(source=PLAIN_PROC)

    class Died(BaseException):
        pass

    class DiesAfterSending(TofuPilotClient):
        def create_run(self, body, **kw):
            super().create_run(body, **kw)
            raise Died  # the process ends before it writes anything

    dying = Outbox(station.data_dir, lambda: DiesAfterSending(emulator.url, station.key))
    with pytest.raises(Died):
        dying.upload(run_dir)
    dying.close()
    assert not (run_dir / STATE_FILE).exists()
    with station.outbox() as outbox:
        status = outbox.upload(run_dir)
    assert status.state == UPLOADED
    (run,) = emulator.runs.values()
    assert status.run_id == run.id == state(run_dir)["run_id"]
    refs = [r.client_run_ref for r in emulator.requests_to("POST", "/api/v2/runs")]
    assert len(refs) == 2 and len(set(refs)) == 1


def test_a_retried_run_without_attachments_keeps_its_attempts(station, emulator):
    run_dir = station.record(source=PLAIN_PROC)
    emulator.faults.plan(["503"] * 3, match="POST /api/v2/runs$")
    with station.outbox() as outbox:
        assert outbox.upload(run_dir).state == QUEUED
        assert state(run_dir)["attempts"] == 3
        assert outbox.upload(run_dir).state == UPLOADED
    saved = state(run_dir)
    assert saved["attempts"] == 4 and saved["run_id"] == next(iter(emulator.runs))
