"""ScpiInstrument: what every SCPI instrument shares (identity, reset, error queue, helpers)."""

from __future__ import annotations

import math
import re
from typing import Any, ClassVar

from drivers.errors import KIND_REPORTED, KIND_WRONG_MODEL, InstrumentError
from drivers.transport.seam import Transport

_LEADING_INT = re.compile(r"^\s*([+-]?\d+)")
# Instruments report overload as +9.9E37 (SCPI "not a number" is 9.91E37).
_OVERLOAD = 9.9e37
# A broken instrument could answer errors forever; stop reading the queue after this many.
_MAX_QUEUED_ERRORS = 32
_IDN_TIMEOUT_MS = 1000
_MAX_UNCHECKED = 4  # commands an error-queue report names as its likely cause


class ScpiInstrument:
    """Base class of SCPI drivers. Subclasses hold every SCPI string of their model."""

    MODEL: ClassVar[str] = "SCPI instrument"
    IDN_PATTERN: ClassVar[re.Pattern[str]] = re.compile(r".")
    DEFAULT_OPTIONS: ClassVar[dict[str, Any]] = {}
    ERROR_QUERY: ClassVar[str] = "SYST:ERR?"

    def __init__(self, transport: Transport, name: str) -> None:
        self.transport = transport
        self.name = name
        self._identity: str | None = None
        # What was written since the error queue was last read: an error it reports is
        # blamed on these commands (the last few: a queue is read after every setting).
        self._unchecked: list[str] = []

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, {self.transport.resource!r})"

    def _error(
        self, message: str, command: str | None = None, kind: str | None = None
    ) -> InstrumentError:
        return InstrumentError(
            message,
            instrument=self.name,
            resource=self.transport.resource,
            command=command,
            kind=kind,
        )

    # -- session ----------------------------------------------------------------------------

    def connect(self) -> str:
        """Open the link and check that the right model answers; returns its *IDN? reply.

        The identity query uses a short timeout so a wrong or silent address fails fast.
        """
        self.transport.open()
        configured = self.transport.timeout_ms
        self.transport.timeout_ms = min(_IDN_TIMEOUT_MS, configured)
        try:
            idn = self.query("*IDN?")
        finally:
            self.transport.timeout_ms = configured
        if not self.IDN_PATTERN.search(idn):
            raise self._error(f"expected {self.MODEL}, got {idn!r}", "*IDN?", KIND_WRONG_MODEL)
        self._identity = idn
        return idn

    @property
    def identity(self) -> str | None:
        """The *IDN? reply once `connect()` succeeded, else None."""
        return self._identity

    def close(self) -> None:
        """Close the transport for good (the instrument keeps its state): every later call,
        from any thread, raises InstrumentError of kind "closed"."""
        self.transport.close()

    def safe_state(self) -> None:
        """Put the instrument where it cannot hurt the unit or the operator. Default: nothing."""

    # -- IEEE 488.2 common commands ---------------------------------------------------------

    def reset(self) -> None:
        """Return to power-on defaults and wait until the instrument is done."""
        self.write("*RST")
        self.wait_complete()

    def clear_status(self) -> None:
        """Clear the status registers and the error queue."""
        self.write("*CLS")

    def wait_complete(self) -> None:
        """Block until all pending operations are complete (*OPC? answers 1)."""
        self.query("*OPC?")

    def check_errors(self) -> None:
        """Read the error queue until empty; raise with the instrument's own text if not.

        The message names the commands written since the queue was last read (the likely
        culprits), and `command` is the last of them.
        """
        sent, self._unchecked = self._unchecked, []
        errors: list[str] = []
        for _ in range(_MAX_QUEUED_ERRORS):
            reply = self.query(self.ERROR_QUERY).strip()
            match = _LEADING_INT.match(reply)
            if match is None:
                raise self._error(f"unexpected error-queue reply {reply!r}", self.ERROR_QUERY)
            if int(match.group(1)) == 0:
                break
            errors.append(reply)
        if errors:
            message = "; ".join(errors)
            if sent:
                message += f" (after {', '.join(repr(c) for c in sent)})"
            raise self._error(message, sent[-1] if sent else None, KIND_REPORTED)

    # -- helpers ----------------------------------------------------------------------------

    def write(self, command: str) -> None:
        unchecked = self._unchecked
        if len(unchecked) >= _MAX_UNCHECKED:
            del unchecked[0]
        unchecked.append(command)
        self.transport.write(command)

    def query(self, command: str) -> str:
        return self.transport.query(command).strip()

    def query_float(self, command: str) -> float:
        """Query a number (NR1, NR2 or NR3); overload (±9.9E37) becomes ±inf."""
        reply = self.query(command)
        try:
            value = float(reply)
        except ValueError:
            message = f"expected a number from {command!r}, got {reply!r}"
            raise self._error(message, command) from None
        if abs(value) >= _OVERLOAD:
            return math.copysign(math.inf, value)
        return value
