"""The 34465A, DMM6500 and E36312A twins at the SCPI level: identity, dialect, *RST, errors."""

from __future__ import annotations

import re

import pytest

from sim.bench import Bench, SimulatedClock
from sim.boards.pcba01 import Pcba01
from sim.instruments import (
    SIM_MODELS,
    SimKeithleyDMM6500,
    SimKeysight34465A,
    SimKeysightE36312A,
)


@pytest.fixture
def bench() -> Bench:
    return Bench(Pcba01(), seed=2, clock=SimulatedClock())


def test_registered_under_the_driver_names():
    assert SIM_MODELS["keysight-34465a"] is SimKeysight34465A
    assert SIM_MODELS["keithley-dmm6500"] is SimKeithleyDMM6500
    assert SIM_MODELS["keysight-e36312a"] is SimKeysightE36312A


@pytest.mark.parametrize(
    ("twin", "idn"),
    [
        (
            SimKeysight34465A,
            "Keysight Technologies,34465A,MY59008389,A.03.01-03.15-03.01-00.52-03-02",
        ),
        (SimKeithleyDMM6500, "KEITHLEY INSTRUMENTS,MODEL DMM6500,04592428,1.7.12b"),
        (SimKeysightE36312A, "Keysight Technologies,E36312A,MY59002391,2.1.0-1.0.4-1.12"),
    ],
)
def test_identity_as_the_real_instrument(bench, twin, idn):
    assert twin(bench).handle("*idn?") == idn


# -- 34465A ----------------------------------------------------------------------------------


def test_34465a_has_the_fine_apertures(bench):
    dmm = SimKeysight34465A(bench)
    assert dmm.handle("CONF:VOLT:DC;VOLT:DC:NPLC 0.001;VOLT:DC:NPLC?") == "+1.00000000E-03"
    assert dmm.handle("SENS:VOLT:DC:NPLC 0.05;SENS:VOLT:DC:NPLC?") == "+6.00000000E-02"
    dmm.handle("FOO")
    assert dmm.handle("SYST:ERR?;SYST:ERR?") == '-113,"Undefined header";+0,"No error"'


# -- DMM6500 ---------------------------------------------------------------------------------


def test_dmm6500_function_must_be_a_quoted_string(bench):
    dmm = SimKeithleyDMM6500(bench)
    dmm.handle(':SENS:FUNC "VOLT:AC"')
    assert dmm.handle(":SENSe1:FUNCtion?") == '"VOLT:AC"'
    dmm.handle(":sense:function 'current'")
    assert dmm.function == "CURR:DC"
    dmm.handle(":SENS:FUNC VOLT:DC")  # unquoted
    dmm.handle(':SENS:FUNC "FREQ"')  # not a function this twin has
    assert dmm.errors == [(-104, "Data type error"), (-224, "Illegal parameter value")]
    assert dmm.function == "CURR:DC"


def test_dmm6500_settings_are_per_function_and_rst_restores_them(bench):
    dmm = SimKeithleyDMM6500(bench)
    dmm.handle(":SENS:VOLT:NPLC 0.1;:SENS:VOLT:RANG 10;:SENS:RES:NPLC 5")
    assert dmm.handle(":SENS:VOLT:NPLC?;:SENS:VOLT:DC:RANG?;:SENS:VOLT:RANG:AUTO?") == (
        "+1.00000000E-01;+1.00000000E+01;0"
    )
    assert dmm.handle(":SENS:CURR:NPLC?;:SENS:RES:NPLC?") == "+1.00000000E+00;+5.00000000E+00"
    dmm.handle("*RST")
    assert dmm.handle(":SENS:VOLT:NPLC?;:SENS:VOLT:RANG:AUTO?") == "+1.00000000E+00;1"
    assert dmm.handle(":SENS:FUNC?") == '"VOLT:DC"'


def test_dmm6500_reads_the_rail_and_overloads_on_a_small_range(bench):
    bench.configure(1, voltage=5.0, current_limit=0.5, enabled=True)
    bench.clock.sleep(1.0)  # settled
    dmm = SimKeithleyDMM6500(bench)
    assert float(dmm.handle(":READ?")) == pytest.approx(3.3, abs=0.005)
    dmm.handle(":SENS:VOLT:RANG 1")
    assert dmm.handle(":READ?") == "+9.90000000E+37"
    assert float(dmm.handle(":MEAS:VOLT:AC?")) == pytest.approx(0.002, abs=0.001)


