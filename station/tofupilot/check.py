"""`station check`'s TofuPilot part: is the key accepted, which key is it, and does every
procedure in station.yaml have a TofuPilot id its runs can be created with?

The v2 API wants TofuPilot's own id of a procedure (a UUID). A station key may create runs only
for the procedures linked to its station (a 403 otherwise), and the API has no endpoint to link
them: the dashboard does. So each procedure must match, by its pinned `tofupilot_id` or else by
name (`tofupilot_name` or its key), exactly one procedure linked to this station (with a user key:
one of the organization's procedures). A name match is reported with the id it resolved to and
the line that pins it in station.yaml. Finding all that here, before the first unit is tested,
beats finding it in a parked upload.

With `tofupilot.api: v1` the key is checked against the v1 run list; v1 identifies procedures by
name, so there is no id to match.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Protocol

from station.tofupilot.client import ApiError, TofuPilotClient, TofuPilotError, api_key_problem
from station.tofupilot.resolve import (
    Available,
    ProcedureLink,
    Unresolved,
    available_procedures,
    match_procedure,
)


class ReportingSettings(Protocol):
    """What `check_tofupilot` reads of station.yaml's `tofupilot:` section."""

    @property
    def url(self) -> str: ...

    @property
    def api_key_env(self) -> str: ...

    @property
    def api(self) -> str: ...


class ProcedureSettings(Protocol):
    """What `check_tofupilot` reads of a procedure in station.yaml."""

    @property
    def tofupilot_id(self) -> str | None: ...

    @property
    def tofupilot_name(self) -> str | None: ...


class CheckedConfig(Protocol):
    """What `check_tofupilot` reads of a station config (`StationConfig` has it: this layer
    does not import the config layer)."""

    @property
    def tofupilot(self) -> ReportingSettings: ...

    @property
    def procedures(self) -> Mapping[str, ProcedureSettings]: ...


CHECK_TIMEOUT_S = 5.0
V1_PROBE_SERIAL = "station-check"  # a serial looked up to prove the v1 API takes the key


def check_tofupilot(
    config: CheckedConfig, *, timeout_s: float = CHECK_TIMEOUT_S
) -> tuple[bool, list[str]]:
    """Ask the server who the key is and which procedures it may write; return (ok, lines).

    Not ok: no key, key refused, server unreachable, or a procedure without exactly one id
    match among the procedures this key may create runs for.
    """
    settings = config.tofupilot
    env = settings.api_key_env
    key = os.environ.get(env, "").strip()
    if not key:
        return False, [
            f"tofupilot: ${env} is not set: runs are recorded but not uploaded; set it to this "
            "station's API key"
        ]
    problem = api_key_problem(key)
    if problem is not None:  # never echoed: the variable is named, the key is not
        return False, [f"tofupilot: ${env} does not hold a usable API key: {problem}"]
    links = {
        name: ProcedureLink(name, proc.tofupilot_id, proc.tofupilot_name)
        for name, proc in config.procedures.items()
    }
    try:
        with TofuPilotClient(settings.url, key, timeout_s=timeout_s) as client:
            if settings.api == "v1":
                client.list_runs_v1(V1_PROBE_SERIAL)
                return True, [
                    f"tofupilot: {settings.url}: the v1 API accepts the key; v1 identifies "
                    "procedures by name: "
                    + ", ".join(f"{k} as {link.name!r}" for k, link in links.items())
                ]
            who = client.whoami()
            available = available_procedures(client)
    except ApiError as exc:
        if exc.status == 401:
            return False, [f"tofupilot: the API key in ${env} was refused: check it ({exc})"]
        return False, [f"tofupilot: {settings.url}: {exc}"]
    except TofuPilotError as exc:
        return False, [f"tofupilot: cannot reach {settings.url}: {exc}"]
    org = (who.get("organization") or {}).get("name") or "?"
    if available.kind == "station":
        lines = [f"tofupilot: {settings.url}: station key for {available.owner!r} ({org})"]
    else:
        user = who.get("user") or {}
        name = user.get("email") or user.get("name") or "?"
        lines = [
            f"tofupilot: {settings.url}: a user key ({name}, {org}); runs will be created as "
            "this user. A station key is recommended for a bench."
        ]
    ok = True
    for link in links.values():
        line, matched = _procedure_line(link, available)
        ok = ok and matched
        lines.append(line)
    return ok, lines


def _procedure_line(link: ProcedureLink, available: Available) -> tuple[str, bool]:
    """One procedure's line: its id, and how to pin it (or why it has none)."""
    try:
        resolved = match_procedure(link, available)
    except Unresolved as exc:
        return f"tofupilot: procedure {link.key}: NOT usable: {exc.advice}", False
    where = "linked to" if available.kind == "station" else "in"
    if resolved.source == "station.yaml":
        return (
            f"tofupilot: procedure {link.key}: id {resolved.id} ({resolved.name!r}) is {where} "
            f"{available.where}",
            True,
        )
    return (
        f"tofupilot: procedure {link.key}: {resolved.name!r} is {where} {available.where} with "
        f"id {resolved.id}; pin it in station.yaml under procedures.{link.key}:\n"
        f"    tofupilot_id: {resolved.id}",
        True,
    )
