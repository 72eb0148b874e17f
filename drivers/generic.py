"""Generic drivers for instruments that have no model class: `scpi` and `serial-line`.

`ScpiDevice` (`driver: scpi`) talks to any SCPI box: `write`, `query`, `query_float`, the
error queue, its `*IDN?` recorded with the run. It makes nothing safe unless station.yaml says
how (`config: {safe_state: ["OUTP OFF"], safe_readback: {"OUTP?": ["0", "OFF"]}}`), and then
reads the state back like the built-in supplies do.

`SerialLine` (`driver: serial-line`) is a device's text console on a serial port (a DUT's UART
through a USB adapter, a fixture's debug port): `write_line`, `read_line`, and
`expect(pattern, timeout_s)`, which waits for a regular expression in what the device prints
(a prompt needs no line end) and returns the match. Everything sent and received is kept as a
transcript with timestamps; the framework attaches it to the run (`run_attachments()`).
"""

from __future__ import annotations

import collections
import re
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, ClassVar

from drivers.errors import KIND_INTERRUPTED, KIND_TIMEOUT, KIND_WRONG_MODEL
from drivers.instrument import Instrument
from drivers.models.scpi import ScpiInstrument
from drivers.transport.seam import Transport
from drivers.transport.serial_transport import SerialTransport
from drivers.transport.session import Connection

__all__ = ["ConsoleTransport", "ScpiDevice", "SerialLine", "serial_port_of"]


class ScpiDevice(Instrument):
    """Any SCPI instrument, configured from station.yaml (`driver: scpi`).

    `idn`: a regular expression its `*IDN?` reply must match (default: any reply).
    `safe_state`: commands that make it safe, sent in order on open, after every run and at
    close. `safe_readback`: queries and the replies that mean "safe" (one string or a list);
    each is read back after `safe_state`, which is retried once before it is reported.
    `error_query`: how to read the error queue (default `SYST:ERR?`; null for a box without
    one, when `check_errors()` does nothing).
    """

    MODEL = "SCPI instrument"

    def __init__(
        self,
        transport: Transport,
        name: str,
        *,
        idn: str | None = None,
        safe_state: Sequence[str] = (),
        safe_readback: Mapping[str, str | Sequence[str]] | None = None,
        error_query: str | None = "SYST:ERR?",
    ) -> None:
        super().__init__(transport, name)
        if isinstance(safe_state, str):
            raise ValueError("safe_state must be a list of commands, not one string")
        self.safe_commands = tuple(safe_state)
        self.safe_readback = {
            query: (expected,) if isinstance(expected, str) else tuple(expected)
            for query, expected in (safe_readback or {}).items()
        }
        if error_query is not None:
            # Per instance, from station.yaml: check_errors() reads ERROR_QUERY.
            self.ERROR_QUERY = error_query  # type: ignore[misc]
        self.has_error_queue = error_query is not None
        try:
            self.idn_pattern = re.compile(idn) if idn is not None else None
        except re.error as exc:
            raise ValueError(f"idn is not a valid regular expression: {exc}") from None

    def connect(self) -> str:
        """Open, and check the `*IDN?` reply against `idn` (if configured)."""
        idn = super().connect()
        if self.idn_pattern is not None and not self.idn_pattern.search(idn):
            raise self._error(
                f"expected an instrument whose *IDN? matches {self.idn_pattern.pattern!r}, "
                f"got {idn!r}",
                "*IDN?",
                KIND_WRONG_MODEL,
            )
        return idn

    def write(self, command: str, *, check: bool = False) -> None:
        """Send `command`; with `check=True`, read the error queue after it and raise
        InstrumentError (kind "reported") with the instrument's own text if it holds one."""
        super().write(command)
        if check:
            self.check_errors()

    def check_errors(self) -> None:
        """Read the error queue until empty (see ScpiInstrument); nothing without one."""
        if self.has_error_queue:
            super().check_errors()

    def make_safe(self) -> None:
        for command in self.safe_commands:
            self.write(command)

    def verify_safe(self) -> str | None:
        problems = []
        for query, expected in self.safe_readback.items():
            reply = self.query(query)
            if not any(reply.strip().upper() == value.strip().upper() for value in expected):
                wanted = " or ".join(repr(value) for value in expected)
                problems.append(f"{query} reads {reply!r}, not {wanted}")
        return "; ".join(problems) or None


