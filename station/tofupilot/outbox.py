"""The outbox: every recorded run reaches TofuPilot exactly once, however the network behaves.

The run directory is the queue entry; its `upload.json` is the upload state, rewritten atomically
(temp file, fsync, rename) at every step that matters:

- `client_run_ref` is minted (`station-<run id>`) and on disk **before the first send**: a retry
  after a lost answer sends the same ref and the server returns the run it already has;
- `run_id` is written the moment the server returns it, before anything else, so a run whose id is
  known is never created again;
- each attachment records its `id` (created), `uploaded` and `finalized`: a retry resumes where
  the last attempt stopped. Finalize is best effort and never retried (re-creating an attachment
  would duplicate it on the server);
- `attempts`, `failures` (consecutive), `next_retry_at` (UTC, `Z`), `last_error`
  (kind, status, code, message: never the key), `parked` and `hint`.

Policy: connection errors, timeouts, 429 (Retry-After honoured) and 5xx are retried, with capped
exponential backoff between calls (15 s, 30 s, 5 min, 15 min, then 1 h). 400/401/403/404/409/422
**park** the run with the server's message and a hint an operator can act on; a parked run is only
retried when asked (`retry_parked`). Nothing is ever dropped.

Concurrency: a run is uploaded only by the process holding its claim, an exclusive non-blocking
`flock` on `upload.lock` in the run directory; others skip it. `station run` claims its run
directory as soon as it exists, so an interrupted-run recovery or a `station upload` started
meanwhile never touches a run that is still going on or being uploaded.
"""

from __future__ import annotations

import contextlib
import json
import mimetypes
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from station.events import RunListener
from station.journal import JOURNAL, RUN_JSON, JournalError, read_record, recover, write_atomic
from station.record import RunRecord
from station.tofupilot.client import ApiError, TofuPilotClient, TofuPilotError, TransportError

STATE_FILE = "upload.json"
LOCK_FILE = "upload.lock"
STATE_VERSION = 1

# RunStatus.state
UPLOADED = "uploaded"
QUEUED = "queued"
PARKED = "parked"
NOT_CONFIGURED = "not-configured"
INTERRUPTED = "interrupted"  # journal only: recovered as an ERROR run before its upload
BUSY = "busy"  # another process holds the claim (a run going on, or another upload)

BACKOFF_S = (15.0, 30.0, 300.0, 900.0, 3600.0)
MIN_REQUEST_S = 0.25  # below this a request cannot succeed: stop and leave the run queued
MAX_TRIES_PER_CALL = 3  # quick retries inside one upload() call, within its deadline
QUICK_RETRY_S = (0.5, 1.0)
MAX_QUICK_RETRY_AFTER_S = 5.0  # a longer Retry-After is honoured through next_retry_at instead
MAX_ATTACHMENT_RECREATES = 2
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


class _OutOfTime(Exception):
    """The caller's deadline leaves no time for the next request."""


class _StateUnreadable(Exception):
    pass


@dataclass
class _Attachment:
    path: str
    name: str
    id: str | None = None
    upload_url: str | None = None
    uploaded: bool = False
    finalized: bool | None = None  # None: not tried yet; False: tried, failed, not retried
    finalize_error: str | None = None
    abandoned_ids: list[str] = field(default_factory=list)


@dataclass
class _State:
    client_run_ref: str
    version: int = STATE_VERSION
    run_id: str | None = None
    run_url: str | None = None
    attachments: list[_Attachment] = field(default_factory=list)
    attempts: int = 0
    failures: int = 0
    first_attempt_at: str | None = None
    last_attempt_at: str | None = None
    next_retry_at: str | None = None
    last_error: dict[str, Any] | None = None
    parked: bool = False
    hint: str | None = None
    uploaded_at: str | None = None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> _State:
        items = [_Attachment(**a) for a in data.get("attachments", [])]
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**{**known, "attachments": items})

    def to_bytes(self) -> bytes:
        return json.dumps(asdict(self), indent=2).encode()


