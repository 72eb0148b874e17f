"""ScpiInstrument: what every SCPI instrument shares (identity, reset, error queue, helpers),
and `parse_identity`, which reads maker, model, serial number and firmware from an identity."""

from __future__ import annotations

import math
import re
from typing import Any, ClassVar, NamedTuple

from drivers.errors import KIND_REPORTED, KIND_WRONG_MODEL, InstrumentError
from drivers.transport.seam import Transport, open_transport

_LEADING_INT = re.compile(r"^\s*([+-]?\d+)")
# Instruments report overload as +9.9E37 (SCPI "not a number" is 9.91E37).
_OVERLOAD = 9.9e37
# A broken instrument could answer errors forever; stop reading the queue after this many.
_MAX_QUEUED_ERRORS = 32
_IDN_TIMEOUT_MS = 1000
_MAX_UNCHECKED = 4  # commands an error-queue report names as its likely cause
_SERIAL_TOKEN = re.compile(r"^(?:SN|S/N|SER(?:IAL)?)[:#=]?\s*(\S+)$", re.IGNORECASE)
_FIRMWARE_TOKEN = re.compile(r"^(?:V|VER|FW|REV)[:.=]?\s*(\d[\w.\-]*)$", re.IGNORECASE)


class IdentityFields(NamedTuple):
    """What an identity string says about the instrument (None where it does not say)."""

    manufacturer: str | None = None
    model: str | None = None
    serial_number: str | None = None
    firmware: str | None = None


def parse_identity(identity: str | None) -> IdentityFields:
    """Maker, model, serial number and firmware from an instrument's identity string.

    The IEEE 488.2 `*IDN?` form is four comma-separated fields
    (`Keysight Technologies,34465A,MY59008389,A.03.01-03.15`; `MODEL DMM6500` loses its
    `MODEL` prefix). Instruments without commas (`KORAD KA3005P V5.8 SN:03379314`) are read as
    maker, model, then tokens marked `SN:`/`S/N` (serial) and `V5.8`/`FW:` (firmware). An empty
    field or a "0" placeholder is None: a twin or a cheap box that does not know its serial.
    """
    text = (identity or "").strip()
    if not text:
        return IdentityFields()
    if "," in text:
        fields = [field.strip() for field in text.split(",")]
        fields += [""] * (4 - len(fields))
        model = re.sub(r"^MODEL\s+", "", fields[1], flags=re.IGNORECASE)
        firmware_field = ",".join(fields[3:])
        return IdentityFields(
            *(_known(value) for value in (fields[0], model, fields[2], firmware_field))
        )
    words = text.split()
    serial: str | None = None
    firmware: str | None = None
    rest: list[str] = []
    for word in words:
        if serial is None and (match := _SERIAL_TOKEN.match(word)):
            serial = match.group(1)
        elif firmware is None and (match := _FIRMWARE_TOKEN.match(word)):
            firmware = match.group(1)
        else:
            rest.append(word)
    return IdentityFields(
        rest[0] if rest else None, " ".join(rest[1:]) or None, _known(serial or ""), firmware
    )


def _known(value: str) -> str | None:
    value = value.strip()
    return None if value in ("", "0") else value


class ScpiInstrument:
    """Base class of SCPI drivers. Subclasses hold every SCPI string of their model."""

    MODEL: ClassVar[str] = "SCPI instrument"
    IDN_PATTERN: ClassVar[re.Pattern[str]] = re.compile(r".")
    DEFAULT_OPTIONS: ClassVar[dict[str, Any]] = {}
    ERROR_QUERY: ClassVar[str] = "SYST:ERR?"
    ANSWERS_IDN: ClassVar[bool] = True  # connect() identifies it with *IDN?

    def __init__(self, transport: Transport, name: str) -> None:
        self.transport = transport
        self.name = name
        self._identity: str | None = None
        # What was written since the error queue was last read: an error it reports is
        # blamed on these commands (the last few: a queue is read after every setting).
        self._unchecked: list[str] = []

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, {self.transport.resource!r})"

    @classmethod
    def transport_for(cls, resource: str, **options: Any) -> Transport:
        """The session this class talks through (`open_transport`: VISA or pyserial by the
        resource's form); a class needing another kind of session overrides it."""
        return open_transport(resource, **options)

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

    def identity_fields(self) -> IdentityFields:
        """Maker, model, serial number and firmware read from `identity` (see `parse_identity`);
        a model whose identity has another form overrides this."""
        return parse_identity(self._identity)

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
