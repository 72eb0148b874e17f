"""TofuPilot's own id of a procedure (a UUID), from station.yaml or resolved by name.

The v2 API takes `procedure_id` as TofuPilot's id of the procedure, a UUID: a name such as
`FVT1` gets 400 "Invalid uuid". station.yaml names procedures by a local key; the id comes from
`procedures.<KEY>.tofupilot_id` when it is pinned there, else it is resolved by name
(`tofupilot_name`, or else the key, matched case-insensitively) among

- the procedures linked to this station (`GET /v2/stations/current`) for a station key, or
- the organization's procedures (`GET /v2/procedures`, every page) for a user key

(`GET /v2/whoami` says which key it is). Resolution happens when a run is uploaded, never when
it is tested: a run recorded offline, or parked because its procedure was not linked yet,
uploads once the link exists. The answer is remembered in `<data_dir>/.tofupilot/procedures.json`
(keyed by server URL and name, written atomically), so a station resolves a procedure once and
uploads offline-recorded runs without asking again. An id the server refuses (403/404 on run
creation) is forgotten (`ProcedureCache.forget`), so the next try resolves it afresh.

No match, or several procedures of that name: `Unresolved`, whose hint names the station, the
procedure and the candidate ids, and the line that pins the id in station.yaml.
"""

from __future__ import annotations

import contextlib
import json
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from station.storage.journal import write_atomic
from station.tofupilot.client import TofuPilotClient

__all__ = [
    "CACHE_DIR",
    "CACHE_FILE",
    "Available",
    "ProcedureCache",
    "ProcedureLink",
    "Resolved",
    "Unresolved",
    "UploadTarget",
    "available_procedures",
    "match_procedure",
    "pin_line",
    "resolve_procedure",
    "upload_target",
]

CACHE_DIR = ".tofupilot"  # under the data directory
CACHE_FILE = "procedures.json"
CACHE_VERSION = 1
MAX_PAGES = 100  # GET /v2/procedures pages read at most (100 procedures each)
MAX_CANDIDATES_SHOWN = 10

#: What a step calls before each request for its timeout (raises when no time is left).
Timeout = Callable[[], float | None]


@dataclass(frozen=True)
class ProcedureLink:
    """How one procedure of station.yaml is known in TofuPilot."""

    key: str  # the station.yaml key, which is the record's `procedure_id`
    tofupilot_id: str | None = None  # pinned in station.yaml: used as it is
    tofupilot_name: str | None = None  # the dashboard's name, when it differs from the key

    @property
    def name(self) -> str:
        """The name resolved in TofuPilot (and the v1 API's procedure identifier)."""
        return self.tofupilot_name or self.key


@dataclass(frozen=True)
class UploadTarget:
    """What an upload needs of station.yaml besides the server and its key: which API, how the
    procedures are known in TofuPilot, and where resolved ids are remembered.

    The default (v2, no links, no cache) resolves every procedure by its key and remembers
    nothing; `station` builds one from station.yaml and its data directory.
    """

    api: str = "v2"
    procedures: Mapping[str, ProcedureLink] = field(default_factory=dict)
    cache_dir: Path | None = None

    def link(self, key: str) -> ProcedureLink:
        """The link of procedure `key` (a procedure no longer in station.yaml: by its key)."""
        return self.procedures.get(key) or ProcedureLink(key)

    def cache(self) -> ProcedureCache:
        return ProcedureCache(self.cache_dir)


@dataclass(frozen=True)
class Resolved:
    """A procedure's TofuPilot id and where it came from: "station.yaml", "cache" or "server"."""

    id: str
    name: str
    source: str
    via: str = ""  # the station or organization it was found in


class Unresolved(Exception):
    """The procedure's id cannot be found: none or several procedures of that name, or a
    pinned id that is not among the available procedures.

    `message` says what was found (for upload.json), `advice` what to do about it, `hint` the
    advice for a parked run (then retry it), `candidates` are `(id, name)` pairs: the ones of
    that name, or else the available ones.
    """

    RETRY = "then run 'station upload --retry-parked'"

    def __init__(self, message: str, advice: str, candidates: list[tuple[str, str]]) -> None:
        super().__init__(message)
        self.message, self.advice, self.candidates = message, advice, candidates
        self.hint = f"{advice}; {self.RETRY}"


@dataclass(frozen=True)
class Available:
    """The procedures a key may create runs for: `kind` "station" (the station's linked ones)
    or "user" (the organization's); `owner` names the station or organization."""

    kind: str
    owner: str
    procedures: list[tuple[str, str]]  # (id, name)

    @property
    def where(self) -> str:
        if self.kind == "station":
            return f"station {self.owner!r}"
        return f"organization {self.owner!r}"


