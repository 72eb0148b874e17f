"""The bench's instruments for one run: built from station.yaml, opened, and always left safe.

`InstrumentSet` opens the instruments a procedure uses, puts each in its safe state right away
(a PSU is off before the operator inserts the next board), and on every way out, normal or not,
calls `safe_state()` and `close()` on each one. A failure to make one instrument safe never
keeps the others from being made safe, and the stop signals (Ctrl-C, SIGTERM, SIGHUP, SIGQUIT)
are held meanwhile, so a second one cannot skip it.

Closing is final: once `close()` ran, no call on these drivers, from any thread, reopens a
connection (the transports' `close()` is final), so a phase thread that swallowed its stop
cannot switch a supply back on after the run.

Three kinds of driver, one life cycle (open, safe state, interrupt, safe state, close):

- a registry driver (`keysight-34461a`, the generic `scpi`, `serial-line`) or a class of yours
  that subclasses `drivers.Instrument`: built on a managed session from `resource:`; phases
  receive the driver itself;
- a plain class of yours (`package.module:ClassName`, no base class): built with `config:` as
  keyword arguments (and `resource=` when it takes one, which is then also OS-locked), opened
  with its `open()` if it has one, made safe with its `safe_state()` and closed with its
  `close()` if it has them; phases receive it wrapped (`guarded.GuardedInstrument`: the stop
  guard and a lock on every method call);
- under `--sim`, the class an instrument's `sim:` names instead (a plain class, built the same
  way), which `station.cli.common.bench_resources` marks with `SIM_CLASS_PREFIX` in the
  resources it hands over; a twin class named by `sim:` is served on loopback and the
  instrument's own driver connects to it.

Every opened instrument is described for the run record (`records()`: name, driver, resource,
identity and the maker, model, serial number and firmware read from it), and what an instrument
offers to attach to the run (`run_attachments()`, e.g. a console transcript) is collected when
the run ends (`collect_attachments()`).
"""

from __future__ import annotations

import contextlib
import logging
import re
import signal
import threading
import time
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from drivers import InstrumentError, UnknownDriverError
from drivers.errors import (
    KIND_GARBAGE,
    KIND_IN_USE,
    KIND_IO,
    KIND_LOST,
    KIND_NO_BACKEND,
    KIND_REFUSED,
    KIND_TIMEOUT,
    KIND_WRONG_MODEL,
)
from drivers.models.scpi import ScpiInstrument, parse_identity
from drivers.registry import DRIVERS, create_driver, driver_names, get_driver_class
from drivers.transport import locking
from drivers.transport.seam import is_serial_resource
from station.bench.guarded import Control, GuardedInstrument
from station.bench.user_classes import UserClassError, check_arguments, load_class
from station.records.model import InstrumentRecord

log = logging.getLogger("station.instruments")

# The signals that stop a run (station treats them all like SIGTERM: teardown, safe state, an
# ABORTED record); SIGHUP is a closed terminal or a dropped SSH session. Not all exist on Windows.
STOP_SIGNALS: tuple[signal.Signals, ...] = tuple(
    getattr(signal, name)
    for name in ("SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT")
    if hasattr(signal, name)
)


# Under --sim, the resource of an instrument replaced by its plain `sim:` class:
# "sim-class:<package.module:ClassName>" (see station.cli.common.bench_resources).
SIM_CLASS_PREFIX = "sim-class:"


def base_dir_of(config: Any) -> Path:
    """Where classes named in station.yaml are looked for first: beside station.yaml."""
    return Path(getattr(config, "base_dir", None) or Path.cwd())


def is_user_class(driver: str) -> bool:
    """Whether a station.yaml driver names a class (`package.module:ClassName`)."""
    return ":" in driver


def is_twin_class(cls: type) -> bool:
    """Whether a `sim:` class is a twin to serve on loopback (it answers messages: `handle()`,
    like `sim.twins.scpi.ScpiTwin` and the stream twins) rather than an instrument class to
    build instead of the real one."""
    return callable(getattr(cls, "handle", None))


def driver_class(config: Any, name: str) -> type:
    """The class instrument `name` is built from; ConfigError at its driver line if none."""
    driver = config.instruments[name].driver
    if is_user_class(driver):
        try:
            return load_class(driver, base_dir_of(config))
        except UserClassError as exc:
            raise config.error(f"instruments.{name}.driver", str(exc)) from None
    try:
        return get_driver_class(driver)
    except UnknownDriverError:
        raise config.error(
            f"instruments.{name}.driver",
            f"unknown driver {driver!r}; available drivers: {', '.join(driver_names())}, or a "
            "class of yours as package.module:ClassName",
        ) from None


