"""Driver names as written in station.yaml, resolved to driver classes on demand.

`DRIVERS` are the instrument models, `GENERIC_DRIVERS` the drivers for instruments without a
model class (`scpi`, `serial-line`). `create_driver` builds any `ScpiInstrument` subclass on its
session, a registered one by name or a user's class (`drivers.Instrument` subclass) given as a
class: the same options, the same backend check, the same session.
"""

from __future__ import annotations

import importlib
from typing import Any

from drivers.errors import UnknownDriverError
from drivers.models.scpi import ScpiInstrument
from drivers.transport.seam import is_serial_resource

# "module:Class" strings, so listing names imports no driver module.
DRIVERS: dict[str, str] = {
    "keithley-dmm6500": "drivers.models.dmm:KeithleyDMM6500",
    "keysight-34461a": "drivers.models.dmm:Keysight34461A",
    "keysight-34465a": "drivers.models.dmm:Keysight34465A",
    "keithley-2450": "drivers.models.smu:Keithley2450",
    "keysight-daq970a": "drivers.models.mux:KeysightDAQ970A",
    "keysight-e36312a": "drivers.models.psu:KeysightE36312A",
    "korad-ka3005p": "drivers.models.korad:KoradKA3005P",
    "rigol-dl3021": "drivers.models.load:RigolDL3021",
    "rigol-dp832": "drivers.models.psu:RigolDP832",
    "rigol-ds1054z": "drivers.models.scope:RigolDS1054Z",
}


# Drivers for instruments that have no model class (drivers/generic.py).
GENERIC_DRIVERS: dict[str, str] = {
    "scpi": "drivers.generic:ScpiDevice",
    "serial-line": "drivers.generic:SerialLine",
}


def driver_names() -> list[str]:
    """The registry names (models and generic drivers), sorted."""
    return sorted([*DRIVERS, *GENERIC_DRIVERS])


def get_driver_class(name: str) -> type[ScpiInstrument]:
    """The class registered as `name`; UnknownDriverError lists the valid names."""
    try:
        target = DRIVERS.get(name) or GENERIC_DRIVERS[name]
    except KeyError:
        raise UnknownDriverError(name, driver_names()) from None
    module_name, _, class_name = target.partition(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    if not (isinstance(cls, type) and issubclass(cls, ScpiInstrument)):
        raise TypeError(f"driver {name!r} ({target}) is not an instrument class")
    return cls


def create_driver(
    driver: str | type[ScpiInstrument],
    resource: str,
    *,
    name: str,
    timeout_ms: int = 3000,
    config: dict[str, Any] | None = None,
    visa_library: str | None = None,
    **transport_options: Any,
) -> ScpiInstrument:
    """Build a driver on its transport, not yet connected (call `connect()` to open it).

    `driver` is a registry name or a class (a `drivers.Instrument` subclass); `config` goes to
    its constructor as keyword arguments. The class's DEFAULT_OPTIONS (terminations...) apply
    unless an option is given explicitly; None means "not given", so a config can pass its
    optional fields straight through. `visa_library` chooses the VISA implementation of a VISA
    resource (None: pyvisa-py).
    """
    cls = driver if isinstance(driver, type) else get_driver_class(driver)
    options = dict(cls.DEFAULT_OPTIONS)
    options.update({key: value for key, value in transport_options.items() if value is not None})
    if timeout_ms is not None:
        options["timeout_ms"] = timeout_ms
    if visa_library is not None and not is_serial_resource(resource):
        options["visa_library"] = visa_library
    transport = cls.transport_for(resource, name=name, **options)
    return cls(transport, name, **(config or {}))
