"""Keysight DAQ970A twin with a DAQM901A multiplexer in slot 1: relays to the board's test
points, scanned by the internal DMM.

Channel lists `(@101,103)` and ranges `(@101:104)`; `ROUT:CLOS`, `ROUT:OPEN` and their queries
(one 1/0 per channel); `CONF:VOLT:DC <range|AUTO>,(@list)` (1 PLC after it), `VOLT:DC:NPLC
<n>,(@list)`, `ROUT:SCAN (@list)`, then `READ?`: one NR3 reading per scanned channel, each
taking its integration time on the bench clock. `SYST:CTYP? <slot>` names the card in slot 1
(`0,0,0,0` for an empty slot). Which channel reaches which test point: `sim.bench.MUX_WIRING`.
"""

from __future__ import annotations

import re

from sim.bench import Bench
from sim.twins.common import nr3
from sim.twins.scpi import DATA_OUT_OF_RANGE, DATA_TYPE_ERROR, Call, ScpiError, ScpiTwin

CHANNELS = tuple(range(101, 123))  # DAQM901A: 20 voltage channels + 2 current channels
NPLC_VALUES = (0.02, 0.2, 1.0, 2.0, 10.0, 20.0, 100.0, 200.0)
CARD = "Keysight Technologies,DAQM901A,0,1.0"
EMPTY_SLOT = "0,0,0,0"
_CHANNEL_LIST = re.compile(r"^(?P<values>.*?),?\s*\(@(?P<channels>[^)]*)\)\s*$")


class SimKeysightDAQ970A(ScpiTwin):
    """A DAQ970A whose multiplexer channels reach the board's test points."""

    IDN = "Keysight Technologies,DAQ970A,MY58000001,A.03.00-01.00-03.00-00.02-01-00"
    NO_ERROR = '+0,"No error"'

    def __init__(self, bench: Bench) -> None:
        super().__init__()
        self.bench = bench
        self.reset_state()
        self.command("SYSTem:CTYPe?", self._card_type)
        self.command("ROUTe:CLOSe", self._relays(True))
        self.command("ROUTe:OPEN", self._relays(False))
        self.command("ROUTe:CLOSe?", self._query_relays(True))
        self.command("ROUTe:OPEN?", self._query_relays(False))
        self.command("CONFigure:VOLTage[:DC]", self._configure)
        self.command("[SENSe:]VOLTage[:DC]:NPLCycles", self._set_nplc)
        self.command("ROUTe:SCAN", self._set_scan)
        self.command("ROUTe:SCAN?", self._get_scan)
        self.command("READ?", self._read)

    def reset_state(self) -> None:
        self.closed: set[int] = set()
        self.scan_list: list[int] = []
        self.nplc = {channel: 1.0 for channel in CHANNELS}

    @property
    def closed_channels(self) -> list[int]:
        """The relays closed now, in order (for tests)."""
        with self._lock:
            return sorted(self.closed)

    @staticmethod
    def _split(call: Call) -> tuple[Call, list[int]]:
        """The values before a trailing `(@list)` and the channels it names."""
        match = _CHANNEL_LIST.match(",".join(call.args))
        if match is None:
            raise ScpiError(*DATA_TYPE_ERROR)
        values = Call(tuple(v.strip() for v in match["values"].split(",") if v.strip()))
        channels: list[int] = []
        for item in match["channels"].split(","):
            first, _, last = item.strip().partition(":")
            if not first.isdigit() or (last and not last.isdigit()):
                raise ScpiError(*DATA_TYPE_ERROR)
            channels += range(int(first), int(last or first) + 1)
        if not channels or any(channel not in CHANNELS for channel in channels):
            raise ScpiError(*DATA_OUT_OF_RANGE)
        return values, channels

    def _card_type(self, call: Call) -> str:
        slot = int(call.number(0, 100, 300))
        return CARD if slot == 100 else EMPTY_SLOT

    def _relays(self, close: bool):
        def switch(call: Call) -> None:
            _, channels = self._split(call)
            if close:
                self.closed.update(channels)
            else:
                self.closed.difference_update(channels)

        return switch

    def _query_relays(self, closed: bool):
        def query(call: Call) -> str:
            _, channels = self._split(call)
            return ",".join("1" if (c in self.closed) == closed else "0" for c in channels)

        return query

    def _configure(self, call: Call) -> None:
        values, channels = self._split(call)
        if values.args and values.arg(0).upper() not in ("AUTO", "DEF", "MIN", "MAX"):
            values.number(0, 0.0, 300.0)
        for channel in channels:
            self.nplc[channel] = 1.0
        self.scan_list = channels

    def _set_nplc(self, call: Call) -> None:
        values, channels = self._split(call)
        nplc = values.number(0)
        if not any(abs(nplc - valid) < 1e-9 for valid in NPLC_VALUES):
            raise ScpiError(*DATA_OUT_OF_RANGE)
        for channel in channels:
            self.nplc[channel] = nplc

    def _set_scan(self, call: Call) -> None:
        self.scan_list = self._split(call)[1]

    def _get_scan(self, call: Call) -> str:
        if not self.scan_list:
            return "#10"
        return "(@" + ",".join(str(c) for c in self.scan_list) + ")"

    def _read(self, call: Call) -> str:
        if not self.scan_list:
            raise ScpiError(-221, "Settings conflict")
        return ",".join(nr3(self.bench.mux_reading(c, self.nplc[c])) for c in self.scan_list)
