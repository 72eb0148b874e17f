"""The outbox against the emulator over real HTTP: every run reaches TofuPilot exactly once,
whatever the server does, and what cannot be sent now is kept with a reason and a next step.

Time is a fake clock (backoff is checked without sleeping) except where a deadline must bound
real network waits.
"""

from __future__ import annotations

import json
import os
import time
from datetime import datetime
from pathlib import Path

import pytest

from station.authoring.helpers import Dut
from station.engine.runner import Runner
from station.storage.journal import Journal, read_record
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
    # TofuPilot's id of T1 (a UUID), resolved by name among the station's procedures.
    assert run.body["procedure_id"] == emulator.procedure_id("T1")
    assert run.body["serial_number"] == "SN-1"
    record = json.loads((run_dir / "run.json").read_text())
    assert run.body["client_run_ref"] == f"station-{record['run_id']}"
    (attachment,) = run.attachments
    assert attachment.name == "trace.csv" and attachment.data == b"t,v\n0,1\n"
    assert attachment.finalized
    saved = state(run_dir)
    assert saved["run_id"] == run.id and saved["uploaded_at"] and not saved["parked"]
    assert saved["attachments"][0]["finalized"] is True

    wait_for(lambda: len(emulator.requests) == 6)
    with station.outbox() as outbox:
        assert outbox.upload(run_dir).state == UPLOADED
        assert outbox.drain() == []
        assert outbox.pending() == []
    # whoami and stations/current (T1's id, resolved once), create, attachment, PUT, finalize:
    # nothing again
    assert len(emulator.requests) == 6


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
    emulator.faults.plan(["drop_after_store"], match="POST /api/v2/runs$")
    with station.outbox() as outbox:
        status = outbox.upload(run_dir)
    assert status.state == UPLOADED
    assert len(emulator.runs) == 1
    assert count(emulator, "POST", "/api/v2/runs") == 2  # the retry got the same run back
    assert state(run_dir)["attempts"] == 2


def test_a_server_error_then_ok_is_retried_at_once(station, emulator):
    run_dir = station.record()
    emulator.faults.plan(["500"], match="POST /api/v2/runs$")
    with station.outbox() as outbox:
        assert outbox.upload(run_dir).state == UPLOADED
    (slept,) = station.clock.sleeps
    assert 0.5 <= slept <= 0.75  # the quick retry's 0.5 s, with up to half again of jitter
    assert len(emulator.runs) == 1


def test_persistent_failures_back_off_15s_30s_5min_15min_then_hourly(station, emulator):
    run_dir = station.record()
    emulator.faults.plan(["503"] * 100, match="POST /api/v2/runs$")
    with station.outbox() as outbox:
        for expected in (*BACKOFF_S, 3600.0):
            status = outbox.upload(run_dir)
            assert status.state == QUEUED
            waits = epoch(status.next_retry_at) - station.clock.now
            assert expected - 1 <= waits <= expected * 1.5 + 1  # the step, plus jitter
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
        (status,) = outbox.drain(now=station.clock.now + 24)  # 15 s, plus up to half again
        assert status.state == UPLOADED
    assert len(emulator.runs) == 1
    assert state(run_dir)["uploaded_at"]


def test_429_retry_after_is_honoured(station, emulator):
    run_dir = station.record()
    emulator.faults.plan(["429:120"])
    with station.outbox() as outbox:
        status = outbox.upload(run_dir)
        assert status.state == QUEUED and status.last_error["status"] == 429
        waits = epoch(status.next_retry_at) - station.clock.now
        assert 119 <= waits <= 120 + 60 + 1  # never sooner; spread by up to half again
        assert station.clock.sleeps == []  # too long to wait for in this call
        emulator.faults.plan(["429:2"])
        assert outbox.upload(run_dir).state == UPLOADED
        (slept,) = station.clock.sleeps  # short enough: waited, then sent again
        assert 2.0 <= slept <= 2.9
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
        assert status.hint.startswith(
            "procedure 'T1' is not linked to station 'Demo bench' in TofuPilot (available: FVT1 ("
        )
        assert "link it to station 'Demo bench' in TofuPilot" in status.hint
        assert status.hint.endswith("then run 'station upload --retry-parked'")
        emulator.link("T1")
        assert outbox.upload(run_dir).state == PARKED
        assert outbox.upload(run_dir, retry_parked=True).state == UPLOADED
    assert len(emulator.runs) == 1