def client_run_ref_for(record: RunRecord) -> str:
    """The idempotency key of a run: derived from its random run id, so unique and stable."""
    return f"station-{record.run_id}"


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _epoch(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


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
        try:
            fd = os.open(run_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError:
            return False
        if not _try_lock(fd):
            os.close(fd)
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
        summary = _summary(run_dir)
        if not (run_dir / RUN_JSON).is_file():
            if self._maybe_starting(run_dir) or (
                run_dir not in self._held and self._locked_elsewhere(run_dir)
            ):
                return RunStatus(run_dir, BUSY, **summary, message="run in progress")
            return RunStatus(
                run_dir,
                INTERRUPTED,
                **summary,
                message="interrupted: recovered as ERROR and uploaded by 'station upload'",
            )
        try:
            state = self._load_state(run_dir)
        except _StateUnreadable as exc:
            return RunStatus(run_dir, PARKED, **summary, hint=str(exc), message="parked")
        if state is None:
            return RunStatus(run_dir, QUEUED, **summary, message="not uploaded yet")
        return self._status_of(run_dir, state, summary)

    # -- upload ---------------------------------------------------------------------------------

    def recover_interrupted(self) -> list[tuple[Path, RunRecord]]:
        """Turn runs whose process died (journal, no run.json) into ERROR runs, ready to upload.

        A directory whose claim is held elsewhere is a run still going on: it is left alone.
        """
        recovered = []
        for run_dir in self.run_dirs():
            if (run_dir / RUN_JSON).exists() or self._maybe_starting(run_dir):
                continue
            if not self.claim(run_dir):
                continue
            try:
                if not (run_dir / RUN_JSON).exists():  # re-checked under the claim
                    recovered.append((run_dir, recover(run_dir)))
            except (JournalError, OSError, ValueError):
                pass  # a journal with no run in it: status() reports it, nothing to upload
            finally:
                self.release(run_dir)
        return recovered

    def upload(
        self, run_dir: Path, *, deadline: float | None = None, retry_parked: bool = False
    ) -> RunStatus:
        """Upload one run (or finish its upload) and return where it stands.

        `deadline` (a `clock()` value) bounds the whole call: every request's timeout fits in
        what is left, and when too little is left the run stays queued. A parked run is left
        alone unless `retry_parked`. Never raises for a network or server problem.
        """
        run_dir = Path(run_dir)
        if self._client_factory is None:
            status = self.status(run_dir)
            if status.state == UPLOADED:
                return status
            return replace(status, state=NOT_CONFIGURED, message=f"${self.api_key_env} is not set")
        newly_claimed = run_dir not in self._held
        # Checked before claiming: the claim creates the lock file this test looks for.
        if not (run_dir / RUN_JSON).exists() and self._maybe_starting(run_dir):
            return RunStatus(run_dir, BUSY, **_summary(run_dir), message="run in progress")
        if not self.claim(run_dir):
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
    ) -> list[RunStatus]:
        """Upload every run not uploaded yet, oldest first; recover interrupted runs first.

        With `now`, only runs whose next retry is due at `now` are tried (the backoff schedule,
        for automatic callers); without it every queued run is tried (an operator asked). After
        a connection failure, a timeout or a 429 the remaining runs are not tried: they would
        meet the same fate, one timeout each. Uploaded runs are not listed.
        """
        self.recover_interrupted()
        results: list[RunStatus] = []
        stopped: str | None = None
        for run_dir in self.run_dirs():
            status = self.status(run_dir)
            if status.state == UPLOADED:
                continue
            if status.state in (BUSY, INTERRUPTED) or (status.state == PARKED and not retry_parked):
                results.append(status)
                continue
            if (
                now is not None
                and status.state == QUEUED
                and status.next_retry_at
                and _epoch(status.next_retry_at) > now
            ):
                results.append(status)
                continue
            if stopped is None and deadline is not None and self._clock() >= deadline:
                stopped = "time budget used up"
            if stopped is not None:
                results.append(replace(status, message=f"not tried: {stopped}"))
                continue
            result = self.upload(run_dir, deadline=deadline, retry_parked=retry_parked)
            results.append(result)
            error = result.last_error or {}
            if result.state == QUEUED and (
                error.get("kind") in ("timeout", "connect", "connection")
                or error.get("status") == 429
            ):
                stopped = f"{error.get('kind')} error on an earlier run"
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
            except (JournalError, ValueError) as exc:
                return RunStatus(
                    run_dir,
                    PARKED,
                    **_summary(run_dir),
                    hint=f"cannot recover the interrupted run: {exc}",
                    message="parked",
                )
        summary = _summary(run_dir)
        try:
            state = self._load_state(run_dir)
        except _StateUnreadable as exc:
            return RunStatus(run_dir, PARKED, **summary, hint=str(exc), message="parked")
        try:
            record = read_record(run_dir)
        except (OSError, ValueError) as exc:
            return RunStatus(
                run_dir,
                PARKED,
                **summary,
                hint=f"{run_dir / RUN_JSON} is unreadable ({type(exc).__name__}); "
                "restore it from the journal by deleting it and running 'station upload'",
                message="parked",
            )
        if state is None:
            state = _State(client_run_ref=client_run_ref_for(record))
        if state.uploaded_at is not None:
            return self._status_of(run_dir, state, summary)
        if state.parked and not retry_parked:
            return self._status_of(run_dir, state, summary)
        state.parked, state.hint = False, None
        known = {a.path for a in state.attachments}
        for item in record.attachments:
            if item.path not in known:
                state.attachments.append(_Attachment(path=item.path, name=item.name))

        for tries in range(1, MAX_TRIES_PER_CALL + 1):
            self._attempt(run_dir, state)  # on disk, with the ref, before anything is sent
            try:
                self._step(run_dir, record, state, deadline)
            except _OutOfTime:
                state.next_retry_at = _iso(self._clock())
                self._save(run_dir, state)
                return self._status_of(run_dir, state, summary, "time budget used up")
            except _Park as park:
                self._park(run_dir, state, park.error, park.hint)
                return self._status_of(run_dir, state, summary)
            except TofuPilotError as exc:
                state.last_error = _error_dict(exc)
                if not exc.retryable:
                    hint = self._hint(exc, record, deadline)
                    self._park(run_dir, state, state.last_error, hint)
                    return self._status_of(run_dir, state, summary)
                delay = self._quick_delay(exc, tries, deadline)
                if delay is None:
                    state.failures += 1  # one per call: the backoff step
                    state.next_retry_at = _iso(self._clock() + self._backoff(state, exc))
                    self._save(run_dir, state)
                    return self._status_of(run_dir, state, summary)
                self._save(run_dir, state)
                self._sleep(delay)
                continue
            state.uploaded_at = _iso(self._clock())
            state.next_retry_at = state.last_error = None
            state.failures = 0
            self._save(run_dir, state)
            return self._status_of(run_dir, state, summary)
        raise AssertionError("unreachable")  # pragma: no cover

    def _step(
        self, run_dir: Path, record: RunRecord, state: _State, deadline: float | None
    ) -> None:
        """One pass: create the run if needed, then each attachment's missing steps."""
        client = self._client_once()
        if state.run_id is None:
            from station.tofupilot.payload import build_run_body

            try:
                body = build_run_body(record, client_run_ref=state.client_run_ref)
                json.dumps(body, allow_nan=False)
            except (ValueError, TypeError) as exc:
                raise _Park(
                    {"kind": "body", "status": None, "code": None, "message": str(exc)[:4096]},
                    f"could not build the TofuPilot run from {RUN_JSON} ({exc}); "
                    "please report this",
                ) from None
            self._stage = "creating the run"
            timeout = self._timeout(deadline)
            state.run_id = client.create_run(body, timeout_s=timeout)
            state.last_error = None
            self._save(run_dir, state)  # known from now on: never created again
        missing: list[str] = []
        for item in state.attachments:
            if item.uploaded and item.finalized is not None:
                continue
            source = run_dir / item.path
            if not item.uploaded and not source.is_file():
                missing.append(item.path)
                continue
            for _ in range(MAX_ATTACHMENT_RECREATES + 1):
                if item.uploaded:
                    break
                if item.id is None or item.upload_url is None:
                    self._stage = f"creating attachment {item.name!r}"
                    timeout = self._timeout(deadline)
                    item.id, item.upload_url = client.create_attachment(
                        state.run_id, item.name[:255], timeout_s=timeout
                    )
                    self._save(run_dir, state)
                content_type = mimetypes.guess_type(item.name)[0] or "application/octet-stream"
                self._stage = f"uploading attachment {item.name!r}"
                timeout = self._timeout(deadline)
                try:
                    client.upload_attachment_bytes(
                        item.upload_url, source.read_bytes(), content_type, timeout_s=timeout
                    )
                except ApiError as exc:
                    if exc.retryable or len(item.abandoned_ids) >= MAX_ATTACHMENT_RECREATES:
                        raise
                    # The upload grant was refused (expired?): get a new one. The attachment
                    # left empty on the server cannot be avoided; the bytes are not lost.
                    item.abandoned_ids.append(item.id)
                    item.id = item.upload_url = None
                    self._save(run_dir, state)
                    continue
                item.uploaded = True
                item.upload_url = None  # the grant is spent; no reason to keep it
                self._save(run_dir, state)
            # Finalize: best effort, once. Retrying would mean re-creating (a duplicate).
            self._stage = f"finalizing attachment {item.name!r}"
            try:
                client.finalize_attachment(item.id, timeout_s=self._timeout(deadline))
                item.finalized, item.finalize_error = True, None
            except TofuPilotError as exc:
                item.finalized, item.finalize_error = False, str(exc)[:500]
            self._save(run_dir, state)
        if missing:
            raise _Park(
                {
                    "kind": "attachment",
                    "status": None,
                    "code": None,
                    "message": f"missing: {', '.join(missing)}",
                },
                f"the run is uploaded (run {state.run_id}) but attachment file(s) "
                f"{', '.join(missing)} are missing from {run_dir}: restore them and run "
                "'station upload --retry-parked'",
            )

    def _attempt(self, run_dir: Path, state: _State) -> None:
        now = _iso(self._clock())
        state.attempts += 1
        state.first_attempt_at = state.first_attempt_at or now
        state.last_attempt_at = now
        self._save(run_dir, state)

    def _timeout(self, deadline: float | None) -> float | None:
        if deadline is None:
            return None  # the client's own timeout
        left = deadline - self._clock()
        if left < MIN_REQUEST_S:
            raise _OutOfTime
        return min(left, self._client_once().timeout_s)

    def _quick_delay(self, exc: TofuPilotError, tries: int, deadline: float | None) -> float | None:
        """How long to wait before retrying within this call, or None to leave it queued."""
        if tries >= MAX_TRIES_PER_CALL:
            return None
        if isinstance(exc, TransportError) and exc.kind in ("timeout", "connect"):
            # A timeout already spent its share of the time; a refused connection will be
            # refused again in a second (an offline station must not cost every run a wait).
            return None
        if exc.retry_after_s is not None:
            if exc.retry_after_s > MAX_QUICK_RETRY_AFTER_S:
                return None
            delay = exc.retry_after_s
        else:
            delay = QUICK_RETRY_S[min(tries, len(QUICK_RETRY_S)) - 1]
        if deadline is not None and self._clock() + delay + 1.0 > deadline:
            return None
        return delay

    def _backoff(self, state: _State, exc: TofuPilotError) -> float:
        if exc.retry_after_s is not None:
            return exc.retry_after_s
        return BACKOFF_S[min(max(state.failures, 1), len(BACKOFF_S)) - 1]

    def _park(self, run_dir: Path, state: _State, error: dict[str, Any] | None, hint: str) -> None:
        state.parked, state.hint, state.last_error = True, hint, error
        state.next_retry_at = None
        self._save(run_dir, state)

    def _hint(self, exc: TofuPilotError, record: RunRecord, deadline: float | None) -> str:
        retry = "then run 'station upload --retry-parked'"
        proc = record.procedure_id
        if not isinstance(exc, ApiError):
            return f"{exc}; {retry}"
        said = exc.message
        if exc.status == 401:
            return f"the API key in ${self.api_key_env} was refused ({said}): check it, {retry}"
        if self._stage != "creating the run":
            return f"{self._stage} failed: HTTP {exc.status}: {said}; {retry}"
        if exc.status == 403:
            who = self._whoami(deadline)
            if who is not None and who.get("type") == "station":
                name = (who.get("station") or {}).get("name") or record.station_name or "?"
                return (
                    f"link procedure {proc} to station {name} in TofuPilot "
                    f"(the server said: {said}), {retry}"
                )
            if who is not None and who.get("type") == "user":
                return f"the user key may not create runs for {proc} ({said}); {retry}"
            station = record.station_name or "this station"
            return (
                f"the server refused run creation for {proc} ({said}): with a station key, "
                f"link procedure {proc} to station {station} in TofuPilot; {retry}"
            )
        if exc.status == 404:
            return (
                f"procedure {proc} does not exist in TofuPilot ({said}): create it or fix "
                f"procedures.{proc} in station.yaml, {retry}"
            )
        if exc.status in (400, 422):
            details = "; ".join(exc.issues) or said
            return f"the server rejected the run: {details}; please report this"
        if exc.status == 409:
            return f"the server reported a conflict: {said}; {retry} once it is resolved"
        return f"the server answered HTTP {exc.status}: {said}; {retry}"

    def _whoami(self, deadline: float | None) -> dict[str, Any] | None:
        try:
            timeout = self._timeout(deadline)
            timeout = 3.0 if timeout is None else min(timeout, 3.0)
            return self._client_once().whoami(timeout_s=timeout)
        except (TofuPilotError, _OutOfTime):
            return None

    def _load_state(self, run_dir: Path) -> _State | None:
        path = run_dir / STATE_FILE
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise _StateUnreadable(f"{path} cannot be read: {exc.strerror}") from None
        try:
            return _State.from_json(json.loads(raw))
        except (ValueError, TypeError, AttributeError) as exc:
            raise _StateUnreadable(
                f"{path} is damaged ({type(exc).__name__}); move it aside and run "
                "'station upload' (the run is not duplicated; its attachments may be)"
            ) from None

    def _save(self, run_dir: Path, state: _State) -> None:
        write_atomic(run_dir / STATE_FILE, state.to_bytes())

    def _status_of(
        self, run_dir: Path, state: _State, summary: dict[str, Any], why: str | None = None
    ) -> RunStatus:
        if state.uploaded_at is not None:
            kind, message = UPLOADED, f"run {state.run_id}"
        elif state.parked:
            kind, message = PARKED, state.hint or "parked"
        else:
            kind = QUEUED
            error = state.last_error
            message = why or (_describe(error) if error else "not uploaded yet")
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
        )

    def _maybe_starting(self, run_dir: Path) -> bool:
        """A run whose process has not claimed its directory yet (`station run` does so right
        after the journal creates it): no lock file, and a journal of the last few seconds.

        A run that died after its claim has a lock file nobody holds: recovered at once.
        """
        if (run_dir / LOCK_FILE).exists():
            return False
        try:
            age = self._clock() - (run_dir / JOURNAL).stat().st_mtime
        except OSError:
            return False
        return run_dir not in self._held and age < RECOVER_MIN_AGE_S

    def _locked_elsewhere(self, run_dir: Path) -> bool:
        if not (run_dir / LOCK_FILE).exists():
            return False
        if self.claim(run_dir):
            self.release(run_dir)
            return False
        return True


