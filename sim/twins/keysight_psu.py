"""Keysight E36312A twin: channel lists `(@1)`, `(@1:3)`, `(@1,2)` or `INST:NSEL` selection,
NR3 numbers, `1`/`0` booleans, OVP always armed (`VOLT:PROT`), `+0,"No error"`."""

from __future__ import annotations

import re

from sim.bench import PSU_CHANNELS, Bench
from sim.twins.common import nr3
from sim.twins.scpi import DATA_OUT_OF_RANGE, DATA_TYPE_ERROR, Call, ScpiError, ScpiTwin

# Settable limits: a few percent over the 6 V/5 A and 25 V/1 A ratings, as on the real one.
MAX_VOLTS = {1: 6.18, 2: 25.75, 3: 25.75}
MAX_AMPS = {1: 5.15, 2: 1.03, 3: 1.03}
MAX_OVP = {1: 6.6, 2: 27.5, 3: 27.5}  # also the *RST level
_CHANNEL_LIST = re.compile(r"^(?P<values>.*?),?\s*\(@(?P<channels>[^)]*)\)\s*$")


class SimKeysightE36312A(ScpiTwin):
    """An E36312A whose CH1 powers the board on the bench fixture."""

    IDN = "Keysight Technologies,E36312A,MY59002391,2.1.0-1.0.4-1.12"
    NO_ERROR = '+0,"No error"'

    def __init__(self, bench: Bench) -> None:
        super().__init__()
        self.bench = bench
        self.reset_state()
        source = "[SOURce:]"
        level = "[:LEVel][:IMMediate][:AMPLitude]"
        self.command(f"{source}VOLTage{level}", self._setter("voltage", MAX_VOLTS))
        self.command(f"{source}VOLTage{level}?", self._getter("voltage"))
        self.command(f"{source}CURRent{level}", self._setter("current_limit", MAX_AMPS))
        self.command(f"{source}CURRent{level}?", self._getter("current_limit"))
        self.command(f"{source}VOLTage:PROTection[:LEVel]", self._setter("ovp_level", MAX_OVP))
        self.command(f"{source}VOLTage:PROTection[:LEVel]?", self._getter("ovp_level"))
        self.command(f"{source}VOLTage:PROTection:TRIPped?", self._get_tripped)
        self.command("OUTPut:PROTection:CLEar", self._clear_trip)
        self.command("OUTPut[:STATe]", self._set_output)
        self.command("OUTPut[:STATe]?", self._get_output)
        self.command("STATus:QUEStionable:INSTrument:ISUMmary#:CONDition?", self._condition)
        self.command("INSTrument:NSELect", self._select)
        self.command("INSTrument:NSELect?", lambda call: str(self.selected))
        measure = "MEASure[:SCALar]"
        self.command(f"{measure}:VOLTage[:DC]?", self._measure(self.bench.measure_psu_voltage))
        self.command(f"{measure}:CURRent[:DC]?", self._measure(self.bench.measure_psu_current))

    def reset_state(self) -> None:
        self.selected = 1
        self.bench.reset_psu()
        for channel in PSU_CHANNELS:
            self.bench.configure(channel, ovp_level=MAX_OVP[channel], ovp_enabled=True)

    # -- channel addressing -----------------------------------------------------------------

    def _split(self, call: Call) -> tuple[Call, list[int]]:
        """The values before a trailing `(@list)` and the channels it names (else: selected)."""
        text = ",".join(call.args)
        match = _CHANNEL_LIST.match(text)
        if match is None:
            return call, [self.selected]
        values = Call(tuple(v.strip() for v in match["values"].split(",") if v.strip()))
        return values, self._channels(match["channels"])

    @staticmethod
    def _channels(text: str) -> list[int]:
        channels: list[int] = []
        for item in text.split(","):
            first, _, last = item.strip().partition(":")
            if not first.isdigit() or (last and not last.isdigit()):
                raise ScpiError(*DATA_TYPE_ERROR)
            channels += range(int(first), int(last or first) + 1)
        if not channels or any(channel not in PSU_CHANNELS for channel in channels):
            raise ScpiError(*DATA_OUT_OF_RANGE)
        return channels

    def _select(self, call: Call) -> None:
        self.selected = int(call.number(0, low=1, high=len(PSU_CHANNELS)))

    # -- settings and measurements ------------------------------------------------------------

    def _setter(self, setting: str, limits: dict[int, float]):
        def set_value(call: Call) -> None:
            values, channels = self._split(call)
            for channel in channels:
                value = values.number(0, 0.0, limits[channel])
                self.bench.configure(channel, **{setting: value})

        return set_value

    def _getter(self, setting: str):
        def get_value(call: Call) -> str:
            _, channels = self._split(call)
            return ",".join(nr3(getattr(self.bench.channel(c), setting)) for c in channels)

        return get_value

    def _condition(self, call: Call) -> str:
        """The channel's questionable instrument summary: bit 0 CV, bit 1 CC, 0 when off."""
        channel = call.suffix or 1
        if channel not in PSU_CHANNELS:
            raise ScpiError(*DATA_OUT_OF_RANGE)
        if not self.bench.channel(channel).enabled:
            return "0"
        return "2" if self.bench.psu_regulation(channel) == "CC" else "1"

    def _get_tripped(self, call: Call) -> str:
        _, channels = self._split(call)
        return ",".join(str(int(self.bench.channel(c).ovp_tripped)) for c in channels)

    def _clear_trip(self, call: Call) -> None:
        for channel in self._split(call)[1]:
            self.bench.configure(channel, ovp_tripped=False)

    def _set_output(self, call: Call) -> None:
        values, channels = self._split(call)
        state = values.choice(0, "ON", "OFF", "1", "0") in ("ON", "1")
        for channel in channels:
            self.bench.configure(channel, enabled=state)

    def _get_output(self, call: Call) -> str:
        _, channels = self._split(call)
        return ",".join(str(int(self.bench.channel(c).enabled)) for c in channels)

    def _measure(self, read):
        def measure(call: Call) -> str:
            return ",".join(nr3(read(channel)) for channel in self._split(call)[1])

        return measure
