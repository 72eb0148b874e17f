"""The production loop: unit after unit on one open bench (`station run --loop`, `station serve`).

`Line` keeps what a one-shot `station run` rebuilds for every unit: the procedures are loaded
and checked once, the instruments opened once (and the simulated bench started once, under
--sim). Each unit still gets everything a single run gets: its scan checked against the
procedure's `serial_pattern`, its own run directory and journal, teardown and a verified safe
state at its end, its record, its upload (in the background: the next unit never waits for
TofuPilot).

Between units the bench is safe: every unit ends with teardown and a verified safe state (the
runner's), and when the next unit comes after the bench sat idle (`RECHECK_IDLE_S`: the operator
swapped boards and may have knocked a cable) the safe state is verified once more before it
starts. An instrument whose safe state could not be verified is lost: the set is closed and
reopened for the next unit; if that fails too, the loop stops with `LineStopped` naming the
instrument. `close()` makes the bench safe and closes it, and stops the uploads within a bound
(what is not sent stays queued for `station upload`).

Threads: `run_unit` blocks its caller (the main thread in `station run --loop`, a worker in
`station serve`); one unit runs at a time (`LineBusy` otherwise). `abort()`, the counters,
`recent` and `instrument_status()` may be called from any thread. The simulated bench is never
imported here: the command line hands in its `bench_resources` as `bench=`.
"""

from __future__ import annotations

import contextlib
import os
import queue
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from station.authoring.helpers import Answer, CancelSignal, Dut, PromptProvider, PromptRequest
from station.authoring.procedure import Procedure
from station.bench.instruments import InstrumentSet, check_drivers
from station.config.model import StationConfig
from station.config.procedure_loader import load_procedure
from station.engine.runner import Runner
from station.line.events import EventBus, EventListener
from station.line.prompts import check_prompts
from station.records.listener import RunListener
from station.records.model import RunRecord, utc_now
from station.storage.journal import Journal
from station.storage.reserve import Reserve
from station.testing import faultpoints
from station.tofupilot.history import unit_route
from station.tofupilot.outbox import Outbox, RunStatus

__all__ = [
    "MAX_SERIAL_LENGTH",
    "BenchFactory",
    "Counters",
    "CurrentUnit",
    "Line",
    "LineBusy",
    "LineStopped",
    "ScanRefused",
    "UnitIdentity",
    "UnitResult",
    "Uploader",
    "UploaderFactory",
    "publish_prompts",
    "unit_identity",
]

MAX_SERIAL_LENGTH = 100
UPLOAD_BUDGET_S = 30.0  # the most one background upload may take before the next is tried
CLOSE_UPLOADS_S = 5.0  # how long close() waits for uploads still going on
RECENT_UNITS = 50  # units kept in `recent`
# The bench is made safe (verified) at the end of every unit. When the next unit comes after the
# bench sat idle longer than this (the operator swapped boards: a cable may have been knocked),
# the safe state is verified once more before it starts; back-to-back units (a launcher, a
# fixture changer) skip that second check.
RECHECK_IDLE_S = 1.0

#: `bench(config, sim, fault)` -> a context manager yielding (simulated bench or None,
#: {instrument name: resource that replaces the configured one}); station.cli's
#: `bench_resources` is one.
BenchFactory = Callable[
    [StationConfig, bool, str | None], AbstractContextManager[tuple[Any, dict[str, str]]]
]

_IDENTITY_GROUPS = ("part_number", "revision", "batch_number")


class Uploader(Protocol):
    """What the line submits finished units to (station.cli.upload's `BackgroundUploader`)."""

    def submit(self, run_dir: Path) -> None: ...

    def close(self, timeout_s: float) -> bool: ...


#: `uploader(on_status)` -> an `Uploader` that calls `on_status(RunStatus)` for each run tried.
UploaderFactory = Callable[[Callable[[RunStatus], None]], Uploader]


