"""The persisted upload state of one run: its `upload.json`, rewritten atomically (temp file,
fsync, rename) at every step that matters:

- `client_run_ref` is minted (`station-<run id>`) and on disk **before the first send**, with the
  attempt: a retry after a lost answer sends the same ref and the server returns the run it
  already has;
- `run_id` is written the moment the server returns it, before anything else is sent, so a run
  whose id is known is never created again;
- each attachment records its `id` (created), `uploaded` and `finalized`: a retry resumes where
  the last attempt stopped. Finalize only needs the id, so a retryable finalize failure is tried
  again on later passes (`finalize_tries`, up to `policy.MAX_FINALIZE_TRIES`), never by
  re-creating the attachment (that would duplicate it on the server). A run whose only work left
  is finalize is uploaded (`uploaded_at`: the run and its bytes are there);
- `attempts`, `failures` (consecutive), `next_retry_at` (UTC, `Z`), `last_error`
  (kind, status, code, message: never the key), `parked` and `hint`.

`load_state` validates every field's type: a file that is valid JSON but not an upload state
raises `StateUnreadable` naming the field, never a crash further on.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, TypedDict

from pydantic import AfterValidator, ConfigDict, TypeAdapter, ValidationError

from station.records.model import RunRecord
from station.storage.journal import JOURNAL, RUN_JSON, write_atomic

__all__ = [
    "BUSY",
    "INTERRUPTED",
    "LOCAL_ONLY",
    "NOT_CONFIGURED",
    "PARKED",
    "QUEUED",
    "STATE_FILE",
    "STATE_VERSION",
    "UPLOADED",
    "AttachmentState",
    "RunSummary",
    "StateUnreadable",
    "UploadState",
    "client_run_ref_for",
    "epoch",
    "iso",
    "load_state",
    "run_summary",
    "save_state",
]

STATE_FILE = "upload.json"
STATE_VERSION = 1

# RunStatus.state
UPLOADED = "uploaded"
QUEUED = "queued"
PARKED = "parked"
NOT_CONFIGURED = "not-configured"
INTERRUPTED = "interrupted"  # journal only: recovered as an ERROR run before its upload
BUSY = "busy"  # another process holds the claim (a run going on, or another upload)
# A simulated run kept off a TofuPilot that is not on this machine (parked, error kind
# "local-only"; never sent however often retried: see tofupilot/policy.py).
LOCAL_ONLY = "local-only"


class StateUnreadable(Exception):
    """upload.json exists but cannot be read or is not an upload state (the message says why
    and what to do)."""


def iso(ts: float) -> str:
    """Epoch seconds as UTC ISO 8601 with `Z`, to the second."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def epoch(text: str) -> float:
    """The epoch seconds of a time written by `iso` (raises ValueError for anything else)."""
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def _a_time(text: str | None) -> str | None:
    if text is not None:
        epoch(text)  # raises ValueError: pydantic reports it against the field
    return text


_Time = Annotated[str | None, AfterValidator(_a_time)]
_STRICT = ConfigDict(strict=True)


@dataclass
class AttachmentState:
    """Where the upload of one attachment stands."""

    __pydantic_config__ = _STRICT

    path: str
    name: str
    id: str | None = None
    upload_url: str | None = None
    uploaded: bool = False
    finalized: bool | None = None  # None: to do (tries left); False: given up; True: done
    finalize_error: str | None = None
    finalize_tries: int = 0
    abandoned_ids: list[str] = field(default_factory=list)
    # "run": run-scoped (POST /v2/runs/{id}/attachments, on the run once created); "generic":
    # POST /v2/attachments, on the run only once finalized and `linked` (PATCH /v2/runs/{id}).
    flow: str = "run"
    linked: bool = False


@dataclass
class UploadState:
    """The content of upload.json (unknown keys of a later version are ignored on reading)."""

    __pydantic_config__ = _STRICT

    client_run_ref: str
    version: int = STATE_VERSION
    run_id: str | None = None
    run_url: str | None = None
    attachments: list[AttachmentState] = field(default_factory=list)
    attempts: int = 0
    failures: int = 0
    first_attempt_at: _Time = None
    last_attempt_at: _Time = None
    next_retry_at: _Time = None
    last_error: dict[str, Any] | None = None
    parked: bool = False
    hint: str | None = None
    uploaded_at: _Time = None

    def finalize_pending(self) -> bool:
        """Some attachment is uploaded and still to be finalized (tries left)."""
        return any(a.uploaded and a.finalized is None and a.id for a in self.attachments)

    def to_bytes(self) -> bytes:
        return json.dumps(asdict(self), indent=2).encode()


_STATE = TypeAdapter(UploadState)


def client_run_ref_for(record: RunRecord) -> str:
    """The idempotency key of a run: derived from its random run id, so unique and stable."""
    return f"station-{record.run_id}"


def load_state(run_dir: Path) -> UploadState | None:
    """The run's upload state; None if it has none yet. Raises `StateUnreadable`."""
    path = run_dir / STATE_FILE
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StateUnreadable(f"{path} cannot be read: {exc.strerror or exc}") from None
    try:
        state: UploadState = _STATE.validate_json(raw)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error["loc"])
        what = f"{where}: {error['msg']}" if where else error["msg"]
        raise StateUnreadable(
            f"{path} is damaged ({what[:200]}); move it aside and run 'station upload' (the run "
            "is not duplicated; its attachments may be)"
        ) from None
    return state


def save_state(run_dir: Path, state: UploadState) -> None:
    """Write upload.json atomically (raises OSError: the caller says what it means)."""
    write_atomic(run_dir / STATE_FILE, state.to_bytes())


class RunSummary(TypedDict):
    """What `station runs` shows of a run, from its files."""

    outcome: str | None
    serial: str | None
    procedure: str | None
    started_at: str | None


def run_summary(run_dir: Path) -> RunSummary:
    """outcome, serial, procedure, started_at from run.json, else the journal's first event.

    Only text values are taken: a damaged file yields None for what it does not hold as text.
    """
    data: Any = None
    try:
        data = json.loads((run_dir / RUN_JSON).read_bytes())
    except (OSError, ValueError):
        try:
            with open(run_dir / JOURNAL, "rb") as handle:
                first = json.loads(handle.readline(1 << 20).decode("utf-8", "replace"))
            data = first.get("run") if isinstance(first, dict) else None
        except (OSError, ValueError):
            pass
    if not isinstance(data, dict):
        data = {}

    def text(key: str) -> str | None:
        value = data.get(key)
        return value if isinstance(value, str) else None

    started = text("started_at")
    if started is not None and started.endswith("+00:00"):
        started = started[: -len("+00:00")] + "Z"
    return {
        "outcome": text("outcome"),
        "serial": text("serial_number"),
        "procedure": text("procedure_id"),
        "started_at": started,
    }
