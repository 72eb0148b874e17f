"""Keithley 2450 twin: a SourceMeter driving the board's EN pin, in its SCPI command set.

`:SOUR:FUNC VOLT|CURR`, levels `:SOUR:VOLT` / `:SOUR:CURR`, limits `:SOUR:VOLT:ILIM` /
`:SOUR:CURR:VLIM` and their TRIPped? queries, `:OUTP` (answered 1/0), `:SENS:<f>:NPLC`,
`:MEAS:VOLT?` / `:MEAS:CURR?` (NR3, taking the integration time), `*LANG?` (SCPI unless a test
sets `language`), error entries with extra fields (`0,"No error;0;0 0"`).
"""

from __future__ import annotations

from sim.bench import Bench
from sim.twins.common import nr3
from sim.twins.scpi import DATA_TYPE_ERROR, Call, ScpiError, ScpiTwin

MAX_VOLTS = 210.0
MAX_AMPS = 1.05
FUNCTIONS = {"VOLT": "VOLT", "VOLTAGE": "VOLT", "CURR": "CURR", "CURRENT": "CURR"}
DEFAULTS = {"VOLT": 0.0, "CURR": 0.0, "ILIM": 105e-6, "VLIM": 21.0}


class SimKeithley2450(ScpiTwin):
    """A 2450 whose terminals drive the board's EN pin."""

    IDN = "KEITHLEY INSTRUMENTS,MODEL 2450,04412345,1.7.12b"
    NO_ERROR = '0,"No error;0;0 0"'

    def __init__(self, bench: Bench) -> None:
        super().__init__()
        self.bench = bench
        self.language = "SCPI"
        self.settings = dict(DEFAULTS)
        self.nplc = {"VOLT": 1.0, "CURR": 1.0}
        self.command("*LANG?", lambda call: self.language)
        source = "[SOURce#:]"
        self.command(f"{source}FUNCtion[:MODE]", self._set_function)
        self.command(f"{source}FUNCtion[:MODE]?", lambda call: self.bench.smu.function)
        level = "[:LEVel][:IMMediate][:AMPLitude]"
        self.command(f"{source}VOLTage{level}", self._setter("VOLT", MAX_VOLTS, signed=True))
        self.command(f"{source}VOLTage{level}?", lambda call: nr3(self.settings["VOLT"]))
        self.command(f"{source}CURRent{level}", self._setter("CURR", MAX_AMPS, signed=True))
        self.command(f"{source}CURRent{level}?", lambda call: nr3(self.settings["CURR"]))
        self.command(f"{source}VOLTage:ILIMit[:LEVel]", self._setter("ILIM", MAX_AMPS))
        self.command(f"{source}VOLTage:ILIMit[:LEVel]?", lambda call: nr3(self.settings["ILIM"]))
        self.command(f"{source}VOLTage:ILIMit[:LEVel]:TRIPped?", self._tripped("VOLT"))
        self.command(f"{source}CURRent:VLIMit[:LEVel]", self._setter("VLIM", MAX_VOLTS))
        self.command(f"{source}CURRent:VLIMit[:LEVel]?", lambda call: nr3(self.settings["VLIM"]))
        self.command(f"{source}CURRent:VLIMit[:LEVel]:TRIPped?", self._tripped("CURR"))
        self.command("OUTPut[:STATe]", self._set_output)
        self.command("OUTPut[:STATe]?", lambda call: "1" if self.bench.smu.enabled else "0")
        for node, function in (("VOLTage", "VOLT"), ("CURRent", "CURR")):
            self.command(f"[SENSe#:]{node}[:DC]:NPLCycles", self._set_nplc(function))
            self.command(f"MEASure:{node}[:DC]?", self._measure(function))

    def reset_state(self) -> None:
        self.settings = dict(DEFAULTS)
        self.nplc = {"VOLT": 1.0, "CURR": 1.0}
        self.bench.reset_smu()

    def _apply_source(self) -> None:
        """Hand the active function's level and limit to the bench."""
        function = self.bench.smu.function
        limit = self.settings["ILIM" if function == "VOLT" else "VLIM"]
        self.bench.configure_smu(level=self.settings[function], limit=limit)

    def _set_function(self, call: Call) -> None:
        name = call.arg(0).upper()
        if name not in FUNCTIONS:
            raise ScpiError(*DATA_TYPE_ERROR)
        self.bench.configure_smu(function=FUNCTIONS[name])
        self._apply_source()

    def _setter(self, key: str, largest: float, signed: bool = False):
        def set_value(call: Call) -> None:
            low = -largest if signed else 1e-9 if key == "ILIM" else 0.02
            self.settings[key] = call.number(0, low, largest)
            self._apply_source()

        return set_value

    def _tripped(self, function: str):
        def tripped(call: Call) -> str:
            if self.bench.smu.function != function:
                return "0"
            return "1" if self.bench.smu_output().in_compliance else "0"

        return tripped

    def _set_output(self, call: Call) -> None:
        self.bench.configure_smu(enabled=call.choice(0, "ON", "OFF", "1", "0") in ("ON", "1"))

    def _set_nplc(self, function: str):
        def set_nplc(call: Call) -> None:
            self.nplc[function] = call.number(0, 0.01, 10.0)

        return set_nplc

    def _measure(self, function: str):
        def measure(call: Call) -> str:
            reading = self.bench.measure_smu(self.nplc[function])
            return nr3(reading.volts if function == "VOLT" else reading.amps)

        return measure