class ScanRefused(ValueError):
    """A scanned serial number that cannot be tested: empty, not printable, too long, or not a
    full match of the procedure's `serial_pattern` (the message shows the pattern)."""

    def __init__(
        self, message: str, *, serial: str, procedure: str, pattern: str | None = None
    ) -> None:
        super().__init__(message)
        self.serial = serial
        self.procedure = procedure
        self.pattern = pattern


class LineBusy(RuntimeError):
    """A unit is already being tested on this line."""


class LineStopped(RuntimeError):
    """The line cannot go on: an instrument was lost and could not be reopened (named), or the
    line was closed."""


@dataclass(frozen=True)
class UnitIdentity:
    """The unit a scan names: its serial, and the fields the scan or station.yaml give."""

    serial_number: str
    part_number: str | None = None
    revision: str | None = None
    batch_number: str | None = None


def unit_identity(config: StationConfig, procedure: str, serial: str) -> UnitIdentity:
    """The unit `serial` names for `procedure`, or `ScanRefused` saying why it cannot be tested.

    The serial is stripped and must be printable, at most `MAX_SERIAL_LENGTH` characters and,
    when the procedure has a `serial_pattern`, match it whole. The pattern's named groups
    `part_number`, `revision` and `batch_number` (where they matched) take precedence over the
    procedure's values in station.yaml.
    """
    settings = config.procedures[procedure]
    raw = serial
    serial = serial.strip()
    if not serial:
        raise ScanRefused("the serial number is empty", serial=raw, procedure=procedure)
    if len(serial) > MAX_SERIAL_LENGTH or not serial.isprintable():
        raise ScanRefused(
            f"serial number {serial[:40]!r} is not valid: use at most {MAX_SERIAL_LENGTH} "
            "printable characters",
            serial=raw,
            procedure=procedure,
        )
    fields = {name: getattr(settings, name) for name in _IDENTITY_GROUPS}
    pattern = settings.serial_pattern
    if pattern is not None:
        match = re.fullmatch(pattern, serial)
        if match is None:
            raise ScanRefused(
                f"serial number {serial!r} does not match {procedure}'s serial pattern "
                f"{pattern} (station.yaml procedures.{procedure}.serial_pattern)",
                serial=raw,
                procedure=procedure,
                pattern=pattern,
            )
        groups = match.groupdict()
        for name in _IDENTITY_GROUPS:
            if groups.get(name):
                fields[name] = groups[name]
    return UnitIdentity(serial, **fields)


@dataclass
class Counters:
    """What the line did since it started.

    `tested` counts runs, `passed` those that PASSed, `failed` those that FAILed, `errors`
    ERROR and TIMEOUT, `aborted` ABORTED. First-pass yield: of the distinct units (procedure,
    serial) tested, the share whose first run on this line PASSed (a retest that passes does not
    count). `mean_cycle_s`: the mean time of `run_unit`, from the scan being accepted to the
    record being written.
    """

    tested: int = 0
    passed: int = 0
    failed: int = 0
    errors: int = 0
    aborted: int = 0
    units: int = 0  # distinct (procedure, serial)
    first_pass: int = 0  # of those, whose first run passed
    total_cycle_s: float = 0.0

    @property
    def first_pass_yield(self) -> float | None:
        return self.first_pass / self.units if self.units else None

    @property
    def mean_cycle_s(self) -> float | None:
        return self.total_cycle_s / self.tested if self.tested else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "tested": self.tested,
            "passed": self.passed,
            "failed": self.failed,
            "errors": self.errors,
            "aborted": self.aborted,
            "units": self.units,
            "first_pass_yield": self.first_pass_yield,
            "mean_cycle_s": self.mean_cycle_s,
        }

    def summary(self) -> str:
        """`tested 12  passed 10  failed 1  errors 1  first-pass yield 90.9%  mean cycle 4.21 s`."""
        fpy = self.first_pass_yield
        mean = self.mean_cycle_s
        parts = [f"tested {self.tested}", f"passed {self.passed}", f"failed {self.failed}"]
        if self.errors:
            parts.append(f"errors {self.errors}")
        if self.aborted:
            parts.append(f"aborted {self.aborted}")
        parts.append(f"first-pass yield {fpy:.1%}" if fpy is not None else "first-pass yield -")
        parts.append(f"mean cycle {mean:.2f} s" if mean is not None else "mean cycle -")
        return "  ".join(parts)


