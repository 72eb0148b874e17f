"""Twins of the generic drivers, for `--sim` when station.yaml has no twin of its own.

`GenericScpiTwin` (for `driver: scpi`) remembers settings: `OUTP OFF` then `OUTP?` answers `OFF`,
so a configured safe state reads back; `replies` gives fixed answers to queries
(`{"MEAS:VOLT?": "+5.0E+00"}`); any other query is an undefined header (-113 in the error queue,
no reply), as on a real instrument.

`ScriptedConsole` (for `driver: serial-line`, served on a pty) is a DUT console: each line it
receives is matched against `replies` (regular expressions, in order; a reply may use the
groups, `\\1`), answered, and followed by `prompt`; a line nothing matches gets `unknown`.
With `echo` the line is echoed first, as a shell on a UART does. Both take their settings from
the instrument's `sim_config:` in station.yaml.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping
from typing import Any

from sim.twins.scpi import UNDEFINED_HEADER, ScpiError, ScpiTwin

__all__ = ["GenericScpiTwin", "ScriptedConsole"]


class GenericScpiTwin(ScpiTwin):
    """Any SCPI box: *IDN?, the error queue, settings remembered, fixed replies."""

    def __init__(
        self,
        bench: Any = None,
        *,
        idn: str = "SIM,GENERIC-SCPI,0,1.0",
        replies: Mapping[str, str] | None = None,
        settings: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__()
        self.IDN = idn
        self.bench = bench
        self.replies = {_key(query): str(reply) for query, reply in (replies or {}).items()}
        self.initial = {_key(header): str(value) for header, value in (settings or {}).items()}
        self.values = dict(self.initial)
        self.received: list[str] = []  # every command, in order (for tests)

    def reset_state(self) -> None:
        self.values = dict(self.initial)

    def handle(self, message: str) -> str | None:
        self.received.append(message)
        return super().handle(message)

    def _dispatch(self, header: str, args: tuple[str, ...]) -> str | None:
        key = _key(header)
        if key.endswith("?"):
            if key in self.replies:
                return self.replies[key]
            setting = key[:-1]
            if setting in self.values:
                return self.values[setting]
            try:
                return super()._dispatch(header, args)
            except ScpiError:
                raise ScpiError(*UNDEFINED_HEADER) from None
        try:
            return super()._dispatch(header, args)  # *RST, *CLS, ...
        except ScpiError:
            self.values[key] = ",".join(args)
            return None


def _key(header: str) -> str:
    """A header as remembered: upper case, no leading colon, no arguments."""
    return header.strip().upper().lstrip(":").partition(" ")[0]


class ScriptedConsole:
    """A line console on a pty: replies by regular expression, a prompt, optional echo."""

    def __init__(
        self,
        bench: Any = None,
        *,
        replies: Mapping[str, str] | None = None,
        prompt: str = "> ",
        banner: str = "",
        unknown: str = "unknown command: {line}",
        echo: bool = False,
        line_end: str = "\r\n",
    ) -> None:
        self.bench = bench
        self.rules = [(re.compile(pattern), reply) for pattern, reply in (replies or {}).items()]
        self.prompt = prompt
        self.banner = banner
        self.unknown = unknown
        self.echo = echo
        self.line_end = line_end
        self.received: list[str] = []  # every line, in order (for tests)
        self._lock = threading.Lock()
        self._greeted = False

    def split(self, buffer: bytes, idle: bool) -> tuple[list[str], bytes]:
        """The complete lines at the front of `buffer` (ended by CR, LF or CR LF), and the rest."""
        lines: list[str] = []
        while True:
            match = re.search(rb"\r\n|\r|\n", buffer)
            if match is None:
                return lines, buffer
            if match.group(0) == b"\r" and match.end() == len(buffer) and not idle:
                return lines, buffer  # a LF may follow
            lines.append(buffer[: match.start()].decode("utf-8", "replace"))
            buffer = buffer[match.end() :]

    def handle(self, line: str) -> bytes | None:
        """The reply to one line: echo, the answer (or `unknown`), then the prompt."""
        with self._lock:
            self.received.append(line)
            parts: list[str] = []
            if not self._greeted and self.banner:
                parts.append(self.banner + self.line_end)
            self._greeted = True
            if self.echo:
                parts.append(line + self.line_end)
            if line.strip():
                parts.append(self._answer(line.strip()))
            parts.append(self.prompt)
            return "".join(parts).encode("utf-8")

    def _answer(self, line: str) -> str:
        for pattern, reply in self.rules:
            match = pattern.fullmatch(line)
            if match is not None:
                text = match.expand(reply) if "\\" in reply else reply
                return text + self.line_end if text else ""
        return self.unknown.format(line=line) + self.line_end