def serial_port_of(resource: str) -> str:
    """The pyserial form of a serial resource: `ASRL/dev/ttyUSB0::INSTR` -> `/dev/ttyUSB0`,
    `ASRL3::INSTR` -> `COM3`, `ASRLsocket://h:p::INSTR` -> `socket://h:p`; others unchanged."""
    match = re.fullmatch(r"ASRL(.+?)(?:::INSTR)?", resource.strip(), re.IGNORECASE)
    if match is None:
        return resource
    port = match.group(1)
    return f"COM{port}" if port.isdigit() else port


class ConsoleTransport(SerialTransport):
    """A serial session for a console: besides lines, whatever has arrived (`read_some`)."""

    def read_some(self, wait_s: float) -> bytes:
        """What arrives within `wait_s` (returning as soon as anything has): b"" if nothing.

        A quiet console is not an error here: the caller decides how long it waits.
        """

        def action(conn: Connection) -> bytes:
            port = conn.inst
            port.timeout = max(wait_s, 0.0)
            try:
                first: bytes = port.read(1)
                if not first:
                    if conn.interrupted:  # cancel_read() by interrupt(): not a quiet line
                        raise self._error("interrupted during a read", None, KIND_INTERRUPTED)
                    return b""
                waiting = port.in_waiting
                return first + (port.read(waiting) if waiting else b"")
            finally:
                port.timeout = self.timeout_ms / 1000

        return self._call(None, action)


# A transcript keeps at most this many characters (the oldest are dropped, and counted).
TRANSCRIPT_LIMIT = 4_000_000
_EXPECT_TAIL = 200  # characters of what did arrive, quoted when expect() times out