def sim_class(config: Any, name: str) -> type | None:
    """The class instrument `name`'s `sim:` names (None without one); ConfigError at its line."""
    spec = config.instruments[name].sim
    if spec is None:
        return None
    try:
        return load_class(spec, base_dir_of(config))
    except UserClassError as exc:
        raise config.error(f"instruments.{name}.sim", str(exc)) from None


def _takes(cls: type, parameter: str) -> bool:
    """Whether `cls(...)` accepts the keyword `parameter` (named, or through **kwargs)."""
    import inspect

    try:
        parameters = inspect.signature(cls).parameters
    except (TypeError, ValueError):
        return True
    if parameter in parameters:
        return True
    return any(p.kind == p.VAR_KEYWORD for p in parameters.values())


def plain_arguments(cls: type, settings: Any, resource: str | None) -> dict[str, Any]:
    """The keyword arguments a plain class is built with: `config:` (and `resource=` when a
    resource is given and the class takes one)."""
    keywords = dict(settings.config)
    if resource is not None and _takes(cls, "resource"):
        keywords["resource"] = resource
    return keywords


def check_drivers(config: Any, names: Collection[str] | None = None) -> None:
    """Every configured driver (and `sim:` class) exists and can be built from its config:
    raise the config error located at its station.yaml line otherwise, with what to do."""
    for name in names if names is not None else config.instruments:
        settings = config.instruments[name]
        cls = driver_class(config, name)
        session = issubclass(cls, ScpiInstrument)
        if session:
            if settings.resource is None:
                raise config.error(
                    f"instruments.{name}",
                    f"{cls.__name__} talks through a session: give its resource (e.g. "
                    "resource: TCPIP::192.168.1.20::5025::SOCKET)",
                )
            problem = check_arguments(cls, (None, name), dict(settings.config))
        else:
            if settings.resource is not None and not _takes(cls, "resource"):
                raise config.error(
                    f"instruments.{name}.resource",
                    f"{cls.__name__}() takes no resource: remove resource here, or give its "
                    "constructor a `resource` parameter (the station then also locks that "
                    "resource for this process)",
                )
            problem = check_arguments(cls, (), plain_arguments(cls, settings, settings.resource))
        if problem is not None:
            key = "config" if settings.config else "driver"
            raise config.error(f"instruments.{name}.{key}", problem)
        replacement = sim_class(config, name)
        if replacement is None:
            continue
        if is_twin_class(replacement):
            keywords = dict(settings.sim_config)
            if _takes(replacement, "bench") and "bench" not in keywords:
                keywords["bench"] = None
            problem = check_arguments(replacement, (), keywords)
        elif issubclass(replacement, ScpiInstrument):
            problem = (
                f"{replacement.__name__} is a session driver: sim names either a twin (a class "
                f"with handle(), e.g. a sim.twins.scpi.ScpiTwin subclass, served on loopback for "
                f"{cls.__name__} to connect to) or a plain class built instead of it"
            )
        else:
            keywords = {**plain_arguments(replacement, settings, None), **settings.sim_config}
            problem = check_arguments(replacement, (), keywords)
        if problem is not None:
            key = "sim_config" if settings.sim_config else "sim"
            raise config.error(f"instruments.{name}.{key}", problem)


@dataclass
class OpenedInstrument:
    name: str
    driver: Any  # what phases receive: the driver, or a plain object wrapped
    identity: str
    round_trip_ms: float  # time to open and identify it (connect + *IDN?)
    resource: str | None = None  # what it was connected to (a twin's, under --sim)
    driver_spec: str = ""  # as station.yaml says (registry name or package.module:Class)
    control: Control | None = None  # for a plain class: the framework's side of its wrapper
    os_lock: locking.ResourceLock | None = None  # a plain class's hold on its resource
    fields: dict[str, str | None] = field(default_factory=dict)  # maker, model, serial, fw

    @property
    def target(self) -> Any:
        """The instrument object itself (unwrapped)."""
        return self.control.target if self.control is not None else self.driver

    @property
    def model(self) -> str:
        """How to name what it is: the model class's MODEL, else the class name."""
        return str(getattr(type(self.target), "MODEL", None) or type(self.target).__name__)

    @property
    def answers_idn(self) -> bool:
        """Whether its identity is a `*IDN?` reply (so `*IDN?` measures a round trip)."""
        return self.control is None and bool(getattr(self.driver, "ANSWERS_IDN", False))

    @property
    def transport(self) -> Any:
        """The session of a session-based driver (None for a plain class)."""
        return getattr(self.driver, "transport", None) if self.control is None else None

    def record(self) -> InstrumentRecord:
        """This instrument as the run record keeps it."""
        return InstrumentRecord(
            name=self.name,
            driver=self.driver_spec,
            resource=self.resource,
            identity=self.identity or None,
            manufacturer=self.fields.get("manufacturer"),
            model=self.fields.get("model"),
            serial_number=self.fields.get("serial_number"),
            firmware=self.fields.get("firmware"),
        )