def test_an_unknown_procedure_parks_with_the_create_or_fix_hint(station, emulator):
    run_dir = station.record(name="NEW1")
    with station.outbox() as outbox:
        status = outbox.upload(run_dir)
        assert status.state == PARKED
        # A station key sees only its linked procedures: unknown and unlinked look alike.
        assert "procedure 'NEW1' is not linked to station 'Demo bench'" in status.hint
        assert "set `tofupilot_name:` or `tofupilot_id:` under procedures.NEW1" in status.hint
        emulator.link("NEW1")
        (status,) = outbox.drain(retry_parked=True)
    assert status.state == UPLOADED and len(emulator.runs) == 1


def test_a_rejected_body_parks_with_the_servers_issues(station, emulator):
    run_dir = station.record()
    emulator.faults.plan(["422"], match="POST /api/v2/runs$")
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
    lines = journal.read_bytes().split(b"\n")  # JSON strings may hold other line ends
    journal.write_bytes(b"\n".join(line for line in lines if b'"run_ended"' not in line))
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


def test_a_journal_whose_lock_is_held_is_busy_and_one_whose_lock_is_free_is_interrupted(
    station, emulator
):
    """The journal locks its directory before its first write, so the lock alone tells a run
    going on from a dead one, however young its journal (no clock involved)."""
    run_dir = station.record()
    (run_dir / "run.json").unlink()
    other = station.outbox()
    assert other.claim(run_dir)  # the run's own process, still going on
    with station.outbox(clock=time.time) as outbox:
        assert outbox.recover_interrupted() == []
        assert outbox.status(run_dir).state == BUSY
        assert [s.state for s in outbox.drain()] == [BUSY]
        assert outbox.upload(run_dir).state == BUSY
        assert not (run_dir / "run.json").exists() and emulator.requests == []
        other.close()  # its process died: the lock is free, the journal a second old
        assert outbox.status(run_dir).state == INTERRUPTED
        assert [d for d, _ in outbox.recover_interrupted()] == [run_dir]
        assert outbox.upload(run_dir).state == UPLOADED


def test_upload_json_is_on_disk_before_the_first_send_even_without_attachments(
    station, emulator, monkeypatch
):
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
            seen["state"] = state(run_dir)
            seen["ref"] = body["client_run_ref"]
            return super().create_run(body, **kw)

    with Outbox(station.data_dir, lambda: Spy(emulator.url, station.key)) as outbox:
        assert outbox.upload(run_dir).state == UPLOADED
    record = json.loads((run_dir / "run.json").read_text())
    # The attempt and its ref were durable before the body left the station.
    assert seen["ref"] == f"station-{record['run_id']}" == seen["state"]["client_run_ref"]
    assert seen["state"]["attempts"] == 1 and seen["state"]["run_id"] is None
    (run,) = emulator.runs.values()
    # attempt, run id (the moment it is known), uploaded
    assert [w["run_id"] for w in writes] == [None, run.id, run.id]
    assert writes[-1]["uploaded_at"] and not writes[1]["uploaded_at"]
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
    died = state(run_dir)  # the attempt was on disk before the send; nothing after it
    assert died["attempts"] == 1 and died["run_id"] is None
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


# -- no run stuck: damaged directories, slow runs, full or read-only disks ----------------------


def interrupt(run_dir: Path, keep=lambda n, line: True, first: bytes | None = None) -> None:
    """Leave `run_dir` as a dead process would (no run.json; the claim signed by a dead pid),
    its journal filtered by `keep(line number, line)` and, with `first`, that as line 1."""
    lines = (run_dir / "journal.jsonl").read_bytes().split(b"\n")[:-1]
    kept = [line for n, line in enumerate(lines, 1) if keep(n, line)]
    if first is not None:
        kept[0] = first
    (run_dir / "journal.jsonl").write_bytes(b"".join(line + b"\n" for line in kept))
    (run_dir / "run.json").unlink()
    (run_dir / "upload.lock").write_text("4242\n")


