"""Instrument drivers, importable without the framework (station never needed here).

Owns what a phase talks to: the instrument models in the bench's language (`models`: DMMs,
supplies, the SCPI base), the public base class for a user's own session-based instrument
(`instrument.Instrument`), the generic drivers for instruments without a model class
(`generic`: `scpi`, `serial-line`), how their strings reach the wire (`transport`: pyvisa and
pyserial sessions with their locks, interrupts, call guard, final close and OS lock per
instrument, and what a resource needs installed), the registry of driver names used in
station.yaml (`registry`) and `InstrumentError` (`errors`).
May import only itself and third-party libraries (pyvisa, pyserial); never `station` or `sim`.
"""

from drivers.errors import InstrumentError, UnknownDriverError
from drivers.generic import ScpiDevice, SerialLine
from drivers.instrument import Instrument
from drivers.models.dmm import Dmm
from drivers.models.psu import PowerSupply
from drivers.models.scpi import IdentityFields, parse_identity
from drivers.registry import create_driver, driver_names

__all__ = [
    "Dmm",
    "IdentityFields",
    "Instrument",
    "InstrumentError",
    "PowerSupply",
    "ScpiDevice",
    "SerialLine",
    "UnknownDriverError",
    "create_driver",
    "driver_names",
    "parse_identity",
]
