"""The steps of one upload: create the run, then create each attachment, upload its bytes and
finalize it.

Creating the run: a simulated run that may not go to this server is parked as local only
(`policy.LocalOnly`) before any request; the procedure's TofuPilot id is resolved (`resolve`; a
procedure that cannot be resolved parks the run with a hint naming the station, the procedure and
the candidates); then the v2 body is sent, or the v1 body with `tofupilot.api: v1` (`v1`). A
remembered id the server refuses (403/404) is forgotten and resolved afresh at once; a rejection
is parked with a hint that names the cause (`policy.rejection_hint`).

Attachments go through the run-scoped flow (`POST /v2/runs/{id}/attachments`, PUT, finalize).
When the server refuses it with 403 (a station key may not be allowed to), the run's remaining
attachments use the generic flow: `POST /v2/attachments`, PUT, `POST /v2/attachments/{id}/finalize`,
then `PATCH /v2/runs/{id}` with the finalized upload ids. Only finalized uploads are linked, so
a refused PUT leaves nothing on the run: its upload is abandoned and a new one made. Every step
is saved (`AttachmentState.flow`, `linked`), so an interrupted upload resumes where it stopped.

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
from functools import partial
from pathlib import Path
from typing import Any

from station.records.model import RunRecord
from station.storage.journal import RUN_JSON
from station.tofupilot import v1
from station.tofupilot.client import ApiError, TofuPilotClient, TofuPilotError
from station.tofupilot.payload import build_run_body
from station.tofupilot.policy import (
    MAX_ATTACHMENT_RECREATES,
    MAX_FINALIZE_TRIES,
    LocalOnly,
    Park,
    error_dict,
    local_only_reason,
    rejection_hint,
)
from station.tofupilot.resolve import (
    ProcedureCache,
    ProcedureLink,
    Resolved,
    Unresolved,
    UploadTarget,
    resolve_procedure,
)
from station.tofupilot.upload_state import AttachmentState, UploadState, save_state

__all__ = [
    "GENERIC",
    "MAX_BODY_BYTES",
    "NOT_SENT_V1",
    "RUN_SCOPED",
    "create_run",
    "upload_attachments",
]

RUN_SCOPED = "run"  # AttachmentState.flow: POST /v2/runs/{id}/attachments
GENERIC = "generic"  # AttachmentState.flow: POST /v2/attachments ... PATCH /v2/runs/{id}
NOT_SENT_V1 = "not-sent-v1"  # AttachmentState.flow: a v1 run's attachment (v1 sends none)

MAX_BODY_BYTES = 64 << 20  # a run body larger than this is parked, not sent


def create_run(
    client: TofuPilotClient,
    run_dir: Path,
    record: RunRecord,
    state: UploadState,
    *,
    timeout: Callable[[], float | None],
    set_stage: Callable[[str], None],
    target: UploadTarget | None = None,
) -> None:
    """Create the run on the server and record its id at once (`state.run_id` is None).

    Raises `Park` (local only, unresolved procedure, a rejection) and the client's errors.
    """
    reason = local_only_reason(record, client.url)
    if reason is not None:
        raise LocalOnly(reason)
    target = target or UploadTarget()
    link = target.link(record.procedure_id)
    if target.api == "v1":
        body = _checked(partial(v1.build_v1_body, record, procedure_id=link.name), record)
        set_stage("creating the run (v1)")
        # v1 has no client_run_ref: after an attempt that may have reached the server, look
        # for the run before sending it again.
        maybe_sent = state.attempts > 1 and (state.last_error or {}).get("kind") != "connect"
        try:
            state.run_id = v1.create_run(client, body, maybe_sent=maybe_sent, timeout=timeout)
        except ApiError as exc:
            raise _rejected(exc, record, link, None) from None
        for item in state.attachments:  # kept in the run directory; see v1's docstring
            item.flow = NOT_SENT_V1
    else:
        cache = target.cache()
        resolved = _resolve(client, link, cache, timeout, set_stage)
        for fresh in (False, True):
            body = _checked(
                partial(
                    build_run_body,
                    record,
                    client_run_ref=state.client_run_ref,
                    procedure_id=resolved.id,
                ),
                record,
            )
            set_stage("creating the run")
            try:
                state.run_id = client.create_run(body, timeout_s=timeout())
                break
            except ApiError as exc:
                refused = exc.status in (403, 404) and resolved.source == "cache"
                if refused and not fresh:  # remembered, now refused: resolve it afresh
                    cache.forget(client.url, link.name, resolved.id)
                    again = _resolve(client, link, cache, timeout, set_stage)
                    if again.id != resolved.id:
                        resolved = again
                        continue
                    resolved = again
                raise _rejected(exc, record, link, resolved) from None
    state.last_error = None
    save_state(run_dir, state)  # known from now on: never created again


def _resolve(
    client: TofuPilotClient,
    link: ProcedureLink,
    cache: ProcedureCache,
    timeout: Callable[[], float | None],
    set_stage: Callable[[str], None],
) -> Resolved:
    """The procedure's TofuPilot id; an unresolvable procedure parks the run."""
    set_stage(f"resolving procedure {link.name!r}")
    try:
        return resolve_procedure(client, link, cache=cache, timeout=timeout)
    except Unresolved as exc:
        error = {"kind": "procedure", "status": None, "code": None, "message": exc.message}
        raise Park(error, exc.hint) from None
    except ApiError as exc:
        if exc.status != 404:
            raise
        # No whoami at all: not a v2 API (a wrong URL, or a server with the legacy API only).
        raise Park(
            error_dict(exc),
            f"the server has no TofuPilot v2 API at {client.url}/v2 (HTTP 404: {exc.message}): "
            "check tofupilot.url in station.yaml, or set `api: v1` in its tofupilot section "
            "for a server that has only the legacy v1 API; then run 'station upload "
            "--retry-parked'",
        ) from None


