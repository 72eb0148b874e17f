"""Rigol DL3021 twin: an electronic load across the board's 3.3 V rail.

`:SOUR:FUNC CURR|VOLT|RES` (answered as CC, CV, CR), one level per mode
(`:SOUR:CURR:LEV:IMM`...), the input `:SOUR:INP:STAT` (answered 1/0), fixed-point readings,
`0,"No error"`. The mode, the active level and the input state drive the bench's circuit.
"""

from __future__ import annotations

from sim.bench import Bench
from sim.twins.scpi import DATA_TYPE_ERROR, Call, ScpiError, ScpiTwin

# function argument (short and long form) -> the bench's load mode
FUNCTIONS = {
    "CURR": "cc", "CURRENT": "cc",
    "VOLT": "cv", "VOLTAGE": "cv",
    "RES": "cr", "RESISTANCE": "cr",
}  # fmt: skip
QUERY_NAMES = {"cc": "CC", "cv": "CV", "cr": "CR"}
# Settable range per mode (DL3021: 40 A, 150 V, 0.08 ohm .. 15 kohm)
RANGES = {"cc": (0.0, 40.0), "cv": (0.0, 150.0), "cr": (0.08, 15000.0)}
DEFAULT_LEVELS = {"cc": 0.0, "cv": 150.0, "cr": 15000.0}


class SimRigolDL3021(ScpiTwin):
    """A DL3021 whose input is across the board's 3.3 V rail."""

    IDN = "RIGOL TECHNOLOGIES,DL3021,DL3A000000001,00.01.05.00.01"
    NO_ERROR = '0,"No error"'

    def __init__(self, bench: Bench) -> None:
        super().__init__()
        self.bench = bench
        self.levels = dict(DEFAULT_LEVELS)
        self.command("[SOURce:]FUNCtion", self._set_function)
        self.command("[SOURce:]FUNCtion?", lambda call: QUERY_NAMES[self.bench.load.mode])
        level = "[:LEVel][:IMMediate]"
        for node, mode in (("CURRent", "cc"), ("VOLTage", "cv"), ("RESistance", "cr")):
            self.command(f"[SOURce:]{node}{level}", self._level_setter(mode))
            self.command(f"[SOURce:]{node}{level}?", self._level_getter(mode))
        self.command("[SOURce:]INPut[:STATe]", self._set_input)
        self.command("[SOURce:]INPut[:STATe]?", lambda call: "1" if self.bench.load.on else "0")
        measure = "MEASure[:SCALar]"
        self.command(f"{measure}:VOLTage[:DC]?", lambda call: f"{self.bench.measure_load()[0]:.6f}")
        self.command(f"{measure}:CURRent[:DC]?", lambda call: f"{self.bench.measure_load()[1]:.6f}")
        self.command(f"{measure}:POWer[:DC]?", self._measure_power)

    def reset_state(self) -> None:
        self.levels = dict(DEFAULT_LEVELS)
        self.bench.reset_load()

    def _set_function(self, call: Call) -> None:
        name = call.arg(0).upper()
        if name not in FUNCTIONS:
            raise ScpiError(*DATA_TYPE_ERROR)
        mode = FUNCTIONS[name]
        self.bench.configure_load(mode=mode, level=self.levels[mode])

    def _level_setter(self, mode: str):
        def set_level(call: Call) -> None:
            value = call.number(0, *RANGES[mode])
            self.levels[mode] = value
            if self.bench.load.mode == mode:
                self.bench.configure_load(level=value)

        return set_level

    def _level_getter(self, mode: str):
        return lambda call: f"{self.levels[mode]:.6f}"

    def _set_input(self, call: Call) -> None:
        self.bench.configure_load(on=call.choice(0, "ON", "OFF", "1", "0") in ("ON", "1"))

    def _measure_power(self, call: Call) -> str:
        volts, amps = self.bench.measure_load()
        return f"{volts * amps:.6f}"
