"""Relay multiplexers: the Multiplexer capability and the Keysight DAQ970A with a DAQM901A card.

Channels are numbered as the mainframe numbers them: slot x 100 + channel (101 is slot 1,
channel 1). A test closes and opens relays, or scans a list of channels with the mainframe's
internal DMM and gets one DC voltage reading per channel. Safe state is every relay open, read
back.
"""

from __future__ import annotations

import abc
import re
from collections.abc import Iterable, Sequence
from typing import Any, ClassVar

from drivers.errors import KIND_GARBAGE, KIND_WRONG_MODEL
from drivers.models.confirm import ConfirmingScpiInstrument, number


class Multiplexer(abc.ABC):
    """What a test asks of a relay multiplexer. Channel numbers are the instrument's (101...).

    Relays are `close_channels` / `open_channels` (`close()` ends the instrument's session). A
    channel not in CHANNELS raises ValueError before anything is sent.
    """

    CHANNELS: ClassVar[tuple[int, ...]] = ()

    @abc.abstractmethod
    def close_channels(self, *channels: int) -> None:
        """Close these relays (the others keep their state)."""

    @abc.abstractmethod
    def open_channels(self, *channels: int) -> None:
        """Open these relays."""

    @abc.abstractmethod
    def open_all(self) -> None:
        """Open every relay."""

    @abc.abstractmethod
    def closed_channels(self) -> list[int]:
        """The channels whose relay is closed, read from the instrument."""

    @abc.abstractmethod
    def scan(
        self, channels: Sequence[int], nplc: float | None = None, range: float | None = None
    ) -> dict[int, float]:
        """One DC voltage reading per channel, in scan order (`range=None`: autorange)."""

    def measure_dc_voltage(self, channel: int, nplc: float | None = None) -> float:
        """One DC voltage reading through `channel`."""
        return self.scan([channel], nplc=nplc)[channel]

    def is_closed(self, channel: int) -> bool:
        """Whether `channel`'s relay is closed."""
        return self._check_channels([channel])[0] in self.closed_channels()

    def _check_channels(self, channels: Iterable[int]) -> list[int]:
        checked = list(channels)
        if not checked:
            raise ValueError("no channel given")
        for channel in checked:
            if channel not in self.CHANNELS:
                first, last = self.CHANNELS[0], self.CHANNELS[-1]
                raise ValueError(f"no channel {channel!r} on this multiplexer; channels: "
                                 f"{first}..{last}")  # fmt: skip
        return checked


def channel_list(channels: Sequence[int]) -> str:
    """A SCPI channel list: `(@101,103)`."""
    return "(@" + ",".join(str(channel) for channel in channels) + ")"


class KeysightDAQ970A(ConfirmingScpiInstrument, Multiplexer):
    """Keysight DAQ970A data acquisition mainframe with a DAQM901A 20-channel multiplexer in
    slot 1 (channels 101-120 switch voltage into the internal DMM).

    `connect()` also checks the card (`SYST:CTYP? 100`). Relays: `ROUT:CLOS (@101,102)`,
    `ROUT:OPEN (@...)`, read back with `ROUT:CLOS? (@...)` (one `1`/`0` per channel). A scan:
    `CONF:VOLT:DC <range|AUTO>,(@list)`, optionally `VOLT:DC:NPLC <n>,(@list)`, `ROUT:SCAN
    (@list)`, then the error queue, then `READ?`, which answers one NR3 reading per channel in
    scan order; the query's timeout is stretched by the scan's integration time.
    """

    MODEL = "Keysight DAQ970A"
    IDN_PATTERN = re.compile(r"keysight technologies,daq970a,", re.IGNORECASE)
    CARD_PATTERN = re.compile(r",DAQM901A,", re.IGNORECASE)
    DEFAULT_OPTIONS: ClassVar[dict[str, Any]] = {
        "read_termination": "\n",
        "write_termination": "\n",
    }
    ERROR_QUERY = "SYST:ERR?"
    CHANNELS = tuple(range(101, 121))
    NPLC_VALUES = (0.02, 0.2, 1.0, 2.0, 10.0, 20.0, 100.0, 200.0)
    SETTLE_PER_CHANNEL_MS = 5  # relay settling and overhead per scanned channel

    def connect(self) -> str:
        """Check the mainframe, then the multiplexer card in slot 1."""
        idn = super().connect()
        self._identity = None
        card = self.query("SYST:CTYP? 100")
        if not self.CARD_PATTERN.search(card):
            raise self._error(f"slot 1 holds {card!r}, not a DAQM901A multiplexer",
                              "SYST:CTYP? 100", KIND_WRONG_MODEL)  # fmt: skip
        self._identity = idn
        return idn

    def close_channels(self, *channels: int) -> None:
        self._apply(f"ROUT:CLOS {channel_list(self._check_channels(channels))}")

    def open_channels(self, *channels: int) -> None:
        self._apply(f"ROUT:OPEN {channel_list(self._check_channels(channels))}")

    def open_all(self) -> None:
        self._apply(f"ROUT:OPEN (@{self.CHANNELS[0]}:{self.CHANNELS[-1]})")

    def closed_channels(self) -> list[int]:
        states = self._query_bools(
            f"ROUT:CLOS? (@{self.CHANNELS[0]}:{self.CHANNELS[-1]})", len(self.CHANNELS)
        )
        return [channel for channel, closed in zip(self.CHANNELS, states, strict=True) if closed]

    def scan(
        self, channels: Sequence[int], nplc: float | None = None, range: float | None = None
    ) -> dict[int, float]:
        checked = self._check_channels(channels)
        if len(set(checked)) != len(checked):
            raise ValueError(f"{self.MODEL}: a channel is listed twice in {checked}")
        if nplc is not None and not any(abs(nplc - v) < 1e-9 for v in self.NPLC_VALUES):
            allowed = ", ".join(number(v) for v in self.NPLC_VALUES)
            raise ValueError(f"{self.MODEL} does not support nplc={nplc}; use one of {allowed}")
        if range is not None and not range > 0:
            raise ValueError(f"{self.MODEL}: range must be positive, or None for auto")
        listed = channel_list(checked)
        self.write(f"CONF:VOLT:DC {'AUTO' if range is None else number(range)},{listed}")
        if nplc is not None:
            self.write(f"VOLT:DC:NPLC {number(nplc)},{listed}")
        self.write(f"ROUT:SCAN {listed}")
        self.check_errors()
        # Each reading integrates (10 PLC by default after CONF) at 50 Hz, the slower mains.
        per_channel_ms = (nplc if nplc is not None else 10.0) / 50.0 * 1000
        per_channel_ms += self.SETTLE_PER_CHANNEL_MS
        configured = self.transport.timeout_ms
        self.transport.timeout_ms = configured + int(per_channel_ms * len(checked))
        try:
            reply = self.query("READ?")
        finally:
            self.transport.timeout_ms = configured
        try:
            readings = [float(value) for value in reply.split(",")]
        except ValueError:
            readings = []
        if len(readings) != len(checked):
            raise self._error(f"expected {len(checked)} readings from 'READ?', got {reply!r}",
                              "READ?", KIND_GARBAGE)  # fmt: skip
        return dict(zip(checked, readings, strict=True))

    def safe_state(self) -> None:
        """Every relay open, read back (once more if one still reads closed), else
        InstrumentError naming the channels."""

        def still_closed() -> str | None:
            closed = self.closed_channels()
            if not closed:
                return None
            return f"channels {', '.join(str(c) for c in closed)} still read closed"

        self._verify_safe("opening every relay", self.open_all, still_closed)
