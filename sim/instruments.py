"""Simulated personalities of each driver's model: same IDN, same dialect, same quirks.

The Keysight answers NR3 (`+3.30012345E+00`) and `+0,"No error"`; the Rigol answers fixed point
(`5.000`), `ON`/`OFF` and `0,"No error"`. Both read and drive the shared `Bench`.
"""

from __future__ import annotations

import math

from sim.bench import OVERLOAD, PSU_CHANNELS, Bench
from sim.scpi import DATA_OUT_OF_RANGE, DATA_TYPE_ERROR, Call, ScpiError, ScpiTwin

# 34461A measurement functions: our short key -> the header node that selects it.
DMM_FUNCTIONS = {
    "VOLT:DC": "VOLTage[:DC]",
    "VOLT:AC": "VOLTage:AC",
    "CURR:DC": "CURRent[:DC]",
    "RES": "RESistance",
}
DMM_MAX_RANGE = {"VOLT:DC": 1000.0, "VOLT:AC": 750.0, "CURR:DC": 10.0, "RES": 100e6}
# DP832 settable limits per channel (Programming Guide table 2-1).
PSU_MAX_VOLTS = {1: 32.0, 2: 32.0, 3: 5.3}
PSU_MAX_AMPS = 3.2
PSU_MAX_OVP = {1: 33.0, 2: 33.0, 3: 5.5}


def _nr3(value: float) -> str:
    if math.isinf(value) or abs(value) >= OVERLOAD:
        return "+9.90000000E+37"
    return f"{value:+.8E}"


class SimKeysight34461A(ScpiTwin):
    """A 34461A whose input is across the bench's 3.3 V rail."""

    IDN = "Keysight Technologies,34461A,MY60012345,A.02.14-02.40-02.14-00.49-01-01"
    NO_ERROR = '+0,"No error"'
    NPLC_VALUES = (0.02, 0.2, 1.0, 10.0, 100.0)

    def __init__(self, bench: Bench) -> None:
        super().__init__()
        self.bench = bench
        self.reset_state()
        for function, node in DMM_FUNCTIONS.items():
            self.command(f"CONFigure:{node}", self._configure_handler(function))
            self.command(f"MEASure:{node}?", self._measure_handler(function))
            if function != "VOLT:AC":
                self.command(f"[SENSe:]{node}:NPLCycles", self._nplc_handler(function))
                self.command(f"[SENSe:]{node}:NPLCycles?", self._nplc_query_handler(function))
        self.command("READ?", lambda call: self._read())
        self.command("[SENSe:]FUNCtion?", lambda call: f'"{self.function}"')

    def reset_state(self) -> None:
        self.function = "VOLT:DC"
        self.range: float | None = None  # None: autorange
        self.nplc = {function: 10.0 for function in DMM_FUNCTIONS}

    def _configure(self, function: str, call: Call) -> None:
        self.range = self._parse_range(function, call)
        self.function = function
        self.nplc[function] = 10.0  # CONF presets the integration time

    def _parse_range(self, function: str, call: Call) -> float | None:
        if not call.args or call.args[0].upper() in ("AUTO", "DEF"):
            return None
        if call.args[0].upper() in ("MIN", "MAX"):
            return DMM_MAX_RANGE[function] if call.args[0].upper() == "MAX" else 0.1
        return call.number(0, low=0.0, high=DMM_MAX_RANGE[function])

    def _configure_handler(self, function: str):
        return lambda call: self._configure(function, call)

    def _measure_handler(self, function: str):
        def measure(call: Call) -> str:
            self._configure(function, call)
            return self._read()

        return measure

    def _nplc_handler(self, function: str):
        def set_nplc(call: Call) -> None:
            value = call.number(0, low=min(self.NPLC_VALUES), high=max(self.NPLC_VALUES))
            # The instrument rounds up to the next integration time it has.
            self.nplc[function] = next(v for v in self.NPLC_VALUES if v >= value - 1e-9)

        return set_nplc

    def _nplc_query_handler(self, function: str):
        return lambda call: _nr3(self.nplc[function])

    def _read(self) -> str:
        nplc = self.nplc.get(self.function, 1.0)
        value = {
            "VOLT:DC": lambda: self.bench.dmm_dc_volts(nplc),
            "VOLT:AC": self.bench.dmm_ac_volts,
            "CURR:DC": self.bench.dmm_dc_amps,
            "RES": self.bench.dmm_ohms,
        }[self.function]()
        if self.range is not None and abs(value) > 1.2 * self.range:
            value = OVERLOAD
        return _nr3(value)