@dataclass
class UnitResult:
    """One unit the line tested, newest last in `Line.recent`."""

    serial: str
    procedure: str
    outcome: str
    started_at: datetime
    duration_s: float
    run_id: str
    run_dir: Path | None
    reason: str | None = None
    upload: str = "pending"  # pending, then the outbox's state: uploaded, queued, parked...
    upload_message: str | None = None
    # What went wrong recording the unit ("Journal ...": its record is incomplete) and what the
    # operator should know though nothing was lost.
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    incomplete: bool = False  # the journal failed: run.json may be missing what happened

    def to_dict(self) -> dict[str, Any]:
        return {
            "serial": self.serial,
            "procedure": self.procedure,
            "outcome": self.outcome,
            "started_at": self.started_at.isoformat().replace("+00:00", "Z"),
            "duration_s": self.duration_s,
            "run_id": self.run_id,
            "run_dir": str(self.run_dir) if self.run_dir is not None else None,
            "reason": self.reason,
            "upload": self.upload,
            "upload_message": self.upload_message,
            "problems": list(self.problems),
            "warnings": list(self.warnings),
            "incomplete": self.incomplete,
        }


@dataclass(frozen=True)
class CurrentUnit:
    """The unit being tested now."""

    procedure: str
    serial: str
    run_id: str
    started_at: datetime


class _PublishedPrompts:
    """A provider that announces each question and its answer on the bus."""

    def __init__(
        self, provider: PromptProvider, bus: EventBus, run_id: Callable[[], str | None]
    ) -> None:
        self._provider = provider
        self._bus = bus
        self._run_id = run_id
        self.name = getattr(provider, "name", type(provider).__name__)

    def ask(self, request: PromptRequest, cancel: CancelSignal) -> Answer:
        run_id = self._run_id()
        self._bus.emit("prompt", run_id, prompt=request.to_dict())
        try:
            answer = self._provider.ask(request, cancel)
        except Exception as exc:
            self._bus.emit(
                "prompt_answered",
                run_id,
                id=request.id,
                answer=None,
                answered_by=None,
                error=f"{type(exc).__name__}: {exc}",
            )
            raise
        self._bus.emit(
            "prompt_answered",
            run_id,
            id=request.id,
            answer=answer,
            answered_by=self.name,
            error=None,
        )
        return answer


def publish_prompts(
    provider: PromptProvider, bus: EventBus, run_id: Callable[[], str | None]
) -> PromptProvider:
    """`provider`, announcing each question (`prompt`) and its answer (`prompt_answered`) on
    `bus`, stamped with the run id `run_id()` gives (e.g. an `EventListener`'s)."""
    return _PublishedPrompts(provider, bus, run_id)


