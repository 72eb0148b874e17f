"""The steps of one upload: create the run, then create each attachment, upload its bytes and
finalize it.

Each step is saved in the run's upload state the moment it is done, so a retry resumes where the
last attempt stopped (`save_state` raises OSError when upload.json cannot be written: nothing
more is sent). `timeout()` gives the next request's timeout (it raises when no time is left);
`set_stage` words what the next request does, for hints.

A body larger than `MAX_BODY_BYTES` is not sent: the run is parked (the payload bounds what logs
may take, so only a record with enormous measured values gets there).
"""

from __future__ import annotations

import json
import mimetypes
from collections.abc import Callable
from pathlib import Path

from station.records.model import RunRecord
from station.storage.journal import RUN_JSON
from station.tofupilot.client import ApiError, TofuPilotClient, TofuPilotError
from station.tofupilot.payload import build_run_body
from station.tofupilot.policy import MAX_ATTACHMENT_RECREATES, MAX_FINALIZE_TRIES, Park
from station.tofupilot.upload_state import AttachmentState, UploadState, save_state

__all__ = ["MAX_BODY_BYTES", "create_run", "upload_attachments"]

MAX_BODY_BYTES = 64 << 20  # a run body larger than this is parked, not sent


def create_run(
    client: TofuPilotClient,
    run_dir: Path,
    record: RunRecord,
    state: UploadState,
    *,
    timeout: Callable[[], float | None],
    set_stage: Callable[[str], None],
) -> None:
    """Create the run on the server and record its id at once (`state.run_id` is None)."""
    try:
        body = build_run_body(record, client_run_ref=state.client_run_ref)
        size = len(json.dumps(body, allow_nan=False))
    except (ValueError, TypeError) as exc:
        raise Park(
            {"kind": "body", "status": None, "code": None, "message": str(exc)[:4096]},
            f"could not build the TofuPilot run from {RUN_JSON} ({exc}); please report this",
        ) from None
    if size > MAX_BODY_BYTES:
        message = f"the run body is {size >> 20} MiB, over the {MAX_BODY_BYTES >> 20} MiB sent"
        raise Park(
            {"kind": "body", "status": None, "code": None, "message": message},
            f"{message}: its measured values are too large to upload; please report this",
        )
    set_stage("creating the run")
    timeout_s = timeout()
    state.run_id = client.create_run(body, timeout_s=timeout_s)
    state.last_error = None
    save_state(run_dir, state)  # known from now on: never created again


def upload_attachments(
    client: TofuPilotClient,
    run_dir: Path,
    state: UploadState,
    *,
    timeout: Callable[[], float | None],
    set_stage: Callable[[str], None],
) -> TofuPilotError | None:
    """Each attachment's missing steps, for a run already created (`state.run_id` known).

    Returns the last finalize failure of this pass (finalize never fails the upload: the bytes
    are there), or None.
    """
    assert state.run_id is not None, "upload_attachments needs the run created"
    missing: list[str] = []
    finalize_error: TofuPilotError | None = None
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
                set_stage(f"creating attachment {item.name!r}")
                timeout_s = timeout()
                item.id, item.upload_url = client.create_attachment(
                    state.run_id, item.name[:255], timeout_s=timeout_s
                )
                save_state(run_dir, state)
            content_type = mimetypes.guess_type(item.name)[0] or "application/octet-stream"
            data = _read_attachment(source, state.run_id)
            set_stage(f"uploading attachment {item.name!r}")
            timeout_s = timeout()
            try:
                client.upload_attachment_bytes(
                    item.upload_url, data, content_type, timeout_s=timeout_s
                )
            except ApiError as exc:
                if exc.retryable or len(item.abandoned_ids) >= MAX_ATTACHMENT_RECREATES:
                    raise
                # The upload grant was refused (expired?): get a new one. The attachment
                # left empty on the server cannot be avoided; the bytes are not lost.
                item.abandoned_ids.append(item.id)
                item.id = item.upload_url = None
                save_state(run_dir, state)
                continue
            item.uploaded = True
            item.upload_url = None  # the grant is spent; no reason to keep it
            save_state(run_dir, state)
        if item.uploaded and item.finalized is None:
            set_stage(f"finalizing attachment {item.name!r}")
            finalize_error = _finalize(client, item, timeout()) or finalize_error
            save_state(run_dir, state)
    if missing:
        raise Park(
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
    return finalize_error


def _read_attachment(source: Path, run_id: str) -> bytes:
    """The bytes of an attachment file; parks the run when they cannot be read."""
    try:
        return source.read_bytes()
    except OSError as exc:
        message = f"{source} cannot be read ({exc.strerror or exc})"
        raise Park(
            {"kind": "attachment", "status": None, "code": None, "message": message},
            f"the run is uploaded (run {run_id}) but attachment {message}: fix it and run "
            "'station upload --retry-parked'",
        ) from None


def _finalize(
    client: TofuPilotClient, item: AttachmentState, timeout_s: float | None
) -> TofuPilotError | None:
    """Finalize an uploaded attachment: with its id only, so trying again never duplicates it.

    A retryable failure leaves it to a later pass, up to MAX_FINALIZE_TRIES tries; after that,
    or after a refusal (4xx), it is given up (`finalized` False): the dashboard then shows its
    size and type as Unknown, the bytes are there all the same.
    """
    item.finalize_tries += 1
    try:
        client.finalize_attachment(item.id or "", timeout_s=timeout_s)
    except TofuPilotError as exc:
        item.finalize_error = str(exc)[:500]
        if not exc.retryable or item.finalize_tries >= MAX_FINALIZE_TRIES:
            item.finalized = False
        return exc
    item.finalized, item.finalize_error = True, None
    return None
