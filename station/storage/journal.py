"""The run directory: an append-only journal while the run goes on, the final record at the end.

`data_dir/<started-at>_<procedure>_<serial>_<id8>/`
- `journal.jsonl`: one JSON event per line, handed to the kernel as it happens (a kill -9 loses
  nothing that finished) and fsynced at every phase end by a group-commit thread (`syncer`): a
  power cut loses the phase that was running and the phases that ended in the last fsync
  interval (20 ms) plus one fsync;
- `run.json`: the final RunRecord, written atomically (temp file, fsync, rename, fsync of the
  directory): it is either absent or complete, never half-written. It is what makes the end of
  a run durable, so the journal's last events are not fsynced too: a power cut before run.json
  is on disk leaves an interrupted run (recovered from the journal), never a lost one;
- `attachments/`: copies of attached files;
- `upload.lock`: the directory's lock (`runlock`), taken after the directory is created and
  before the journal's first write, held by the process recording the run (then by the one
  uploading it); a journal without run.json whose lock nobody holds is an interrupted run;
- `.reserve`: left by earlier versions, which set disk space aside in the run directory;
  recovery removes it. The reserve is now a file with no name (`storage.reserve`): when the disk
  fills up mid-run it is given back and the rest of the run's events are written in its place,
  so a full disk does not cost the run the phases that follow.

Every run is also marked in the data directory's pending index (`pending`) before its journal is
written, until the outbox has uploaded it. A directory with a journal and no run.json whose lock
is free is a run that was interrupted; `recover()` turns it into
an ERROR run that keeps every phase that finished. The journal is split on `\\n` bytes only (JSON
strings may hold U+0085, U+2028 and U+2029 raw); a line that is not an event (valid JSON or not)
is skipped and counted, and the recovered record says how many and why.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from station.records.listener import RunListener
from station.records.model import (
    RECORD_SCHEMA_VERSION,
    AttachmentRecord,
    ErrorInfo,
    LogEntry,
    PhaseRecord,
    RunRecord,
    upgrade_v1_values,
    utc_now,
)
from station.records.outcomes import Outcome, PhaseOutcome
from station.storage.pending import PendingIndex
from station.storage.reserve import Reserve
from station.storage.runlock import LOCK_FILE, LOCK_WAIT_S, lock_for_run
from station.storage.syncer import DirectorySync, Syncer, fsync_dir
from station.testing import faultpoints

__all__ = [
    "ATTACHMENTS",
    "JOURNAL",
    "RESERVE",
    "RUN_JSON",
    "Journal",
    "JournalError",
    "check_writable",
    "read_record",
    "recover",
    "run_dir_name",
    "unrecoverable",
    "write_atomic",
]

JOURNAL = "journal.jsonl"
RUN_JSON = "run.json"
ATTACHMENTS = "attachments"
RESERVE = ".reserve"  # earlier versions' reserve in the run directory
_DISK_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})
_PAYLOAD_KEY = {
    "run_started": "run",
    "phase_started": "phase",
    "phase_ended": "phase",
    "attachment": "attachment",
    "log": "log",
    "run_ended": "run",
}


class JournalError(OSError):
    """The run cannot be recorded (data directory missing, not writable, disk full), or a
    journal holds nothing to recover."""


def check_writable(data_dir: Path) -> None:
    """Fail before any phase runs if runs cannot be recorded in `data_dir`."""
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        probe = data_dir / f".write-test-{os.getpid()}"
        with open(probe, "wb") as handle:
            handle.write(b"ok")
            handle.flush()
            os.fsync(handle.fileno())
        probe.unlink()
    except (OSError, ValueError) as exc:  # ValueError: a NUL character in the path
        reason = getattr(exc, "strerror", None) or exc
        raise JournalError(
            f"cannot record runs in {data_dir}: {reason}; fix the "
            "permissions or free some space, or set data_dir in station.yaml"
        ) from None


def run_dir_name(record: RunRecord) -> str:
    started = record.started_at.strftime("%Y%m%dT%H%M%SZ")
    serial = re.sub(r"[^A-Za-z0-9._-]", "_", record.serial_number)[:64] or "_"
    procedure = re.sub(r"[^A-Za-z0-9._-]", "_", record.procedure_id)[:64]
    return f"{started}_{procedure}_{serial}_{record.run_id[:8]}"


def write_atomic(path: Path, data: bytes) -> None:
    """Write a file so that it is either complete or absent: temp file, fsync, rename, fsync dir."""
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(temp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def _reason(exc: BaseException) -> str:
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__


class Journal(RunListener):
    """Writes a run to its directory as it happens.

    An event that cannot be written (disk full) stays pending in memory and is written, in
    order, before the next one as soon as there is room: first by giving back the reserve,
    then whenever space comes back. `warnings` says what the operator should know though
    nothing was lost (the reserve was used); `failures` (the runner's) what was.
    """

    def __init__(
        self,
        data_dir: Path,
        claim: Callable[[Path], bool] | None = None,
        reserve: Reserve | None = None,
    ) -> None:
        """`claim(run_dir)` takes the run directory's lock for whoever uploads the run (e.g.
        `Outbox.claim`, which keeps it until the upload is done); without it the journal
        holds the lock itself until run.json is written. `reserve`: disk space shared with the
        caller's other runs (the production loop's), set aside again at the start of a run if
        an earlier one used it; without it the journal sets aside space of its own for the run."""
        super().__init__()
        self.data_dir = Path(data_dir)
        self._own_reserve = reserve is None
        self._reserve = reserve if reserve is not None else Reserve(self.data_dir)
        self.run_dir: Path | None = None
        self._claim = claim
        self._lock_fd: int | None = None  # the lock this journal holds itself (no `claim`)
        self._marked = False  # the run is in the pending index
        self._fd: int | None = None
        self._syncer: Syncer | None = None
        self._size = 0  # bytes of whole events in the journal
        self._pending: list[tuple[bytes, str]] = []  # (event line, what it records)
        self._sync_error: str | None = None
        self._dir_sync: DirectorySync | None = None  # the run directory's entry, see run_started
        self._attachments = 0

    def run_started(self, record: RunRecord) -> None:
        """Create the run directory, lock it, mark it pending, then write the journal's first
        event: a directory with a journal was locked before it had one, so a journal without
        run.json whose lock is free is a run whose process died (see `storage.runlock`)."""
        run_dir = self.data_dir / run_dir_name(record)
        run_dir.mkdir(parents=True, exist_ok=False)
        self.run_dir = run_dir
        # The directory's entry must be on disk before the run's end is reported, not before
        # anything else: its fsync runs on the fsync thread alongside the marker's below.
        self._dir_sync = DirectorySync(self.data_dir)
        self._mark_pending(run_dir)
        self._lock(run_dir)
        self._fd = os.open(run_dir / JOURNAL, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self._syncer = Syncer(self._fd)
        header = record.to_json(exclude={"phases", "logs", "attachments"})
        self._write("run_started", "run", header, "the start of the run", sync=True)
        self._reserve.ensure()

    def phase_started(self, name: str, attempt: int) -> None:
        payload = json.dumps({"name": name, "attempt": attempt})
        self._write("phase_started", "phase", payload, f"the start of phase {name!r}")

    def phase_ended(self, record: PhaseRecord) -> None:
        what = f"the end of phase {record.name!r}"
        self._write("phase_ended", "phase", record.to_json(), what, sync=True)

    def log_added(self, entry: LogEntry, phase: str | None) -> None:
        if phase is None:  # phase logs travel inside phase_ended
            self._write("log", "log", entry.to_json(), "a log line")

    def store_attachment(self, source: Path, name: str) -> str | None:
        if self.run_dir is None:
            return None
        folder = self.run_dir / ATTACHMENTS
        folder.mkdir(exist_ok=True)
        safe = re.sub(r"[^A-Za-z0-9._-]", "_", name) or "attachment"
        target, n = folder / safe, 1
        while target.exists():
            target, n = folder / f"{Path(safe).stem}-{n}{Path(safe).suffix}", n + 1
        shutil.copyfile(source, target)
        relative = target.relative_to(self.run_dir).as_posix()
        attachment = AttachmentRecord(name=name, path=relative, size=target.stat().st_size)
        self._attachments += 1
        what = f"attachment {name!r}"
        self._write("attachment", "attachment", attachment.to_json(), what, sync=True)
        return relative

    def run_ended(self, record: RunRecord) -> None:
        if self.run_dir is None:
            return
        try:
            payload = record.to_json(exclude={"phases", "logs"})
            self._write("run_ended", "run", payload, "the end of the run")
        except OSError:
            pass  # pending: said below, with what it means for the record
        finally:
            self._stop_syncing()
        faultpoints.reached("record_write_journaled")
        try:
            if not self._marked:  # the run must not be left out of the outbox
                with contextlib.suppress(OSError):
                    self._mark_pending(self.run_dir)
            self._write_record(self.run_dir, record)
            self._finish_dir_sync()
        finally:
            self._close_journal()
            self._unlock()

    def _mark_pending(self, run_dir: Path) -> None:
        """Add the run to the data directory's pending index (`storage.pending`), durably."""
        PendingIndex(self.data_dir).add(run_dir.name)
        self._marked = True

    def _lock(self, run_dir: Path) -> None:
        """Take the run directory's lock before anything is written in it (raises JournalError:
        the run is then not journaled; run.json is still attempted at its end)."""
        try:
            if self._claim is not None:
                deadline = time.monotonic() + LOCK_WAIT_S
                while not self._claim(run_dir):
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"another process holds {run_dir / LOCK_FILE}")
                    time.sleep(0.01)
            else:
                self._lock_fd = lock_for_run(run_dir)
        except (OSError, TimeoutError) as exc:
            raise JournalError(f"cannot lock the run directory {run_dir}: {_reason(exc)}") from None

    def _unlock(self) -> None:
        fd, self._lock_fd = self._lock_fd, None
        if fd is not None:
            os.close(fd)  # closing the descriptor drops the lock

    # -- internals ------------------------------------------------------------------------------

    def _write(
        self, event: str, key: str, payload_json: str, what: str, sync: bool = False
    ) -> None:
        """Append one event and hand it to the kernel at once (a killed process loses nothing);
        with `sync`, also request an fsync (group commit, see station.storage.syncer)."""
        if self._fd is None:
            return
        at = utc_now().isoformat().replace("+00:00", "Z")
        data = f'{{"event":"{event}","at":"{at}","{key}":{payload_json}}}\n'.encode()
        self._pending.append((data, what))
        self._flush()
        if sync and self._syncer is not None:
            self._syncer.request()

    def _flush(self) -> None:
        """Write the pending events in order; raise the OSError that stops one."""
        assert self._fd is not None
        while self._pending:
            data, _ = self._pending[0]
            try:
                _append(self._fd, data, self._size)
            except OSError as exc:
                if exc.errno in _DISK_FULL and self._give_back_reserve():
                    continue
                raise
            del self._pending[0]
            self._size += len(data)

    def _give_back_reserve(self) -> bool:
        """Free the reserve so the run's events fit; False if there is none left."""
        if not self._reserve.give_back():
            return False
        self.warnings.append(
            f"the disk of {self.data_dir} is full: the space set aside for this run was used to "
            "record it; free some space before the next run"
        )
        return True

    def _stop_syncing(self) -> None:
        """The run is over: stop the group commit without a last fsync. run.json is fsynced
        whole before the run is reported, so the journal's tail need not be: should run.json
        fail, `_sync_journal` makes it durable."""
        syncer, self._syncer = self._syncer, None
        try:
            if syncer is not None:
                syncer.close(sync=False)
        except OSError as exc:
            self._sync_error = _reason(exc)

    def _sync_journal(self) -> None:
        """fsync the journal now (run.json could not be written: the journal is the record)."""
        if self._fd is None or self._sync_error:
            return
        try:
            os.fsync(self._fd)
        except OSError as exc:
            self._sync_error = _reason(exc)

    def _finish_dir_sync(self) -> None:
        """Wait until the run directory's entry is on disk (raises JournalError)."""
        dir_sync, self._dir_sync = self._dir_sync, None
        if dir_sync is None:
            return
        try:
            dir_sync.finish()
        except OSError as exc:
            raise JournalError(
                f"the record of this run is written in {self.run_dir} but {self.data_dir} could "
                f"not be synced to disk ({_reason(exc)}): a power cut could still lose the run; "
                "check the disk"
            ) from None

    def _close_journal(self) -> None:
        with contextlib.suppress(JournalError):  # an error path: its own error is reported
            self._finish_dir_sync()
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)
        if self._own_reserve:
            self._reserve.give_back()

    def _write_run_json(self, run_dir: Path, data: bytes) -> None:
        """write_atomic, with the reserve given back to make room if the disk is full."""
        try:
            write_atomic(run_dir / RUN_JSON, data)
        except OSError as exc:
            if exc.errno not in _DISK_FULL or not self._give_back_reserve():
                raise
            write_atomic(run_dir / RUN_JSON, data)

    def _write_record(self, run_dir: Path, record: RunRecord) -> None:
        """run.json, written whole; re-creates the run directory if it vanished mid-run."""
        data = record.to_json().encode()
        if not run_dir.is_dir():
            try:
                run_dir.mkdir(parents=True)
                self._write_run_json(run_dir, data)
            except OSError as exc:
                raise JournalError(
                    f"the run directory {run_dir} was removed during the run and cannot be "
                    f"re-created ({_reason(exc)}): this run is lost (its record was not saved)"
                ) from None
            lost = (
                f"its journal and {self._attachments} attachment file(s) are lost"
                if self._attachments
                else "its journal is lost"
            )
            raise JournalError(
                f"the run directory {run_dir} was removed during the run: it was re-created "
                f"and holds this run's record (run.json); {lost}"
            )
        try:
            self._write_run_json(run_dir, data)
        except OSError as exc:
            self._sync_journal()
            if self._pending or self._sync_error:
                lacks = (
                    f"lacks {len(self._pending)} event(s), from {self._pending[0][1]} on"
                    if self._pending
                    else f"may lack its last events (its fsync failed: {self._sync_error})"
                )
                held = (
                    f"its journal {lacks}. Free some space: `station upload` then recovers the "
                    "run from what its journal holds, as an ERROR run"
                )
            else:
                held = (
                    "its journal holds the whole run. Free some space: `station upload` then "
                    "writes run.json from it and uploads the run"
                )
            raise JournalError(
                f"the record of this run could not be fully written in {run_dir}: "
                f"{_reason(exc)}; {held}"
            ) from None
        if self._pending:  # run.json is whole: the journal is not needed any more
            self._pending.clear()


