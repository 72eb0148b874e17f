"""The run directory: an append-only journal while the run goes on, the final record at the end.

`data_dir/<started-at>_<procedure>_<serial>_<id8>/`
- `journal.jsonl`: one JSON event per line, handed to the kernel as it happens (a kill -9 loses
  nothing that finished) and fsynced at every phase end by a group-commit thread (a power cut
  loses at most the phase that was running plus one fsync's worth, ~0.2 ms);
- `run.json`: the final RunRecord, written atomically (temp file, fsync, rename): it is either
  absent or complete, never half-written;
- `attachments/`: copies of attached files.

A directory with a journal and no run.json is a run that was interrupted; `recover()` turns it into
an ERROR run that keeps every phase that finished.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
from datetime import datetime
from pathlib import Path

from station.records.listener import RunListener
from station.records.model import (
    AttachmentRecord,
    ErrorInfo,
    LogEntry,
    Outcome,
    PhaseOutcome,
    PhaseRecord,
    RunRecord,
    utc_now,
)
from station.storage.syncer import Syncer
from station.testing import faultpoints

JOURNAL = "journal.jsonl"
RUN_JSON = "run.json"
ATTACHMENTS = "attachments"


class JournalError(OSError):
    """The run cannot be recorded (data directory missing, not writable, disk full)."""


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
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return  # not supported on this platform (Windows); the rename is still atomic
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Journal(RunListener):
    """Writes a run to its directory as it happens."""

    def __init__(self, data_dir: Path) -> None:
        super().__init__()
        self.data_dir = Path(data_dir)
        self.run_dir: Path | None = None
        self._fd: int | None = None
        self._size = 0  # bytes of complete events in the journal
        self._syncer: Syncer | None = None

    def run_started(self, record: RunRecord) -> None:
        self.run_dir = self.data_dir / run_dir_name(record)
        self.run_dir.mkdir(parents=True, exist_ok=False)
        self._fd = os.open(self.run_dir / JOURNAL, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self._syncer = Syncer(self._fd)
        header = record.to_json(exclude={"phases", "logs", "attachments"})
        self._write("run_started", "run", header, sync=True)
        _fsync_dir(self.data_dir)

    def phase_started(self, name: str, attempt: int) -> None:
        self._write("phase_started", "phase", json.dumps({"name": name, "attempt": attempt}))

    def phase_ended(self, record: PhaseRecord) -> None:
        self._write("phase_ended", "phase", record.to_json(), sync=True)

    def log_added(self, entry: LogEntry, phase: str | None) -> None:
        if phase is None:  # phase logs travel inside phase_ended
            self._write("log", "log", entry.to_json())

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
        self._write("attachment", "attachment", attachment.to_json(), sync=True)
        return relative

    def run_ended(self, record: RunRecord) -> None:
        try:
            try:
                payload = record.to_json(exclude={"phases", "logs"})
                self._write("run_ended", "run", payload, sync=True)
            finally:
                syncer, self._syncer = self._syncer, None
                try:
                    if syncer is not None:
                        syncer.close()  # every event on disk before run.json says the run is over
                finally:
                    if self._fd is not None:
                        os.close(self._fd)
                        self._fd = None
            if self.run_dir is not None:
                faultpoints.reached("record_write_journaled")
                write_atomic(self.run_dir / RUN_JSON, record.to_json().encode())
        except OSError as exc:
            raise JournalError(
                f"the record of this run could not be fully written in {self.run_dir}: "
                f"{exc.strerror or exc}; free some space or fix the data directory, then "
                "`station upload` recovers the run from what its journal holds"
            ) from None

    def _write(self, event: str, key: str, payload_json: str, sync: bool = False) -> None:
        """Append one event and hand it to the kernel at once (a killed process loses nothing);
        with `sync`, also request an fsync (group commit, see station.syncer)."""
        if self._fd is None:
            return
        at = utc_now().isoformat().replace("+00:00", "Z")
        data = f'{{"event":"{event}","at":"{at}","{key}":{payload_json}}}\n'.encode()
        try:
            written = os.write(self._fd, data)
            while written < len(data):  # a short write: the disk is filling up
                written += os.write(self._fd, data[written:])
        except OSError:
            with contextlib.suppress(OSError):  # never leave half an event behind
                os.ftruncate(self._fd, self._size)
            raise
        self._size += len(data)
        if sync and self._syncer is not None:
            self._syncer.request()


def read_record(run_dir: Path) -> RunRecord:
    return RunRecord.from_json((run_dir / RUN_JSON).read_bytes())


def find_interrupted(data_dir: Path) -> list[Path]:
    """Run directories with a journal but no run.json: runs whose process died."""
    if not data_dir.is_dir():
        return []
    return sorted(
        d for d in data_dir.iterdir() if (d / JOURNAL).is_file() and not (d / RUN_JSON).exists()
    )


def recover(run_dir: Path) -> RunRecord:
    """Rebuild an interrupted run from its journal as an ERROR run, and write its run.json."""
    record: RunRecord | None = None
    running: dict | None = None  # the phase that started and never ended
    last_at: datetime | None = None
    ended: RunRecord | None = None
    for line in (run_dir / JOURNAL).read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            continue  # the line being written when the process died
        last_at = datetime.fromisoformat(event["at"])
        kind = event["event"]
        if kind == "run_started":
            record = RunRecord.from_dict(event["run"])
        elif record is None:
            continue
        elif kind == "phase_started":
            running = event["phase"]
        elif kind == "phase_ended":
            record.phases.append(PhaseRecord.from_dict(event["phase"]))
            running = None
        elif kind == "attachment":
            record.attachments.append(AttachmentRecord.from_dict(event["attachment"]))
        elif kind == "log":
            record.logs.append(LogEntry.from_dict(event["log"]))
        elif kind == "run_ended":
            ended = RunRecord.from_dict({**event["run"], "phases": [], "logs": []})
    if record is None:
        raise JournalError(f"{run_dir / JOURNAL} holds no run_started event; nothing to recover")
    ended_at = last_at or utc_now()
    if ended is not None:  # died after the last event, while writing run.json
        record.outcome, record.outcome_reason = ended.outcome, ended.outcome_reason
        record.ended_at, record.marginal = ended.ended_at, ended.marginal
        record.sub_units, record.metadata = ended.sub_units, ended.metadata
    else:
        if running is not None:
            reason = f"station process ended during phase {running['name']!r}"
            record.phases.append(
                PhaseRecord(
                    name=running["name"],
                    outcome=PhaseOutcome.ERROR,
                    attempt=running.get("attempt", 0),
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
        record.outcome, record.outcome_reason, record.ended_at = Outcome.ERROR, reason, ended_at
    write_atomic(run_dir / RUN_JSON, record.to_json().encode())
    return record
