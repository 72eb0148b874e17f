"""A unit's runs (`station history SN`) and route checks (`requires_passed`, retests).

`unit_history` merges what TofuPilot knows of a unit (`GET /v2/runs?serial_numbers=SN`, every
page up to a limit, newest first; with `tofupilot.api: v1`, `GET /api/v1/runs?serial_number=SN`)
with this station's runs that are not uploaded yet (the outbox's pending runs, read-only), newest
first. A pending run TofuPilot already has (its run id is known) is shown once, as TofuPilot's.
When TofuPilot cannot be asked (no API key, the server unreachable or refusing, or no answer
within the time bound) the local runs are shown alone and `UnitHistory.note` says why.

`unit_route` is the ONE check a run makes before any instrument opens, for a single run
(`station run`) and for each unit of the production loop (`station run --loop`: the loop calls
it per unit, after the scan and before the unit's run). From the unit's history it decides:

- `refusal`: the procedure's `requires_passed` (e.g. `[ICT]`) names a procedure whose latest
  run on this unit is not PASS, or that never ran on it: the run must not start (the CLI exits 2,
  as for a usage error). The text names the procedure, the last outcome and its date (local
  time), or says no run of it was found, and where it looked;
- `retest_note`: this procedure already ran on this unit: `retest 2, last FAIL 2026-11-30 10:02`
  (the number of earlier runs of it, the latest one's outcome and local date), for the header.

A required procedure is matched among TofuPilot's runs by TofuPilot's id when it is known
(`tofupilot_id` in station.yaml, or the id remembered when a run of it was uploaded), else by
name (`tofupilot_name` or the key, case-insensitively); among local runs by its station.yaml key.
Simulated runs (`--sim`, marked in the record and in the uploaded metadata) never satisfy a
route check of a real run: a bench demo must not let a unit skip ICT.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from station.tofupilot.client import TofuPilotClient, TofuPilotError, TransportError
from station.tofupilot.outbox import LOCAL_ONLY, Outbox, RunStatus
from station.tofupilot.resolve import upload_target

__all__ = [
    "DEFAULT_LIMIT",
    "ROUTE_TIMEOUT_S",
    "TOFUPILOT",
    "UnitHistory",
    "UnitRoute",
    "UnitRun",
    "local_time",
    "unit_history",
    "unit_route",
]

TOFUPILOT = "TofuPilot"
DEFAULT_LIMIT = 50
HISTORY_TIMEOUT_S = 10.0  # `station history`: the whole TofuPilot query, all pages
ROUTE_TIMEOUT_S = 3.0  # a route check before a run: the operator is waiting
ROUTE_LIMIT = 200  # runs of a unit a route check reads at most (newest first)
PAGE_SIZE = 100  # the API's maximum page


# -- what the config must offer (station.config is a layer above: described, not imported) ------


class _ProcedureSettings(Protocol):
    @property
    def tofupilot_id(self) -> str | None: ...
    @property
    def tofupilot_name(self) -> str | None: ...
    @property
    def requires_passed(self) -> Sequence[str]: ...


class _StationInfo(Protocol):
    @property
    def name(self) -> str: ...


class _TofuPilotSettings(Protocol):
    @property
    def url(self) -> str: ...
    @property
    def api(self) -> str: ...
    @property
    def api_key_env(self) -> str: ...


class _StationSettings(Protocol):
    @property
    def station(self) -> _StationInfo: ...
    @property
    def tofupilot(self) -> _TofuPilotSettings: ...
    @property
    def procedures(self) -> Mapping[str, _ProcedureSettings]: ...
    @property
    def data_path(self) -> Path: ...


# -- results --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class UnitRun:
    """One run of a unit, from TofuPilot or from this station's pending runs."""

    procedure: str  # TofuPilot's name of the procedure, or the station.yaml key (local runs)
    outcome: str | None
    started_at: datetime | None  # UTC
    station: str | None
    source: str  # TOFUPILOT, or the local upload state ("queued", "parked", ...)
    procedure_id: str | None = None  # TofuPilot's id of the procedure, when from TofuPilot
    run_id: str | None = None  # TofuPilot's id of the run, when it has one
    simulated: bool = False
    run_dir: Path | None = None  # local runs

    @property
    def where(self) -> str:
        return TOFUPILOT if self.source == TOFUPILOT else f"local ({self.source})"


