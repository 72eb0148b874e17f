"""The station as the operator page sees it: the line's state, kept from its events, and the
commands a page or a client of the JSON API may give.

`StationHub` sits between the line (`station.line.Line`, which tests unit after unit on one
open bench) and the web server:

- **State.** Every event on the line's bus is folded, on the thread that published it (a
  sink: no extra thread between a phase's end and the page), into the state `GET /api/state`
  returns (the unit under test with its phases and measurements, the open prompt, counters,
  last units, instruments) and handed, serialised once, to every connected event stream
  through the server's event loop. A stream first gets the whole state
  (`{"type": "state", ...}`) and then every event after it, under one lock, so a page that
  connects (or reconnects) mid-unit misses nothing and sees nothing twice.
- **Commands.** `start` checks the scan first (a bad one is refused before anything runs,
  with the pattern) and runs the unit on a thread of its own (`station-unit`): the line's
  `run_unit` blocks for the whole unit and the server must go on answering. One unit at a
  time: a second start while one runs is refused (409). `abort` stops the unit in progress
  (teardown and the safe state still run). `answer` answers the open prompt.
- **Images.** A prompt's picture is served from the procedure's own directory only: the path
  is resolved and must stay inside that directory, be a file and have an image suffix, and
  only the picture of a prompt this hub has seen can be asked for.

Errors the API reports are `ApiError(status, message)`. Nothing here reads the TofuPilot key;
events carry what the line publishes, which never includes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, is_dataclass
from pathlib import Path
from typing import Any, Protocol

from station.line.events import EventBus, jsonable, utc_timestamp

__all__ = [
    "IMAGE_TYPES",
    "ApiError",
    "ClientStream",
    "LineLike",
    "ProcedureInfo",
    "StationHub",
]

IMAGE_TYPES = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
    ".webp": "image/webp",
    ".svg": "image/svg+xml",
}
MAX_LOG_LINES_SHOWN = 50  # per phase in the page's state (the record keeps them all)
CLIENT_QUEUE_SIZE = 5_000  # events a slow page may lag before it is sent the whole state again
ANSWER_GRACE_S = 2.0  # an answer to a prompt announced but not open yet waits this long
UNIT_JOIN_S = 600.0  # how long closing waits for a unit's teardown (the bench must end safe)


class ApiError(Exception):
    """A command refused: `status` is the HTTP status, `message` says why (shown as is)."""

    def __init__(self, status: int, message: str, **details: Any) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.details = details


class LineLike(Protocol):
    """What the hub uses of `station.line.Line` (a test may hand in its own)."""

    def check_serial(self, procedure: str, serial: str) -> Any: ...

    def run_unit(self, procedure: str, serial: str) -> Any: ...

    def abort(self) -> bool: ...

    def instrument_status(self) -> dict[str, str]: ...


class PromptsLike(Protocol):
    """What the hub uses of `station.line.prompts.PagePrompts`."""

    def pending(self) -> list[Any]: ...

    def answer(self, prompt_id: str, raw: object) -> Any: ...

    def close(self, reason: str = ...) -> None: ...


@dataclass(frozen=True)
class ProcedureInfo:
    """A procedure as the page offers it."""

    name: str
    directory: Path  # where its module lives: prompt images are served from here only
    serial_pattern: str | None = None
    part_number: str | None = None
    revision: str | None = None
    phases: list[str] = field(default_factory=list)

    def public(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "serial_pattern": self.serial_pattern,
            "part_number": self.part_number,
            "revision": self.revision,
            "phases": list(self.phases),
        }


class ClientStream:
    """One event-stream client: an asyncio queue fed through the event loop.

    Items are JSON text. A client that falls `CLIENT_QUEUE_SIZE` items behind has its queue
    replaced by the whole state (it re-reads the present instead of the backlog). `None` means
    the hub is closing: the stream ends.
    """

    def __init__(self, hub: StationHub, loop: asyncio.AbstractEventLoop) -> None:
        self._hub = hub
        self._loop = loop
        self.queue: asyncio.Queue[tuple[int, str] | None] = asyncio.Queue()

    def offer(self, item: tuple[int, str] | None) -> None:
        """Queue `item` (the event loop's thread only)."""
        if item is not None and self.queue.qsize() >= CLIENT_QUEUE_SIZE:
            while not self.queue.empty():
                self.queue.get_nowait()
            item = self._hub.state_item()
        self.queue.put_nowait(item)

    async def get(self) -> tuple[int, str] | None:
        return await self.queue.get()

    def close(self) -> None:
        self._hub.unsubscribe(self)


class StationHub:
    """The line's state and commands for the web server (see the module docstring)."""

    def __init__(
        self,
        line: LineLike,
        bus: EventBus,
        prompts: PromptsLike,
        *,
        station_name: str,
        simulated: bool,
        procedures: Mapping[str, ProcedureInfo],
        counters: Callable[[], Any] | None = None,
        recent: Callable[[], Any] | None = None,
    ) -> None:
        self._line = line
        self._bus = bus
        self._prompts = prompts
        self._procedures = dict(procedures)
        self._counters = counters
        self._recent = recent
        self._lock = threading.Lock()  # the state, the clients and the sequence number
        self._seq = 0
        self._clients: set[ClientStream] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._unit_thread: threading.Thread | None = None
        self._aborting = False
        self._closed = False
        self.failures: list[str] = []  # events that could not be folded in (a bug: say it)
        self._state: dict[str, Any] = {
            "station": {"name": station_name, "simulated": simulated},
            "procedures": [p.public() for p in self._procedures.values()],
            "busy": False,
            "aborting": False,
            "unit": None,
            "prompt": None,
            "refusal": None,
            "counters": self._read(self._counters),
            "recent": self._read(self._recent) or [],
            "instruments": dict(line.instrument_status()),
        }
        bus.add_sink(self._on_event)

    # -- state ------------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """A copy of the state (`GET /api/state`)."""
        with self._lock:
            copied: dict[str, Any] = json.loads(json.dumps(self._state))
            return copied

    def state_item(self) -> tuple[int, str]:
        """The whole state as a stream item (`{"type": "state", ...}`)."""
        with self._lock:
            return self._state_item_locked()

    def _state_item_locked(self) -> tuple[int, str]:
        event = {"type": "state", "ts": utc_timestamp(), **self._state}
        return self._seq, json.dumps(event, allow_nan=False)

    def recent(self) -> list[Any]:
        """The last units (`GET /api/runs/recent`), newest first."""
        return list(self._read(self._recent) or [])

    @staticmethod
    def _read(source: Callable[[], Any] | None) -> Any:
        if source is None:
            return None
        value = source()
        if is_dataclass(value) and not isinstance(value, type):
            value = asdict(value)
        elif isinstance(value, list):
            value = [asdict(v) if is_dataclass(v) and not isinstance(v, type) else v for v in value]
        return jsonable(value)

    # -- streams ----------------------------------------------------------------------------

    def attach_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        """The server's event loop, where streams are fed (set when the server starts)."""
        self._loop = loop

    def subscribe(self) -> ClientStream:
        """A new stream: the whole state first, then every event (the event loop's thread)."""
        loop = asyncio.get_running_loop()
        client = ClientStream(self, loop)
        with self._lock:
            client.offer(self._state_item_locked())
            if self._closed:
                client.offer(None)
            else:
                self._clients.add(client)
        return client

    def unsubscribe(self, client: ClientStream) -> None:
        with self._lock:
            self._clients.discard(client)

    @property
    def clients(self) -> int:
        with self._lock:
            return len(self._clients)

    def _fan_out(self, item: tuple[int, str] | None) -> None:
        """Hand `item` to every stream (called with the lock held)."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        for client in list(self._clients):
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(client.offer, item)

    def _on_event(self, event: dict[str, Any]) -> None:
        """The bus's sink: called on the publishing thread (the runner's, for a phase's end),
        so an event reaches the streams with one hand-off (to the event loop), not two."""
        try:
            self._publish(event)
        except Exception as exc:  # never raise into the bus: it would drop this sink for good
            self.failures.append(f"{event.get('type')}: {type(exc).__name__}: {exc}")

    def _publish(self, event: dict[str, Any], *, resend_state: bool = False) -> None:
        """Fold `event` into the state and send it to every stream."""
        text = json.dumps(event, allow_nan=False)
        with self._lock:
            self._apply(event)
            self._seq += 1
            self._fan_out((self._seq, text))
            if event.get("type") == "upload":  # the page's list of last units changed
                self._seq += 1
                recent = {"type": "recent", "ts": utc_timestamp(), "units": self._state["recent"]}
                self._fan_out((self._seq, json.dumps(recent, allow_nan=False)))
            if resend_state:
                self._seq += 1
                self._fan_out(self._state_item_locked())

    def _resync(self) -> None:
        """Send the whole state to every stream (after a unit, or a change no event carries)."""
        with self._lock:
            self._seq += 1
            self._fan_out(self._state_item_locked())

    # -- folding events into the state ------------------------------------------------------

    def _apply(self, event: dict[str, Any]) -> None:
        state = self._state
        kind = event.get("type")
        unit = state["unit"]
        if kind == "run_started":
            state["refusal"] = None
            state["unit"] = {
                "run_id": event.get("run_id"),
                "procedure": event.get("procedure"),
                "serial": event.get("serial"),
                "part_number": event.get("part_number"),
                "revision": event.get("revision"),
                "batch_number": event.get("batch_number"),
                "operator": event.get("operator"),
                "simulated": event.get("simulated"),
                "started_at": event.get("started_at") or event.get("ts"),
                "ended_at": None,
                "outcome": None,
                "reason": None,
                "failures": [],
                "error": None,
                "phases": [_planned(name) for name in event.get("phases") or []],
            }
        elif kind == "phase_started" and unit is not None:
            _phase_started(unit["phases"], event)
        elif kind == "measurement" and unit is not None:
            entry = _entry(unit["phases"], event.get("phase"), event.get("attempt"))
            if entry is not None:
                entry["measurements"].append(
                    {
                        key: event.get(key)
                        for key in (
                            "name",
                            "value",
                            "display",
                            "units",
                            "limits",
                            "outcome",
                            "marginal",
                            "marginal_band",
                            "failed",
                        )
                    }
                )
        elif kind == "phase_ended" and unit is not None:
            entry = _entry(unit["phases"], event.get("phase"), event.get("attempt"))
            if entry is not None:
                entry["outcome"] = event.get("outcome")
                entry["running"] = False
                entry["duration_s"] = event.get("duration_s")
                entry["reason"] = event.get("reason")
                entry["error"] = event.get("error")
                entry["teardown"] = bool(event.get("teardown"))
        elif kind == "log" and unit is not None:
            entry = _entry(unit["phases"], event.get("phase"), None)
            if entry is not None:
                logs = entry["logs"]
                if len(logs) < MAX_LOG_LINES_SHOWN:
                    logs.append({"level": event.get("level"), "message": event.get("message")})
                else:
                    entry["logs_dropped"] = entry.get("logs_dropped", 0) + 1
        elif kind == "prompt":
            prompt = dict(event.get("prompt") or {})
            state["prompt"] = prompt
        elif kind == "prompt_answered":
            prompt = state["prompt"]
            if prompt is not None and prompt.get("id") == event.get("id"):
                state["prompt"] = None
            if unit is not None:
                entry = _entry(unit["phases"], (prompt or {}).get("phase"), None)
                if entry is not None and prompt is not None:
                    entry["prompts"].append(
                        {
                            "text": prompt.get("text"),
                            "answer": event.get("answer"),
                            "answered_by": event.get("answered_by"),
                            "error": event.get("error"),
                        }
                    )
        elif kind == "run_ended" and unit is not None:
            unit["outcome"] = event.get("outcome")
            unit["reason"] = event.get("reason")
            unit["failures"] = event.get("failures") or []
            unit["ended_at"] = event.get("ended_at") or event.get("ts")
            unit["duration_s"] = event.get("duration_s")
            state["prompt"] = None
        elif kind == "counters":
            state["counters"] = {k: v for k, v in event.items() if k not in ("type", "ts")}
        elif kind == "instrument_status":
            state["instruments"] = dict(event.get("instruments") or {})
        elif kind == "unit_refused":
            state["refusal"] = {
                "procedure": event.get("procedure"),
                "serial": event.get("serial"),
                "reason": event.get("reason"),
                "pattern": event.get("pattern"),
            }
        elif kind == "upload":
            self._refresh_recent_locked()
        elif kind == "station":  # the hub's own: busy/aborting changed
            state["busy"] = bool(event.get("busy"))
            state["aborting"] = bool(event.get("aborting"))
            if "error" in event:  # the unit could not be tested (an instrument, a bug)
                if unit is None or unit.get("run_id") != event.get("run_id"):
                    # It never started: the unit shown is this one, not the one before it.
                    unit = state["unit"] = _unit_without_run(event)
                unit["error"] = event["error"]
            self._refresh_recent_locked()
            if self._counters is not None:
                state["counters"] = self._read(self._counters)

    def _refresh_recent_locked(self) -> None:
        with contextlib.suppress(Exception):  # the list is a courtesy: never stop the stream
            self._state["recent"] = self._read(self._recent) or []

    # -- commands ---------------------------------------------------------------------------

    def start(self, procedure: object, serial: object) -> dict[str, Any]:
        """Start testing `serial` with `procedure`; ApiError 400 (bad input or scan), 404
        (no such procedure), 409 (a unit is under test, or the station is closing)."""
        if not isinstance(procedure, str) or not procedure:
            raise ApiError(400, "name the procedure to run ('procedure')")
        if not isinstance(serial, str) or not serial.strip():
            raise ApiError(400, "the serial number is empty: scan or type it ('serial')")
        serial = serial.strip()
        if procedure not in self._procedures:
            known = ", ".join(sorted(self._procedures)) or "none"
            raise ApiError(404, f"no procedure {procedure!r} on this station (it has {known})")
        with self._lock:
            if self._closed:
                raise ApiError(409, "the station is closing")
            if self._state["busy"]:
                unit = self._state["unit"] or {}
                raise ApiError(
                    409,
                    f"a unit is under test ({unit.get('serial', '?')}): wait for its verdict "
                    "or abort it",
                )
            self._state["busy"] = True  # claimed: no second start gets past here
        try:
            try:
                self._line.check_serial(procedure, serial)
            except ValueError as exc:  # ScanRefused and the serial checks are ValueErrors
                raise ApiError(400, str(exc), serial=serial, procedure=procedure) from None
        except BaseException:
            with self._lock:
                self._state["busy"] = False
            raise
        thread = threading.Thread(
            target=self._run_unit, args=(procedure, serial), name="station-unit", daemon=False
        )
        self._unit_thread = thread
        self._aborting = False
        self._publish({"type": "station", "ts": utc_timestamp(), "busy": True, "aborting": False})
        thread.start()
        return {"started": True, "procedure": procedure, "serial": serial}

    def _run_unit(self, procedure: str, serial: str) -> None:
        error: str | None = None
        try:
            self._line.run_unit(procedure, serial)
        except Exception as exc:  # an instrument that cannot be opened, a bug: say it
            error = f"{type(exc).__name__}: {exc}" if not str(exc) else str(exc)
        finally:
            event: dict[str, Any] = {
                "type": "station",
                "ts": utc_timestamp(),
                "busy": False,
                "aborting": False,
            }
            if error is not None:
                event.update(error=error, procedure=procedure, serial=serial)
                with self._lock:
                    started = self._state["unit"]
                    if (
                        started is not None
                        and started.get("serial") == serial
                        and not (started.get("ended_at"))
                    ):
                        event["run_id"] = started.get("run_id")  # it started, then failed
            self._aborting = False
            self._publish(event, resend_state=True)

    def abort(self) -> dict[str, Any]:
        """Abort the unit under test (teardown and the safe state still run); 409 if none."""
        with self._lock:
            busy = self._state["busy"]
        if not busy:
            raise ApiError(409, "no unit is under test")
        self._aborting = True
        self._publish({"type": "station", "ts": utc_timestamp(), "busy": True, "aborting": True})
        self._line.abort()
        return {"aborting": True}

    def answer(self, prompt_id: str, value: object) -> dict[str, Any]:
        """Answer the open prompt `prompt_id`; 404 if it is not open, 400 if `value` does not
        fit (the message says what is expected)."""
        # The line announces a prompt just before it opens it: a client quick enough to
        # answer in between is given a moment for the question to open.
        deadline = time.monotonic() + ANSWER_GRACE_S
        while True:
            try:
                typed = self._prompts.answer(prompt_id, value)
                break
            except KeyError:
                with self._lock:
                    announced = (self._state["prompt"] or {}).get("id") == prompt_id
                if not announced or time.monotonic() > deadline:
                    raise ApiError(
                        404, f"no open prompt {prompt_id!r} (answered or withdrawn)"
                    ) from None
                time.sleep(0.005)
            except ValueError as exc:
                raise ApiError(400, str(exc)) from None
        return {"id": prompt_id, "answer": jsonable(typed)}

    def image_path(self, prompt_id: str) -> tuple[Path, str]:
        """The picture of prompt `prompt_id` and its media type; ApiError 404 otherwise.

        Only a prompt of the current unit, only inside its procedure's directory, only a
        regular file with an image suffix."""
        with self._lock:
            prompt = self._state["prompt"]
            unit = self._state["unit"]
        if prompt is None or prompt.get("id") != prompt_id or not prompt.get("image"):
            raise ApiError(404, f"prompt {prompt_id!r} has no picture open")
        info = self._procedures.get((unit or {}).get("procedure", ""))
        if info is None:
            raise ApiError(404, "the picture's procedure is unknown")
        return safe_image(info.directory, str(prompt["image"]))

    # -- the end ----------------------------------------------------------------------------

    def shutdown_requested(self) -> None:
        """The server is asked to stop (a signal): end the streams and abort the unit under
        test, if any (its teardown and the safe state run while the server winds down)."""
        self.stop_streams()
        thread = self._unit_thread
        if thread is not None and thread.is_alive():
            self._aborting = True
            self._line.abort()

    def stop_streams(self) -> None:
        """End every event stream (the server is stopping: a stream would hold it open)."""
        with self._lock:
            self._closed = True
            self._fan_out(None)
            self._clients.clear()

    def close(self, *, abort_reason: str = "the station is closing") -> None:
        """Abort a unit under test and wait for it (teardown, safe state), then stop reading.

        The unit's thread is waited for: the bench must never be left energized. The line
        itself is closed by its owner.
        """
        self.stop_streams()
        thread = self._unit_thread
        if thread is not None and thread.is_alive():
            self._line.abort()
            self._prompts.close(abort_reason)
            thread.join(UNIT_JOIN_S)
        else:
            self._prompts.close(abort_reason)
        self._bus.remove_sink(self._on_event)

    def wait_idle(self, timeout_s: float) -> bool:
        """Wait until no unit is under test (tests, benchmarks); False on timeout."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            thread = self._unit_thread
            if thread is None or not thread.is_alive():
                with self._lock:
                    if not self._state["busy"]:
                        return True
            time.sleep(0.01)
        return False


def safe_image(directory: Path, relative: str) -> tuple[Path, str]:
    """`directory / relative` if it is an image file inside `directory`, with its media type;
    ApiError 404 for anything else (an absolute path, `..`, a link leading out, no such
    file, not an image)."""
    refused = ApiError(404, "no such picture beside the procedure")
    if not relative or "\x00" in relative or Path(relative).is_absolute():
        raise refused
    base = directory.resolve()
    try:
        target = (base / relative).resolve(strict=True)
    except (OSError, RuntimeError):
        raise refused from None
    if not target.is_relative_to(base) or not target.is_file():
        raise refused
    media = IMAGE_TYPES.get(target.suffix.lower())
    if media is None:
        raise refused
    return target, media


def _unit_without_run(event: dict[str, Any]) -> dict[str, Any]:
    """The unit of a start that failed before its run began (no phases, no record)."""
    return {
        "run_id": None,
        "procedure": event.get("procedure"),
        "serial": event.get("serial"),
        "part_number": None,
        "revision": None,
        "batch_number": None,
        "operator": None,
        "simulated": None,
        "started_at": event.get("ts"),
        "ended_at": event.get("ts"),
        "outcome": None,
        "reason": None,
        "failures": [],
        "error": None,
        "phases": [],
    }


def _planned(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "attempt": None,  # not started yet
        "outcome": None,
        "running": False,
        "duration_s": None,
        "reason": None,
        "error": None,
        "teardown": False,
        "measurements": [],
        "logs": [],
        "prompts": [],
    }


def _phase_started(phases: list[dict[str, Any]], event: dict[str, Any]) -> None:
    """Mark the planned entry of this phase started, or add one (a retry, or an unplanned
    phase) after the last entry of that name."""
    name, attempt = event.get("phase"), event.get("attempt") or 0
    for entry in phases:
        if entry["name"] == name and entry["attempt"] is None:
            entry["attempt"] = attempt
            entry["running"] = True
            return
    fresh = _planned(str(name))
    fresh["attempt"] = attempt
    fresh["running"] = True
    last = max((i for i, e in enumerate(phases) if e["name"] == name), default=None)
    if last is None:
        phases.append(fresh)
    else:
        phases.insert(last + 1, fresh)


def _entry(
    phases: list[dict[str, Any]], name: object, attempt: object | None
) -> dict[str, Any] | None:
    """The entry of phase `name` (at `attempt`, or the latest started one)."""
    for entry in reversed(phases):
        started = entry["name"] == name and entry["attempt"] is not None
        if started and (attempt is None or entry["attempt"] == attempt):
            found: dict[str, Any] = entry
            return found
    return None
