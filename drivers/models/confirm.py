"""What the load, SMU, scope and multiplexer models share: settings confirmed before a call
returns, lenient boolean replies, and a safe state that is read back.

A setting is confirmed by `*OPC?` (answered once the instrument has applied it) and then the
error queue (whatever it rejected); a safe state is applied, read back, applied once more if it
does not read back, and otherwise raised as InstrumentError of kind "not_applied".
"""

from __future__ import annotations

from collections.abc import Callable

from drivers.errors import KIND_GARBAGE, KIND_NOT_APPLIED, InstrumentError
from drivers.models.scpi import ScpiInstrument


class ConfirmingScpiInstrument(ScpiInstrument):
    """A SCPI instrument whose settings are confirmed (`_apply`) and whose safe state is
    verified (`_verify_safe`)."""

    def _apply(self, *commands: str) -> None:
        """Send settings and return only once the instrument has applied them without error."""
        for command in commands:
            self.write(command)
        self.wait_complete()
        self.check_errors()

    def _query_bool(self, command: str) -> bool:
        """A boolean reply, read leniently (`ON`/`1`, `OFF`/`0`), else an InstrumentError."""
        reply = self.query(command).upper()
        if reply in ("ON", "1"):
            return True
        if reply in ("OFF", "0"):
            return False
        raise self._error(f"expected ON/1 or OFF/0 from {command!r}, got {reply!r}", command,
                          KIND_GARBAGE)  # fmt: skip

    def _query_bools(self, command: str, count: int) -> list[bool]:
        """A comma-separated list of `count` booleans (`1,0,1`)."""
        reply = self.query(command)
        values = [value.strip().upper() for value in reply.split(",")]
        if len(values) != count or any(v not in ("1", "0", "ON", "OFF") for v in values):
            raise self._error(f"expected {count} values of 1 or 0 from {command!r}, got "
                              f"{reply!r}", command, KIND_GARBAGE)  # fmt: skip
        return [value in ("1", "ON") for value in values]

    def _verify_safe(
        self, what: str, make_safe: Callable[[], None], unsafe: Callable[[], str | None]
    ) -> None:
        """Apply `make_safe`, then read back with `unsafe` (None when safe, else what is not);
        once more if needed; then InstrumentError of kind "not_applied" naming what is not safe.

        A `make_safe` that raised but whose state reads back safe is not an error: it is safe.
        """
        failure: InstrumentError | None = None
        problem: str | None = None
        for _ in range(2):
            try:
                make_safe()
            except InstrumentError as exc:
                failure = failure or exc
            try:
                problem = unsafe()
            except InstrumentError as exc:
                problem = f"{what} could not be read back ({exc.message})"
            if problem is None:
                return
        raise self._error(f"safe state not verified: {problem} after {what}, twice", None,
                          KIND_NOT_APPLIED) from failure  # fmt: skip


def number(value: float) -> str:
    """A number as SCPI text: 5 -> '5', 0.5 -> '0.5', 1e-05 -> '1e-05'."""
    return f"{value:.8g}"
