"""ACME RB-8: an 8-relay board on a serial port, driven by a plain class (no base class).

Its protocol: lines ending in "\\n"; `ID?` -> `ACME,RB-8,<serial>,<firmware>`, `REL <n> ON|OFF`
-> `OK`, `REL? <n>` -> `ON`|`OFF`, `ALL OFF` -> `OK`, `BYE` -> `OK` (the board's LED goes back
to idle: what `close()` sends).
"""

from __future__ import annotations

import re
import threading

import serial


class RelayBoard:
    """The real board: pyserial on `resource`, `channels` relays. Plain class, no base."""

    def __init__(self, resource: str, channels: int = 8, timeout_s: float = 2.0) -> None:
        self.resource = resource
        self.channels = channels
        self.timeout_s = timeout_s
        self.identity: str | None = None
        self._port: serial.SerialBase | None = None

    def open(self) -> None:
        self._port = serial.serial_for_url(self.resource, baudrate=9600, timeout=self.timeout_s)
        self._port.reset_input_buffer()
        self.identity = self._ask("ID?")

    def _ask(self, command: str) -> str:
        assert self._port is not None, "open() first"
        self._port.write(command.encode("ascii") + b"\n")
        line = self._port.readline()
        if not line.endswith(b"\n"):
            raise TimeoutError(f"no reply to {command!r} within {self.timeout_s} s")
        reply = line.decode("ascii").strip()
        if reply.startswith("ERR"):
            raise RuntimeError(f"{command!r}: {reply}")
        return reply

    def _check(self, channel: int) -> int:
        if not 1 <= channel <= self.channels:
            raise ValueError(f"no relay {channel}: the board has 1..{self.channels}")
        return channel

    def close_relay(self, channel: int) -> None:
        self._ask(f"REL {self._check(channel)} ON")

    def open_relay(self, channel: int) -> None:
        self._ask(f"REL {self._check(channel)} OFF")

    def is_closed(self, channel: int) -> bool:
        return self._ask(f"REL? {self._check(channel)}") == "ON"

    def safe_state(self) -> None:
        """Every relay open, read back."""
        self._ask("ALL OFF")
        closed = [n for n in range(1, self.channels + 1) if self.is_closed(n)]
        if closed:
            raise RuntimeError(f"relays {closed} still read closed")

    def interrupt(self) -> bool:
        """Abort a read in flight (a phase timeout, Ctrl-C)."""
        if self._port is not None:
            self._port.cancel_read()
        return True

    def close(self) -> None:
        if self._port is not None:
            try:
                self._ask("BYE")
            finally:
                self._port.close()


class SimRelayBoard:
    """What --sim builds instead of RelayBoard: the same methods, relays in memory."""

    def __init__(self, channels: int = 8, timeout_s: float = 2.0) -> None:
        self.channels = channels
        self.relays = dict.fromkeys(range(1, channels + 1), False)
        self.identity = "ACME,RB-8,SIM-0001,2.1"
        self.closed = False

    def close_relay(self, channel: int) -> None:
        self.relays[channel] = True

    def open_relay(self, channel: int) -> None:
        self.relays[channel] = False

    def is_closed(self, channel: int) -> bool:
        return self.relays[channel]

    def safe_state(self) -> None:
        self.relays = dict.fromkeys(self.relays, False)

    def close(self) -> None:
        self.closed = True


class RelayTwin:
    """The board's twin on a pty (`sim.pty_server.PtyServer`): the "real" board in tests.

    `silent_to` (a regex) leaves matching commands unanswered, as a board that hung would.
    """

    IDN = "ACME,RB-8,RB8-0042,2.1"

    def __init__(self, channels: int = 8) -> None:
        self.relays = dict.fromkeys(range(1, channels + 1), False)
        self.history: list[str] = []
        self.silent_to: str | None = None
        self._lock = threading.Lock()

    def split(self, buffer: bytes, idle: bool) -> tuple[list[str], bytes]:
        *lines, rest = buffer.split(b"\n")
        return [line.decode("ascii").strip() for line in lines], rest

    def handle(self, command: str) -> bytes | None:
        with self._lock:
            self.history.append(command)
            if self.silent_to and re.search(self.silent_to, command):
                return None
            return (self._answer(command) + "\n").encode("ascii")

    def _answer(self, command: str) -> str:
        if command == "ID?":
            return self.IDN
        if command in ("ALL OFF", "BYE"):
            if command == "ALL OFF":
                self.relays = dict.fromkeys(self.relays, False)
            return "OK"
        match = re.fullmatch(r"REL(\?)? (\d+)(?: (ON|OFF))?", command)
        if match is None or int(match[2]) not in self.relays:
            return "ERR bad command"
        channel = int(match[2])
        if match[1]:
            return "ON" if self.relays[channel] else "OFF"
        if match[3] is None:
            return "ERR bad command"
        self.relays[channel] = match[3] == "ON"
        return "OK"
