"""Keithley DMM6500 twin: quoted function selection, per-function range and NPLC, `*LANG?`,
and error-queue entries with extra fields inside the quotes (`0,"No error;0;<time>"`).
A reading integrates over NPLC / line frequency of bench time (1 PLC by default: 20 ms at
50 Hz) and answers when that is over."""

from __future__ import annotations

import time
from collections.abc import Callable

from sim.bench import Bench
from sim.twins.common import DMM_MAX_RANGE, dmm_reading, line_frequency, nr3
from sim.twins.scpi import (
    DATA_TYPE_ERROR,
    Call,
    Handler,
    ScpiError,
    ScpiTwin,
    compile_header,
)

ILLEGAL_PARAMETER = (-224, "Illegal parameter value")
# Function key -> the header node naming it, in `:SENS:FUNC "<node>"` and in `:SENS:<node>:...`.
FUNCTIONS = {
    "VOLT:DC": "VOLTage[:DC]",
    "VOLT:AC": "VOLTage:AC",
    "CURR:DC": "CURRent[:DC]",
    "RES": "RESistance",
}
LANGUAGES = ("SCPI", "TSP", "SCPI2000", "SCPI34401")
NPLC_LIMITS = (0.0005, 15.0)
_SEVERITY_ERROR = 1
_CLOCK_ORIGIN = "1970/01/01 00:00:00.000"  # what the no-error entry carries


class SimKeithleyDMM6500(ScpiTwin):
    """A DMM6500 in its SCPI command set, input across the bench's 3.3 V rail.

    `language` is what `*LANG?` answers; `*LANG TSP` changes it at once (the real instrument
    waits for a reboot), so tests can show the driver refusing a non-SCPI meter.
    """

    IDN = "KEITHLEY INSTRUMENTS,MODEL DMM6500,04592428,1.7.12b"
    NO_ERROR = f'0,"No error;0;{_CLOCK_ORIGIN}"'

    def __init__(self, bench: Bench) -> None:
        super().__init__()
        self.bench = bench
        self.language = "SCPI"
        self.reset_state()
        self._function_names = [(compile_header(node), key) for key, node in FUNCTIONS.items()]
        self.command("[SENSe#:]FUNCtion[:ON]", self._select_function)
        self.command("[SENSe#:]FUNCtion[:ON]?", lambda call: f'"{self.function}"')
        for key, node in FUNCTIONS.items():
            sense = f"[SENSe#:]{node}"
            self.command(f"{sense}:RANGe[:UPPer]", self._handler(self._set_range, key))
            self.command(f"{sense}:RANGe[:UPPer]?", self._handler(self._range_query, key))
            self.command(f"{sense}:RANGe:AUTO", self._handler(self._set_autorange, key))
            self.command(f"{sense}:RANGe:AUTO?", self._handler(self._autorange_query, key))
            if key != "VOLT:AC":  # AC uses a detector bandwidth, not an integration time
                self.command(f"{sense}:NPLCycles", self._handler(self._set_nplc, key))
                self.command(f"{sense}:NPLCycles?", self._handler(self._nplc_query, key))
            self.command(f"MEASure:{node}?", self._handler(self._measure, key))
        self.command("READ?", lambda call: self._read())
        self.command("*LANG", self._set_language)
        self.command("*LANG?", lambda call: self.language)
        # The mains frequency, measured at power-on: query only, as on the instrument.
        self.command("SYSTem:LFRequency?", lambda call: line_frequency(self.bench))

    def reset_state(self) -> None:
        self.function = "VOLT:DC"
        self.auto = {key: True for key in FUNCTIONS}
        self.range = {key: DMM_MAX_RANGE[key] for key in FUNCTIONS}
        self.nplc = {key: 1.0 for key in FUNCTIONS}

    def next_error(self) -> str:
        """Entries read `<code>,"<text>;<severity>;<date time>"`."""
        reply = super().next_error()
        if reply == self.NO_ERROR:
            return reply
        now = time.time()
        stamp = time.strftime("%Y/%m/%d %H:%M:%S", time.localtime(now))
        return f'{reply[:-1]};{_SEVERITY_ERROR};{stamp}.{int(now * 1000) % 1000:03d}"'

    @staticmethod
    def _handler(method: Callable[[str, Call], str | None], key: str) -> Handler:
        return lambda call: method(key, call)

    def _select_function(self, call: Call) -> None:
        text = call.arg(0)
        if len(text) < 2 or text[0] not in "\"'" or text[-1] != text[0]:
            raise ScpiError(*DATA_TYPE_ERROR)  # a string parameter must be quoted
        for pattern, key in self._function_names:
            if pattern.fullmatch(text[1:-1]):
                self.function = key
                return
        raise ScpiError(*ILLEGAL_PARAMETER)

    def _range_query(self, key: str, call: Call) -> str:
        return nr3(self.range[key])

    def _autorange_query(self, key: str, call: Call) -> str:
        return str(int(self.auto[key]))

    def _nplc_query(self, key: str, call: Call) -> str:
        return nr3(self.nplc[key])

    def _set_range(self, key: str, call: Call) -> None:
        self.range[key] = call.number(0, low=0.0, high=DMM_MAX_RANGE[key])
        self.auto[key] = False

    def _set_autorange(self, key: str, call: Call) -> None:
        self.auto[key] = call.choice(0, "ON", "OFF", "1", "0") in ("ON", "1")

    def _set_nplc(self, key: str, call: Call) -> None:
        self.nplc[key] = call.number(0, *NPLC_LIMITS)

    def _measure(self, key: str, call: Call) -> str:
        self.function = key
        return self._read()

    def _read(self) -> str:
        key = self.function
        fixed_range = None if self.auto[key] else self.range[key]
        return nr3(dmm_reading(self.bench, key, fixed_range, self.nplc[key]))

    def _set_language(self, call: Call) -> None:
        self.language = call.choice(0, *LANGUAGES)
