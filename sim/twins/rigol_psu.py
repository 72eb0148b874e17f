"""Rigol DP832 twin: `CH<n>` or `SOUR<n>` channel addressing, fixed-point numbers, `ON`/`OFF`,
`0,"No error"` (no sign)."""

from __future__ import annotations

from sim.bench import PSU_CHANNELS, Bench
from sim.twins.scpi import DATA_OUT_OF_RANGE, DATA_TYPE_ERROR, Call, ScpiError, ScpiTwin

# DP832 settable limits per channel (Programming Guide table 2-1).
PSU_MAX_VOLTS = {1: 32.0, 2: 32.0, 3: 5.3}
PSU_MAX_AMPS = 3.2
PSU_MAX_OVP = {1: 33.0, 2: 33.0, 3: 5.5}


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
        self.command("OUTPut:MODE?", self._get_mode)
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

    def _get_mode(self, call: Call) -> str:
        """CV or CC from the bench's circuit (CV with the output off)."""
        channel, _ = self._channel_args(call)
        return self.bench.psu_regulation(channel)

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
