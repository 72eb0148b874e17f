"""Instrument drivers, importable without the framework (station never needed here).

Owns what a phase talks to: the instrument models in the bench's language (`models`: DMMs,
supplies, the SCPI base), how their strings reach the wire (`transport`: pyvisa-py and pyserial
sessions with their locks, interrupts, call guard, final close and OS lock per instrument), the
registry of driver names used in station.yaml (`registry`) and `InstrumentError` (`errors`).
May import only itself and third-party libraries (pyvisa, pyserial); never `station` or `sim`.
"""

from drivers.errors import InstrumentError, UnknownDriverError
from drivers.models.dmm import Dmm
from drivers.models.psu import PowerSupply
from drivers.registry import create_driver, driver_names

__all__ = [
    "Dmm",
    "InstrumentError",
    "PowerSupply",
    "UnknownDriverError",
    "create_driver",
    "driver_names",
]
