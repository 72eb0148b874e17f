"""The retry policy: what is retried when, what parks a run, and what an operator is told.

Connection errors, timeouts, 429 (Retry-After honoured) and 5xx are retried, with capped
exponential backoff between calls (15 s, 30 s, 5 min, 15 min, then 1 h). 400/401/403/404/409/422
**park** the run with the server's message and a hint an operator can act on; a parked run is only
retried when asked (`retry_parked`). Nothing is ever dropped.

A 400 that names `procedure_id`, `part_number` or `sub_units` is a configuration problem, and its
hint says which (`rejection_hint`); only a rejection we cannot explain asks to be reported.

A simulated run (`station run --sim`) is kept local (`LocalOnly`, a parked run whose error kind is
`local-only`) unless TofuPilot's URL is a loopback address (an emulator on this machine) or the
run was made with `--upload-sim` (`RunRecord.upload_simulated`): test data never reaches a
production server by accident, however often the run is retried.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from station.records.model import RunRecord
from station.tofupilot.client import ApiError, TofuPilotError, TransportError
from station.tofupilot.upload_state import LOCAL_ONLY  # the error kind of a run kept local

__all__ = [
    "BACKOFF_S",
    "LOCAL_ONLY",
    "MAX_ATTACHMENT_RECREATES",
    "MAX_FINALIZE_TRIES",
    "MAX_TRIES_PER_CALL",
    "MIN_REQUEST_S",
    "LocalOnly",
    "OutOfTime",
    "Park",
    "backoff_s",
    "describe_error",
    "error_dict",
    "is_loopback_url",
    "local_only_reason",
    "park_hint",
    "quick_delay",
    "rejection_hint",
]


BACKOFF_S = (15.0, 30.0, 300.0, 900.0, 3600.0)
MIN_REQUEST_S = 0.25  # below this a request cannot succeed: stop and leave the run queued
MAX_TRIES_PER_CALL = 3  # quick retries inside one upload() call, within its deadline
QUICK_RETRY_S = (0.5, 1.0)
MAX_QUICK_RETRY_AFTER_S = 5.0  # a longer Retry-After is honoured through next_retry_at instead
MAX_ATTACHMENT_RECREATES = 2
# Finalize tries per attachment, over passes (the first and 5 retries on later passes): finalize
# only needs the attachment's id, so trying it again never duplicates anything. One request a
# pass; with 30% of requests failing, 6 tries leave about 1 attachment in 1,400 unfinalized.
MAX_FINALIZE_TRIES = 6


class OutOfTime(Exception):
    """The caller's deadline leaves no time for the next request."""


class Park(Exception):
    """Stop trying this run until an operator asks: `error` is recorded as its last error,
    `hint` says what to do."""

    def __init__(self, error: dict[str, Any], hint: str) -> None:
        super().__init__(hint)
        self.error, self.hint = error, hint


class LocalOnly(Park):
    """A simulated run that is not sent to this server (`local_only_reason` says why): parked
    with error kind `local-only` before any request, however often it is retried."""

    def __init__(self, reason: str) -> None:
        super().__init__(
            {"kind": LOCAL_ONLY, "status": None, "code": None, "message": reason}, reason
        )


def is_loopback_url(url: str) -> bool:
    """True if `url`'s host is this machine (127.0.0.0/8, ::1, `localhost`)."""
    try:
        host = urlsplit(url).hostname or ""
    except ValueError:
        return False
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def local_only_reason(record: RunRecord, url: str) -> str | None:
    """Why `record` must not be sent to `url`, or None: a simulated run goes only to a loopback
    URL, unless it was made with `--upload-sim`."""
    if not record.simulated or record.upload_simulated or is_loopback_url(url):
        return None
    host = urlsplit(url).hostname or url
    return (
        f"local only: simulated run (--sim), not sent to TofuPilot at {host}; simulated runs go "
        "only to a TofuPilot on this machine (a loopback URL), or anywhere when the run is made "
        "with 'station run --sim --upload-sim'"
    )


def quick_delay(
    exc: TofuPilotError, tries: int, deadline: float | None, clock: Callable[[], float]
) -> float | None:
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
    if deadline is not None and clock() + delay + 1.0 > deadline:
        return None
    return delay


