"""Keysight Truevolt 3446x twins: CONF presets 10 PLC, NPLC from the model's discrete set,
NR3 replies, `+0,"No error"`. A reading (READ?, MEAS?) integrates over NPLC / line frequency
of bench time and answers when that is over: 200 ms for the default 10 PLC at 50 Hz."""

from __future__ import annotations

from sim.bench import Bench
from sim.twins.common import DMM_MAX_RANGE, dmm_reading, line_frequency, nr3
from sim.twins.scpi import Call, Handler, ScpiTwin

# Measurement functions: our short key -> the header node that selects it.
DMM_FUNCTIONS = {
    "VOLT:DC": "VOLTage[:DC]",
    "VOLT:AC": "VOLTage:AC",
    "CURR:DC": "CURRent[:DC]",
    "RES": "RESistance",
}


class SimKeysight34461A(ScpiTwin):
    """A 34461A whose input is across the bench's 3.3 V rail."""

    IDN = "Keysight Technologies,34461A,MY60012345,A.02.14-02.40-02.14-00.49-01-01"
    NO_ERROR = '+0,"No error"'
    NPLC_VALUES: tuple[float, ...] = (0.02, 0.2, 1.0, 10.0, 100.0)

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
        # The mains frequency, measured at power-on: query only, as on the instrument.
        self.command("SYSTem:LFRequency?", lambda call: line_frequency(self.bench))

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

    def _configure_handler(self, function: str) -> Handler:
        def configure(call: Call) -> None:
            self._configure(function, call)

        return configure

    def _measure_handler(self, function: str) -> Handler:
        def measure(call: Call) -> str:
            self._configure(function, call)
            return self._read()

        return measure

    def _nplc_handler(self, function: str) -> Handler:
        def set_nplc(call: Call) -> None:
            value = call.number(0, low=min(self.NPLC_VALUES), high=max(self.NPLC_VALUES))
            # The instrument rounds up to the next integration time it has.
            self.nplc[function] = next(v for v in self.NPLC_VALUES if v >= value - 1e-9)

        return set_nplc

    def _nplc_query_handler(self, function: str) -> Handler:
        return lambda call: nr3(self.nplc[function])

    def _read(self) -> str:
        nplc = self.nplc.get(self.function, 1.0)
        return nr3(dmm_reading(self.bench, self.function, self.range, nplc))


class SimKeysight34465A(SimKeysight34461A):
    """A 34465A (firmware A.03, so with the 0.001-0.006 PLC apertures): the 34461A's dialect."""

    IDN = "Keysight Technologies,34465A,MY59008389,A.03.01-03.15-03.01-00.52-03-02"
    NPLC_VALUES = (0.001, 0.002, 0.006, 0.02, 0.06, 0.2, 1.0, 10.0, 100.0)
