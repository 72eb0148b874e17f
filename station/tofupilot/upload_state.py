"""The persisted upload state of one run: its `upload.json`, rewritten atomically (temp file,
fsync, rename) at every step that matters:

- `client_run_ref` is minted (`station-<run id>`) and on disk **before the first send**: a retry
  after a lost answer sends the same ref and the server returns the run it already has;
- `run_id` is written the moment the server returns it, before anything else, so a run whose id is
  known is never created again;
- each attachment records its `id` (created), `uploaded` and `finalized`: a retry resumes where
  the last attempt stopped. Finalize only needs the id, so a retryable finalize failure is tried
  again on later passes (`finalize_tries`, up to `policy.MAX_FINALIZE_TRIES`), never by
  re-creating the attachment (that would duplicate it on the server). A run whose only work left
  is finalize is uploaded (`uploaded_at`: the run and its bytes are there);
- `attempts`, `failures` (consecutive), `next_retry_at` (UTC, `Z`), `last_error`
  (kind, status, code, message: never the key), `parked` and `hint`.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from station.records.model import RunRecord
from station.storage.journal import JOURNAL, RUN_JSON, write_atomic

STATE_FILE = "upload.json"
STATE_VERSION = 1

# RunStatus.state
UPLOADED = "uploaded"
QUEUED = "queued"
PARKED = "parked"
NOT_CONFIGURED = "not-configured"
INTERRUPTED = "interrupted"  # journal only: recovered as an ERROR run before its upload
BUSY = "busy"  # another process holds the claim (a run going on, or another upload)


class _StateUnreadable(Exception):
    pass


@dataclass
class _Attachment:
    path: str
    name: str
    id: str | None = None
    upload_url: str | None = None
    uploaded: bool = False
    finalized: bool | None = None  # None: to do (tries left); False: given up; True: done
    finalize_error: str | None = None
    finalize_tries: int = 0
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

    def finalize_pending(self) -> bool:
        """Some attachment is uploaded and still to be finalized (tries left)."""
        return any(a.uploaded and a.finalized is None and a.id for a in self.attachments)

    def to_bytes(self) -> bytes:
        return json.dumps(asdict(self), indent=2).encode()


def client_run_ref_for(record: RunRecord) -> str:
    """The idempotency key of a run: derived from its random run id, so unique and stable."""
    return f"station-{record.run_id}"


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _epoch(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def load_state(run_dir: Path) -> _State | None:
    """The run's upload state; None if it has none yet. Raises `_StateUnreadable`."""
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


def save_state(run_dir: Path, state: _State) -> None:
    write_atomic(run_dir / STATE_FILE, state.to_bytes())


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
