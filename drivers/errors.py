"""Exceptions raised by instrument drivers and transports.

They carry the instrument's name, its resource string and the command that failed, so an
operator reading a failed run knows which box to look at and what it was asked.
"""

from __future__ import annotations


class InstrumentError(Exception):
    """An instrument did not do what it was asked: no reply, lost link, or an error it reported."""

    def __init__(
        self,
        message: str,
        *,
        instrument: str | None = None,
        resource: str | None = None,
        command: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.instrument = instrument
        self.resource = resource
        self.command = command

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


class UnknownDriverError(LookupError):
    """A driver name (as written in station.yaml) that the registry does not know."""

    def __init__(self, name: str, available: list[str]) -> None:
        self.name = name
        self.available = sorted(available)
        super().__init__(f"unknown driver {name!r}; available drivers: {', '.join(self.available)}")

    def __str__(self) -> str:
        # LookupError would otherwise repr() the message like KeyError does.
        return str(self.args[0])