def _checked(build: Callable[[], dict[str, Any]], record: RunRecord) -> dict[str, Any]:
    """The body `build` makes, within MAX_BODY_BYTES; else the run is parked."""
    try:
        body = build()
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
    return body


def _rejected(
    exc: ApiError, record: RunRecord, link: ProcedureLink, resolved: Resolved | None
) -> Exception:
    """What a failed run creation becomes: a `Park` with a hint for a refusal about the
    procedure or the body; the error itself otherwise (retryable ones, and 401, whose hint the
    outbox words)."""
    if exc.retryable or exc.status not in (400, 403, 404, 422):
        return exc
    retry = "then run 'station upload --retry-parked'"
    said = exc.message
    if exc.status in (400, 422):
        hint = rejection_hint(exc, record, procedure_id=resolved.id if resolved else link.name)
    elif resolved is None:  # v1: the procedure identifier is the name
        hint = (
            f"TofuPilot refused procedure {link.name!r} (HTTP {exc.status}: {said}): the v1 "
            f"identifier of the procedure must exist (set `tofupilot_name:` under "
            f"procedures.{link.key} in station.yaml if it differs), {retry}"
        )
    elif resolved.source == "station.yaml":
        what = "is not linked to this station" if exc.status == 403 else "does not exist"
        hint = (
            f"procedure {link.key}'s tofupilot_id {resolved.id} (station.yaml) {what} in "
            f"TofuPilot (HTTP {exc.status}: {said}): link it to the station in TofuPilot, or fix "
            f"the id ('station check' prints the linked procedures' ids), {retry}"
        )
    else:
        hint = (
            f"TofuPilot refused procedure {resolved.name!r} ({resolved.id}, found in "
            f"{resolved.via or 'TofuPilot'}) with HTTP {exc.status}: {said}; check its link to "
            f"this station in TofuPilot, {retry}"
        )
    return Park(error_dict(exc), hint)


def upload_attachments(
    client: TofuPilotClient,
    run_dir: Path,
    state: UploadState,
    *,
    timeout: Callable[[], float | None],
    set_stage: Callable[[str], None],
) -> TofuPilotError | None:
    """Each attachment's missing steps, for a run already created (`state.run_id` known).

    Returns the last finalize failure of this pass of a run-scoped attachment (that finalize
    never fails the upload: the bytes are on the run), or None. A generic-flow attachment is on
    the run only once finalized and linked, so its failures are raised: the run stays queued.
    """
    assert state.run_id is not None, "upload_attachments needs the run created"
    missing: list[str] = []
    finalize_error: TofuPilotError | None = None
    for item in state.attachments:
        if _done(item):
            continue
        source = run_dir / item.path
        if not item.uploaded and not source.is_file():
            missing.append(item.path)
            continue
        if item.flow != GENERIC and item.id is None and _generic_run(state):
            item.flow = GENERIC  # this run's attachments were refused the run-scoped way
        if item.flow == GENERIC:
            _upload_generic(client, run_dir, state, item, source, timeout, set_stage)
            continue
        for _ in range(MAX_ATTACHMENT_RECREATES + 1):
            if item.uploaded:
                break
            if item.id is None or item.upload_url is None:
                set_stage(f"creating attachment {item.name!r}")
                timeout_s = timeout()
                try:
                    item.id, item.upload_url = client.create_attachment(
                        state.run_id, item.name[:255], timeout_s=timeout_s
                    )
                except ApiError as exc:
                    if exc.status != 403:
                        raise
                    # Not allowed for this key (some station keys): the generic flow.
                    item.flow, item.id, item.upload_url = GENERIC, None, None
                    save_state(run_dir, state)
                    _upload_generic(client, run_dir, state, item, source, timeout, set_stage)
                    break
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
        if item.flow != GENERIC and item.uploaded and item.finalized is None:
            set_stage(f"finalizing attachment {item.name!r}")
            finalize_error = _finalize(client, item, timeout()) or finalize_error
            save_state(run_dir, state)
    _link_generic(client, run_dir, state, timeout, set_stage)
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