def _append(fd: int, data: bytes, size: int) -> None:
    """Append `data` to a journal of `size` bytes, whole or not at all (a full disk never
    leaves half an event behind)."""
    try:
        written = os.write(fd, data)
        while written < len(data):  # a short write: the disk is filling up
            written += os.write(fd, data[written:])
    except OSError:
        with contextlib.suppress(OSError):
            os.ftruncate(fd, size)
        raise


def read_record(run_dir: Path) -> RunRecord:
    """run.json of `run_dir` (raises OSError, or ValueError when it is not a valid record)."""
    return RunRecord.from_json((run_dir / RUN_JSON).read_bytes())


# -- recovery ----------------------------------------------------------------------------------


class _BadLine(Exception):
    """A journal line that is not an event (its message says why)."""


@dataclass
class _Replay:
    """What the journal of an interrupted run says, line by line."""

    record: RunRecord | None = None
    version: int = RECORD_SCHEMA_VERSION
    running: dict[str, Any] | None = None  # the phase that started and never ended
    last_at: datetime | None = None
    ended: RunRecord | None = None
    bad: list[str] = field(default_factory=list)  # "line N: why", one per unreadable line

    def apply(self, number: int, raw: bytes) -> None:
        try:
            event, at, payload = _parse_event(raw)
            if event == "run_started":
                if self.record is not None:
                    raise _BadLine("a second run_started")
                self.version = _int_or(payload.get("schema_version"), 1)
                self.record = RunRecord.from_dict(payload)
            elif self.record is None:
                raise _BadLine(f"{event} before run_started")
            elif event == "phase_started":
                self.running = _phase_start(payload)
            elif event == "phase_ended":
                self.record.phases.append(PhaseRecord.from_dict(payload))
                self.running = None
            elif event == "attachment":
                self.record.attachments.append(AttachmentRecord.from_dict(payload))
            elif event == "log":
                self.record.logs.append(LogEntry.from_dict(payload))
            else:  # run_ended
                self.ended = RunRecord.from_dict({**payload, "phases": [], "logs": []})
        except (_BadLine, ValidationError, TypeError, ValueError) as exc:
            self.bad.append(f"line {number}: {_why(exc)}")
            return
        self.last_at = at