class _ProcedureSettings(Protocol):
    """What `upload_target` reads of a procedure in station.yaml (`ProcedureConfig`)."""

    @property
    def tofupilot_id(self) -> str | None: ...

    @property
    def tofupilot_name(self) -> str | None: ...


class _ApiSettings(Protocol):
    @property
    def api(self) -> str: ...


class _StationSettings(Protocol):
    """What `upload_target` reads of a station config (`StationConfig` has it: this layer does
    not import the config layer)."""

    @property
    def tofupilot(self) -> _ApiSettings: ...

    @property
    def procedures(self) -> Mapping[str, _ProcedureSettings]: ...

    @property
    def data_path(self) -> Path: ...


def upload_target(config: _StationSettings) -> UploadTarget:
    """The upload target of a station config: its API, its procedures' TofuPilot ids and names,
    and `<data_dir>/.tofupilot/` for the resolved ids."""
    links = {
        key: ProcedureLink(key, settings.tofupilot_id, settings.tofupilot_name)
        for key, settings in config.procedures.items()
    }
    return UploadTarget(config.tofupilot.api, links, Path(config.data_path) / CACHE_DIR)


def pin_line(key: str, procedure_id: str) -> str:
    """The station.yaml lines that pin `procedure_id` for procedure `key`."""
    return f"procedures:\n  {key}:\n    tofupilot_id: {procedure_id}"


def resolve_procedure(
    client: TofuPilotClient,
    link: ProcedureLink,
    *,
    cache: ProcedureCache | None = None,
    timeout: Timeout = lambda: None,
) -> Resolved:
    """TofuPilot's id of `link`'s procedure: pinned, remembered, or asked of the server.

    Raises `Unresolved` (none or several of that name) and the client's errors (a transport
    error: try later; an ApiError: the caller's hint says what to do).
    """
    if link.tofupilot_id:
        return Resolved(link.tofupilot_id, link.name, "station.yaml")
    if cache is not None:
        remembered = cache.get(client.url, link.name)
        if remembered is not None:
            return Resolved(remembered, link.name, "cache")
    available = available_procedures(client, timeout=timeout)
    resolved = match_procedure(link, available)
    if cache is not None:
        cache.put(client.url, link.name, resolved.id, found_as=resolved.name, via=resolved.via)
    return resolved


def match_procedure(link: ProcedureLink, available: Available) -> Resolved:
    """`link`'s procedure among `available`: by its pinned id when it has one (which must be
    among them), else by name, case-insensitively. Raises `Unresolved`."""
    if link.tofupilot_id:
        wanted_id = link.tofupilot_id.lower()
        for pid, name in available.procedures:
            if pid.lower() == wanted_id:
                return Resolved(pid, name, "station.yaml", available.where)
        raise _unresolved(link, available, [])
    wanted = _fold(link.name)
    matches = [(pid, name) for pid, name in available.procedures if _fold(name) == wanted]
    if len(matches) == 1:
        procedure_id, name = matches[0]
        return Resolved(procedure_id, name, "server", available.where)
    raise _unresolved(link, available, matches)


def available_procedures(client: TofuPilotClient, *, timeout: Timeout = lambda: None) -> Available:
    """The procedures this key may create runs for (whoami, then the station's linked ones or
    every page of the organization's)."""
    who = client.whoami(timeout_s=timeout())
    if who.get("type") == "station":
        station = client.current_station(timeout_s=timeout())
        owner = _text(station.get("name")) or _text((who.get("station") or {}).get("name"))
        return Available("station", owner or "?", _pairs(station.get("procedures")))
    organization = _text((who.get("organization") or {}).get("name")) or "?"
    procedures: list[tuple[str, str]] = []
    cursor: int | None = None
    for _ in range(MAX_PAGES):
        page = client.list_procedures(cursor=cursor, timeout_s=timeout())
        procedures += _pairs(page.get("data"))
        meta = page.get("meta")
        if not isinstance(meta, dict):
            break
        next_cursor = meta.get("next_cursor")
        if not meta.get("has_more") or not isinstance(next_cursor, int) or next_cursor == cursor:
            break
        cursor = next_cursor
    return Available("user", organization, procedures)


