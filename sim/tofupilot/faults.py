"""Fault injection for the TofuPilot emulator: what the server does wrong, per request."""

from __future__ import annotations

import random
import re
import threading
from collections import deque
from collections.abc import Iterable, Mapping

_FAULT_RE = re.compile(
    r"(ok|drop|drop_after_store|hang|hang_after_store|slow|[45]\d\d)(?::(\d+(?:\.\d+)?))?"
)


class Faults:
    """What the server does wrong, decided per request. Thread-safe; change it while serving.

    Actions (a string each): `ok`; `429` (with `Retry-After: retry_after_s`, or `429:<s>`); any
    other 4xx/5xx status such as `500` or `422` (answered with its documented error code);
    `hang` (hold the request `hang_s`, or `hang:<s>`, or until stop, then close without an
    answer; nothing is stored); `slow:<s>` (wait, then answer normally); `drop` (close without
    answering, nothing stored); `drop_after_store` (do the work, e.g. store the run, then close
    without answering: the lost-response case); `hang_after_store` (do the work, then hold the
    request like `hang` before closing without an answer: the client is still waiting for an
    answer the server will never send, e.g. while a test kills it).

    `plan([...])` queues exact actions for the next matching requests; once the plan is used up,
    `random_mix(seed, weights)` (if set) draws one per request from a seeded generator, else `ok`.
    `match` (a regex searched in "METHOD /path") limits which requests count; default: all.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._plan: deque[str] = deque()
        self._rng: random.Random | None = None
        self._weights: list[tuple[str, float]] = []
        self.match: str | None = None
        self.retry_after_s: float = 1
        self.hang_s: float = 5.0

    def plan(self, actions: Iterable[str], *, match: str | None = None) -> None:
        """Answer the next matching requests with `actions`, in order (replaces any plan)."""
        actions = [_check_action(a) for a in actions]
        with self._lock:
            self._plan = deque(actions)
            self.match = match

    def random_mix(
        self, seed: int, weights: Mapping[str, float], *, match: str | None = None
    ) -> None:
        """After the plan, draw each matching request's action from `weights` (action -> weight)."""
        checked = [(_check_action(a), float(w)) for a, w in weights.items() if w > 0]
        if not checked:
            raise ValueError("random_mix needs at least one action with a positive weight")
        with self._lock:
            self._rng = random.Random(seed)
            self._weights = checked
            self.match = match

    def clear(self) -> None:
        """Back to a well-behaved server."""
        with self._lock:
            self._plan.clear()
            self._rng, self._weights, self.match = None, [], None

    @property
    def pending(self) -> list[str]:
        """Planned actions not used yet."""
        with self._lock:
            return list(self._plan)

    def next_action(self, request_line: str) -> str:
        with self._lock:
            if self.match and not re.search(self.match, request_line):
                return "ok"
            if self._plan:
                return self._plan.popleft()
            if self._rng is not None:
                actions, weights = zip(*self._weights, strict=True)
                return self._rng.choices(actions, weights)[0]
            return "ok"


def _check_action(action: str) -> str:
    if not isinstance(action, str) or not _FAULT_RE.fullmatch(action):
        raise ValueError(
            f"unknown fault {action!r}: use ok, 429[:s], a 4xx/5xx status, hang[:s], slow:s, "
            "drop, drop_after_store or hang_after_store[:s]"
        )
    return action
