"""station: write production test procedures as plain Python phases.

The public authoring API, and nothing else::

    from station import phase, measure, SKIP
    from station import Dut, Measurements, RunContext, InstrumentError  # to type a phase

`import station` stays cheap (the CLI imports it before it knows what it will do): the helper
types pull in the record model (pydantic) and `InstrumentError` the drivers package, so those
names are imported on first use, through the module's `__getattr__`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from station.authoring.procedure import SKIP, measure, phase
from station.records.outcomes import Outcome, PhaseOutcome

if TYPE_CHECKING:
    from drivers.errors import InstrumentError
    from station.authoring.helpers import Dut, Measurements, RunContext

__all__ = [
    "SKIP",
    "Dut",
    "InstrumentError",
    "Measurements",
    "Outcome",
    "PhaseOutcome",
    "RunContext",
    "measure",
    "phase",
]
__version__ = "0.1.0"

# name -> module that defines it, imported when the name is first used
_LAZY = {
    "Dut": "station.authoring.helpers",
    "Measurements": "station.authoring.helpers",
    "RunContext": "station.authoring.helpers",
    "InstrumentError": "drivers.errors",
}


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'station' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # found directly from now on
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
