"""Driver names as written in station.yaml, resolved to driver classes on demand."""

from __future__ import annotations

import importlib
from typing import Any

from drivers.errors import UnknownDriverError
from drivers.models.scpi import ScpiInstrument
from drivers.transport.seam import open_transport

# "module:Class" strings, so listing names imports no driver module.
DRIVERS: dict[str, str] = {
    "keithley-dmm6500": "drivers.models.dmm:KeithleyDMM6500",
    "keysight-34461a": "drivers.models.dmm:Keysight34461A",
    "keysight-34465a": "drivers.models.dmm:Keysight34465A",
    "keysight-e36312a": "drivers.models.psu:KeysightE36312A",
    "korad-ka3005p": "drivers.models.korad:KoradKA3005P",
    "rigol-dp832": "drivers.models.psu:RigolDP832",
}


def driver_names() -> list[str]:
    """The registry names, sorted."""
    return sorted(DRIVERS)


def get_driver_class(name: str) -> type[ScpiInstrument]:
    """The class registered as `name`; UnknownDriverError lists the valid names."""
    try:
        target = DRIVERS[name]
    except KeyError:
        raise UnknownDriverError(name, driver_names()) from None
    module_name, _, class_name = target.partition(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    if not (isinstance(cls, type) and issubclass(cls, ScpiInstrument)):
        raise TypeError(f"driver {name!r} ({target}) is not an instrument class")
    return cls


def create_driver(
    driver: str,
    resource: str,
    *,
    name: str,
    timeout_ms: int = 3000,
    **transport_options: Any,
) -> ScpiInstrument:
    """Build a driver on its transport, not yet connected (call `connect()` to open it).

    The model's DEFAULT_OPTIONS (terminations...) apply unless an option is given explicitly;
    None means "not given", so a config can pass its optional fields straight through.
    """
    cls = get_driver_class(driver)
    options = dict(cls.DEFAULT_OPTIONS)
    options.update({key: value for key, value in transport_options.items() if value is not None})
    if timeout_ms is not None:
        options["timeout_ms"] = timeout_ms
    transport = open_transport(resource, name=name, **options)
    return cls(transport, name)