@dataclass(frozen=True)
class UnitHistory:
    serial: str
    runs: list[UnitRun]  # newest first
    online: bool  # TofuPilot answered
    note: str | None = None  # why TofuPilot's runs are missing, or that the list was cut
    more: bool = False  # TofuPilot has more runs of the unit than were read
    offline_reason: str | None = None  # in a few words: "TofuPilot unreachable", ...

    @property
    def source(self) -> str:
        """Where the runs came from, as a route check's message says it."""
        if self.online:
            return TOFUPILOT
        return f"the runs recorded here and not uploaded yet ({self.offline_reason})"


@dataclass(frozen=True)
class UnitRoute:
    """What `unit_route` decided for one unit about to be tested."""

    refusal: str | None  # the run must not start, and why
    retest_note: str | None  # `retest 2, last FAIL 2026-11-30 10:02`, or None (first test)
    source: str  # where the runs came from: "TofuPilot", or local runs and why
    history: UnitHistory | None = None  # None when there was nothing to check


# -- history ---------------------------------------------------------------------------------


def local_time(when: datetime | None) -> str:
    """`2026-11-30 10:02`: the bench's local date and time, as operators read it."""
    return when.astimezone().strftime("%Y-%m-%d %H:%M") if when is not None else "?"


def unit_history(
    config: _StationSettings,
    serial: str,
    *,
    limit: int = DEFAULT_LIMIT,
    timeout_s: float = HISTORY_TIMEOUT_S,
    api_key: str | None = None,
    client_factory: Callable[[], TofuPilotClient] | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> UnitHistory:
    """The unit's runs, newest first: TofuPilot's (up to `limit`, within `timeout_s` for all
    requests) merged with this station's not uploaded yet. Never raises for TofuPilot's sake:
    the note says what went wrong and the local runs are shown.

    `api_key` defaults to the environment variable station.yaml names; `client_factory`
    overrides how the client is made (tests).
    """
    local = _local_runs(config, serial)
    if client_factory is None:
        key = api_key if api_key is not None else _env_key(config.tofupilot.api_key_env)
        if not key:
            reason = f"${config.tofupilot.api_key_env} is not set, TofuPilot was not asked"
            note = f"{reason}: showing the runs recorded here and not uploaded yet"
            return UnitHistory(serial, local[:limit], False, note, offline_reason=reason)
        url = config.tofupilot.url

        def client_factory() -> TofuPilotClient:
            return TofuPilotClient(url, key, timeout_s=timeout_s)

    deadline = clock() + timeout_s
    try:
        with client_factory() as client:
            remote, more = _remote_runs(
                client, config.tofupilot.api, serial, limit, lambda: deadline - clock()
            )
    except TofuPilotError as exc:
        reason = "TofuPilot " + (
            "unreachable" if isinstance(exc, TransportError) else "refused the query"
        )
        note = (
            f"{reason} ({_short(str(exc))}): showing only the runs recorded here and not "
            "uploaded yet"
        )
        return UnitHistory(serial, local[:limit], False, note, offline_reason=reason)
    known = {run.run_id for run in remote if run.run_id}
    merged = remote + [run for run in local if run.run_id is None or run.run_id not in known]
    merged.sort(key=_newest_first)
    cut = f"TofuPilot has more runs of {serial} than the {limit} shown" if more else None
    return UnitHistory(serial, merged[:limit], online=True, note=cut, more=more)


def _env_key(name: str) -> str:
    return os.environ.get(name, "").strip()


def _short(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _newest_first(run: UnitRun) -> tuple[float, str]:
    at = run.started_at.timestamp() if run.started_at is not None else float("-inf")
    return (-at, run.run_id or str(run.run_dir or ""))


def _local_runs(config: _StationSettings, serial: str) -> list[UnitRun]:
    """This station's runs of the unit that TofuPilot does not have yet: the outbox's pending
    runs (read-only: nothing is created, locked or written), newest first."""
    outbox = Outbox(config.data_path, None, api_key_env=config.tofupilot.api_key_env)
    wanted = serial.casefold()  # TofuPilot's serial numbers are case-insensitive
    runs = [
        _local_run(status, config.station.name)
        for status in outbox.pending()
        if (status.serial or "").casefold() == wanted
    ]
    runs.sort(key=_newest_first)
    return runs


def _local_run(status: RunStatus, station: str) -> UnitRun:
    return UnitRun(
        procedure=status.procedure or "?",
        outcome=status.outcome,
        started_at=_parse_time(status.started_at),
        station=station,
        source=status.state,
        run_id=status.run_id,
        # A simulated run stays local (unless --upload-sim): that is what this state says.
        simulated=status.state == LOCAL_ONLY,
        run_dir=status.run_dir,
    )


def _remote_runs(
    client: TofuPilotClient,
    api: str,
    serial: str,
    limit: int,
    remaining: Callable[[], float],
) -> tuple[list[UnitRun], bool]:
    """TofuPilot's runs of `serial` (newest first, at most `limit`) and whether it has more."""

    def timeout() -> float:
        left = remaining()
        if left <= 0:
            raise TransportError(
                "timeout", f"no complete answer within the time allowed ({serial})"
            )
        return left

    if api == "v1":
        items = client.list_runs_v1(serial, timeout_s=timeout())
        found = [run for run in map(_v1_run, items) if run is not None]
        found.sort(key=_newest_first)
        return found[:limit], len(found) > limit
    runs: list[UnitRun] = []
    cursor: int | None = None
    while True:
        page = client.list_runs(
            serial_number=serial,
            limit=min(PAGE_SIZE, max(limit - len(runs), 1)),
            cursor=cursor,
            timeout_s=timeout(),
        )
        data = page.get("data")
        for item in data if isinstance(data, list) else []:
            run = _v2_run(item)
            if run is not None:
                runs.append(run)
        meta = _dict(page.get("meta"))
        next_cursor = meta.get("next_cursor")
        has_more = bool(meta.get("has_more")) and isinstance(next_cursor, int)
        if len(runs) >= limit or not has_more or next_cursor == cursor:
            return runs[:limit], has_more or len(runs) > limit
        cursor = next_cursor


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _station_of(item: Mapping[str, Any]) -> str | None:
    station = _text(_dict(item.get("created_by_station")).get("name"))
    if station is not None:
        return station
    user = _text(_dict(item.get("created_by_user")).get("name"))
    return f"user {user}" if user is not None else None


def _v2_run(item: Any) -> UnitRun | None:
    """A `GET /v2/runs` item; None when it is not a run (an unusable item is skipped)."""
    if not isinstance(item, dict):
        return None
    procedure, metadata = _dict(item.get("procedure")), _dict(item.get("metadata"))
    return UnitRun(
        procedure=_text(procedure.get("name")) or _text(procedure.get("id")) or "?",
        outcome=_text(item.get("outcome")),
        started_at=_parse_time(item.get("started_at")),
        station=_station_of(item),
        source=TOFUPILOT,
        procedure_id=_text(procedure.get("id")),
        run_id=_text(item.get("id")),
        simulated=metadata.get("simulated") is True,
    )


def _v1_run(item: Any) -> UnitRun | None:
    """A `GET /api/v1/runs` item (the v1 client's `Run`)."""
    if not isinstance(item, dict):
        return None
    procedure = _dict(item.get("procedure"))
    return UnitRun(
        procedure=_text(procedure.get("name")) or _text(procedure.get("id")) or "?",
        outcome=_text(item.get("outcome")),
        started_at=_parse_time(item.get("started_at")),
        station=_station_of(item),
        source=TOFUPILOT,
        procedure_id=_text(procedure.get("id")),
        run_id=_text(item.get("id")),
    )


# -- route checks ----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Wanted:
    """How runs of one procedure are recognised."""

    label: str  # as the operator reads it: the requires_passed entry or the procedure key
    key: str | None  # the station.yaml key, if this station knows the procedure
    ids: frozenset[str]  # TofuPilot ids (lower case): when known, TofuPilot's runs match by id
    names: frozenset[str]  # casefolded names TofuPilot's runs match by, without an id

    def matches(self, run: UnitRun) -> bool:
        if run.source != TOFUPILOT:  # a local run: by its station.yaml key
            return run.procedure.casefold() in self.names
        if self.ids:
            return (run.procedure_id or "").lower() in self.ids
        return run.procedure.casefold() in self.names


def _wanted(config: _StationSettings, name: str) -> _Wanted:
    key = next((k for k in config.procedures if k.casefold() == name.casefold()), None)
    if key is None:  # a procedure of another station: known by its TofuPilot name (or id)
        ids = frozenset({name.lower()}) if _is_uuid(name) else frozenset()
        return _Wanted(name, None, ids, frozenset({name.casefold()}))
    link = upload_target(config).link(key)
    known = link.tofupilot_id
    if known is None:
        known = upload_target(config).cache().get(config.tofupilot.url.rstrip("/"), link.name)
    ids = frozenset({known.lower()}) if known else frozenset()
    return _Wanted(key, key, ids, frozenset({key.casefold(), link.name.casefold()}))


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def unit_route(
    config: _StationSettings,
    procedure_key: str,
    serial: str,
    *,
    simulated: bool = False,
    timeout_s: float = ROUTE_TIMEOUT_S,
    api_key: str | None = None,
    client_factory: Callable[[], TofuPilotClient] | None = None,
) -> UnitRoute:
    """May `serial` be tested with `procedure_key` now, and is it a retest? Called before any
    instrument opens, by `station run` and by the production loop for each unit.

    Reads the unit's history once (TofuPilot within `timeout_s`, else this station's runs not
    uploaded yet; `source` says which). A simulated run (`simulated`) may count simulated runs;
    a real one never does.
    """
    history = unit_history(
        config,
        serial,
        limit=ROUTE_LIMIT,
        timeout_s=timeout_s,
        api_key=api_key,
        client_factory=client_factory,
    )
    source = history.source
    runs = [run for run in history.runs if simulated or not run.simulated]
    refusal = None
    settings = config.procedures.get(procedure_key)
    for required in settings.requires_passed if settings is not None else []:
        wanted = _wanted(config, required)
        latest = next((run for run in runs if wanted.matches(run)), None)
        if latest is None:
            refusal = (
                f"{procedure_key} requires a PASS of {wanted.label} first: no run of "
                f"{wanted.label} found for {serial} in {source}"
            )
        elif latest.outcome != "PASS":
            refusal = (
                f"{procedure_key} requires a PASS of {wanted.label} first: the last run of "
                f"{wanted.label} on {serial} was {latest.outcome or 'unfinished'} on "
                f"{local_time(latest.started_at)} ({latest.where}{_at(latest)})"
            )
        if refusal is not None:
            break
    this = _wanted(config, procedure_key)
    earlier = [run for run in runs if this.matches(run)]
    note = None
    if earlier:
        last = earlier[0]
        count = f"{len(earlier)}+" if history.more and len(earlier) >= ROUTE_LIMIT else len(earlier)
        note = f"retest {count}, last {last.outcome or '?'} {local_time(last.started_at)}"
    return UnitRoute(refusal, note, source, history)


def _at(run: UnitRun) -> str:
    return f", station {run.station}" if run.station else ""
