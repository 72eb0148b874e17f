"""The simulated models, keyed by the registry driver name used in station.yaml.

Each twin has its model's IDN, dialect and quirks (sim/twins/, one module per vendor family);
all of them read and drive the shared `Bench`. A twin is built only when a configured instrument
names its driver, and building one is cheap (state only: a scope computes its screen when asked).
"""

from __future__ import annotations

from collections.abc import Callable

from sim.bench import Bench
from sim.twins.keithley_dmm import SimKeithleyDMM6500
from sim.twins.keithley_smu import SimKeithley2450
from sim.twins.keysight_daq import SimKeysightDAQ970A
from sim.twins.keysight_dmm import DMM_FUNCTIONS, SimKeysight34461A, SimKeysight34465A
from sim.twins.keysight_psu import SimKeysightE36312A
from sim.twins.rigol_load import SimRigolDL3021
from sim.twins.rigol_psu import SimRigolDP832
from sim.twins.rigol_scope import SimRigolDS1054Z
from sim.twins.scpi import ScpiTwin

__all__ = [
    "DMM_FUNCTIONS",
    "SIM_MODELS",
    "SimKeithley2450",
    "SimKeithleyDMM6500",
    "SimKeysight34461A",
    "SimKeysight34465A",
    "SimKeysightDAQ970A",
    "SimKeysightE36312A",
    "SimRigolDL3021",
    "SimRigolDP832",
    "SimRigolDS1054Z",
]

# Each value is a twin class, called with the bench it is wired into.
SIM_MODELS: dict[str, Callable[[Bench], ScpiTwin]] = {
    "keithley-2450": SimKeithley2450,
    "keithley-dmm6500": SimKeithleyDMM6500,
    "keysight-34461a": SimKeysight34461A,
    "keysight-34465a": SimKeysight34465A,
    "keysight-daq970a": SimKeysightDAQ970A,
    "keysight-e36312a": SimKeysightE36312A,
    "rigol-dl3021": SimRigolDL3021,
    "rigol-dp832": SimRigolDP832,
    "rigol-ds1054z": SimRigolDS1054Z,
}
