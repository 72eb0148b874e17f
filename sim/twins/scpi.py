"""A small SCPI parser and the behaviour every simulated SCPI instrument shares.

Command patterns are written as in programming guides: upper case is the short form, the whole
word the long form (`MEASure` matches MEAS and MEASURE, any case), `[...]` is optional, `#` is a
numeric suffix (`SOURce#` matches SOUR, SOUR2), a leading `:` is optional. A message may hold
several commands joined by `;`; each is resolved from the root (a simplification of SCPI's
relative paths that no driver here relies on).
"""

from __future__ import annotations

import re
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

_NODE = re.compile(r"([A-Z0-9*]+)([a-z0-9]*)(#?)")
_MAX_QUEUE = 20


class ScpiError(Exception):
    """An error a twin puts in its error queue, e.g. ScpiError(-222, "Data out of range")."""

    def __init__(self, code: int, text: str) -> None:
        super().__init__(f'{code},"{text}"')
        self.code = code
        self.text = text


UNDEFINED_HEADER = (-113, "Undefined header")
DATA_TYPE_ERROR = (-104, "Data type error")
DATA_OUT_OF_RANGE = (-222, "Data out of range")
QUEUE_OVERFLOW = (-350, "Queue overflow")


@dataclass(frozen=True)
class Call:
    """One parsed command: its arguments and the numeric suffix of its header, if any."""

    args: tuple[str, ...]
    suffix: int | None = None

    def arg(self, index: int) -> str:
        """Argument `index`, or -104 Data type error when it is missing."""
        if index >= len(self.args):
            raise ScpiError(*DATA_TYPE_ERROR)
        return self.args[index]

    def number(self, index: int, low: float | None = None, high: float | None = None) -> float:
        """Argument `index` as a number, checked against [low, high] (-222 outside)."""
        try:
            value = float(self.arg(index))
        except ValueError:
            raise ScpiError(*DATA_TYPE_ERROR) from None
        if (low is not None and value < low) or (high is not None and value > high):
            raise ScpiError(*DATA_OUT_OF_RANGE)
        return value

    def choice(self, index: int, *options: str) -> str:
        """Argument `index` upper-cased, which must be one of `options` (-104 otherwise)."""
        value = self.arg(index).upper()
        if value not in options:
            raise ScpiError(*DATA_TYPE_ERROR)
        return value


Handler = Callable[[Call], "str | bytes | None"]


def compile_header(pattern: str) -> re.Pattern[str]:
    """Turn 'MEASure:VOLTage[:DC]?' into a regex matching every spelling SCPI allows."""
    parts: list[str] = []
    position = 0
    while position < len(pattern):
        char = pattern[position]
        match = _NODE.match(pattern, position)
        if char == "[":
            parts.append("(?:")
        elif char == "]":
            parts.append(")?")
        elif char in ":?":
            parts.append(re.escape(char))
        elif match and match.end() > position:
            short, rest, numbered = match.groups()
            words = [re.escape(short)] + ([re.escape(short + rest)] if rest else [])
            parts.append(f"(?:{'|'.join(sorted(words, key=len, reverse=True))})")
            if numbered:
                parts.append(r"(\d*)")
            position = match.end()
            continue
        else:
            raise ValueError(f"bad SCPI pattern {pattern!r} at {position}")
        position += 1
    return re.compile(":?" + "".join(parts), re.IGNORECASE)


def split_message(message: str) -> list[str]:
    """Split a program message on `;` outside quoted strings."""
    commands, current, quote = [], [], ""
    for char in message:
        if quote:
            quote = "" if char == quote else quote
        elif char in "\"'":
            quote = char
        elif char == ";":
            commands.append("".join(current))
            current = []
            continue
        current.append(char)
    commands.append("".join(current))
    return [command.strip() for command in commands if command.strip()]


def split_arguments(text: str) -> tuple[str, ...]:
    return tuple(arg.strip() for arg in text.split(",")) if text.strip() else ()


class ScpiTwin:
    """Base of simulated SCPI instruments: command table, error queue, common commands.

    Subclasses set IDN and NO_ERROR, register their commands in `__init__` with `command()`,
    and implement `reset_state()`. `handle()` is thread-safe: one lock per twin.
    """

    IDN = "SIM,TWIN,0,0"
    NO_ERROR = '+0,"No error"'

    def __init__(self) -> None:
        self._commands: list[tuple[re.Pattern[str], Handler]] = []
        self._errors: deque[tuple[int, str]] = deque()
        self._lock = threading.RLock()
        self.command("*IDN?", lambda call: self.IDN)
        self.command("*RST", lambda call: self.reset_state())
        self.command("*CLS", lambda call: self._errors.clear())
        self.command("*OPC?", lambda call: "1")
        self.command("*OPC", lambda call: None)
        self.command("SYSTem:ERRor[:NEXT]?", lambda call: self.next_error())

    def command(self, pattern: str, handler: Handler) -> None:
        """Register `handler` for the header `pattern` (see module docstring)."""
        self._commands.append((compile_header(pattern), handler))

    def reset_state(self) -> None:
        """Return to power-on defaults (*RST). The error queue is not touched."""

    def push_error(self, code: int, text: str) -> None:
        if len(self._errors) >= _MAX_QUEUE:
            self._errors[-1] = QUEUE_OVERFLOW
            return
        self._errors.append((code, text))

    def next_error(self) -> str:
        if not self._errors:
            return self.NO_ERROR
        code, text = self._errors.popleft()
        return f'{code},"{text}"'

    @property
    def errors(self) -> list[tuple[int, str]]:
        """The queued errors, oldest first (for tests)."""
        with self._lock:
            return list(self._errors)

    def handle(self, message: str) -> str | bytes | None:
        """Execute one program message; the reply line, or None if it held no query.

        A reply holding a binary block (a handler returned bytes: `#<n><length><data>`) is
        bytes; the server sends it as it is, then the line terminator.
        """
        replies: list[str | bytes] = []
        with self._lock:
            for text in split_message(message):
                header, _, rest = text.partition(" ")
                try:
                    reply = self._dispatch(header.strip(), split_arguments(rest))
                except ScpiError as error:
                    self.push_error(error.code, error.text)
                    continue
                if reply is not None:
                    replies.append(reply)
        if any(isinstance(reply, bytes) for reply in replies):
            return b";".join(r if isinstance(r, bytes) else r.encode("ascii") for r in replies)
        return ";".join(r for r in replies if isinstance(r, str)) if replies else None

    def _dispatch(self, header: str, args: tuple[str, ...]) -> str | bytes | None:
        for pattern, handler in self._commands:
            match = pattern.fullmatch(header)
            if match:
                digits = next((group for group in match.groups() if group), None)
                return handler(Call(args, int(digits) if digits else None))
        raise ScpiError(*UNDEFINED_HEADER)