class SimRigolDP832(ScpiTwin):
    """A DP832 whose CH1 powers the board on the bench fixture."""

    IDN = "RIGOL TECHNOLOGIES,DP832,DP8C000000000,00.01.16"
    NO_ERROR = '0,"No error"'

    def __init__(self, bench: Bench) -> None:
        super().__init__()
        self.bench = bench
        self.selected = 1
        source = "[SOURce#:]"
        self.command(f"{source}VOLTage[:LEVel][:IMMediate][:AMPLitude]", self._set_voltage)
        self.command(f"{source}VOLTage[:LEVel][:IMMediate][:AMPLitude]?", self._get_voltage)
        self.command(f"{source}CURRent[:LEVel][:IMMediate][:AMPLitude]", self._set_current)
        self.command(f"{source}CURRent[:LEVel][:IMMediate][:AMPLitude]?", self._get_current)
        self.command("OUTPut[:STATe]", self._set_output)
        self.command("OUTPut[:STATe]?", self._get_output)
        self.command("OUTPut:OVP:VALue", self._set_ovp_level)
        self.command("OUTPut:OVP:VALue?", self._get_ovp_level)
        self.command("OUTPut:OVP[:STATe]", self._set_ovp_state)
        self.command("OUTPut:OVP[:STATe]?", self._get_ovp_state)
        self.command("OUTPut:OVP:QUEStion?", self._get_ovp_tripped)
        self.command("INSTrument:NSELect", self._select_number)
        self.command("INSTrument[:SELect]", self._select_name)
        self.command("MEASure[:VOLTage][:DC]?", self._measure_voltage)
        self.command("MEASure:CURRent[:DC]?", self._measure_current)
        self.command("MEASure:ALL[:DC]?", self._measure_all)

    def reset_state(self) -> None:
        self.selected = 1
        self.bench.reset_psu()

    # -- channel addressing: a SOUR<n> suffix, a leading CH<n> argument, or INST selection --

    def _parse_channel(self, text: str) -> int:
        if not text.upper().startswith("CH") or not text[2:].isdigit():
            raise ScpiError(*DATA_TYPE_ERROR)
        channel = int(text[2:])
        if channel not in PSU_CHANNELS:
            raise ScpiError(*DATA_OUT_OF_RANGE)
        return channel

    def _channel_args(self, call: Call) -> tuple[int, Call]:
        """The channel a command addresses and the arguments that follow it."""
        if call.args and call.args[0].upper().startswith("CH"):
            return self._parse_channel(call.args[0]), Call(call.args[1:])
        if call.suffix is not None:
            if call.suffix not in PSU_CHANNELS:
                raise ScpiError(*DATA_OUT_OF_RANGE)
            return call.suffix, call
        return self.selected, call

    def _select_number(self, call: Call) -> None:
        self.selected = int(call.number(0, low=1, high=len(PSU_CHANNELS)))

    def _select_name(self, call: Call) -> None:
        self.selected = self._parse_channel(call.arg(0))

    # -- settings -------------------------------------------------------------------------

    def _set_voltage(self, call: Call) -> None:
        channel, rest = self._channel_args(call)
        self.bench.configure(channel, voltage=rest.number(0, 0.0, PSU_MAX_VOLTS[channel]))

    def _get_voltage(self, call: Call) -> str:
        channel, _ = self._channel_args(call)
        return f"{self.bench.channel(channel).voltage:.3f}"

    def _set_current(self, call: Call) -> None:
        channel, rest = self._channel_args(call)
        self.bench.configure(channel, current_limit=rest.number(0, 0.0, PSU_MAX_AMPS))

    def _get_current(self, call: Call) -> str:
        channel, _ = self._channel_args(call)
        return f"{self.bench.channel(channel).current_limit:.3f}"

    def _set_output(self, call: Call) -> None:
        channel, rest = self._channel_args(call)
        state = rest.choice(0, "ON", "OFF", "1", "0")
        self.bench.configure(channel, enabled=state in ("ON", "1"))

    def _get_output(self, call: Call) -> str:
        channel, _ = self._channel_args(call)
        return "ON" if self.bench.channel(channel).enabled else "OFF"

    def _set_ovp_level(self, call: Call) -> None:
        channel, rest = self._channel_args(call)
        self.bench.configure(channel, ovp_level=rest.number(0, 0.01, PSU_MAX_OVP[channel]))

    def _get_ovp_level(self, call: Call) -> str:
        channel, _ = self._channel_args(call)
        return f"{self.bench.channel(channel).ovp_level:.3f}"

    def _set_ovp_state(self, call: Call) -> None:
        channel, rest = self._channel_args(call)
        state = rest.choice(0, "ON", "OFF", "1", "0")
        self.bench.configure(channel, ovp_enabled=state in ("ON", "1"))

    def _get_ovp_state(self, call: Call) -> str:
        channel, _ = self._channel_args(call)
        return "ON" if self.bench.channel(channel).ovp_enabled else "OFF"

    def _get_ovp_tripped(self, call: Call) -> str:
        channel, _ = self._channel_args(call)
        return "YES" if self.bench.channel(channel).ovp_tripped else "NO"

    # -- measurements -----------------------------------------------------------------------

    def _measure_voltage(self, call: Call) -> str:
        channel, _ = self._channel_args(call)
        return f"{self.bench.measure_psu_voltage(channel):.3f}"

    def _measure_current(self, call: Call) -> str:
        channel, _ = self._channel_args(call)
        return f"{self.bench.measure_psu_current(channel):.4f}"

    def _measure_all(self, call: Call) -> str:
        channel, _ = self._channel_args(call)
        volts = self.bench.measure_psu_voltage(channel)
        amps = self.bench.measure_psu_current(channel)
        return f"{volts:.4f},{amps:.4f},{volts * amps:.3f}"


# Keyed by the registry driver name used in station.yaml.
SIM_MODELS: dict[str, type[ScpiTwin]] = {
    "keysight-34461a": SimKeysight34461A,
    "rigol-dp832": SimRigolDP832,
}