class RunClaim(RunListener):
    """Holds the upload claim on a run's directory from the moment the journal creates it.

    Put it right after the journal in the runner's listeners: from then on no `station upload`
    or interrupted-run recovery in another process touches the run, until this process has
    uploaded it (or exits).
    """

    def __init__(self, outbox: Outbox, run_dir: Callable[[], Path | None]) -> None:
        super().__init__()
        self._outbox = outbox
        self._run_dir = run_dir

    def run_started(self, record: RunRecord) -> None:
        run_dir = self._run_dir()
        if run_dir is not None:
            self._outbox.claim(run_dir)


class _Park(Exception):
    def __init__(self, error: dict[str, Any], hint: str) -> None:
        super().__init__(hint)
        self.error, self.hint = error, hint


def _error_dict(exc: TofuPilotError) -> dict[str, Any]:
    if isinstance(exc, ApiError):
        message = exc.message
        if exc.issues:
            message += " (" + "; ".join(exc.issues) + ")"
        return {"kind": "http", "status": exc.status, "code": exc.code, "message": message}
    kind = exc.kind if isinstance(exc, TransportError) else "error"
    return {"kind": kind, "status": None, "code": None, "message": str(exc)}


def _describe(error: dict[str, Any]) -> str:
    """A short reason for the console: `server error 500: ...`, `timeout: ...`."""
    status = error.get("status")
    if status == 429:
        return "rate limited by the server (429)"
    if status is not None:
        return f"server error {status}: {error.get('message', '')}"[:200]
    if error.get("kind") == "timeout":
        return "the server did not answer in time"
    if error.get("kind") == "connect":
        return "cannot reach the server"
    if error.get("kind") == "connection":
        return "the connection to the server was lost"
    return str(error.get("message", "error"))[:200]


def _summary(run_dir: Path) -> dict[str, Any]:
    """outcome, serial, procedure, started_at from run.json, else the journal's first event."""
    data: dict[str, Any] = {}
    with contextlib.suppress(OSError, ValueError):
        data = json.loads((run_dir / RUN_JSON).read_bytes())
    if not data:
        with (
            contextlib.suppress(OSError, ValueError, KeyError, TypeError),
            open(run_dir / JOURNAL, encoding="utf-8") as handle,
        ):
            data = json.loads(handle.readline())["run"]
    if not isinstance(data, dict):
        data = {}
    started = data.get("started_at")
    if isinstance(started, str) and started.endswith("+00:00"):
        started = started[: -len("+00:00")] + "Z"
    return {
        "outcome": data.get("outcome"),
        "serial": data.get("serial_number"),
        "procedure": data.get("procedure_id"),
        "started_at": started,
    }


def _try_lock(fd: int) -> bool:
    try:
        import fcntl
    except ImportError:  # Windows
        import msvcrt

        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    return True
