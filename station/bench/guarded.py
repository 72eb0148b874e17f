"""`GuardedInstrument`: a plain instrument class of yours, as phases receive it.

A plain class (no base class: the shape TofuPilot Framework plugs have) does its own I/O, so the
framework cannot reach into its session. It wraps the object instead: every public method called
through the wrapper first runs the call guard (a stopped phase's thread is refused, as it is by
every built-in session) and then takes the instrument's lock (two threads never interleave
calls on one instrument; a call waits for another thread's at most the instrument timeout plus
2 s). After the run's instruments are closed every call raises, from any thread. Attributes
and properties are read and written through to the object; `isinstance(relay, RelayBoard)`
holds. Objects reached through the instrument (`relay.bank1.close(3)`) are not wrapped.

The framework's own calls (`safe_state()`, `close()`, `run_attachments()`) take the same lock,
but when another thread still holds it past the bound they run anyway: a stuck phase must never
keep the bench from being made safe.
"""

from __future__ import annotations

import inspect
import threading
import time
from collections.abc import Callable
from typing import Any

from drivers.errors import KIND_CLOSED, KIND_STOPPED, KIND_TIMEOUT, InstrumentError

__all__ = ["GuardedInstrument", "control_of"]

BUSY_SLACK_S = 2.0  # beyond the instrument timeout, how long a call waits for another's


class Control:
    """The framework's side of one wrapped instrument: guard, lock, what is in flight."""

    __slots__ = ("closed", "doing", "guard", "lock", "name", "resource", "target", "wait_s")

    def __init__(self, target: Any, name: str, resource: str | None, timeout_s: float) -> None:
        self.target = target
        self.name = name
        self.resource = resource
        self.wait_s = timeout_s + BUSY_SLACK_S
        self.guard: Callable[[], str | None] | None = None
        self.lock = threading.RLock()
        self.doing: tuple[str, float] | None = None  # method in flight, since (monotonic)
        self.closed = False

    def error(self, message: str, command: str | None, kind: str) -> InstrumentError:
        return InstrumentError(
            message, instrument=self.name, resource=self.resource, command=command, kind=kind
        )

    def wrap(self, attr: str, method: Callable[..., Any]) -> Callable[..., Any]:
        """`method` behind the closed check, the call guard and the lock."""

        control = self
        acquire, release, monotonic = self.lock.acquire, self.lock.release, time.monotonic

        def call(*args: Any, **kwargs: Any) -> Any:
            if control.closed:
                raise control.error(f"closed: {attr}() not called", attr, KIND_CLOSED)
            guard = control.guard
            if guard is not None and (reason := guard()) is not None:
                raise control.error(f"{attr}() refused: {reason}", attr, KIND_STOPPED)
            if not acquire(False) and not acquire(timeout=control.wait_s):
                raise control.error(control.busy(attr), attr, KIND_TIMEOUT)
            control.doing = (attr, monotonic())
            try:
                return method(*args, **kwargs)
            finally:
                control.doing = None
                release()

        call.__name__ = attr
        call.__doc__ = method.__doc__
        return call

    def busy(self, attr: str) -> str:
        doing = self.doing
        what = f" with {doing[0]}()" if doing is not None else ""
        return (
            f"{attr}() not called: the instrument is still busy{what} from another thread "
            f"after {self.wait_s:.1f} s"
        )

    def run_anyway(self, attr: str) -> Any:
        """Call the target's `attr()` for the framework (safe state, close): under the lock when
        it comes within the bound, without it otherwise. None if the target has no `attr`."""
        method = getattr(self.target, attr, None)
        if not callable(method):
            return None
        locked = self.lock.acquire(timeout=self.wait_s)
        try:
            return method()
        finally:
            if locked:
                self.lock.release()

    def in_flight(self) -> tuple[str, float] | None:
        doing = self.doing
        if doing is None:
            return None
        return f"{doing[0]}()", time.monotonic() - doing[1]


class GuardedInstrument:
    """The object a phase receives for a plain instrument class (see the module docstring)."""

    def __init__(self, control: Control) -> None:
        object.__setattr__(self, "_control", control)

    def __getattr__(self, attr: str) -> Any:  # only for names not found on the wrapper
        control: Control = object.__getattribute__(self, "_control")
        value = getattr(control.target, attr)
        if attr.startswith("_") or not inspect.ismethod(value):
            return value  # data, properties (read each time), private helpers
        wrapped = control.wrap(attr, value)
        object.__setattr__(self, attr, wrapped)  # found directly from now on
        return wrapped

    def __setattr__(self, attr: str, value: Any) -> None:
        control: Control = object.__getattribute__(self, "_control")
        setattr(control.target, attr, value)
        self.__dict__.pop(attr, None)  # a replaced method is wrapped afresh

    def __delattr__(self, attr: str) -> None:
        control: Control = object.__getattribute__(self, "_control")
        delattr(control.target, attr)
        self.__dict__.pop(attr, None)

    @property  # type: ignore[misc]  # isinstance(wrapper, TheClass) holds, as for the object
    def __class__(self) -> type:
        control: Control = object.__getattribute__(self, "_control")
        return type(control.target)

    def __dir__(self) -> list[str]:
        control: Control = object.__getattribute__(self, "_control")
        return dir(control.target)

    def __repr__(self) -> str:
        control: Control = object.__getattribute__(self, "_control")
        return repr(control.target)


def control_of(instrument: GuardedInstrument) -> Control:
    """The framework's side of a wrapped instrument."""
    control: Control = object.__getattribute__(instrument, "_control")
    return control