def damaged_site(station) -> dict[str, Path]:
    """Runs of every kind of damage, and two good ones around them."""
    dirs = {"good": station.record(serial="SN-0")}
    dirs["no start"] = station.record(serial="SN-1", source=PLAIN_PROC)
    interrupt(dirs["no start"], first=b"[]")
    dirs["odd lines"] = station.record(serial="SN-2", source=PLAIN_PROC)
    interrupt(dirs["odd lines"], keep=lambda n, line: b'"run_ended"' not in line)
    with (dirs["odd lines"] / "journal.jsonl").open("ab") as journal:
        journal.write(b'{}\n42\n{"event":"log","log":{}}\n')
    dirs["bad state"] = station.record(serial="SN-3", source=PLAIN_PROC)
    (dirs["bad state"] / STATE_FILE).write_text('{"client_run_ref": "x", "attempts": "many"}')
    dirs["bad retry"] = station.record(serial="SN-4", source=PLAIN_PROC)
    (dirs["bad retry"] / STATE_FILE).write_text('{"client_run_ref": "x", "next_retry_at": 5}')
    dirs["bad record"] = station.record(serial="SN-5", source=PLAIN_PROC)
    record = json.loads((dirs["bad record"] / "run.json").read_text())
    record["phases"] = 5
    record["serial_number"] = ["not", "text"]
    (dirs["bad record"] / "run.json").write_text(json.dumps(record))
    dirs["good too"] = station.record(serial="SN-6", source=PLAIN_PROC)
    return dirs


def test_damaged_run_directories_are_set_aside_and_every_other_run_goes_on(station, emulator):
    dirs = damaged_site(station)
    with station.outbox() as outbox:
        statuses = {s.run_dir: s for s in outbox.pending()}  # no crash listing them
        for when in (None, station.clock.now + 10**6):
            results = {s.run_dir: s for s in outbox.drain(now=when)}
            assert set(results) <= set(dirs.values())
    states = {name: (results.get(d) or outbox.status(d)).state for name, d in dirs.items()}
    assert states == {
        "good": UPLOADED,
        "no start": PARKED,
        "odd lines": UPLOADED,  # recovered from the lines that are events
        "bad state": PARKED,
        "bad retry": PARKED,
        "bad record": PARKED,
        "good too": UPLOADED,
    }
    hints = {name: str(results[d].hint) for name, d in dirs.items() if d in results}
    assert (
        "journal.jsonl holds no readable run_started event (line 1: a JSON list"
        in (hints["no start"])
    )
    assert (
        "upload.json is damaged (attempts: Input should be a valid integer" in (hints["bad state"])
    )
    assert "upload.json is damaged (next_retry_at" in hints["bad retry"]
    assert "run.json is not a valid run record" in hints["bad record"]
    assert "serial_number" in hints["bad record"] and "repair it" in hints["bad record"]
    for hint in hints.values():
        assert "delet" not in hint.lower()  # never advise deleting a record
    assert statuses[dirs["bad record"]].state == PARKED  # `station runs` tells it too
    recovered = read_record(dirs["odd lines"])
    assert recovered.outcome == "ERROR" and "3 journal lines could not be read" in (
        recovered.outcome_reason
    )
    assert len(emulator.runs) == 3


def test_a_run_that_always_times_out_does_not_hold_back_the_others(station, emulator):
    dirs = [station.record(serial=f"SN-{n}", source=PLAIN_PROC) for n in range(3)]
    station.timeout_s = 60.0  # the client's own timeout: far beyond what the test waits
    for _ in range(2):  # on every `station upload`
        emulator.faults.plan(["hang:20"], match="POST /api/v2/runs$")
        with station.outbox(clock=time.time, sleep=time.sleep) as outbox:
            started = time.monotonic()
            statuses = outbox.drain(run_budget_s=2.0)
            elapsed = time.monotonic() - started
        first = statuses[0]
        assert first.run_dir == dirs[0] and first.state == QUEUED
        assert first.last_error["kind"] == "timeout"
        assert elapsed < 15.0, elapsed  # its own budget, not the client's 60 s timeout
    assert all((d / STATE_FILE).exists() and state(d)["uploaded_at"] for d in dirs[1:])
    assert len(emulator.runs) == 2
    with station.outbox() as outbox:
        assert [s.state for s in outbox.drain()] == [UPLOADED]
    assert len(emulator.runs) == 3


