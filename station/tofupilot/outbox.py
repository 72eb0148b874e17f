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

Only the pending runs are read: the data directory's pending index (`station.storage.pending`,
a marker per run, added by the journal when the run starts, dropped here once TofuPilot has the
run) says which, so a pass over 10 pending runs beside 10,000 uploaded ones reads 10 runs. A
data directory without a complete index (recorded by an earlier version, or `.pending` deleted)
is scanned once by the first pass that may write, which rebuilds it; read-only callers
(`pending()`, `status()`) scan without writing anything.

Retry times carry jitter (`retry_delay_s`): the backoff step is stretched by up to half again,
and a Retry-After gets a random 0..max(10 s, half of it) added, so stations coming back from
one outage do not all retry in the same second. After a refused connection, a 429 or two
timeouts in a row, a drain stops and `server_retry_at` says when the server may be tried again.

Finalize (`POST /v2/attachments/{id}/finalize`) only needs the attachment's id, so a retryable
failure is retried on later passes, up to `MAX_FINALIZE_TRIES` tries, never by re-creating the
attachment. A run whose only work left is finalize is **uploaded** (the run and its bytes are
there; `station upload` exits 0 for it) and says `finalize_pending`: `drain()` tries it again
while tries remain, and `upload()` of it does only that.
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import shutil
import threading
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
from station.storage.pending import PendingIndex
from station.tofupilot.claim import (
    LOCK_FILE,
    ClaimUnavailable,
    RunClaim,
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
from station.tofupilot.resolve import CACHE_DIR, UploadTarget
from station.tofupilot.steps import create_run, upload_attachments
from station.tofupilot.upload_state import (
    BUSY,
    INTERRUPTED,
    LOCAL_ONLY,
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
    "LOCAL_ONLY",
    "LOCK_FILE",
    "MAX_FINALIZE_TRIES",
    "NOT_CONFIGURED",
    "PARKED",
    "QUEUED",
    "RETRY_AFTER_SPREAD_S",
    "STATE_FILE",
    "UPLOADED",
    "Outbox",
    "RunClaim",
    "RunStatus",
    "client_run_ref_for",
    "retry_delay_s",
]

_STOPS_A_DRAIN = frozenset({"connect"})  # nothing reached the server: the next run fares alike
_MAY_BE_THE_RUN = frozenset({"timeout", "connection"})  # perhaps this run's body: go on

BACKOFF_JITTER = 0.5  # a backoff step is stretched by a random 0..50 %
RETRY_AFTER_SPREAD_S = 10.0  # at least this random spread is added to a server's Retry-After
QUICK_JITTER_MAX_S = 0.9  # a quick retry inside one call waits up to this much longer


def retry_delay_s(failures: int, exc: TofuPilotError, rng: random.Random) -> float:
    """The wait before the next call after `failures` consecutive failed calls, with jitter.

    The backoff step (`policy.backoff_s`) becomes a random time in [step, 1.5 x step]; a
    server's Retry-After (never shortened) gets a random 0..max(RETRY_AFTER_SPREAD_S, half
    of it) added: a fleet told "come back in 30 s" comes back over 30-45 s, not all at once.
    """
    base = backoff_s(failures, exc)
    if exc.retry_after_s is not None:
        return base + rng.uniform(0.0, max(RETRY_AFTER_SPREAD_S, base / 2))
    return base * (1.0 + rng.uniform(0.0, BACKOFF_JITTER))


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
    tried: bool = False  # a drain sent requests for it in this pass (else: listed as it stood)


class Outbox:
    """Uploads the runs recorded under `data_dir`.

    `client_factory` makes the client (None: no API key, nothing can be uploaded and every
    upload answers `not-configured`). `api_key_env` only words hints. `clock` (epoch seconds) and
    `sleep` are injectable so backoff is testable without waiting; deadlines are `clock()` values.
    `rng` draws the jitter of retry times (seed it for a reproducible schedule).

    One outbox is used by one thread at a time (`BackgroundUploader` in `station.cli.upload`
    gives a production loop one of its own).
    """

    def __init__(
        self,
        data_dir: Path,
        client_factory: Callable[[], TofuPilotClient] | None,
        *,
        api_key_env: str = "TOFUPILOT_API_KEY",
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
        target: UploadTarget | None = None,
    ) -> None:
        self.data_dir = Path(data_dir)
        # Which API, how procedures are known in TofuPilot, where resolved ids are kept.
        self.target = target or UploadTarget(cache_dir=self.data_dir / CACHE_DIR)
        self.index = PendingIndex(self.data_dir)
        self.server_retry_at: float | None = None  # set when a drain stopped for the server
        self.api_key_env = api_key_env
        self._client_factory = client_factory
        self._client: TofuPilotClient | None = None
        self._clock = clock
        self._sleep = sleep
        self._rng = rng or random.Random()
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
        """Every run directory (a journal or a run.json), oldest first (names start with time).

        Reads every directory of data_dir: for prune and for rebuilding the pending index, never
        for an upload pass.
        """
        if not self.data_dir.is_dir():
            return []
        return sorted(
            d
            for d in self.data_dir.iterdir()
            if not d.name.startswith(".") and d.is_dir() and _is_run_dir(d)
        )

    def pending_dirs(self, *, rebuild: bool = False) -> list[Path]:
        """The run directories not uploaded yet (or with a finalize still to do), oldest first.

        From the pending index: only those runs are read. Without a complete index, every run
        directory is read once to find them; with `rebuild` the index is then written (so the
        next pass is cheap again), without it nothing is written (a status probe).
        """
        names = self.index.names()
        if names is not None:
            return [self.data_dir / name for name in names]
        found = [d for d in self.run_dirs() if _needs_upload(d)]
        if rebuild:
            # A read-only data directory: scanned every time, as before the index.
            with contextlib.suppress(OSError):
                self.index.rebuild(found)
        return found

    def pending(self) -> list[RunStatus]:
        """Every run not uploaded yet (queued, parked, interrupted or busy), oldest first.

        Read-only: nothing is created, locked or written.
        """
        statuses = []
        for run_dir in self.pending_dirs():
            if run_dir.is_dir() and _is_run_dir(run_dir):
                status = self.status(run_dir)
                if status.state != UPLOADED:
                    statuses.append(status)
        return statuses

    def newest_run_dirs(self, limit: int) -> list[Path]:
        """The `limit` newest run directories, newest first (by name: names start with the
        time). Lists the data directory's names and reads only the runs returned."""
        try:
            names = sorted(
                (n for n in os.listdir(self.data_dir) if not n.startswith(".")), reverse=True
            )
        except OSError:
            return []
        found: list[Path] = []
        for name in names:
            if len(found) >= limit:
                break
            run_dir = self.data_dir / name
            if _is_run_dir(run_dir):
                found.append(run_dir)
        return found

    def uploaded_before(self, cutoff: float) -> list[tuple[Path, UploadState]]:
        """Runs TofuPilot has in full (uploaded, a TofuPilot run id, nothing left to finalize)
        since before `cutoff` (epoch seconds), oldest first, with their upload state: what
        `station prune` may delete. Never a pending, parked or local-only run, nor one still in
        the pending index. Reads every run's upload.json (prune is rare); writes nothing."""
        pending = set(self.index.names() or ())
        found = []
        for run_dir in self.run_dirs():
            if run_dir.name in pending:
                continue
            try:
                state = load_state(run_dir)
            except StateUnreadable:
                continue
            if _uploaded_before(state, cutoff):
                assert state is not None
                found.append((run_dir, state))
        return found

    def remove_uploaded(self, run_dir: Path, cutoff: float) -> bool:
        """Delete `run_dir` if it is still a run uploaded before `cutoff` (checked again under
        its claim, so a run another process is using is never deleted); False if it was left.
        Raises OSError if the deletion fails part way (what is left stays a listed run)."""
        run_dir = Path(run_dir)
        try:
            if not self.claim(run_dir):
                return False
        except ClaimUnavailable:
            return False
        try:
            try:
                state = load_state(run_dir)
            except StateUnreadable:
                return False
            if not _uploaded_before(state, cutoff):
                return False
            shutil.rmtree(run_dir)
            self.index.discard(run_dir.name)
            return True
        finally:
            self.release(run_dir)

    def next_due(self) -> float | None:
        """When the earliest queued run is due again (`clock()` seconds; now for a run never
        tried), or None when nothing is queued. Read-only, from the pending runs only."""
        due: float | None = None
        now = self._clock()
        for status in self.pending():
            if status.state not in (QUEUED, INTERRUPTED):
                continue
            at = now
            if status.state == QUEUED and status.next_retry_at:
                with _suppress_value_error():
                    at = epoch(status.next_retry_at)
            due = at if due is None else min(due, at)
        return due

    def status(self, run_dir: Path) -> RunStatus:
        """Where `run_dir` stands, from its files alone (no network; nothing created, locked or
        written)."""
        run_dir = Path(run_dir)
        summary = run_summary(run_dir)
        if not (run_dir / RUN_JSON).is_file():
            if run_dir in self._held or held_elsewhere(run_dir):  # held here: our own run
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
        names = self.index.names()
        # Without a complete index: every run directory, by its files' presence only (cheap).
        candidates = self.run_dirs() if names is None else [self.data_dir / n for n in names]
        for run_dir in candidates:
            if run_dir in self._held:  # this process's own run, still going on
                continue
            if (run_dir / RUN_JSON).exists() or not (run_dir / JOURNAL).exists():
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
            if status.state in (UPLOADED, PARKED, LOCAL_ONLY):
                return status
            return replace(status, state=NOT_CONFIGURED, message=f"${self.api_key_env} is not set")
        newly_claimed = run_dir not in self._held
        try:
            claimed = self.claim(run_dir)
        except ClaimUnavailable as exc:
            message = f"not uploaded: {exc.strerror}; uploading needs a writable data directory"
            return RunStatus(
                run_dir,
                QUEUED,
                **run_summary(run_dir),
                last_error={"kind": "disk", "status": None, "code": None, "message": message},
                message=message,
            )
        if not claimed:
            return replace(
                self.status(run_dir), state=BUSY, message="being uploaded by another process"
            )
        self._uploading.add(run_dir)
        try:
            status = self._upload_claimed(run_dir, deadline, retry_parked)
            if status.state == UPLOADED and not status.finalize_pending:
                self.index.discard(run_dir.name)  # TofuPilot has it all: no pass reads it again
            return status
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
        stop: threading.Event | None = None,
        skip: Path | None = None,
        rebuild_index: bool = True,
    ) -> list[RunStatus]:
        """Upload every run not uploaded yet, oldest first; recover interrupted runs first.

        Only the pending runs are read (`pending_dirs`; without a complete index, every run is
        read once and, with `rebuild_index`, the index written; without it, nothing is done
        and `[]` returned, so a caller with a tight budget never pays for the scan). With
        `now`, only runs whose next retry is due at `now` are tried (the backoff schedule, for
        automatic callers); without it every queued run is tried (an operator asked). Each run
        gets at most `run_budget_s` seconds (within `deadline`): a run that times out stays
        queued and the next one is tried. After a refused connection or a 429, or timeouts on
        two runs in a row, the remaining runs are not tried: the server is the problem, and
        each would cost a timeout; `server_retry_at` then says when to try it again (else
        None). `stop` (set from another thread) ends the drain before the next run; `skip` is
        a run not to list (the caller's own). Uploaded runs are not listed, except those with a
        finalize still to do: they are tried again (finalize only) and listed as uploaded.
        """
        self.server_retry_at = None
        if not rebuild_index and not self.index.complete():
            return []
        pending = self.pending_dirs(rebuild=rebuild_index)  # the index, complete from here on
        self.recover_interrupted()
        results: list[RunStatus] = []
        stopped: str | None = None
        timeouts_in_a_row = 0
        for run_dir in pending:
            if run_dir == skip:
                continue
            if not run_dir.is_dir() or not _is_run_dir(run_dir):
                self._forget_if_gone(run_dir)
                continue
            status = self.status(run_dir)
            if status.state == UPLOADED and not status.finalize_pending:
                self.index.discard(run_dir.name)  # uploaded by a process that died before this
                continue
            if status.state in (BUSY, INTERRUPTED) or (
                status.state in (PARKED, LOCAL_ONLY) and not retry_parked
            ):
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
            if stopped is None and stop is not None and stop.is_set():
                stopped = "stopping"
            if stopped is not None:
                results.append(replace(status, message=f"not tried: {stopped}"))
                continue
            run_deadline = deadline
            if run_budget_s is not None:
                run_deadline = min(deadline or math.inf, self._clock() + run_budget_s)
            result = replace(
                self.upload(run_dir, deadline=run_deadline, retry_parked=retry_parked), tried=True
            )
            results.append(result)
            error = result.last_error or {}
            kind = error.get("kind")
            failed_now = result.state in (QUEUED, UPLOADED) and bool(error)
            timed_out = failed_now and kind in _MAY_BE_THE_RUN
            timeouts_in_a_row = timeouts_in_a_row + 1 if timed_out else 0
            server_down = False
            if failed_now and (kind in _STOPS_A_DRAIN or error.get("status") == 429):
                stopped, server_down = f"{kind} error on an earlier run", True
            elif timeouts_in_a_row >= 2:
                stopped, server_down = f"{kind} errors on the last two runs", True
            if server_down and result.next_retry_at:
                with _suppress_value_error():
                    self.server_retry_at = epoch(result.next_retry_at)
            if result.state == NOT_CONFIGURED:
                stopped = result.message
        return results

    def _forget_if_gone(self, run_dir: Path) -> None:
        """A marker whose run directory is gone (pruned, deleted by hand) is dropped; one whose
        directory holds no journal yet is a run starting (or one that died before its first
        write): kept."""
        if not run_dir.exists():
            self.index.discard(run_dir.name)

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
                    wait = retry_delay_s(state.failures, exc, self._rng)
                    state.next_retry_at = iso(self._clock() + wait)
                    save_state(run_dir, state)
                    return self._status_of(run_dir, state, summary)
                save_state(run_dir, state)
                # quick_delay leaves a second before the deadline: the jitter stays within it
                self._sleep(delay + self._rng.uniform(0.0, min(QUICK_JITTER_MAX_S, delay / 2)))
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
            create_run(
                client,
                run_dir,
                record,
                state,
                timeout=timeout,
                set_stage=self._set_stage,
                target=self.target,
            )
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
            if (state.last_error or {}).get("kind") == LOCAL_ONLY:
                kind = LOCAL_ONLY  # a simulated run kept local: not a problem to fix
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


def _is_run_dir(run_dir: Path) -> bool:
    return (run_dir / RUN_JSON).is_file() or (run_dir / JOURNAL).is_file()


def _needs_upload(run_dir: Path) -> bool:
    """Whether the run belongs in the pending index: anything but uploaded with nothing left
    to finalize (a damaged upload.json counts as pending: it is listed as parked)."""
    try:
        state = load_state(run_dir)
    except StateUnreadable:
        return True
    return state is None or state.uploaded_at is None or state.finalize_pending()


def _uploaded_before(state: UploadState | None, cutoff: float) -> bool:
    if state is None or state.uploaded_at is None or not state.run_id or state.parked:
        return False
    if state.finalize_pending():
        return False  # TofuPilot still lacks an attachment this station may yet finalize
    try:
        return epoch(state.uploaded_at) < cutoff
    except ValueError:
        return False


def _suppress_value_error() -> contextlib.AbstractContextManager[None]:
    return contextlib.suppress(ValueError)


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
