"""Instrument drivers, importable without the framework (station never needed here)."""

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