def backoff_s(failures: int, exc: TofuPilotError) -> float:
    """The wait before the next call, after `failures` consecutive failed calls."""
    if exc.retry_after_s is not None:
        return exc.retry_after_s
    return BACKOFF_S[min(max(failures, 1), len(BACKOFF_S)) - 1]


def park_hint(
    exc: TofuPilotError,
    record: RunRecord,
    *,
    stage: str,
    api_key_env: str,
    whoami: Callable[[], dict[str, Any] | None],
) -> str:
    """What an operator can do about a run parked by `exc`, raised while `stage`.

    `whoami` is asked (only for a 403 on run creation) which kind of key is in use.
    """
    retry = "then run 'station upload --retry-parked'"
    proc = record.procedure_id
    if not isinstance(exc, ApiError):
        return f"{exc}; {retry}"
    said = exc.message
    if exc.status == 401:
        return f"the API key in ${api_key_env} was refused ({said}): check it, {retry}"
    if stage != "creating the run":
        return f"{stage} failed: HTTP {exc.status}: {said}; {retry}"
    if exc.status == 403:
        who = whoami()
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
        return rejection_hint(exc, record)
    if exc.status == 409:
        return f"the server reported a conflict: {said}; {retry} once it is resolved"
    return f"the server answered HTTP {exc.status}: {said}; {retry}"


def rejection_hint(exc: ApiError, record: RunRecord, *, procedure_id: str | None = None) -> str:
    """The hint for a run the server rejected as invalid (400/422): a configuration problem
    when the server names `procedure_id`, `part_number` or `sub_units`, else a report request.

    `procedure_id` is the id that was sent (TofuPilot's, when it was resolved).
    """
    retry = "then run 'station upload --retry-parked'"
    key = record.procedure_id
    texts = [exc.message, *exc.issues]
    said = "; ".join(exc.issues) or exc.message

    def names(field: str) -> bool:
        return any(re.search(rf"\b{field}\b", text) for text in texts)

    hints = []
    if names("procedure_id"):
        sent = procedure_id or key
        hints.append(
            f"the procedure id sent ({sent}) is not one TofuPilot accepts: it must be TofuPilot's "
            f"id of the procedure, a UUID; pin it as `tofupilot_id:` under procedures.{key} in "
            "station.yaml, or leave it out to have it resolved by name ('station check' prints "
            "the id)"
        )
    if names("part_number"):
        hints.append(
            f"TofuPilot needs the unit's part number: set `part_number:` for procedure {key} "
            "in station.yaml (or a part_number group in its serial_pattern), or configure "
            "serial number parsing in TofuPilot so it can derive the part number"
        )
    if names("sub_units?"):
        unknown = _sub_units_named(exc.issues, record.sub_units)
        which = f"sub-unit(s) {', '.join(unknown)}" if unknown else "a sub-unit of this run"
        hints.append(
            f"{which} unknown to TofuPilot: a sub-unit must exist in TofuPilot before a run "
            "references it (upload the sub-unit's own run first, or create the unit there)"
        )
    if not hints:
        return f"the server rejected the run: {said}; please report this"
    return f"{'; '.join(hints)} (the server said: {said}); {retry}"


def _sub_units_named(issues: list[str], sub_units: list[str]) -> list[str]:
    """The sub-units that issues point at (`sub_units.1: ...`) or name."""
    found = []
    for issue in issues:
        match = re.match(r"sub_units\.(\d+)\b", issue)
        if match and int(match.group(1)) < len(sub_units):
            found.append(sub_units[int(match.group(1))])
        else:
            found += [s for s in sub_units if s and s in issue]
    return list(dict.fromkeys(found))


def error_dict(exc: TofuPilotError) -> dict[str, Any]:
    """What upload.json keeps of an error: kind, status, code, message (never the key)."""
    if isinstance(exc, ApiError):
        message = exc.message
        if exc.issues:
            message += " (" + "; ".join(exc.issues) + ")"
        return {"kind": "http", "status": exc.status, "code": exc.code, "message": message}
    kind = exc.kind if isinstance(exc, TransportError) else "error"
    return {"kind": kind, "status": None, "code": None, "message": str(exc)}


def describe_error(error: dict[str, Any]) -> str:
    """A short reason for the console: `server error 500: ...`, `timeout: ...`."""
    status = error.get("status")
    if error.get("kind") == LOCAL_ONLY:
        return str(error.get("message", "local only"))[:200]
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
