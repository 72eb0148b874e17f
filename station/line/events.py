"""What happens on the line, as events: plain JSON-ready dicts on a thread-safe bus.

Every event has `type` and `ts` (UTC, ISO 8601 with milliseconds and `Z`); those about a run
carry its `run_id`. The types, in the order a unit produces them, and their fields:

- `unit_refused` (a scan does not match the procedure's serial pattern): procedure, serial,
  reason, pattern;
- `run_started`: procedure, procedure_version, serial, part_number, revision, batch_number,
  station, operator, simulated, started_at, phases (names in run order, teardown last);
- `phase_started`: phase, attempt;
- `log` (the procedure logged a line): phase, level, message, source_file, line;
- `prompt` (a phase asks the operator): prompt {id, key, text, kind, choices, image, default,
  timeout_s, phase};
- `prompt_answered` (the question is closed): id, answer, answered_by, error;
- `measurement` (when its phase ends, one per measurement): phase, attempt, name, value,
  display (e.g. "1.95 mV"), units, limits, outcome, marginal, marginal_band, failed (the
  failing check restated, e.g. "rail_3v3 = 3.102 V < 3.22 V");
- `phase_ended`: phase, attempt, teardown, outcome, duration_s, reason, error {type, message,
  source_file, line};
- `run_ended` (the record is final): procedure, serial, outcome, reason, marginal, duration_s,
  ended_at, failures (restated), run_dir;
- `upload` (a unit's upload was tried): run_dir, state, message;
- `counters` (after each unit): tested, passed, failed, errors, aborted, units,
  first_pass_yield, mean_cycle_s;
- `instrument_status` (opened, lost, reopened, closed): instruments {name: status}.

Values are JSON: a non-finite measured value is written as in run.json, the object
`{"$non_finite": "NaN"}` (or "Infinity", "-Infinity"); anything else that is not JSON is
written as its text. `NdjsonWriter` writes events one per line (`station run --events`), and
`EventBus.subscribe()` hands them to a reader thread (the operator page's live stream).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import threading
from collections import deque
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from station.line.display import (
    failed_check,
    marginal_band,
    measurement_display,
)
from station.records.listener import RunListener
from station.records.model import NON_FINITE_TAG, LogEntry, PhaseRecord, RunRecord, non_finite_text

__all__ = [
    "EVENT_TYPES",
    "EventBus",
    "EventListener",
    "NdjsonWriter",
    "Subscription",
    "jsonable",
    "make_event",
    "utc_timestamp",
]

EVENT_TYPES = (
    "unit_refused",
    "run_started",
    "phase_started",
    "log",
    "prompt",
    "prompt_answered",
    "measurement",
    "phase_ended",
    "run_ended",
    "upload",
    "counters",
    "instrument_status",
)
DEFAULT_QUEUE_SIZE = 10_000  # events a subscriber may fall behind before the oldest are dropped

Event = dict[str, Any]


def utc_timestamp(when: datetime | None = None) -> str:
    """`2026-03-01T10:02:03.456Z`: UTC, milliseconds, `Z`."""
    when = (when or datetime.now(UTC)).astimezone(UTC)
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def jsonable(value: Any) -> Any:
    """`value` as JSON can hold it: non-finite floats tagged as in run.json, tuples as lists,
    datetimes as UTC text, anything else unknown as its text."""
    if isinstance(value, float):
        return value if math.isfinite(value) else {NON_FINITE_TAG: non_finite_text(value)}
    if value is None or isinstance(value, str | bool | int):
        return value
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, datetime):
        return utc_timestamp(value)
    if isinstance(value, Path):
        return str(value)
    return str(value)


def make_event(type_: str, run_id: str | None = None, **fields: Any) -> Event:
    """An event of `type_` stamped now; `fields` are made JSON-ready."""
    event: Event = {"type": type_, "ts": utc_timestamp()}
    if run_id is not None:
        event["run_id"] = run_id
    for name, value in fields.items():
        event[name] = jsonable(value)
    return event


class Subscription:
    """One reader's queue of events. Bounded: a reader that falls more than `maxsize` events
    behind loses the oldest (counted in `dropped`), so a stalled page never holds the runner
    or grows memory without bound."""

    def __init__(self, bus: EventBus, maxsize: int) -> None:
        self._bus = bus
        self._events: deque[Event] = deque()
        self._maxsize = maxsize
        self._ready = threading.Condition()
        self.dropped = 0
        self.closed = False

    def put(self, event: Event) -> None:
        with self._ready:
            if self.closed:
                return
            if len(self._events) >= self._maxsize:
                self._events.popleft()
                self.dropped += 1
            self._events.append(event)
            self._ready.notify()

    def get(self, timeout: float | None = None) -> Event | None:
        """The next event; None after `timeout` seconds without one, or once closed."""
        with self._ready:
            if not self._events and not self.closed:
                self._ready.wait(timeout)
            if self._events:
                return self._events.popleft()
            return None

    def close(self) -> None:
        """Stop receiving; a reader blocked in `get` returns None. Idempotent."""
        with self._ready:
            self.closed = True
            self._events.clear()
            self._ready.notify_all()
        self._bus.unsubscribe(self)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class EventBus:
    """Fans events out to sinks (called at once, on the publishing thread, in order: the NDJSON
    writer) and subscriptions (queued for their reader thread). Publishing never raises and
    never blocks on a reader; a sink that raises is recorded in `failures` and dropped."""

    def __init__(self, *, queue_size: int = DEFAULT_QUEUE_SIZE) -> None:
        self._lock = threading.Lock()
        self._subscriptions: list[Subscription] = []
        self._sinks: list[Callable[[Event], None]] = []
        self._queue_size = queue_size
        self.failures: list[str] = []

    def publish(self, event: Event) -> None:
        """Send `event` (it must have a `type`; `ts` is added when missing)."""
        if "ts" not in event:
            event = {"type": event["type"], "ts": utc_timestamp(), **event}
        with self._lock:
            sinks = list(self._sinks)
            subscriptions = list(self._subscriptions)
        for sink in sinks:
            try:
                sink(event)
            except Exception as exc:
                self.failures.append(f"{sink!r}: {type(exc).__name__}: {exc}")
                self.remove_sink(sink)
        for subscription in subscriptions:
            subscription.put(event)

    def emit(self, type_: str, run_id: str | None = None, **fields: Any) -> None:
        """`publish(make_event(type_, run_id, **fields))`; nothing is built when nobody
        listens (a loop without --events or a page)."""
        if not self.listening:
            return
        self.publish(make_event(type_, run_id, **fields))

    def subscribe(self, maxsize: int | None = None) -> Subscription:
        """A queue of every event published from now on; close it when done."""
        subscription = Subscription(self, maxsize or self._queue_size)
        with self._lock:
            self._subscriptions.append(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        with self._lock, contextlib.suppress(ValueError):
            self._subscriptions.remove(subscription)

    def add_sink(self, sink: Callable[[Event], None]) -> None:
        """Call `sink(event)` for every event, on the publishing thread."""
        with self._lock:
            self._sinks.append(sink)

    def remove_sink(self, sink: Callable[[Event], None]) -> None:
        with self._lock, contextlib.suppress(ValueError):
            self._sinks.remove(sink)

    @property
    def listening(self) -> bool:
        """Whether anyone would receive an event: callers skip building one when nobody would."""
        return bool(self._sinks or self._subscriptions)

    @property
    def subscribers(self) -> int:
        with self._lock:
            return len(self._subscriptions)


class NdjsonWriter:
    """A sink writing each event as one JSON line, flushed at once (a launcher reading the
    pipe sees each event as it happens). `target` is a path, or None for stdout."""

    def __init__(self, target: str | os.PathLike[str] | None = None) -> None:
        self.path = Path(target) if target is not None else None
        self._stream: TextIO
        if self.path is None:
            self._stream = sys.stdout
            self._owned = False
        else:
            self._stream = self.path.open("a", encoding="utf-8")
            self._owned = True
        self._lock = threading.Lock()

    def __call__(self, event: Event) -> None:
        line = json.dumps(event, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        with self._lock:
            self._stream.write(line + "\n")
            self._stream.flush()

    def close(self) -> None:
        if self._owned:
            with self._lock:
                self._stream.close()


class EventListener(RunListener):
    """Turns the runner's callbacks into events on `bus`.

    `phases` (names, in run order, teardown last) go into `run_started` so a screen can list
    them before they run; `run_dir()` (e.g. the journal's) into `run_ended`.
    """

    def __init__(
        self,
        bus: EventBus,
        *,
        phases: list[str] | None = None,
        run_dir: Callable[[], Path | None] | None = None,
    ) -> None:
        super().__init__()
        self._bus = bus
        self._phases = list(phases or [])
        self._run_dir = run_dir
        self.run_id: str | None = None

    def run_started(self, record: RunRecord) -> None:
        self.run_id = record.run_id
        self._bus.emit(
            "run_started",
            record.run_id,
            procedure=record.procedure_id,
            procedure_version=record.procedure_version,
            serial=record.serial_number,
            part_number=record.part_number,
            revision=record.revision,
            batch_number=record.batch_number,
            station=record.station_name,
            operator=record.operator,
            simulated=record.simulated,
            started_at=record.started_at,
            phases=self._phases,
        )

    def phase_started(self, name: str, attempt: int) -> None:
        self._bus.emit("phase_started", self.run_id, phase=name, attempt=attempt)

    def log_added(self, entry: LogEntry, phase: str | None) -> None:
        self._bus.emit(
            "log",
            self.run_id,
            phase=phase,
            level=entry.level,
            message=entry.message,
            source_file=entry.source_file,
            line=entry.line_number,
        )

    def phase_ended(self, record: PhaseRecord) -> None:
        if not self._bus.listening:  # the displays below are the costly part of an event
            return
        for m in record.measurements:
            self._bus.emit(
                "measurement",
                self.run_id,
                phase=record.name,
                attempt=record.attempt,
                name=m.name,
                value=m.measured_value,
                display=measurement_display(m) if m.outcome != "UNSET" else None,
                units=m.units,
                limits=m.limits,
                outcome=m.outcome,
                marginal=m.marginal,
                marginal_band=marginal_band(m) if m.marginal else None,
                failed=failed_check(m) if m.outcome != "PASS" else None,
            )
        error = record.error
        self._bus.emit(
            "phase_ended",
            self.run_id,
            phase=record.name,
            attempt=record.attempt,
            teardown=record.teardown,
            outcome=record.outcome.value,
            duration_s=round((record.ended_at - record.started_at).total_seconds(), 6),
            reason=record.reason,
            error=(
                {
                    "type": error.type,
                    "message": error.message,
                    "source_file": error.source_file,
                    "line": error.line_number,
                }
                if error is not None
                else None
            ),
        )

    def run_ended(self, record: RunRecord) -> None:
        if not self._bus.listening:
            return
        ended = record.ended_at or record.started_at
        run_dir = self._run_dir() if self._run_dir is not None else None
        self._bus.emit(
            "run_ended",
            record.run_id,
            procedure=record.procedure_id,
            serial=record.serial_number,
            outcome=record.outcome.value if record.outcome is not None else None,
            reason=record.outcome_reason,
            marginal=record.marginal,
            duration_s=round((ended - record.started_at).total_seconds(), 6),
            ended_at=ended,
            failures=failures_of(record),
            run_dir=run_dir,
        )


def failures_of(record: RunRecord) -> list[str]:
    """Every failing check of the phases that decided the run, restated
    (`rail_3v3 = 3.102 V < 3.22 V`), in run order."""
    last: dict[tuple[str, bool], PhaseRecord] = {}
    for phase in record.phases:
        last[(phase.name, phase.teardown)] = phase
    return [
        failed_check(m)
        for phase in last.values()
        if phase.outcome.value == "FAIL"
        for m in phase.measurements
        if m.outcome != "PASS"
    ]