@dataclass(frozen=True)
class UnabortedIO:
    """An instrument whose I/O in flight `interrupt()` could not abort (pyvisa-py on USB,
    VXI-11, HiSLIP, GPIB): the blocked call ends at the instrument's timeout, not now."""

    name: str
    resource: str
    timeout_s: float  # the session timeout that bounds the blocked call

    def __str__(self) -> str:
        return f"{self.name} ({self.resource}) cannot abort I/O"


class _Interruptible(Protocol):
    resource: str
    timeout_ms: int

    def interrupt(self) -> bool | None: ...


def measure_round_trip(driver: Any, repeats: int = 5) -> float:
    """Median time of `*IDN?` on an open driver, in ms: what one exchange costs on this link."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        driver.query("*IDN?")
        times.append((time.perf_counter() - started) * 1000)
    return sorted(times)[len(times) // 2]


def failure_hint(
    config: Any, name: str, error: InstrumentError, where: str = "station.yaml"
) -> str:
    """What the operator should check when instrument `name` failed to open with `error`.

    `where` is how to name the config file in the hint (e.g. its path as displayed).
    """
    settings = config.instruments[name]
    resource = error.resource or settings.resource or ""

    def line(key: str) -> str:
        number = config.line_of(f"instruments.{name}.{key}") or config.line_of(
            f"instruments.{name}"
        )
        return f"{where} line {number}" if number else where

    serial = is_serial_resource(resource) or resource.upper().startswith("ASRL")
    if error.kind == KIND_IN_USE:
        holder = f"pid {error.pid}" if error.pid else "another process"
        return f"held by {holder}: stop that station (or let it finish) and try again"
    if error.kind == KIND_NO_BACKEND:
        return (
            "install what the message names (the resource itself may be right), then run "
            "`station check` again"
        )
    if is_user_class(settings.driver) and error.kind in (KIND_IO, None):
        return (
            f"the instrument class {settings.driver} failed: see the message, and check its "
            f"config and resource ({line('driver')})"
        )
    if error.kind == KIND_WRONG_MODEL:
        hint = f"fix the driver in {line('driver')}"
        identity = error.message.partition(", got ")[2].strip("'\"")
        matches = [
            driver
            for driver in driver_names()
            if driver != settings.driver and _idn_matches(driver, identity)
        ]
        if matches:
            hint += f" (the reply looks like {' or '.join(matches)})"
        elif "VISA" in error.message:
            hint = f"give a serial device path in {line('resource')}"
        return hint
    if error.kind == KIND_REFUSED:
        if serial:
            return (
                f"nothing at that port: is the instrument plugged in and the device path in "
                f"{line('resource')} right?"
            )
        return (
            "connection refused: is the instrument on and the port right? Keysight uses 5025, "
            f"Rigol 5555 ({line('resource')})"
        )
    if error.kind == KIND_TIMEOUT:
        serial_hint = " and the baud rate" if serial else ""
        return f"no reply: check read/write termination{serial_hint} ({line('resource')})"
    if error.kind == KIND_GARBAGE:
        return "the reply is not text: check the baud rate and that this is the right instrument"
    if error.kind == KIND_LOST:
        return "the instrument dropped the link: check the cable, or whether it rebooted"
    return f"check the resource in {line('resource')}"


def _idn_matches(driver: str, identity: str) -> bool:
    if driver not in DRIVERS or not identity:
        return False
    try:
        return bool(get_driver_class(driver).IDN_PATTERN.search(identity))
    except Exception:  # a driver module that fails to import is not a suggestion
        return False


class InstrumentSet(Mapping[str, Any]):
    """Opened drivers by their station.yaml names. Use as a context manager.

    `resources` replaces configured resources by name (the twins' under `--sim`); a value
    starting with SIM_CLASS_PREFIX builds the instrument's plain `sim:` class instead.
    """

    def __init__(
        self, config: Any, names: Collection[str], resources: Mapping[str, str] | None = None
    ):
        self._config = config
        self._names = sorted(names)
        self._resources = dict(resources or {})
        self._opened: dict[str, OpenedInstrument] = {}
        self._closed = False
        self._guard: Any = None

    def open(self) -> InstrumentSet:
        """Connect every instrument (checking it is the configured model) and make it safe.

        If one fails, the others are still opened and made safe (a supply left on by a crashed
        run is turned off even though the station cannot start), then every one is closed and
        the first failure is raised, with the others as notes. A set that was closed cannot be
        opened again (its drivers are closed for good): build a new one.
        """
        if self._closed:
            raise RuntimeError("these instruments were closed for good: open a new InstrumentSet")
        check_drivers(self._config, self._names)
        failures: list[Exception] = []
        try:
            for name in self._names:
                try:
                    self._opened[name] = self._open_one(name)
                except (InstrumentError, OSError, ValueError, RuntimeError) as exc:
                    failures.append(exc)
        except BaseException:
            self.close()
            raise
        if failures:
            self.close()
            first = failures[0]
            for other in failures[1:]:
                first.add_note(f"also: {other}")
            raise first
        return self

    def _open_one(self, name: str) -> OpenedInstrument:
        settings = self._config.instruments[name]
        override = self._resources.get(name)
        if override is not None and override.startswith(SIM_CLASS_PREFIX):
            cls = sim_class(self._config, name)
            if cls is None or override != SIM_CLASS_PREFIX + str(settings.sim):
                raise InstrumentError(
                    f"{override!r} is not this instrument's sim class", instrument=name
                )
            keywords = {**plain_arguments(cls, settings, None), **settings.sim_config}
            return self._open_plain(name, cls, keywords, override, lock=False)
        resource = override or settings.resource
        cls = driver_class(self._config, name)
        if not issubclass(cls, ScpiInstrument):
            return self._open_plain(name, cls, plain_arguments(cls, settings, resource), resource)
        library = settings.visa_library or getattr(self._config, "visa_library", None)
        driver = create_driver(
            cls if is_user_class(settings.driver) else settings.driver,
            resource,
            name=name,
            timeout_ms=settings.timeout_ms,
            config=dict(getattr(settings, "config", None) or {}),
            visa_library=library,
            baud_rate=settings.baud_rate,
            read_termination=settings.read_termination,
            write_termination=settings.write_termination,
        )
        started = time.perf_counter()
        try:
            identity = driver.connect()
        except BaseException:
            _quietly(driver.close, name, "close")
            raise
        round_trip_ms = (time.perf_counter() - started) * 1000
        opened = OpenedInstrument(
            name,
            driver,
            identity,
            round_trip_ms,
            resource=resource,
            driver_spec=settings.driver,
            fields=driver.identity_fields()._asdict(),
        )
        self._opened[name] = opened  # so close() reaches it if safe_state below fails
        if self._guard is not None:
            driver.transport.set_call_guard(self._guard)
        driver.safe_state()
        return opened

    def _open_plain(
        self,
        name: str,
        cls: type,
        keywords: dict[str, Any],
        resource: str | None,
        *,
        lock: bool = True,
    ) -> OpenedInstrument:
        """Build, lock, open and identify a plain class, then make it safe; every failure of
        the class's own code becomes an InstrumentError naming the instrument."""
        settings = self._config.instruments[name]
        started = time.perf_counter()
        held = locking.acquire(resource, instrument=name) if lock and resource else None
        try:
            target = _user_call(name, resource, f"{cls.__name__}()", lambda: cls(**keywords))
        except BaseException:
            if held is not None:
                held.release()
            raise
        control = Control(target, name, resource, settings.timeout_ms / 1000)
        control.guard = self._guard
        opened = OpenedInstrument(
            name,
            GuardedInstrument(control),
            "",
            0.0,
            resource=resource,
            driver_spec=settings.driver,
            control=control,
            os_lock=held,
        )
        self._opened[name] = opened  # from here on close() releases the lock and closes it
        if callable(getattr(target, "open", None)):
            _user_call(name, resource, "open()", lambda: control.run_anyway("open"))
        identity = _user_call(name, resource, "identity", lambda: plain_identity(target))
        opened.identity = identity or ""
        opened.fields = parse_identity(identity)._asdict()
        opened.round_trip_ms = (time.perf_counter() - started) * 1000
        self._safe_state_of(opened)
        return opened

    @property
    def opened(self) -> list[OpenedInstrument]:
        return list(self._opened.values())

    def records(self) -> list[InstrumentRecord]:
        """Every opened instrument as the run record keeps it (name, driver, resource, identity
        and what it says: maker, model, serial number, firmware), in name order."""
        return [item.record() for item in self._opened.values()]

    def set_call_guard(self, guard: Any) -> None:
        """Run `guard()` before every call on every instrument (None removes it): the runner
        refuses a stopped phase's I/O with it. Session drivers get it on their transport,
        plain classes on their wrapper; instruments opened later get it too."""
        self._guard = guard
        for item in self._opened.values():
            if item.control is not None:
                item.control.guard = guard
                inner = getattr(getattr(item.target, "transport", None), "set_call_guard", None)
            else:
                inner = getattr(item.transport, "set_call_guard", None)
            if callable(inner):
                inner(guard)

    def in_flight(self) -> list[str]:
        """What each instrument is busy with right now, e.g. for a timeout's message:
        `dmm (TCPIP::...): 'READ?' in progress for 0.5 s`. Call it before `interrupt()`."""
        busy = []
        for item in self._opened.values():
            try:
                if item.control is not None:
                    doing = item.control.in_flight()
                else:
                    transport = item.transport
                    doing = transport.in_flight() if hasattr(transport, "in_flight") else None
            except Exception:  # a description must never stop a run from being stopped
                doing = None
            if doing is not None:
                what, seconds = doing
                where = f" ({item.resource})" if item.resource else ""
                busy.append(f"{item.name}{where}: {what} in progress for {seconds:.1f} s")
        return busy

    def interrupt(self) -> list[UnabortedIO]:
        """Abort I/O in flight on every instrument (a stopped phase may be blocked in a read).

        Returns the instruments whose call in flight could not be aborted (their transport's
        `interrupt()` returned False): that call ends at its timeout, and the next call, from
        teardown, waits for it and reuses the session. A plain class is interrupted through its
        own `interrupt()`, if it has one (False from it means the same).
        """
        unaborted = []
        for item in self._opened.values():
            if item.control is not None:
                target_interrupt = getattr(item.target, "interrupt", None)
                if not callable(target_interrupt):
                    continue
                target: _Interruptible = _PlainInterrupt(
                    target_interrupt,
                    item.resource or "-",
                    self._config.instruments[item.name].timeout_ms,
                )
            else:
                target = item.transport
            try:
                aborted = target.interrupt()
            except Exception as exc:  # one instrument must not keep the others from being freed
                log.warning("%s: interrupt failed: %s", item.name, exc)
                continue
            if aborted is False:
                unaborted.append(UnabortedIO(item.name, target.resource, target.timeout_ms / 1000))
        return unaborted

    def safe_state(self) -> list[str]:
        """Put every instrument in its safe state now; returns one problem per instrument that
        could not be made safe or whose safe state was not verified (the PSU drivers read their
        outputs back and raise when one is still on). Stop signals are held meanwhile."""
        with _stop_signals_held():
            return [
                problem
                for item in self._opened.values()
                if (
                    problem := _quietly(
                        lambda i=item: self._safe_state_of(i), item.name, "safe state"
                    )
                )
            ]

    def _safe_state_of(self, item: OpenedInstrument) -> None:
        if item.control is None:
            item.driver.safe_state()
            return
        try:
            item.control.run_anyway("safe_state")
        except InstrumentError:
            raise
        except Exception as exc:
            raise _wrapped(item.name, item.resource, "safe_state()", exc) from exc

    def offers_attachments(self) -> bool:
        """Whether any open instrument offers files to the run (`run_attachments`)."""
        return any(
            callable(getattr(item.target, "run_attachments", None))
            for item in self._opened.values()
        )

    def collect_attachments(self, directory: Path) -> list[tuple[Path, str]]:
        """Files the instruments offer to the run that is ending (`run_attachments()` returning
        {name: text or bytes}, e.g. a console's transcript), written into `directory`; as
        (path, name) pairs. An instrument whose hook fails is logged and skipped."""
        found: list[tuple[Path, str]] = []
        for item in self._opened.values():
            hook = getattr(item.target, "run_attachments", None)
            if not callable(hook):
                continue
            try:
                if item.control is not None:
                    offered = item.control.run_anyway("run_attachments")
                else:
                    offered = hook()
                for attachment_name, content in dict(offered or {}).items():
                    safe = re.sub(r"[^\w.\-]+", "_", str(attachment_name)).strip("._") or "file"
                    path = directory / f"{item.name}.{safe}"
                    if isinstance(content, bytes):
                        path.write_bytes(content)
                    else:
                        path.write_text(str(content), encoding="utf-8")
                    found.append((path, safe))
            except Exception as exc:
                log.warning("%s: run_attachments failed: %s", item.name, exc)
        return found

    def close(self) -> list[str]:
        """Safe state then close, for each instrument, for good; returns the problems met (also
        logged). Idempotent.

        Stop signals are held meanwhile: a second Ctrl-C (or a SIGTERM/SIGHUP/SIGQUIT) must not
        leave a supply powered; a held signal is delivered once every instrument is closed.
        """
        self._closed = True
        with _stop_signals_held():
            return self._close_all()

    def _close_all(self) -> list[str]:
        problems = []
        for item in self._opened.values():
            for action, what in (
                (lambda i=item: self._safe_state_of(i), "safe state"),
                (lambda i=item: self._close_one(i), "close"),
            ):
                problem = _quietly(action, item.name, what)
                if problem:
                    problems.append(problem)
        self._opened.clear()
        return problems

    def _close_one(self, item: OpenedInstrument) -> None:
        if item.control is None:
            item.driver.close()
            return
        item.control.closed = True  # every later call through the wrapper raises
        try:
            item.control.run_anyway("close")
        except InstrumentError:
            raise
        except Exception as exc:
            raise _wrapped(item.name, item.resource, "close()", exc) from exc
        finally:
            if item.os_lock is not None:
                item.os_lock.release()

    def __enter__(self) -> InstrumentSet:
        return self.open()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __getitem__(self, name: str) -> Any:
        return self._opened[name].driver

    def __iter__(self) -> Iterator[str]:
        return iter(self._opened)

    def __len__(self) -> int:
        return len(self._opened)


class _PlainInterrupt:
    """A plain class's own `interrupt()`, seen as a transport is by `InstrumentSet.interrupt`."""

    def __init__(self, interrupt: Any, resource: str, timeout_ms: int) -> None:
        self.interrupt = interrupt
        self.resource = resource
        self.timeout_ms = timeout_ms


def plain_identity(target: Any) -> str | None:
    """A plain instrument's `identity`: a string attribute or property, or a method's result."""
    value = getattr(target, "identity", None)
    if callable(value):
        value = value()
    return None if value is None else str(value)


def _wrapped(name: str, resource: str | None, what: str, exc: BaseException) -> InstrumentError:
    return InstrumentError(
        f"{what} failed: {type(exc).__name__}: {exc}",
        instrument=name,
        resource=resource,
        kind=KIND_IO,
    )


def _user_call(name: str, resource: str | None, what: str, action: Any) -> Any:
    """Run a plain class's own code; anything it raises becomes an InstrumentError naming
    the instrument, with the original as its cause."""
    try:
        return action()
    except InstrumentError:
        raise
    except Exception as exc:
        raise _wrapped(name, resource, what, exc) from exc


@contextlib.contextmanager
def _stop_signals_held() -> Iterator[None]:
    """Hold STOP_SIGNALS for the block; the first one that arrived is delivered after it, to
    the handler that was in place before (e.g. KeyboardInterrupt for Ctrl-C)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[int] = []
    previous = {}
    for signum in STOP_SIGNALS:
        previous[signum] = signal.signal(signum, lambda number, _frame: held.append(number))
    try:
        yield
    finally:
        for signum, handler in previous.items():
            if handler is not None:  # None: installed outside Python; cannot be restored
                signal.signal(signum, handler)
    if held:
        signal.raise_signal(held[0])


def _quietly(action: Any, name: str, what: str) -> str | None:
    """Run `action()`; a failure is logged and returned as a problem, never raised: making one
    instrument safe must not keep the others from being made safe."""
    try:
        action()
    except Exception as exc:
        problem = f"{name}: {what} failed: {exc}"
        log.warning(problem)
        return problem
    return None
