"""The outbox: every recorded run reaches TofuPilot exactly once, however the network behaves.

The run directory is the queue entry; its `upload.json` is the upload state, rewritten atomically
at every step that matters (`upload_state`). Connection errors, timeouts, 429 and 5xx are retried
with capped exponential backoff; 400/401/403/404/409/422 **park** the run with a hint an operator
can act on (`policy`). Nothing is ever dropped. A run is uploaded only by the process holding its
claim (`claim`); others skip it.

Durable writes per run (each an atomic write of upload.json, fsync of the file and its
directory): the attempt, before anything is sent (with the run's `client_run_ref`, so a process
that dies after sending sends the same ref next time and the server answers with the run it
already has); the run id, the moment the server returns it; each attachment step; and the end
(uploaded, parked, or the next retry). When upload.json cannot be written (full or read-only
disk), nothing more is sent and the run is not reported as progressing.

A run whose files are damaged (a journal with no readable start, a run.json that is not a run
record, an upload.json that is not an upload state) is set aside as **parked** with a hint naming
the file and what is wrong with it; every other run goes on. Each run is tried within its own
time budget (`drain(run_budget_s=...)`); a run that times out is left queued and the next one
is tried, so one run the server never accepts in time cannot hold back the others. Only a
refused connection, a 429, or timeouts on two runs in a row (the server, not the run) stop a
drain.

Finalize (`POST /v2/attachments/{id}/finalize`) only needs the attachment's id, so a retryable
failure is retried on later passes, up to `MAX_FINALIZE_TRIES` tries, never by re-creating the
attachment. A run whose only work left is finalize is **uploaded** (the run and its bytes are
there; `station upload` exits 0 for it) and says `finalize_pending`: `drain()` tries it again
while tries remain, and `upload()` of it does only that.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from station.records.model import RunRecord
from station.storage.journal import (
    JOURNAL,
    RUN_JSON,
    JournalError,
    read_record,
    recover,
    unrecoverable,
)
from station.tofupilot.claim import (
    LOCK_FILE,
    ClaimUnavailable,
    RunClaim,
    claimed_before,
    held_elsewhere,
    try_claim,
)
from station.tofupilot.client import TofuPilotClient, TofuPilotError
from station.tofupilot.policy import (
    BACKOFF_S,
    MAX_FINALIZE_TRIES,
    MAX_TRIES_PER_CALL,
    MIN_REQUEST_S,
    OutOfTime,
    Park,
    backoff_s,
    describe_error,
    error_dict,
    park_hint,
    quick_delay,
)
from station.tofupilot.steps import create_run, upload_attachments
from station.tofupilot.upload_state import (
    BUSY,
    INTERRUPTED,
    NOT_CONFIGURED,
    PARKED,
    QUEUED,
    STATE_FILE,
    UPLOADED,
    AttachmentState,
    RunSummary,
    StateUnreadable,
    UploadState,
    client_run_ref_for,
    epoch,
    iso,
    load_state,
    run_summary,
    save_state,
)

__all__ = [
    "BACKOFF_S",
    "BUSY",
    "INTERRUPTED",
    "LOCK_FILE",
    "MAX_FINALIZE_TRIES",
    "NOT_CONFIGURED",
    "PARKED",
    "QUEUED",
    "RECOVER_MIN_AGE_S",
    "STATE_FILE",
    "UPLOADED",
    "Outbox",
    "RunClaim",
    "RunStatus",
    "client_run_ref_for",
]

_STOPS_A_DRAIN = frozenset({"connect"})  # nothing reached the server: the next run fares alike
_MAY_BE_THE_RUN = frozenset({"timeout", "connection"})  # perhaps this run's body: go on

RECOVER_MIN_AGE_S = 5.0  # a journal younger than this may be a run that is just starting


@dataclass(frozen=True)
class RunStatus:
    """Where one run stands. `message` is a short human explanation of the state."""

    run_dir: Path
    state: str
    outcome: str | None = None
    serial: str | None = None
    procedure: str | None = None
    started_at: str | None = None
    run_id: str | None = None
    run_url: str | None = None
    attempts: int = 0
    next_retry_at: str | None = None
    last_error: dict[str, Any] | None = None
    hint: str | None = None
    message: str = ""
    finalize_pending: bool = False  # uploaded, an attachment still to finalize (tries left)


class Outbox:
    """Uploads the runs recorded under `data_dir`.

    `client_factory` makes the client (None: no API key, nothing can be uploaded and every
    upload answers `not-configured`). `api_key_env` only words hints. `clock` (epoch seconds) and
    `sleep` are injectable so backoff is testable without waiting; deadlines are `clock()` values.
    """

    def __init__(
        self,
        data_dir: Path,
        client_factory: Callable[[], TofuPilotClient] | None,
        *,
        api_key_env: str = "TOFUPILOT_API_KEY",
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.api_key_env = api_key_env
        self._client_factory = client_factory
        self._client: TofuPilotClient | None = None
        self._clock = clock
        self._sleep = sleep
        self._held: dict[Path, int] = {}
        self._uploading: set[Path] = set()
        self._stage = ""  # what the current request does, for hints

    def __enter__(self) -> Outbox:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the claims this outbox holds and close its client.

        An upload still going on in another thread (`station run` stops waiting for it after
        its budget) keeps its claim and the client: they go when the process exits.
        """
        for run_dir in list(self._held):
            if run_dir not in self._uploading:
                self.release(run_dir)
        if self._client is not None and not self._uploading:
            self._client.close()
            self._client = None

    # -- claims ---------------------------------------------------------------------------------

    def claim(self, run_dir: Path) -> bool:
        """Take the upload claim on `run_dir` without waiting; False if another process has it.

        Re-entrant within this outbox (the `station run` that claimed its directory uploads it).
        """
        run_dir = Path(run_dir)
        if run_dir in self._held:
            return True
        fd = try_claim(run_dir)
        if fd is None:
            return False
        self._held[run_dir] = fd
        return True

    def release(self, run_dir: Path) -> None:
        fd = self._held.pop(Path(run_dir), None)
        if fd is not None:
            os.close(fd)  # closing the descriptor drops the lock

    # -- queries --------------------------------------------------------------------------------

    def run_dirs(self) -> list[Path]:
        """Every run directory (a journal or a run.json), oldest first (names start with time)."""
        if not self.data_dir.is_dir():
            return []
        return sorted(
            d
            for d in self.data_dir.iterdir()
            if d.is_dir() and ((d / RUN_JSON).is_file() or (d / JOURNAL).is_file())
        )

    def pending(self) -> list[RunStatus]:
        """Every run not uploaded yet (queued, parked, interrupted or busy), oldest first."""
        return [s for s in map(self.status, self.run_dirs()) if s.state != UPLOADED]

    def status(self, run_dir: Path) -> RunStatus:
        """Where `run_dir` stands, from its files alone (no network, nothing written)."""
        run_dir = Path(run_dir)
        summary = run_summary(run_dir)
        if not (run_dir / RUN_JSON).is_file():
            if self._maybe_starting(run_dir) or (
                run_dir not in self._held and held_elsewhere(run_dir)
            ):
                return RunStatus(run_dir, BUSY, **summary, message="run in progress")
            problem = unrecoverable(run_dir)
            if problem is not None:
                return self._set_aside(run_dir, summary, f"cannot be recovered: {problem}")
            return RunStatus(
                run_dir,
                INTERRUPTED,
                **summary,
                message="interrupted: recovered as ERROR and uploaded by 'station upload'",
            )
        try:
            state = load_state(run_dir)
        except StateUnreadable as exc:
            return self._set_aside(run_dir, summary, str(exc))
        if state is None or state.uploaded_at is None:
            problem = _record_problem(run_dir)
            if problem is not None:
                return self._set_aside(run_dir, summary, problem)
        if state is None:
            return RunStatus(run_dir, QUEUED, **summary, message="not uploaded yet")
        return self._status_of(run_dir, state, summary)

    # -- upload ---------------------------------------------------------------------------------

    def recover_interrupted(
        self, on_damaged: Callable[[Path, str], None] | None = None
    ) -> list[tuple[Path, RunRecord]]:
        """Turn runs whose process died (journal, no run.json) into ERROR runs, ready to upload.

        A directory whose claim is held elsewhere is a run still going on: it is left alone. A
        directory that cannot be recovered (its journal holds no readable start, run.json cannot
        be written) is set aside: `on_damaged(run_dir, why)` is told, `status()` reports it as
        parked, and the other runs go on.
        """
        recovered = []
        for run_dir in self.run_dirs():
            if (run_dir / RUN_JSON).exists() or self._maybe_starting(run_dir):
                continue
            try:
                if not self.claim(run_dir):
                    continue
            except ClaimUnavailable as exc:
                if on_damaged is not None:
                    on_damaged(run_dir, f"cannot be recovered: {exc.strerror}")
                continue
            try:
                if not (run_dir / RUN_JSON).exists():  # re-checked under the claim
                    recovered.append((run_dir, recover(run_dir)))
            except (JournalError, OSError) as exc:
                if on_damaged is not None:
                    on_damaged(run_dir, f"cannot be recovered: {_reason(exc)}")
            finally:
                self.release(run_dir)
        return recovered

    def upload(
        self, run_dir: Path, *, deadline: float | None = None, retry_parked: bool = False
    ) -> RunStatus:
        """Upload one run (or finish its upload) and return where it stands.

        `deadline` (a `clock()` value) bounds the whole call: every request's timeout fits in
        what is left, and when too little is left the run stays queued. A parked run is left
        alone unless `retry_parked`. Never raises for a network, server or disk problem.
        """
        run_dir = Path(run_dir)
        if self._client_factory is None:
            status = self.status(run_dir)
            if status.state in (UPLOADED, PARKED):
                return status
            return replace(status, state=NOT_CONFIGURED, message=f"${self.api_key_env} is not set")
        newly_claimed = run_dir not in self._held
        # Checked before claiming: the claim creates the lock file this test looks for.
        if not (run_dir / RUN_JSON).exists() and self._maybe_starting(run_dir):
            return RunStatus(run_dir, BUSY, **run_summary(run_dir), message="run in progress")
        try:
            claimed = self.claim(run_dir)
        except ClaimUnavailable as exc:
            return RunStatus(
                run_dir,
                QUEUED,
                **run_summary(run_dir),
                message=f"not uploaded: {exc.strerror}; uploading needs a writable data directory",
            )
        if not claimed:
            return replace(
                self.status(run_dir), state=BUSY, message="being uploaded by another process"
            )
        self._uploading.add(run_dir)
        try:
            return self._upload_claimed(run_dir, deadline, retry_parked)
        finally:
            self._uploading.discard(run_dir)
            if newly_claimed:
                self.release(run_dir)

    def drain(
        self,
        *,
        retry_parked: bool = False,
        deadline: float | None = None,
        now: float | None = None,
        run_budget_s: float | None = None,
    ) -> list[RunStatus]:
        """Upload every run not uploaded yet, oldest first; recover interrupted runs first.

        With `now`, only runs whose next retry is due at `now` are tried (the backoff schedule,
        for automatic callers); without it every queued run is tried (an operator asked). Each
        run gets at most `run_budget_s` seconds (within `deadline`): a run that times out stays
        queued and the next one is tried. After a refused connection or a 429, or timeouts on
        two runs in a row, the remaining runs are not tried: the server is the problem, and
        each would cost a timeout. Uploaded runs are not listed, except those with a finalize
        still to do: they are tried again (finalize only) and listed as uploaded.
        """
        self.recover_interrupted()
        results: list[RunStatus] = []
        stopped: str | None = None
        timeouts_in_a_row = 0
        for run_dir in self.run_dirs():
            status = self.status(run_dir)
            if status.state == UPLOADED and not status.finalize_pending:
                continue
            if status.state in (BUSY, INTERRUPTED) or (status.state == PARKED and not retry_parked):
                results.append(status)
                continue
            if (
                now is not None
                and status.state == QUEUED
                and status.next_retry_at
                and epoch(status.next_retry_at) > now
            ):
                results.append(status)
                continue
            if stopped is None and deadline is not None and self._clock() >= deadline:
                stopped = "time budget used up"
            if stopped is not None:
                results.append(replace(status, message=f"not tried: {stopped}"))
                continue
            run_deadline = deadline
            if run_budget_s is not None:
                run_deadline = min(deadline or math.inf, self._clock() + run_budget_s)
            result = self.upload(run_dir, deadline=run_deadline, retry_parked=retry_parked)
            results.append(result)
            error = result.last_error or {}
            kind = error.get("kind")
            failed_now = result.state in (QUEUED, UPLOADED) and bool(error)
            timed_out = failed_now and kind in _MAY_BE_THE_RUN
            timeouts_in_a_row = timeouts_in_a_row + 1 if timed_out else 0
            if failed_now and (kind in _STOPS_A_DRAIN or error.get("status") == 429):
                stopped = f"{kind} error on an earlier run"
            elif timeouts_in_a_row >= 2:
                stopped = f"{kind} errors on the last two runs"
            if result.state == NOT_CONFIGURED:
                stopped = result.message
        return results

    # -- internals ------------------------------------------------------------------------------

    def _client_once(self) -> TofuPilotClient:
        if self._client is None:
            assert self._client_factory is not None
            self._client = self._client_factory()
        return self._client

    def _upload_claimed(
        self, run_dir: Path, deadline: float | None, retry_parked: bool
    ) -> RunStatus:
        if not (run_dir / RUN_JSON).exists():
            if not (run_dir / JOURNAL).exists():
                return RunStatus(run_dir, PARKED, hint="not a run directory", message="parked")
            try:
                recover(run_dir)
            except (JournalError, OSError) as exc:
                summary = run_summary(run_dir)
                return self._set_aside(run_dir, summary, f"cannot be recovered: {_reason(exc)}")
        summary = run_summary(run_dir)
        try:
            state = load_state(run_dir)
        except StateUnreadable as exc:
            return self._set_aside(run_dir, summary, str(exc))
        if state is not None and state.uploaded_at is not None:
            if state.finalize_pending():
                return self._finalize_pass(run_dir, state, summary, deadline)
            return self._status_of(run_dir, state, summary)
        try:
            record = read_record(run_dir)
        except (OSError, ValueError) as exc:
            return self._set_aside(run_dir, summary, _unreadable_record(run_dir, exc))
        if state is None:
            state = UploadState(client_run_ref=client_run_ref_for(record))
        if state.parked and not retry_parked:
            return self._status_of(run_dir, state, summary)
        state.parked, state.hint = False, None
        known = {a.path for a in state.attachments}
        for item in record.attachments:
            if item.path not in known:
                state.attachments.append(AttachmentState(path=item.path, name=item.name))
        try:
            return self._send(run_dir, record, state, summary, deadline)
        except OSError as exc:  # upload.json could not be written: say so, claim no progress
            return self._unsaved(run_dir, state, summary, exc)

    def _send(
        self,
        run_dir: Path,
        record: RunRecord,
        state: UploadState,
        summary: RunSummary,
        deadline: float | None,
    ) -> RunStatus:
        """The tries of one upload call (OSError: upload.json cannot be written)."""
        for tries in range(1, MAX_TRIES_PER_CALL + 1):
            self._attempt(run_dir, state)  # on disk before anything is sent
            try:
                finalize_error = self._step(run_dir, record, state, deadline)
            except OutOfTime:
                state.next_retry_at = iso(self._clock())
                save_state(run_dir, state)
                return self._status_of(run_dir, state, summary, "time budget used up")
            except Park as park:
                self._park(run_dir, state, park.error, park.hint)
                return self._status_of(run_dir, state, summary)
            except TofuPilotError as exc:
                state.last_error = error_dict(exc)
                if not exc.retryable:
                    hint = self._hint(exc, record, deadline)
                    self._park(run_dir, state, state.last_error, hint)
                    return self._status_of(run_dir, state, summary)
                delay = quick_delay(exc, tries, deadline, self._clock)
                if delay is None:
                    state.failures += 1  # one per call: the backoff step
                    state.next_retry_at = iso(self._clock() + backoff_s(state.failures, exc))
                    save_state(run_dir, state)
                    return self._status_of(run_dir, state, summary)
                save_state(run_dir, state)
                self._sleep(delay)
                continue
            state.uploaded_at = iso(self._clock())
            state.next_retry_at = None
            state.last_error = error_dict(finalize_error) if finalize_error else None
            state.failures = 0
            save_state(run_dir, state)
            return self._status_of(run_dir, state, summary)
        raise AssertionError("unreachable")  # pragma: no cover

    def _step(
        self, run_dir: Path, record: RunRecord, state: UploadState, deadline: float | None
    ) -> TofuPilotError | None:
        """One pass: create the run if needed, then each attachment's missing steps. Returns
        a finalize failure of this pass (it does not fail the upload), or None."""
        client = self._client_once()
        timeout = partial(self._timeout, deadline)
        if state.run_id is None:
            create_run(client, run_dir, record, state, timeout=timeout, set_stage=self._set_stage)
        return upload_attachments(
            client, run_dir, state, timeout=timeout, set_stage=self._set_stage
        )

    def _finalize_pass(
        self,
        run_dir: Path,
        state: UploadState,
        summary: RunSummary,
        deadline: float | None,
    ) -> RunStatus:
        """An uploaded run with attachments still to finalize: try them again (finalize only;
        each try is saved). Its state stays uploaded whatever happens."""
        try:
            error = upload_attachments(
                self._client_once(),
                run_dir,
                state,
                timeout=partial(self._timeout, deadline),
                set_stage=self._set_stage,
            )
            last_error = error_dict(error) if error else None
            if last_error != state.last_error:
                state.last_error = last_error
                save_state(run_dir, state)
        except (OutOfTime, Park):  # Park: cannot happen, every attachment is uploaded already
            pass
        except OSError as exc:
            return self._unsaved(run_dir, state, summary, exc)
        return self._status_of(run_dir, state, summary)

    def _attempt(self, run_dir: Path, state: UploadState) -> None:
        now = iso(self._clock())
        state.attempts += 1
        state.first_attempt_at = state.first_attempt_at or now
        state.last_attempt_at = now
        save_state(run_dir, state)

    def _timeout(self, deadline: float | None) -> float | None:
        if deadline is None:
            return None  # the client's own timeout
        left = deadline - self._clock()
        if left < MIN_REQUEST_S:
            raise OutOfTime
        return min(left, self._client_once().timeout_s)

    def _park(
        self, run_dir: Path, state: UploadState, error: dict[str, Any] | None, hint: str
    ) -> None:
        state.parked, state.hint, state.last_error = True, hint, error
        state.next_retry_at = None
        save_state(run_dir, state)

    def _hint(self, exc: TofuPilotError, record: RunRecord, deadline: float | None) -> str:
        return park_hint(
            exc,
            record,
            stage=self._stage,
            api_key_env=self.api_key_env,
            whoami=lambda: self._whoami(deadline),
        )

    def _set_stage(self, stage: str) -> None:
        self._stage = stage

    def _whoami(self, deadline: float | None) -> dict[str, Any] | None:
        try:
            timeout = self._timeout(deadline)
            timeout = 3.0 if timeout is None else min(timeout, 3.0)
            return self._client_once().whoami(timeout_s=timeout)
        except (TofuPilotError, OutOfTime):
            return None

    def _status_of(
        self,
        run_dir: Path,
        state: UploadState,
        summary: RunSummary,
        why: str | None = None,
    ) -> RunStatus:
        if state.uploaded_at is not None:
            kind, message = UPLOADED, f"run {state.run_id}"
            if state.finalize_pending():
                message += "; attachment finalize to be retried"
        elif state.parked:
            kind, message = PARKED, state.hint or "parked"
        else:
            kind = QUEUED
            error = state.last_error
            message = why or (describe_error(error) if error else "not uploaded yet")
        return RunStatus(
            run_dir,
            kind,
            **summary,
            run_id=state.run_id,
            run_url=state.run_url,
            attempts=state.attempts,
            next_retry_at=state.next_retry_at,
            last_error=state.last_error,
            hint=state.hint,
            message=message,
            finalize_pending=state.uploaded_at is not None and state.finalize_pending(),
        )

    def _set_aside(self, run_dir: Path, summary: RunSummary, why: str) -> RunStatus:
        """A run directory whose files are damaged: parked (nothing written), with `why`."""
        return RunStatus(run_dir, PARKED, **summary, hint=why, message="parked")

    def _unsaved(
        self, run_dir: Path, state: UploadState, summary: RunSummary, exc: OSError
    ) -> RunStatus:
        """upload.json could not be written: nothing more was sent; say what the server has."""
        cannot = f"{run_dir / STATE_FILE} cannot be written ({_reason(exc)})"
        if state.uploaded_at is not None:
            message = f"run {state.run_id}; {cannot}: the finalize state is not recorded"
            return replace(self._status_of(run_dir, state, summary), message=message)
        if state.run_id is None:
            message = (
                f"not sent: {cannot}, and it must be on disk before anything is sent; free "
                "some space or fix the data directory, then run 'station upload'"
            )
        else:
            message = (
                f"TofuPilot has the run (run {state.run_id}) but its upload is not finished: "
                f"{cannot}; free some space or fix the data directory, then run 'station "
                "upload' (the run is not duplicated)"
            )
        error = {"kind": "disk", "status": None, "code": None, "message": message}
        return RunStatus(
            run_dir,
            QUEUED,
            **summary,
            run_id=state.run_id,
            attempts=state.attempts,
            last_error=error,
            message=message,
        )

    def _maybe_starting(self, run_dir: Path) -> bool:
        """A run whose process has not claimed its directory yet (`station run` does so right
        after the journal creates it): no signed lock file, and a journal of the last few seconds.

        A lock file that is only opened (empty) does not count: between opening and locking it
        the run's process holds nothing, and recovering the run then would turn a live run into
        an ERROR run. A run that died after its claim has a signed lock file nobody holds:
        recovered at once.
        """
        if claimed_before(run_dir):
            return False
        try:
            age = self._clock() - (run_dir / JOURNAL).stat().st_mtime
        except OSError:
            return False
        return run_dir not in self._held and age < RECOVER_MIN_AGE_S


def _reason(exc: BaseException) -> str:
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__


def _record_problem(run_dir: Path) -> str | None:
    """What is wrong with run.json, or None when it is a valid run record."""
    try:
        read_record(run_dir)
    except (OSError, ValueError) as exc:
        return _unreadable_record(run_dir, exc)
    return None


def _unreadable_record(run_dir: Path, exc: OSError | ValueError) -> str:
    """The hint for a run.json that cannot be used. Never advises deleting it: it is the run's
    record, and its journal may hold less."""
    path = run_dir / RUN_JSON
    then = "then run 'station upload --retry-parked'"
    if isinstance(exc, OSError):
        return f"{path} cannot be read ({_reason(exc)}); fix the data directory, {then}"
    if isinstance(exc, ValidationError):
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        detail = f"{where}: {first['msg']}" if where else first["msg"]
    else:
        detail = str(exc)
    return (
        f"{path} is not a valid run record ({detail[:200]}); it is kept as it is and not "
        f"uploaded: repair it, {then}"
    )