class _Uploads:
    """Uploads finished runs one after the other on a thread of its own.

    The run's claim was taken by its journal through `outbox.claim`; it is released once the
    upload is over (uploaded or not), so a long loop holds no descriptor per unit. Without a
    client (no API key) nothing is sent: the run stays queued for `station upload`.
    """

    def __init__(self, outbox: Outbox, on_done: Callable[[Path, str, str | None], None]) -> None:
        self._outbox = outbox
        self._on_done = on_done
        self._queue: queue.SimpleQueue[Path | None] = queue.SimpleQueue()
        self._idle = threading.Event()
        self._idle.set()
        self._pending = 0
        self._lock = threading.Lock()
        self._stopping = False
        self._thread = threading.Thread(target=self._loop, name="station-line-upload", daemon=True)
        self._thread.start()

    def submit(self, run_dir: Path) -> None:
        with self._lock:
            self._pending += 1
            self._idle.clear()
        self._queue.put(run_dir)

    def _loop(self) -> None:
        while (run_dir := self._queue.get()) is not None:
            state, message = "queued", None
            try:
                if self._stopping:
                    message = "the line closed before it was sent; 'station upload' sends it"
                else:
                    status = self._outbox.upload(run_dir, deadline=time.time() + UPLOAD_BUDGET_S)
                    state, message = status.state, status.message or None
            except Exception as exc:  # never lose the thread: the run stays queued
                message = f"{type(exc).__name__}: {exc}"
            finally:
                with contextlib.suppress(Exception):
                    self._outbox.release(run_dir)
            with contextlib.suppress(Exception):
                self._on_done(run_dir, state, message)
            with self._lock:
                self._pending -= 1
                if self._pending == 0:
                    self._idle.set()

    def wait_idle(self, timeout_s: float) -> bool:
        return self._idle.wait(timeout_s)

    def close(self, timeout_s: float) -> bool:
        """Let the upload in progress finish within `timeout_s`; the rest stay queued (on
        disk) for `station upload`. True if everything submitted was dealt with."""
        done = self._idle.wait(timeout_s)
        self._stopping = True
        self._queue.put(None)
        self._thread.join(0.5 if not done else timeout_s)
        return done


