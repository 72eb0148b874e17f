"""How a running phase learns it has been stopped: its cancel token and `PhaseCancelled`.

The engine binds a token to the thread a phase runs on (`bind_token`); the injected helpers
(`run.sleep()`, `measurements`) read it with `current_token()`. Kept apart from the engine so
the authoring layer can wait on a stop without importing the thread machinery.
"""

from __future__ import annotations

import threading

_local = threading.local()


class PhaseCancelled(BaseException):
    """Raised inside a stopped phase; a BaseException, so `except Exception` cannot eat it."""


class CancelToken:
    """Set when the phase running under it must stop."""

    __slots__ = ("_event", "reason")

    def __init__(self) -> None:
        self._event = threading.Event()
        self.reason = ""

    def cancel(self, reason: str) -> None:
        self.reason = reason
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def sleep(self, seconds: float) -> None:
        """Sleep, but wake up and raise PhaseCancelled the moment the phase is stopped."""
        if self._event.wait(max(0.0, seconds)):
            raise PhaseCancelled(self.reason)


def current_token() -> CancelToken | None:
    """The cancel token of the phase running on this thread, if any."""
    return getattr(_local, "token", None)


def bind_token(token: CancelToken | None) -> None:
    """Make `token` the current phase's token on this thread (None when the phase is over)."""
    _local.token = token
