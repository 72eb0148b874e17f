"""`station check`'s TofuPilot part: is the key accepted, is it a station key, and may it write
runs for every procedure in station.yaml?

A station key may create runs only for the procedures linked to its station (a 403 otherwise), and
the API has no endpoint to link them: the dashboard does. Finding that out here, before the first
unit is tested, beats finding it in a parked upload.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Protocol

from station.tofupilot.client import ApiError, TofuPilotClient, TofuPilotError, api_key_problem


class ReportingSettings(Protocol):
    """What `check_tofupilot` reads of station.yaml's `tofupilot:` section."""

    @property
    def url(self) -> str: ...

    @property
    def api_key_env(self) -> str: ...


class CheckedConfig(Protocol):
    """What `check_tofupilot` reads of a station config (`StationConfig` has it: this layer
    does not import the config layer)."""

    @property
    def tofupilot(self) -> ReportingSettings: ...

    @property
    def procedures(self) -> Mapping[str, object]: ...


CHECK_TIMEOUT_S = 5.0


def check_tofupilot(
    config: CheckedConfig, *, timeout_s: float = CHECK_TIMEOUT_S
) -> tuple[bool, list[str]]:
    """Call whoami and stations/current; return (ok, lines to print).

    Not ok: no key, key refused, server unreachable, or a procedure not linked to this station.
    A user key is ok (runs are created as that user) but reported, since benches should use
    station keys.
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
    procedures = list(config.procedures)
    lines: list[str] = []
    try:
        with TofuPilotClient(settings.url, key, timeout_s=timeout_s) as client:
            who = client.whoami()
            org = (who.get("organization") or {}).get("name") or "?"
            if who.get("type") != "station":
                user = who.get("user") or {}
                name = user.get("email") or user.get("name") or "?"
                return True, [
                    f"tofupilot: {settings.url}: a user key ({name}, {org}); runs will be "
                    "created as this user. A station key is recommended for a bench."
                ]
            station = who.get("station") or {}
            current = client.current_station()
    except ApiError as exc:
        if exc.status == 401:
            return False, [f"tofupilot: the API key in ${env} was refused: check it ({exc})"]
        return False, [f"tofupilot: {settings.url}: {exc}"]
    except TofuPilotError as exc:
        return False, [f"tofupilot: cannot reach {settings.url}: {exc}"]
    name = current.get("name") or station.get("name") or "?"
    lines.append(f"tofupilot: {settings.url}: station key for {name!r} ({org})")
    linked: set[str] = set()
    for item in current.get("procedures") or []:
        if isinstance(item, dict):
            linked.update(str(item[k]) for k in ("id", "name") if item.get(k))
    ok = True
    for procedure_id in procedures:
        if procedure_id in linked:
            lines.append(f"tofupilot: procedure {procedure_id} is linked to {name!r}")
        else:
            ok = False
            lines.append(
                f"tofupilot: procedure {procedure_id} is NOT linked to station {name!r}: its runs "
                f"would be refused; link procedure {procedure_id} to station {name} in TofuPilot"
            )
    return ok, lines
