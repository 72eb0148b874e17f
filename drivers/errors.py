"""Exceptions raised by instrument drivers and transports.

They carry the instrument's name, its resource string and the command that failed, so an
operator reading a failed run knows which box to look at and what it was asked.
"""

from __future__ import annotations


class InstrumentError(Exception):
    """An instrument did not do what it was asked: no reply, lost link, or an error it reported.

    `kind` says what went wrong, so a caller (e.g. `station check`) can give the operator a hint
    without parsing the message. It is one of the `KIND_*` strings below, or None if unknown.
    """

    def __init__(
        self,
        message: str,
        *,
        instrument: str | None = None,
        resource: str | None = None,
        command: str | None = None,
        kind: str | None = None,
        pid: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.instrument = instrument
        self.resource = resource
        self.command = command
        self.kind = kind
        self.pid = pid  # with KIND_IN_USE: the process holding the instrument, if known

    def __str__(self) -> str:
        if self.instrument and self.resource:
            prefix = f"{self.instrument} ({self.resource}): "
        elif self.instrument or self.resource:
            prefix = f"{self.instrument or self.resource}: "
        else:
            prefix = ""
        text = f"{prefix}{self.message}"
        # Most messages already quote their command; only add it when it would be missing.
        if self.command and self.command not in self.message:
            text += f" (command {self.command!r})"
        return text


# What went wrong, for InstrumentError.kind.
KIND_REFUSED = "refused"  # nothing listening / no such port / closed at once at open
KIND_TIMEOUT = "timeout"  # no (complete) reply within the timeout
KIND_LOST = "lost"  # the link dropped during a call; the next call reconnects
KIND_GARBAGE = "garbage"  # a reply that is not ASCII text or not of the expected form
KIND_IN_USE = "in_use"  # another process holds the instrument's lock
KIND_WRONG_MODEL = "wrong_model"  # *IDN? answered, but by another model
KIND_REPORTED = "reported"  # the instrument's own error queue reported an error
KIND_NOT_APPLIED = "not_applied"  # a setting read back differently from what was sent
KIND_INTERRUPTED = "interrupted"  # aborted by interrupt() or close() from another thread
KIND_CLOSED = "closed"  # the transport was closed for good: no call reopens it
KIND_STOPPED = "stopped"  # refused by the call guard (e.g. I/O from a stopped phase's thread)
KIND_IO = "io"  # any other I/O failure
KIND_NO_BACKEND = "no_backend"  # the software this resource needs is missing (pyusb, VISA)


class UnknownDriverError(LookupError):
    """A driver name (as written in station.yaml) that the registry does not know."""

    def __init__(self, name: str, available: list[str]) -> None:
        self.name = name
        self.available = sorted(available)
        super().__init__(f"unknown driver {name!r}; available drivers: {', '.join(self.available)}")

    def __str__(self) -> str:
        # LookupError would otherwise repr() the message like KeyError does.
        return str(self.args[0])
