"""The bench's instruments for one run: built from station.yaml, opened, and always left safe.

`InstrumentSet` opens the instruments a procedure uses, puts each in its safe state right away
(a PSU is off before the operator inserts the next board), and on every way out, normal or not,
calls `safe_state()` and `close()` on each one. A failure to make one instrument safe never
keeps the others from being made safe, and the stop signals (Ctrl-C, SIGTERM, SIGHUP, SIGQUIT)
are held meanwhile, so a second one cannot skip it.

Closing is final: once `close()` ran, no call on these drivers, from any thread, reopens a
connection (the transports' `close()` is final), so a phase thread that swallowed its stop
cannot switch a supply back on after the run.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from drivers import InstrumentError, UnknownDriverError
from drivers.errors import (
    KIND_GARBAGE,
    KIND_IN_USE,
    KIND_LOST,
    KIND_REFUSED,
    KIND_TIMEOUT,
    KIND_WRONG_MODEL,
)
from drivers.registry import DRIVERS, create_driver, driver_names, get_driver_class
from drivers.transport.seam import is_serial_resource

log = logging.getLogger("station.instruments")

# The signals that stop a run (station treats them all like SIGTERM: teardown, safe state, an
# ABORTED record); SIGHUP is a closed terminal or a dropped SSH session. Not all exist on Windows.
STOP_SIGNALS: tuple[signal.Signals, ...] = tuple(
    getattr(signal, name)
    for name in ("SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT")
    if hasattr(signal, name)
)


def check_drivers(config: Any, names: Collection[str] | None = None) -> None:
    """Every configured driver exists: raise the config error located at its line otherwise."""
    for name in names if names is not None else config.instruments:
        driver = config.instruments[name].driver
        try:
            get_driver_class(driver)
        except UnknownDriverError:
            raise config.error(
                f"instruments.{name}.driver",
                f"unknown driver {driver!r}; available drivers: {', '.join(driver_names())}",
            ) from None


@dataclass
class OpenedInstrument:
    name: str
    driver: Any
    identity: str
    round_trip_ms: float  # time to open and identify it (connect + *IDN?)


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
    resource = error.resource or settings.resource

    def line(key: str) -> str:
        number = config.line_of(f"instruments.{name}.{key}") or config.line_of(
            f"instruments.{name}"
        )
        return f"{where} line {number}" if number else where

    serial = is_serial_resource(resource) or resource.upper().startswith("ASRL")
    if error.kind == KIND_IN_USE:
        holder = f"pid {error.pid}" if error.pid else "another process"
        return f"held by {holder}: stop that station (or let it finish) and try again"
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
    """Opened drivers by their station.yaml names. Use as a context manager."""

    def __init__(
        self, config: Any, names: Collection[str], resources: Mapping[str, str] | None = None
    ):
        self._config = config
        self._names = sorted(names)
        self._resources = dict(resources or {})
        self._opened: dict[str, OpenedInstrument] = {}
        self._closed = False

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
        driver = create_driver(
            settings.driver,
            self._resources.get(name, settings.resource),
            name=name,
            timeout_ms=settings.timeout_ms,
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
        opened = OpenedInstrument(name, driver, identity, round_trip_ms)
        self._opened[name] = opened  # so close() reaches it if safe_state below fails
        driver.safe_state()
        return opened

    @property
    def opened(self) -> list[OpenedInstrument]:
        return list(self._opened.values())

    def in_flight(self) -> list[str]:
        """What each instrument is busy with right now, e.g. for a timeout's message:
        `dmm (TCPIP::...): 'READ?' in progress for 0.5 s`. Call it before `interrupt()`."""
        busy = []
        for item in self._opened.values():
            transport = item.driver.transport
            try:
                doing = transport.in_flight() if hasattr(transport, "in_flight") else None
            except Exception:  # a description must never stop a run from being stopped
                doing = None
            if doing is not None:
                what, seconds = doing
                busy.append(
                    f"{item.name} ({transport.resource}): {what} in progress for {seconds:.1f} s"
                )
        return busy

    def interrupt(self) -> list[UnabortedIO]:
        """Abort I/O in flight on every instrument (a stopped phase may be blocked in a read).

        Returns the instruments whose call in flight could not be aborted (their transport's
        `interrupt()` returned False): that call ends at its timeout, and the next call, from
        teardown, waits for it and reuses the session.
        """
        unaborted = []
        for item in self._opened.values():
            transport: _Interruptible = item.driver.transport
            try:
                aborted = transport.interrupt()
            except Exception as exc:  # one instrument must not keep the others from being freed
                log.warning("%s: interrupt failed: %s", item.name, exc)
                continue
            if aborted is False:
                unaborted.append(
                    UnabortedIO(item.name, transport.resource, transport.timeout_ms / 1000)
                )
        return unaborted

    def safe_state(self) -> list[str]:
        """Put every instrument in its safe state now; returns one problem per instrument that
        could not be made safe or whose safe state was not verified (the PSU drivers read their
        outputs back and raise when one is still on). Stop signals are held meanwhile."""
        with _stop_signals_held():
            return [
                problem
                for item in self._opened.values()
                if (problem := _quietly(item.driver.safe_state, item.name, "safe state"))
            ]

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
                (item.driver.safe_state, "safe state"),
                (item.driver.close, "close"),
            ):
                problem = _quietly(action, item.name, what)
                if problem:
                    problems.append(problem)
        self._opened.clear()
        return problems

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
