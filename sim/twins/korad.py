"""A simulated Korad KA3005P: same IDN, same terminator-less protocol, same silences.

The firmware has no terminator: it splits the byte stream into commands by their shape and by
the pause that follows. `split()` does the same for the pty server; `handle()` executes one
command and returns the raw reply bytes (or None). Output 1 feeds the bench's DUT channel, so
the board sees what this supply does. Out-of-range settings are ignored, as on the real one.
"""

from __future__ import annotations

import re
import threading

from sim.bench import DUT_CHANNEL, Bench

_COMMAND = re.compile(
    rb"\*IDN\?|[VI]SET1\?|[VI]OUT1\?|STATUS\?|OUT[01]|OVP[01]|OCP[01]|BEEP[01]"
    rb"|([VI])SET1:(\d{0,2}(?:\.\d{0,3})?)"
)


class SimKoradKA3005P:
    """A KA3005P whose output powers the board on the bench fixture."""

    IDN = "KORAD KA3005P V5.8 SN:03379314"
    MAX_VOLTS = 31.0  # what the firmware accepts (a little over nominal)
    MAX_AMPS = 5.1

    def __init__(self, bench: Bench) -> None:
        self.bench = bench
        self._lock = threading.Lock()

    def split(self, buffer: bytes, idle: bool) -> tuple[list[str], bytes]:
        """The complete commands at the front of `buffer`, and the bytes left over.

        A setting (`VSET1:5.00`) is complete once another command follows or the line has
        gone idle; anything unrecognised is dropped when the line goes idle.
        """
        commands: list[str] = []
        while buffer:
            match = _COMMAND.match(buffer)
            if match is None:
                return commands, (b"" if idle else buffer)
            setting = match.group(1) is not None
            if setting and match.end() == len(buffer) and not idle:
                return commands, buffer  # more digits may follow
            commands.append(match.group(0).decode("ascii"))
            buffer = buffer[match.end() :]
        return commands, buffer

    def handle(self, command: str) -> bytes | None:
        """Execute one command; the reply bytes (no terminator), or None."""
        with self._lock:
            if command == "*IDN?":
                return self.IDN.encode("ascii")
            channel = self.bench.channel(DUT_CHANNEL)
            replies = {
                "VSET1?": lambda: f"{channel.voltage:05.2f}",
                "ISET1?": lambda: f"{channel.current_limit:.3f}",
                "VOUT1?": lambda: f"{self.bench.measure_psu_voltage(DUT_CHANNEL):05.2f}",
                "IOUT1?": lambda: f"{self.bench.measure_psu_current(DUT_CHANNEL):.3f}",
            }
            if command in replies:
                return replies[command]().encode("ascii")
            if command == "STATUS?":
                return bytes([self._status()])
            if command in ("OUT0", "OUT1"):
                self.bench.configure(DUT_CHANNEL, enabled=command == "OUT1")
            elif command in ("OVP0", "OVP1"):
                self.bench.configure(DUT_CHANNEL, ovp_enabled=command == "OVP1")
            elif command.startswith(("VSET1:", "ISET1:")):
                self._set(command)
            return None  # OCP, BEEP: accepted, nothing modelled

    def _set(self, command: str) -> None:
        try:
            value = float(command[6:])
        except ValueError:
            return  # garbled: ignored, as the firmware does
        if command.startswith("V") and 0 <= value <= self.MAX_VOLTS:
            self.bench.configure(DUT_CHANNEL, voltage=round(value, 2))
        elif command.startswith("I") and 0 <= value <= self.MAX_AMPS:
            self.bench.configure(DUT_CHANNEL, current_limit=round(value, 3))

    def _status(self) -> int:
        channel = self.bench.channel(DUT_CHANNEL)
        status = 0x40 if channel.enabled else 0
        if self.bench.psu_regulation(DUT_CHANNEL) == "CV":
            status |= 0x01  # constant voltage (also with the output off)
        return status