class Line:
    """The loop engine shared by `station run --loop` and `station serve`.

    `prompts` answers the phases' `run.prompt()` (None: a procedure that prompts is refused when
    it is loaded). `bus` gets every event (a new bus if None). `upload`: send each run in the
    background through `outbox` (station.cli's `outbox_for(config)`); without an outbox, or
    with `upload=False`, runs stay queued for `station upload`. `sim`: test on the simulated
    bench that `bench` (station.cli's `bench_resources`) starts; the records say simulated.
    `listeners` (e.g. the terminal console) get every run's events after the journal.
    `handle_signals`: let Ctrl-C/SIGTERM abort the unit in progress (main thread only).
    `why_no_prompts` says in the load-time refusal why `prompts` is None. `upload_sim`: simulated
    runs may go to a TofuPilot that is not on this machine (`station run --upload-sim`).

    `uploader(on_status)`, when given, makes the uploader the finished units are submitted to
    (station.cli.upload's `BackgroundUploader`: it also drains runs queued earlier, with
    backoff); `on_status(RunStatus)` keeps `recent` and the `upload` events up to date. Without
    it, `outbox` is used on a thread of the line's own. `route_checks`: before each unit, the
    unit's route (`requires_passed`, refused like a bad scan) and the retest note on the
    header, from `station.tofupilot.history.unit_route`, when the procedure requires others or
    an API key is set (without either there is nothing to ask).
    """

    def __init__(
        self,
        config: StationConfig,
        *,
        sim: bool,
        sim_fault: str | None = None,
        prompts: PromptProvider | None,
        bus: EventBus | None = None,
        upload: bool = True,
        operator: str | None = None,
        bench: BenchFactory | None = None,
        outbox: Outbox | None = None,
        listeners: Sequence[RunListener] = (),
        handle_signals: bool = True,
        why_no_prompts: str = "",
        upload_sim: bool = False,
        uploader: UploaderFactory | None = None,
        route_checks: bool = True,
    ) -> None:
        if sim and bench is None:
            raise ValueError("Line(sim=True) needs bench= (station.cli passes bench_resources)")
        self.config = config
        self.sim = sim
        self.sim_fault = sim_fault
        self.upload_sim = upload_sim
        self.procedures: list[str] = list(config.procedures)
        self.bus = bus if bus is not None else EventBus()
        self.operator = operator
        self._prompts = prompts
        self._why_no_prompts = why_no_prompts
        self._bench_factory = bench
        self._listeners = list(listeners)
        self._handle_signals = handle_signals
        self._route_checks = route_checks
        self._outbox = outbox or Outbox(
            config.data_path, None, api_key_env=config.tofupilot.api_key_env
        )
        self._own_outbox = outbox is None
        self._uploader: Uploader | None = None
        self._uploads: _Uploads | None = None
        if upload and uploader is not None:
            self._uploader = uploader(self._upload_status)
        elif upload and outbox is not None:
            self._uploads = _Uploads(self._outbox, self._upload_done)

        self._lock = threading.Lock()  # guards the fields below
        self._busy = threading.Lock()  # held while a unit runs
        self._runner: Runner | None = None
        self._current: CurrentUnit | None = None
        self._closed = False
        self._loaded: dict[str, Procedure] = {}
        self._bench_stack: contextlib.ExitStack | None = None
        self._sim_bench: Any = None
        self._resources: dict[str, str] = {}
        self._instruments: InstrumentSet | None = None
        self._verified_at: float | None = None  # when the safe state was last verified
        self._last_unsafe: list[str] = []  # what the last unit's safe state could not verify
        self._status: dict[str, str] = {name: "not opened" for name in config.instruments}
        self._first_outcome: dict[tuple[str, str], str] = {}
        self.counters = Counters()
        self._recent: deque[UnitResult] = deque(maxlen=RECENT_UNITS)
        self._by_dir: dict[Path, UnitResult] = {}
        # Disk space set aside for every unit's journal, kept from unit to unit (storage.reserve).
        self._reserve = Reserve(config.data_path)

    # -- what a screen shows --------------------------------------------------------------------

    @property
    def recent(self) -> list[UnitResult]:
        """The last units tested (at most `RECENT_UNITS`), oldest first."""
        with self._lock:
            return list(self._recent)

    @property
    def current(self) -> CurrentUnit | None:
        """The unit being tested now, if any."""
        with self._lock:
            return self._current

    @property
    def busy(self) -> bool:
        return self._busy.locked()

    def instrument_status(self) -> dict[str, str]:
        """Each configured instrument: `not opened`, `ok`, `lost`, `reopened`, `closed`, or
        `failed: <why>`."""
        with self._lock:
            return dict(self._status)

    def procedure_dir(self, procedure: str) -> Path:
        """The directory of `procedure`'s source (where its prompt images are)."""
        return Path(self.load(procedure).source_file).resolve().parent

    # -- a unit ---------------------------------------------------------------------------------

    def load(self, procedure: str) -> Procedure:
        """`procedure` loaded and checked (once per line): drivers exist, and its prompts can be
        answered here. Raises ProcedureError or ConfigError saying what is wrong."""
        loaded = self._loaded.get(procedure)
        if loaded is None:
            loaded = load_procedure(procedure, self.config)
            check_drivers(self.config, loaded.instrument_names)
            check_prompts(loaded, self._prompts, why_none=self._why_no_prompts)
            self._loaded[procedure] = loaded
        return loaded

    def prepare(self, procedure: str) -> None:
        """Load `procedure` and open its instruments (safe state verified) before the first
        scan, so a missing instrument is found before a unit is on the fixture. Raises like
        `run_unit` (`LineStopped` naming the instrument)."""
        loaded = self.load(procedure)
        with self._busy:
            if self._closed:
                raise LineStopped("the line is closed")
            self._ready_instruments(loaded)

    def check_serial(self, procedure: str, serial: str) -> UnitIdentity:
        """The unit a scan names (see `unit_identity`); a refusal is also published as a
        `unit_refused` event."""
        if procedure not in self.config.procedures:
            self.load(procedure)  # raises the loader's "unknown procedure" with suggestions
        try:
            identity = unit_identity(self.config, procedure, serial)
            self._check_route(procedure, identity.serial_number)
            return identity
        except ScanRefused as exc:
            self.bus.emit(
                "unit_refused",
                procedure=procedure,
                serial=serial,
                reason=str(exc),
                pattern=exc.pattern,
            )
            raise

    def _check_route(self, procedure: str, serial: str) -> None:
        """`requires_passed` (a refusal is a ScanRefused) and the retest note for the header."""
        settings = self.config.procedures[procedure]
        key = os.environ.get(self.config.tofupilot.api_key_env, "").strip()
        if not self._route_checks or not (settings.requires_passed or key):
            return
        route = unit_route(self.config, procedure, serial, simulated=self.sim)
        if route.refusal is not None:
            raise ScanRefused(f"refused: {route.refusal}", serial=serial, procedure=procedure)
        if route.retest_note is not None:
            for listener in self._listeners:
                note = getattr(listener, "header_note", None)
                if callable(note):
                    note(route.retest_note)

    def run_unit(self, procedure: str, serial: str) -> RunRecord:
        """Test one unit and return its final record (also on disk in its run directory).

        Raises before anything runs: `ScanRefused` for a bad scan, ProcedureError/ConfigError
        for a procedure that cannot be loaded, `LineBusy` while another unit runs, `LineStopped`
        when the instruments cannot be (re)opened or the line was closed.
        """
        identity = self.check_serial(procedure, serial)
        loaded = self.load(procedure)
        if not self._busy.acquire(blocking=False):
            raise LineBusy("a unit is already being tested on this line")
        try:
            if self._closed:
                raise LineStopped("the line is closed")
            started = time.monotonic()
            instruments = self._ready_instruments(loaded)
            self._insert_dut(identity.serial_number, procedure)
            return self._run(loaded, identity, instruments, started)
        finally:
            self._busy.release()

    def abort(self, reason: str = "aborted by the operator") -> bool:
        """Abort the unit in progress (teardown and the safe state still run); False if none."""
        with self._lock:
            runner = self._runner
        if runner is None:
            return False
        runner.abort(reason)
        return True

    def wait_uploads(self, timeout_s: float) -> bool:
        """Wait until every finished unit's upload was tried (tests); True if none is pending."""
        if self._uploads is not None:
            return self._uploads.wait_idle(timeout_s)
        deadline = time.monotonic() + timeout_s
        while any(u.upload == "pending" for u in self.recent):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True

    def close(self) -> list[str]:
        """Abort a unit in progress and wait for it, make the bench safe and close it for good,
        and stop the uploads within `CLOSE_UPLOADS_S` (runs not sent stay queued for
        `station upload`). Returns the problems met closing the instruments. Idempotent."""
        with self._lock:
            if self._closed:
                return []
            self._closed = True
        self.abort("the station is closing")
        close_prompts = getattr(self._prompts, "close", None)
        if callable(close_prompts):
            with contextlib.suppress(Exception):
                close_prompts()
        with self._busy:  # the unit in progress has ended
            problems = self._close_instruments("closed")
            if self._bench_stack is not None:
                self._bench_stack.close()
                self._bench_stack = None
        if self._uploads is not None:
            self._uploads.close(CLOSE_UPLOADS_S)
        if self._uploader is not None:
            self._uploader.close(CLOSE_UPLOADS_S)
        if self._own_outbox:
            self._outbox.close()
        self._reserve.give_back()
        return problems

    def __enter__(self) -> Line:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- internals ------------------------------------------------------------------------------

    def _ready_instruments(self, procedure: Procedure) -> InstrumentSet:
        """The instruments `procedure` needs, open and in a verified safe state: the set already
        open if it still answers; else (lost, or another procedure needs others) a new one."""
        needed = set(procedure.instrument_names)
        current = self._instruments
        if current is not None and needed <= set(current):
            problems, self._last_unsafe = self._last_unsafe, []
            idle = self._verified_at is None or (
                time.monotonic() - self._verified_at > RECHECK_IDLE_S
            )
            if not problems and idle:
                problems = current.safe_state()
            if not problems:
                self._verified_at = time.monotonic()
                return current
            self._set_status({}, problems, "lost")
            self._close_instruments("closed")
            return self._open_instruments(needed, reopening=True, after=problems)
        if current is not None:
            self._close_instruments("closed")
        return self._open_instruments(needed | set(current or ()), reopening=False, after=[])

    def _open_instruments(
        self, names: set[str], *, reopening: bool, after: list[str]
    ) -> InstrumentSet:
        resources = self._bench_resources()
        instruments = InstrumentSet(self.config, names, resources)
        try:
            instruments.open()
        except Exception as exc:  # InstrumentError, OSError...: the loop stops, naming it
            failed = getattr(exc, "instrument", None) or ", ".join(sorted(names))
            self._set_status({name: f"failed: {exc}" for name in names}, [])
            lost = "; ".join(after)
            raise LineStopped(
                (f"instrument lost ({lost}) and could not be reopened: " if reopening else "")
                + f"{failed}: {exc}"
            ) from exc
        self._instruments = instruments
        self._verified_at = time.monotonic()  # opening made each instrument safe
        self._set_status({name: "reopened" if reopening else "ok" for name in names}, [])
        return instruments

    def _close_instruments(self, status: str) -> list[str]:
        instruments, self._instruments = self._instruments, None
        if instruments is None:
            return []
        names = list(instruments)
        problems = instruments.close()
        self._set_status(dict.fromkeys(names, status), problems)
        return problems

    def _set_status(
        self, changes: dict[str, str], problems: list[str], what: str = "failed"
    ) -> None:
        """Update the instruments' status (`problems` are "name: why" lines, each making its
        instrument `<what>: <why>`) and publish it."""
        with self._lock:
            self._status.update(changes)
            for problem in problems:
                name, _, why = problem.partition(":")
                if name in self._status:
                    self._status[name] = f"{what}: {why.strip()}"
            status = dict(self._status)
        self.bus.emit("instrument_status", instruments=status)

    def _bench_resources(self) -> dict[str, str]:
        """The simulated bench's resources (started on first use), or {} on a real bench."""
        if self._bench_factory is None:
            return {}
        if self._bench_stack is None:
            stack = contextlib.ExitStack()
            bench, resources = stack.enter_context(
                self._bench_factory(self.config, self.sim, self.sim_fault)
            )
            self._bench_stack, self._sim_bench, self._resources = stack, bench, dict(resources)
        return self._resources

    def _insert_dut(self, serial: str, procedure: str) -> None:
        if self._sim_bench is None:
            return
        try:
            self._sim_bench.insert_dut(serial)
        except ValueError as exc:  # `SN-F:mode` names a fault the board does not have
            raise ScanRefused(
                f"--sim: serial {serial!r}: {exc}", serial=serial, procedure=procedure
            ) from None

    def _run(
        self,
        procedure: Procedure,
        identity: UnitIdentity,
        instruments: InstrumentSet,
        started: float,
    ) -> RunRecord:
        dut = Dut(
            identity.serial_number, identity.part_number, identity.revision, identity.batch_number
        )
        # With the uploader the journal holds the run's lock until run.json is written (the
        # uploader takes it to upload); else the line's outbox keeps it until the upload.
        journal = Journal(
            self.config.data_path,
            claim=None if self._uploader is not None else self._outbox.claim,
            reserve=self._reserve,
        )
        before_journal, after_journal = faultpoints.listeners()  # empty unless a test armed one
        events = EventListener(
            self.bus,
            phases=[ph.name for ph in procedure.all_phases],
            run_dir=lambda: journal.run_dir,
        )
        runner = Runner(
            procedure,
            dut,
            instruments=instruments,
            listeners=[*before_journal, journal, *after_journal, events, *self._listeners],
            operator=self.operator,
            station_name=self.config.station.name,
            prompt=(
                publish_prompts(self._prompts, self.bus, lambda: events.run_id)
                if self._prompts is not None
                else None
            ),
            handle_signals=self._handle_signals,
        )
        runner.record.simulated = self.sim
        runner.record.upload_simulated = self.sim and self.upload_sim
        with self._lock:
            self._runner = runner
            self._current = CurrentUnit(
                procedure.id, identity.serial_number, runner.record.run_id, runner.record.started_at
            )
        try:
            return runner.execute()
        finally:
            # Also when a stop signal held while the record was written is delivered now
            # (KeyboardInterrupt out of execute): the unit is recorded, so it is counted and sent.
            with self._lock:
                self._runner = None
                self._current = None
            self._last_unsafe = runner.unsafe
            if self._last_unsafe:  # reopened before the next unit
                self._set_status({}, self._last_unsafe, "lost")
            else:
                self._verified_at = time.monotonic()
            if runner.record.outcome is not None:
                self._recorded(runner.record, journal, [journal, events, *self._listeners])
                self._count(runner.record, time.monotonic() - started)

    def _recorded(self, record: RunRecord, journal: Journal, listeners: list[RunListener]) -> None:
        """Keep the unit in `recent` and send it (or release its claim: it stays queued)."""
        outcome = record.outcome.value if record.outcome is not None else "ERROR"
        ended = record.ended_at or utc_now()
        result = UnitResult(
            serial=record.serial_number,
            procedure=record.procedure_id,
            outcome=outcome,
            started_at=record.started_at,
            duration_s=(ended - record.started_at).total_seconds(),
            run_id=record.run_id,
            run_dir=journal.run_dir,
            reason=record.outcome_reason,
            upload="pending" if self._uploads or self._uploader else "queued",
            problems=[f"{type(x).__name__} {f}" for x in listeners for f in x.failures],
            warnings=[f"{type(x).__name__} {w}" for x in listeners for w in x.warnings],
            incomplete=bool(journal.failures),
        )
        for shared in self._listeners:  # they serve every unit: each unit reports its own
            shared.failures.clear()
            shared.warnings.clear()
        with self._lock:
            self._recent.append(result)
            if journal.run_dir is not None:
                self._by_dir[journal.run_dir] = result
                while len(self._by_dir) > RECENT_UNITS:
                    del self._by_dir[next(iter(self._by_dir))]
        if journal.run_dir is None:
            return
        if self._uploader is not None:
            self._uploader.submit(journal.run_dir)
        elif self._uploads is not None:
            self._uploads.submit(journal.run_dir)
        else:
            self._outbox.release(journal.run_dir)

    def _upload_status(self, status: RunStatus) -> None:
        """The uploader's report on one run (called on its thread)."""
        self._upload_done(status.run_dir, status.state, status.message or None)

    def _upload_done(self, run_dir: Path, state: str, message: str | None) -> None:
        with self._lock:
            result = self._by_dir.get(run_dir)
            if result is not None:
                result.upload, result.upload_message = state, message
                run_id: str | None = result.run_id
            else:
                run_id = None
        self.bus.emit("upload", run_id, run_dir=run_dir, state=state, message=message)

    def _count(self, record: RunRecord, cycle_s: float) -> None:
        outcome = record.outcome.value if record.outcome is not None else "ERROR"
        key = (record.procedure_id, record.serial_number)
        with self._lock:
            c = self.counters
            c.tested += 1
            c.total_cycle_s += cycle_s
            if outcome == "PASS":
                c.passed += 1
            elif outcome == "FAIL":
                c.failed += 1
            elif outcome == "ABORTED":
                c.aborted += 1
            else:
                c.errors += 1
            if key not in self._first_outcome:
                self._first_outcome[key] = outcome
                c.units += 1
                c.first_pass += outcome == "PASS"
            counters = c.to_dict()
        self.bus.emit("counters", **counters)
