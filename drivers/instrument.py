"""`Instrument`: the public base class for your own session-based instrument.

Subclass it for any instrument that speaks text over a VISA resource or a serial port, and the
session gives your class what the built-in drivers have: one lock per instrument (a write and
its reply are never split by another thread), an OS lock on the resource (a second station
process cannot drive it), the interrupt a phase timeout or Ctrl-C uses to abort a call in
flight, reconnect with backoff on the next call after a lost link, a final `close()`, and every
failure as one `InstrumentError` naming the instrument, the resource and the command. At open
the `*IDN?` reply is checked against `IDN_PATTERN` and recorded with the run.

Safe state is a template: `make_safe()` sends `SAFE_STATE` (or what you write), `verify_safe()`
reads it back; `safe_state()` runs both, tries once more when the read-back disagrees, and then
raises `InstrumentError` of kind "not_applied" with what `verify_safe()` said. The framework
calls `safe_state()` when the instrument is opened, after every run and before it is closed::

    class Fixture(Instrument):
        MODEL = "ACME FX-2 fixture controller"
        IDN_PATTERN = re.compile(r"ACME,FX-2,")
        SAFE_STATE = ("FIXT:VAC OFF", "FIXT:CLAMP OFF")

        def clamp(self) -> None:
            self.write("FIXT:CLAMP ON")
            self.check_errors()

        def verify_safe(self) -> str | None:
            if self.query("FIXT:CLAMP?") not in ("0", "OFF"):
                return "clamp still reads ON"
            return None

Outside the framework, `Fixture.open("TCPIP::10.0.0.7::5025::SOCKET")` connects one and
`with` closes it. Config keys of station.yaml (`config: {...}`) are passed to the constructor
as keyword arguments after `transport` and `name`.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar, Self

from drivers.errors import KIND_NOT_APPLIED, InstrumentError
from drivers.models.scpi import ScpiInstrument
from drivers.transport.seam import Transport, open_transport

__all__ = ["Instrument"]


class Instrument(ScpiInstrument):
    """Base of a user's instrument driver on a managed session (see the module docstring).

    Class attributes a subclass sets: `MODEL` (how messages name it), `IDN_PATTERN` (what its
    `*IDN?` reply must match; by default anything), `DEFAULT_OPTIONS` (session options such as
    `read_termination`, `write_termination`, `baud_rate`; station.yaml may override them) and
    `SAFE_STATE` (commands that make it safe; `make_safe()` sends them in order).
    """

    MODEL: ClassVar[str] = "instrument"
    IDN_PATTERN: ClassVar[re.Pattern[str]] = re.compile(r".")
    DEFAULT_OPTIONS: ClassVar[dict[str, Any]] = {
        "read_termination": "\n",
        "write_termination": "\n",
    }
    SAFE_STATE: ClassVar[tuple[str, ...]] = ()

    def __init__(self, transport: Transport, name: str) -> None:
        super().__init__(transport, name)

    @classmethod
    def open(
        cls, resource: str, *, name: str | None = None, timeout_ms: int = 3000, **config: Any
    ) -> Self:
        """Connect to `resource` without the framework (a script, a notebook); `config` goes to
        the constructor. Returns the connected instrument; use it in a `with` to close it."""
        options = dict(cls.DEFAULT_OPTIONS)
        instrument = cls(
            open_transport(resource, name=name or cls.MODEL, timeout_ms=timeout_ms, **options),
            name or cls.MODEL,
            **config,
        )
        try:
            instrument.connect()
        except BaseException:
            instrument.close()
            raise
        return instrument

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- safe state: a template with read-back ----------------------------------------------

    def safe_state(self) -> None:
        """Make the instrument safe and prove it: `make_safe()`, then `verify_safe()`.

        When the read-back disagrees (or cannot be read), `make_safe()` runs once more and the
        read-back is repeated; if it still disagrees, InstrumentError of kind "not_applied"
        says what `verify_safe()` reported. A `make_safe()` that raised but whose read-back
        then agrees is not an error: the instrument is safe.
        """
        failure: InstrumentError | None = None
        problem = ""
        for _attempt in range(2):
            try:
                self.make_safe()
            except InstrumentError as exc:
                failure = exc
            try:
                found = self.verify_safe()
            except InstrumentError as exc:
                found = f"the safe state could not be read back ({exc.message})"
            if found is None:
                return
            problem = found
        raise self._error(
            f"safe state not verified: {problem}",
            failure.command if failure else None,
            KIND_NOT_APPLIED,
        ) from failure

    def make_safe(self) -> None:
        """Send what makes the instrument safe. Default: each of `SAFE_STATE`, in order."""
        for command in self.SAFE_STATE:
            self.write(command)

    def verify_safe(self) -> str | None:
        """Read back that the instrument is safe: None if it is, else what is not (e.g.
        "output still reads ON"). Default: nothing to verify. Override it whenever `make_safe`
        switches something off: a lost command is otherwise silent."""
        return None