def _parse_event(raw: bytes) -> tuple[str, datetime, dict[str, Any]]:
    """(event, at, payload) of one journal line; raises _BadLine."""
    try:
        event = json.loads(raw.decode("utf-8", "replace"))
    except ValueError:
        raise _BadLine("not JSON") from None
    if not isinstance(event, dict):
        raise _BadLine(f"a JSON {type(event).__name__}, not an event")
    kind = event.get("event")
    if not isinstance(kind, str):
        raise _BadLine("an object without an event name")
    if kind not in _PAYLOAD_KEY:
        raise _BadLine(f"unknown event {kind[:50]!r}")
    at = event.get("at")
    try:
        moment = datetime.fromisoformat(at) if isinstance(at, str) else None
    except ValueError:
        moment = None
    if moment is None:
        raise _BadLine(f"{kind} without a valid time ('at')")
    payload = event.get(_PAYLOAD_KEY[kind])
    if not isinstance(payload, dict):
        raise _BadLine(f"{kind} without its {_PAYLOAD_KEY[kind]!r} object")
    moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    return kind, moment, payload


def _phase_start(payload: dict[str, Any]) -> dict[str, Any]:
    name, attempt = payload.get("name"), payload.get("attempt", 0)
    if not isinstance(name, str) or not isinstance(attempt, int) or isinstance(attempt, bool):
        raise _BadLine("phase_started without a phase name and attempt")
    return {"name": name, "attempt": attempt}