def _unresolved(
    link: ProcedureLink, available: Available, matches: list[tuple[str, str]]
) -> Unresolved:
    pin = f"procedures.{link.key}.tofupilot_id"
    named = f"procedure {link.name!r}" + (
        f" (procedures.{link.key} in station.yaml)" if link.name != link.key else ""
    )
    if matches:
        ids = ", ".join(pid for pid, _ in matches[:MAX_CANDIDATES_SHOWN])
        message = f"{len(matches)} procedures named {link.name!r} in {available.where}: {ids}"
        advice = (
            f"{message}: pin the right one in station.yaml as `{pin}: <id>` "
            f"(e.g. `tofupilot_id: {matches[0][0]}` under procedures.{link.key})"
        )
        return Unresolved(message, advice, matches)
    shown = available.procedures[:MAX_CANDIDATES_SHOWN]
    listed = ", ".join(f"{name} ({pid})" for pid, name in shown) or "none"
    if len(available.procedures) > len(shown):
        listed += f" and {len(available.procedures) - len(shown)} more"
    if link.tofupilot_id:
        linked = "linked to" if available.kind == "station" else "in"
        message = f"{pin} {link.tofupilot_id} is not {linked} {available.where}"
        action = "link that procedure in TofuPilot, or fix the id in station.yaml"
    elif available.kind == "station":
        message = f"{named} is not linked to {available.where} in TofuPilot"
        action = (
            f"link it to station {available.owner!r} in TofuPilot (the station's page, Link "
            "procedure), or, if it has another name there, set "
            f"`tofupilot_name:` or `tofupilot_id:` under procedures.{link.key} in station.yaml"
        )
    else:
        message = f"{named} does not exist in {available.where}"
        action = (
            f"create it in TofuPilot, or set `tofupilot_name:` or `tofupilot_id:` under "
            f"procedures.{link.key} in station.yaml"
        )
    return Unresolved(message, f"{message} (available: {listed}): {action}", shown)


class ProcedureCache:
    """Resolved procedure ids, remembered in `<directory>/procedures.json` by server and name.

    A cache: an unreadable or damaged file is treated as empty (it is rewritten at the next
    resolution), and a write that fails is ignored (the id is resolved again next time). With
    `directory` None nothing is remembered.
    """

    _lock = threading.Lock()  # one writer at a time in this process (write_atomic's temp name)

    def __init__(self, directory: Path | None) -> None:
        self.directory = directory
        self.path = directory / CACHE_FILE if directory is not None else None

    def get(self, url: str, name: str) -> str | None:
        entry = self._entries().get(_cache_key(url, name))
        value = entry.get("id") if isinstance(entry, dict) else None
        return value if isinstance(value, str) and _is_uuid(value) else None

    def put(
        self, url: str, name: str, procedure_id: str, *, found_as: str = "", via: str = ""
    ) -> None:
        """Remember `procedure_id` for `name` on the server at `url` (`found_as`: its name
        there, `via`: the station or organization it was found in)."""
        entry = {
            "id": procedure_id,
            "name": found_as or name,
            "found_in": via,
            "resolved_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        with self._editing() as entries:
            entries[_cache_key(url, name)] = entry

    def forget(self, url: str, name: str, procedure_id: str | None = None) -> bool:
        """Drop what is remembered for `name` (only if it is `procedure_id`, when given)."""
        key = _cache_key(url, name)
        with self._editing() as entries:
            entry = entries.get(key)
            if entry is None:
                return False
            if procedure_id is not None and (
                not isinstance(entry, dict) or entry.get("id") != procedure_id
            ):
                return False
            del entries[key]
            return True

    def _entries(self) -> dict[str, Any]:
        if self.path is None:
            return {}
        try:
            data = json.loads(self.path.read_bytes())
        except (OSError, ValueError):
            return {}
        entries = data.get("procedures") if isinstance(data, dict) else None
        return entries if isinstance(entries, dict) else {}

    @contextlib.contextmanager
    def _editing(self) -> Iterator[dict[str, Any]]:
        if self.path is None or self.directory is None:
            yield {}
            return
        with self._lock:
            entries = self._entries()
            before = json.dumps(entries, sort_keys=True)
            yield entries
            if json.dumps(entries, sort_keys=True) == before:
                return
            data = {"version": CACHE_VERSION, "procedures": entries}
            with contextlib.suppress(OSError):  # a cache: the id is resolved again next time
                self.directory.mkdir(parents=True, exist_ok=True)
                write_atomic(self.path, (json.dumps(data, indent=2) + "\n").encode())


def _cache_key(url: str, name: str) -> str:
    return f"{url.rstrip('/')} {_fold(name)}"


def _fold(name: str) -> str:
    return name.strip().casefold()


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _pairs(items: Any) -> list[tuple[str, str]]:
    """(id, name) of each well-formed procedure in a server list."""
    out = []
    for item in items if isinstance(items, list) else []:
        if isinstance(item, dict) and isinstance(item.get("id"), str) and item["id"]:
            out.append((item["id"], _text(item.get("name"))))
    return out