def test_timeouts_on_two_runs_in_a_row_stop_the_drain(station, emulator):
    dirs = [station.record(serial=f"SN-{n}", source=PLAIN_PROC) for n in range(3)]
    station.timeout_s = 2.0  # each run's request times out; the budget is not what stops it
    emulator.faults.plan(["hang:20", "hang:20"], match="POST /api/v2/runs$")
    with station.outbox(clock=time.time, sleep=time.sleep) as outbox:
        statuses = outbox.drain(run_budget_s=60.0)
    assert [s.state for s in statuses] == [QUEUED] * 3
    assert [s.last_error["kind"] for s in statuses[:2]] == ["timeout", "timeout"]
    assert statuses[2].message == "not tried: timeout errors on the last two runs"
    assert not (dirs[2] / STATE_FILE).exists()


def block_state_writes(run_dir: Path) -> Path:
    """Make upload.json unwritable without a mount: its temp file's name is taken by a
    directory (write_atomic writes `.upload.json.<pid>.tmp`, then renames it)."""
    blocker = run_dir / f".{STATE_FILE}.{os.getpid()}.tmp"
    blocker.mkdir()
    return blocker


def test_upload_json_that_cannot_be_written_sends_nothing_and_says_so(station, emulator):
    run_dir = station.record(source=PLAIN_PROC)
    blocker = block_state_writes(run_dir)
    with station.outbox() as outbox:
        status = outbox.upload(run_dir)
    assert status.state == QUEUED
    assert status.message.startswith("not sent: ") and "upload.json cannot be written" in (
        status.message
    )
    assert "must be on disk before anything is sent" in status.message
    assert emulator.requests == []
    blocker.rmdir()
    with station.outbox() as outbox:
        assert outbox.upload(run_dir).state == UPLOADED


def test_upload_json_unwritable_after_the_server_created_the_run_never_crashes(station, emulator):
    run_dir = station.record()  # with an attachment

    class DiskFillsAfterCreate(TofuPilotClient):
        def create_run(self, body, **kw):
            run_id = super().create_run(body, **kw)
            block_state_writes(run_dir)
            return run_id

    with Outbox(
        station.data_dir, lambda: DiskFillsAfterCreate(emulator.url, station.key)
    ) as outbox:
        status = outbox.upload(run_dir)
        assert status.state == QUEUED, status
        (run,) = emulator.runs.values()
        assert status.message.startswith(
            f"TofuPilot has the run (run {run.id}) but its upload is not finished: "
        )
        assert "upload.json cannot be written" in status.message and "not duplicated" in (
            status.message
        )
        again = outbox.upload(run_dir)  # a retry, disk still full: nothing sent, no traceback
        assert again.state == QUEUED and again.message.startswith("not sent: ")
    blocker = run_dir / f".{STATE_FILE}.{os.getpid()}.tmp"
    blocker.rmdir()
    with station.outbox() as outbox:
        assert outbox.upload(run_dir).state == UPLOADED
    assert len(emulator.runs) == 1  # the same ref each time: never duplicated
    (run,) = emulator.runs.values()
    assert [a.data for a in run.attachments] == [b"t,v\n0,1\n"]


def test_a_claim_that_cannot_be_taken_is_not_busy_in_another_process(station, emulator):
    run_dir = station.record(source=PLAIN_PROC)
    (run_dir / "upload.lock").unlink()
    (run_dir / "upload.lock").mkdir()  # the lock file cannot be opened for writing
    with station.outbox() as outbox:
        status = outbox.upload(run_dir)
        assert status.state == QUEUED and status.state != BUSY
        assert "upload.lock cannot be created" in status.message
        assert "uploading needs a writable data directory" in status.message
        assert "another process" not in status.message
        assert outbox.status(run_dir).state == QUEUED  # `station runs`: not busy either
    assert emulator.requests == []