def _int_or(value: Any, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def _why(exc: BaseException) -> str:
    if isinstance(exc, ValidationError):
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "the object"
        return f"{where}: {first['msg']}"[:200]
    return str(exc)[:200]


def unrecoverable(run_dir: Path) -> str | None:
    """Why the interrupted run in `run_dir` cannot be recovered, or None if it can be.

    Reads only the journal's first line, where the journal writes run_started: cheap enough
    for listing every run.
    """
    try:
        with open(run_dir / JOURNAL, "rb") as handle:
            first = handle.readline()
    except OSError as exc:
        return f"{run_dir / JOURNAL} cannot be read ({_reason(exc)})"
    replay = _Replay()
    replay.apply(1, first.rstrip(b"\n"))
    if replay.record is None:
        found = f" ({replay.bad[0]})" if replay.bad else ""
        return f"{run_dir / JOURNAL} holds no readable run_started event{found}"
    return None


def recover(run_dir: Path) -> RunRecord:
    """Rebuild an interrupted run from its journal as an ERROR run, and write its run.json.

    Keeps every event the journal holds; a line that is not an event is skipped and stated in
    the record's outcome reason (and makes a run that ended PASS an ERROR run: a phase of it may
    be missing). Raises JournalError when the journal holds no readable run_started event
    (nothing to recover), OSError when the journal cannot be read or run.json written.
    """
    replay = _Replay()
    raw = (run_dir / JOURNAL).read_bytes()
    lines = raw.split(b"\n")
    torn = lines.pop()  # after the last newline: empty, or the line being written at the end
    for number, line in enumerate(lines, 1):
        replay.apply(number, line)
    if torn.strip():
        with contextlib.suppress(_BadLine, ValueError):
            _parse_event(torn)  # a whole event without its newline: keep it
            replay.apply(len(lines) + 1, torn)
    record = replay.record
    if record is None:
        found = f" ({replay.bad[0]})" if replay.bad else ""
        raise JournalError(f"{run_dir / JOURNAL} holds no readable run_started event{found}")
    if replay.version < RECORD_SCHEMA_VERSION:  # a journal written by an earlier version
        record.schema_version = replay.version
        upgrade_v1_values(record)
    _finish(record, replay)
    write_atomic(run_dir / RUN_JSON, record.to_json().encode())
    with contextlib.suppress(OSError):
        (run_dir / RESERVE).unlink(missing_ok=True)
    return record


def _finish(record: RunRecord, replay: _Replay) -> None:
    """Outcome, end and reason of the recovered run."""
    ended_at = replay.last_at or utc_now()
    damage = ""
    if replay.bad:
        count = len(replay.bad)
        damage = (
            f"{count} journal line{'s' if count > 1 else ''} could not be read ({replay.bad[0]})"
        )
    ended = replay.ended
    if ended is not None:  # died after the last event, while writing run.json
        record.outcome, record.outcome_reason = ended.outcome, ended.outcome_reason
        record.ended_at, record.marginal = ended.ended_at, ended.marginal
        record.sub_units, record.metadata = ended.sub_units, ended.metadata
        # What a phase set on the unit (dut.part_number, ...) is in the run's end, not its start.
        record.part_number, record.revision = ended.part_number, ended.revision
        record.batch_number = ended.batch_number
        if damage:
            said = record.outcome.value if record.outcome else "without an outcome"
            record.outcome_reason = f"the run ended {said} but {damage}"
            record.outcome = Outcome.ERROR
        return
    if replay.running is not None:
        name = replay.running["name"]
        reason = f"station process ended during phase {name!r}"
        record.phases.append(
            PhaseRecord(
                name=name,
                outcome=PhaseOutcome.ERROR,
                attempt=replay.running["attempt"],
                started_at=ended_at,
                ended_at=ended_at,
                reason=reason,
                error=ErrorInfo(type="Interrupted", message=reason),
            )
        )
    elif record.phases:
        reason = f"station process ended after phase {record.phases[-1].name!r}"
    else:
        reason = "station process ended before the first phase"
    if damage:
        reason = f"{reason}; {damage}"
    record.outcome, record.outcome_reason, record.ended_at = Outcome.ERROR, reason, ended_at