def _done(item: AttachmentState) -> bool:
    if item.flow == NOT_SENT_V1:
        return True
    if item.flow == GENERIC:
        return item.linked
    return item.uploaded and item.finalized is not None


def _generic_run(state: UploadState) -> bool:
    """True once the server refused this run a run-scoped attachment (403)."""
    return any(a.flow == GENERIC for a in state.attachments)


def _upload_generic(
    client: TofuPilotClient,
    run_dir: Path,
    state: UploadState,
    item: AttachmentState,
    source: Path,
    timeout: Callable[[], float | None],
    set_stage: Callable[[str], None],
) -> None:
    """Upload and finalize one attachment through the generic flow (it is linked afterwards,
    with the run's others). A refused PUT or finalize abandons that upload (it belongs to no
    run, so nothing is left on the run) and starts a new one, up to MAX_ATTACHMENT_RECREATES
    times; a retryable failure is raised (the run stays queued and resumes here)."""
    assert state.run_id is not None
    refused: ApiError | None = None
    for _ in range(MAX_ATTACHMENT_RECREATES + 1):
        if not item.uploaded:
            if item.id is None or item.upload_url is None:
                set_stage(f"creating the upload of attachment {item.name!r}")
                item.id, item.upload_url = client.initialize_attachment(
                    item.name[:255], timeout_s=timeout()
                )
                save_state(run_dir, state)
            content_type = mimetypes.guess_type(item.name)[0] or "application/octet-stream"
            data = _read_attachment(source, state.run_id)
            set_stage(f"uploading attachment {item.name!r}")
            try:
                client.upload_attachment_bytes(
                    item.upload_url, data, content_type, timeout_s=timeout()
                )
            except ApiError as exc:
                if exc.retryable:
                    raise
                refused = exc
                _abandon(run_dir, state, item)
                continue
            item.uploaded, item.upload_url = True, None
            save_state(run_dir, state)
        if item.finalized is not True:
            set_stage(f"finalizing attachment {item.name!r}")
            item.finalize_tries += 1
            try:
                client.finalize_attachment(item.id or "", timeout_s=timeout())
            except TofuPilotError as exc:
                item.finalize_error = str(exc)[:500]
                if exc.retryable or not isinstance(exc, ApiError):
                    save_state(run_dir, state)
                    raise
                refused = exc
                _abandon(run_dir, state, item)
                continue
            item.finalized, item.finalize_error = True, None
            save_state(run_dir, state)
        return
    assert refused is not None
    raise refused


def _abandon(run_dir: Path, state: UploadState, item: AttachmentState) -> None:
    """Give up a generic upload the server refused: it was never linked, so it is on no run."""
    if item.id is not None:
        item.abandoned_ids.append(item.id)
    item.id = item.upload_url = None
    item.uploaded, item.finalized = False, None
    save_state(run_dir, state)


def _link_generic(
    client: TofuPilotClient,
    run_dir: Path,
    state: UploadState,
    timeout: Callable[[], float | None],
    set_stage: Callable[[str], None],
) -> None:
    """PATCH the run with every finalized generic upload, if one is not linked yet (ids already
    linked are sent again: linking is idempotent, and a server that replaces the list keeps
    them all)."""
    ready = [a for a in state.attachments if a.flow == GENERIC and a.finalized is True]
    if not ready or all(a.linked for a in ready):
        return
    assert state.run_id is not None
    set_stage(f"linking {len(ready)} attachment(s) to the run")
    client.link_attachments(state.run_id, [a.id or "" for a in ready], timeout_s=timeout())
    for item in ready:
        item.linked = True
    save_state(run_dir, state)


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