def test_dmm6500_error_queue_has_extra_fields_inside_the_quotes(bench):
    dmm = SimKeithleyDMM6500(bench)
    assert dmm.handle(":SYST:ERR?") == '0,"No error;0;1970/01/01 00:00:00.000"'
    dmm.handle(":SENS:VOLT:BOGUS 1;:SENS:VOLT:NPLC 100")
    first, second = dmm.handle(":SYST:ERR?"), dmm.handle(":SYST:ERR?")
    stamp = r"\d{4}/\d\d/\d\d \d\d:\d\d:\d\d\.\d{3}"
    assert re.fullmatch(rf'-113,"Undefined header;1;{stamp}"', first), first
    assert re.fullmatch(rf'-222,"Data out of range;1;{stamp}"', second), second
    assert dmm.handle(":SYST:ERR?").startswith('0,"No error;')


def test_dmm6500_command_set(bench):
    dmm = SimKeithleyDMM6500(bench)
    assert dmm.handle("*LANG?") == "SCPI"
    dmm.handle("*LANG TSP")
    assert dmm.handle("*LANG?") == "TSP"


# -- E36312A ---------------------------------------------------------------------------------


def test_e36312a_channel_lists(bench):
    psu = SimKeysightE36312A(bench)
    psu.handle("VOLT 5,(@1);CURR 0.25,(@1);VOLT 12,(@2,3)")
    assert psu.handle("VOLT? (@1:3)") == "+5.00000000E+00,+1.20000000E+01,+1.20000000E+01"
    assert psu.handle("SOURce:CURRent:LEVel:IMMediate:AMPLitude? (@1)") == "+2.50000000E-01"
    psu.handle("OUTP ON,(@1,2)")
    assert psu.handle("OUTP? (@1);OUTP? (@1:3)") == "1;1,1,0"
    psu.handle("OUTP OFF,(@1:3)")
    assert psu.handle("OUTP? (@1:3)") == "0,0,0"


def test_e36312a_stateful_selection_and_limits(bench):
    psu = SimKeysightE36312A(bench)
    psu.handle("INST:NSEL 2;VOLT 24")
    assert psu.handle("INST:NSEL?;VOLT? (@2)") == "2;+2.40000000E+01"
    psu.handle("VOLT 7,(@1)")  # CH1 is a 6 V output
    psu.handle("CURR 2,(@3)")  # CH3 is a 1 A output
    psu.handle("OUTP ON,(@4)")
    psu.handle("NOPE")
    assert psu.handle("SYST:ERR?;SYST:ERR?;SYST:ERR?") == (
        '-222,"Data out of range";-222,"Data out of range";-222,"Data out of range"'
    )
    assert psu.handle("SYST:ERR?;SYST:ERR?") == '-113,"Undefined header";+0,"No error"'


def test_e36312a_ovp_is_always_armed_and_trips(bench):
    psu = SimKeysightE36312A(bench)
    assert psu.handle("VOLT:PROT? (@1:3)") == "+6.60000000E+00,+2.75000000E+01,+2.75000000E+01"
    psu.handle("VOLT:PROT 4,(@1);VOLT 5,(@1);OUTP ON,(@1)")
    assert psu.handle("OUTP? (@1);VOLT:PROT:TRIP? (@1)") == "0;1"
    psu.handle("OUTP:PROT:CLE (@1)")
    assert psu.handle("VOLT:PROT:TRIP? (@1)") == "0"


def test_e36312a_rst_restores_defaults(bench):
    psu = SimKeysightE36312A(bench)
    psu.handle("VOLT 5,(@1);OUTP ON,(@1);VOLT:PROT 5.5,(@1)")
    psu.handle("*RST")
    assert psu.handle("OUTP? (@1);VOLT? (@1);VOLT:PROT? (@1)") == (
        "0;+0.00000000E+00;+6.60000000E+00"
    )


def test_e36312a_measures_the_board_on_ch1(bench):
    psu = SimKeysightE36312A(bench)
    psu.handle("CURR 0.25,(@1);VOLT 5,(@1);OUTP ON,(@1)")
    volts, amps = (float(v) for v in psu.handle("MEAS:VOLT? (@1);MEAS:CURR? (@1)").split(";"))
    assert volts == pytest.approx(5.0, abs=0.005)
    assert amps == pytest.approx(0.070, abs=0.002)
    assert psu.handle("MEAS:CURR? (@2)") == "+0.00000000E+00"