class SerialLine(ScpiInstrument):
    """A device's text console on a serial port (`driver: serial-line`).

    Resources: a device path (`/dev/ttyUSB0`, `COM3`), `serial:///dev/...`, a pyserial URL
    (`socket://host:port` for a serial-to-LAN bridge) or the VISA forms `ASRL/dev/ttyUSB0::INSTR`
    and `ASRL3::INSTR`. `baud_rate` (default 115200) and `write_termination` (default "\\n")
    come from station.yaml. Received text is decoded as UTF-8 (undecodable bytes shown as
    escapes), lines end at "\\n" with a trailing "\\r" dropped.
    """

    MODEL = "serial console"
    ANSWERS_IDN = False  # a console is not asked *IDN?
    DEFAULT_OPTIONS: ClassVar[dict[str, Any]] = {
        "read_termination": "\n",
        "write_termination": "\n",
        "baud_rate": 115200,
    }
    transport: ConsoleTransport

    def __init__(self, transport: Transport, name: str, *, identity: str | None = None) -> None:
        if not isinstance(transport, ConsoleTransport):
            raise TypeError("SerialLine needs a ConsoleTransport (use drivers.create_driver)")
        super().__init__(transport, name)
        self._identity = identity  # what the record says this console is (e.g. "DUT UART")
        self._pending = ""  # received, not yet returned by read_line/expect
        self._started = time.monotonic()
        self._started_at = datetime.now(UTC)
        self._transcript: collections.deque[str] = collections.deque()
        self._transcript_size = 0
        self._dropped = 0
        self._partial = ""  # received text after the last line end, not yet in the transcript

    @classmethod
    def transport_for(cls, resource: str, **options: Any) -> ConsoleTransport:
        """The session a console needs (pyserial, any of the resource forms above)."""
        return ConsoleTransport(serial_port_of(resource), **options)

    def connect(self) -> str:
        """Open the port (no `*IDN?`: a console does not answer one). Returns the configured
        identity, or "" when none was given."""
        self.transport.open()
        return self._identity or ""

    def safe_state(self) -> None:
        """A console drives nothing: nothing to make safe."""

    # -- talking ------------------------------------------------------------------------

    def write_line(self, text: str) -> None:
        """Send `text` and the line end."""
        self._note(">", text)
        self.transport.write(text)

    def read_line(self, timeout_s: float | None = None) -> str:
        """The next line the device prints (without its line end).

        InstrumentError of kind "timeout" when no whole line arrives within `timeout_s`
        (default: the instrument's timeout); what did arrive stays for the next read.
        """
        wait = self.transport.timeout_ms / 1000 if timeout_s is None else timeout_s
        deadline = time.monotonic() + wait
        while "\n" not in self._pending:
            if not self._receive(deadline):
                raise self._error(
                    f"no line within {wait:g} s; received so far {self._pending[-_EXPECT_TAIL:]!r}",
                    None,
                    KIND_TIMEOUT,
                )
        line, _, self._pending = self._pending.partition("\n")
        return line.removesuffix("\r")

    def expect(self, pattern: str | re.Pattern[str], timeout_s: float = 10.0) -> re.Match[str]:
        """Wait until what the device prints matches `pattern`; the match.

        The search runs on everything received and not yet consumed, so a prompt without a line
        end (`login: `) matches; what precedes the match and the match itself are consumed.
        InstrumentError of kind "timeout" names the pattern and quotes the last text received.
        """
        regex = re.compile(pattern) if isinstance(pattern, str) else pattern
        deadline = time.monotonic() + timeout_s
        while True:
            match = regex.search(self._pending)
            if match is not None:
                self._pending = self._pending[match.end() :]
                return match
            if not self._receive(deadline):
                tail = self._pending[-_EXPECT_TAIL:]
                raise self._error(
                    f"expected {regex.pattern!r} within {timeout_s:g} s; last received {tail!r}",
                    None,
                    KIND_TIMEOUT,
                )

    def clear_input(self) -> str:
        """Discard what was received and not read yet (it stays in the transcript); returns it."""
        while self._receive(time.monotonic()):
            pass
        dropped, self._pending = self._pending, ""
        return dropped

    def _receive(self, deadline: float) -> bool:
        """Wait until `deadline` for more text; False if none came."""
        while True:
            data = self.transport.read_some(max(0.0, deadline - time.monotonic()))
            if data:
                break
            if time.monotonic() >= deadline:
                return False
        text = data.decode("utf-8", errors="backslashreplace")
        self._pending += text
        self._note("<", text)
        return True

    # -- the transcript -----------------------------------------------------------------

    def _note(self, direction: str, text: str) -> None:
        stamp = f"[{time.monotonic() - self._started:10.3f}]"
        if direction == ">":
            self._flush_partial(stamp)
            self._append(f"{stamp} > {text}\n")
            return
        lines = (self._partial + text).split("\n")
        self._partial = lines.pop()
        for line in lines:
            self._append(f"{stamp} < {line.removesuffix(chr(13))}\n")

    def _flush_partial(self, stamp: str) -> None:
        if self._partial:
            self._append(f"{stamp} < {self._partial}\n")
            self._partial = ""

    def _append(self, entry: str) -> None:
        self._transcript.append(entry)
        self._transcript_size += len(entry)
        while self._transcript_size > TRANSCRIPT_LIMIT and len(self._transcript) > 1:
            self._transcript_size -= len(self._transcript.popleft())
            self._dropped += 1

    def transcript(self) -> str:
        """Everything sent (`>`) and received (`<`) since the last `run_attachments()`, with
        seconds since the console was opened."""
        self._flush_partial(f"[{time.monotonic() - self._started:10.3f}]")
        header = (
            f"# console {self.name} ({self.transport.resource}), times in s since "
            f"{self._started_at.isoformat(timespec='milliseconds')}\n"
        )
        dropped = f"# ... {self._dropped} earlier entries dropped\n" if self._dropped else ""
        return header + dropped + "".join(self._transcript)

    def run_attachments(self) -> dict[str, str]:
        """The transcript as the run's attachment `<name>-console.txt` (empty: none), then a new
        transcript begins for the next run."""
        if not self._transcript and not self._partial:
            return {}
        text = self.transcript()
        self._transcript.clear()
        self._transcript_size = self._dropped = 0
        return {f"{self.name}-console.txt": text}
