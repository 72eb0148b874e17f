"""A scripted transport: the seam drivers talk through, asserting the exact exchange."""

from __future__ import annotations

import pytest


class ScriptedTransport:
    """Plays back recorded exchanges: (command, reply) for a query, (command, None) for a write.

    Every write/query must match the next recorded command byte for byte.
    """

    def __init__(self, script: list[tuple[str, str | None]], resource: str = "TCPIP::sim::SOCKET"):
        self.script = list(script)
        self.resource = resource
        self.timeout_ms = 3000
        self.opened = False
        self.closed = False
        self.query_timeouts: list[int] = []

    def _next(self, command: str, is_query: bool) -> str | None:
        assert self.script, f"unexpected {command!r}: the script is finished"
        expected, reply = self.script.pop(0)
        assert command == expected, f"sent {command!r}, expected {expected!r}"
        assert (reply is not None) == is_query, f"{command!r}: write/query mismatch"
        return reply

    def open(self) -> None:
        self.opened = True

    def write(self, command: str) -> None:
        self._next(command, is_query=False)

    def read(self) -> str:
        raise AssertionError("drivers use query(), not a bare read()")

    def query(self, command: str) -> str:
        self.query_timeouts.append(self.timeout_ms)
        reply = self._next(command, is_query=True)
        assert reply is not None
        return reply

    def in_flight(self) -> tuple[str, float] | None:
        return None

    def interrupt(self) -> bool:
        return True

    def set_call_guard(self, guard) -> None:
        self.guard = guard

    def close(self) -> None:
        self.closed = True

    def finished(self) -> bool:
        return not self.script


@pytest.fixture
def scripted():
    """Factory: scripted(exchanges) -> ScriptedTransport; asserts the script was played out."""
    made: list[ScriptedTransport] = []

    def make(script: list[tuple[str, str | None]]) -> ScriptedTransport:
        made.append(ScriptedTransport(script))
        return made[-1]

    yield make
    for transport in made:
        assert transport.finished(), f"commands never sent: {transport.script}"
