"""ACME FX-2: a pneumatic fixture controller speaking SCPI, driven by a `drivers.Instrument`
subclass, and its twin for --sim (served on loopback: the same driver connects to it)."""

from __future__ import annotations

import re

from drivers import Instrument
from sim.twins.scpi import Call, ScpiTwin


class FixtureController(Instrument):
    """Clamp, vacuum and the fixture's temperature; safe: vacuum off, clamp released."""

    MODEL = "ACME FX-2 fixture controller"
    IDN_PATTERN = re.compile(r"^ACME,FX-2,")
    SAFE_STATE = ("VAC OFF", "CLAMP OFF")

    def __init__(self, transport, name, *, settle_s: float = 0.0) -> None:
        super().__init__(transport, name)
        self.settle_s = settle_s

    def clamp(self) -> None:
        self.write("CLAMP ON")
        self.check_errors()

    def release(self) -> None:
        self.write("CLAMP OFF")

    def vacuum(self, on: bool) -> None:
        self.write(f"VAC {'ON' if on else 'OFF'}")

    def temperature(self) -> float:
        return self.query_float("MEAS:TEMP?")

    def verify_safe(self) -> str | None:
        problems = [
            f"{what} still reads ON"
            for what, query in (("vacuum", "VAC?"), ("clamp", "CLAMP?"))
            if self.query(query) not in ("0", "OFF")
        ]
        return "; ".join(problems) or None

    def close(self) -> None:
        """Give the front panel back (SYST:LOC), then close the session."""
        try:
            self.write("SYST:LOC")
        finally:
            super().close()


class FixtureTwin(ScpiTwin):
    """The FX-2 as the tests' "real" controller and as --sim's twin."""

    IDN = "ACME,FX-2,FX2-0007,1.4"

    def __init__(self, bench=None, temperature_c: float = 23.5) -> None:
        super().__init__()
        self.bench = bench
        self.temperature_c = temperature_c
        self.clamped = False
        self.vacuum = False
        self.local = False
        self.history: list[str] = []
        self.command("CLAMP", lambda call: self._set("clamped", call))
        self.command("CLAMP?", lambda call: str(int(self.clamped)))
        self.command("VAC", lambda call: self._set("vacuum", call))
        self.command("VAC?", lambda call: str(int(self.vacuum)))
        self.command("MEASure:TEMPerature?", lambda call: f"{self.temperature_c:+.3E}")
        self.command("SYSTem:LOCal", lambda call: setattr(self, "local", True))

    def _set(self, attribute: str, call: Call) -> None:
        setattr(self, attribute, call.choice(0, "ON", "OFF", "1", "0") in ("ON", "1"))

    def handle(self, message: str) -> str | None:
        self.history.append(message)
        return super().handle(message)
