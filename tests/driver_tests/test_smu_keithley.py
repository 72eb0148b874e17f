"""Keithley2450 against recorded exchanges: every byte it sends and every reply it parses."""

from __future__ import annotations

import pytest

from drivers import InstrumentError
from drivers.errors import KIND_NOT_APPLIED, KIND_WRONG_MODEL
from drivers.models.smu import Keithley2450, SourceMeter

IDN = "KEITHLEY INSTRUMENTS,MODEL 2450,04412345,1.7.12b"
APPLIED = [("*OPC?", "1"), (":SYST:ERR?", '0,"No error;0;0 0"')]


def test_connect_checks_model_and_command_set(scripted):
    smu = Keithley2450(scripted([("*IDN?", IDN), ("*LANG?", "SCPI")]), "smu")
    assert smu.connect() == IDN and smu.identity == IDN
    tsp = Keithley2450(scripted([("*IDN?", IDN), ("*LANG?", "TSP")]), "smu")
    with pytest.raises(InstrumentError, match="the command set is TSP, this driver needs SCPI"):
        tsp.connect()
    assert tsp.identity is None
    dmm = scripted([("*IDN?", "KEITHLEY INSTRUMENTS,MODEL DMM6500,04592428,1.7.12b")])
    with pytest.raises(InstrumentError) as caught:
        Keithley2450(dmm, "smu").connect()
    assert caught.value.kind == KIND_WRONG_MODEL


def test_sources_set_the_limit_before_the_level(scripted):
    transport = scripted(
        [
            (":SOUR:FUNC VOLT", None), (":SOUR:VOLT:ILIM 0.0001", None),
            (":SOUR:VOLT 3.3", None), *APPLIED,
            (":SOUR:FUNC CURR", None), (":SOUR:CURR:VLIM 2", None),
            (":SOUR:CURR -0.001", None), *APPLIED,
            (":OUTP ON", None), *APPLIED,
            (":OUTP OFF", None), *APPLIED,
        ]
    )  # fmt: skip
    smu = Keithley2450(transport, "smu")
    smu.source_voltage(3.3, current_limit=100e-6)
    smu.source_current(-1e-3, voltage_limit=2.0)
    smu.enable()
    smu.disable()


def test_readings_with_and_without_an_integration_time(scripted):
    transport = scripted(
        [
            (":MEAS:CURR?", "+3.30019357E-06"),
            (":SENS:VOLT:NPLC 1", None), *APPLIED,
            (":MEAS:VOLT?", "+3.30002389E+00"),
            (":OUTP?", "1"),
        ]
    )  # fmt: skip
    smu = Keithley2450(transport, "smu")
    assert smu.measure_current() == pytest.approx(3.30019357e-06)
    assert smu.measure_voltage(nplc=1) == pytest.approx(3.30002389)
    assert smu.is_enabled() is True


def test_compliance_asks_the_limit_of_the_active_source(scripted):
    transport = scripted(
        [
            (":SOUR:FUNC?", "VOLT"), (":SOUR:VOLT:ILIM:TRIP?", "1"),
            (":SOUR:FUNC?", "CURR"), (":SOUR:CURR:VLIM:TRIP?", "0"),
        ]
    )  # fmt: skip
    smu = Keithley2450(transport, "smu")
    assert smu.in_compliance() is True
    assert smu.in_compliance() is False


def test_out_of_range_settings_are_refused_before_any_io(scripted):
    smu = Keithley2450(scripted([]), "smu")
    with pytest.raises(ValueError, match=r"250 V is beyond ±210 V"):
        smu.source_voltage(250, current_limit=0.001)
    with pytest.raises(ValueError, match=r"limit must be within 0\.\.1\.05 A \(and not 0\)"):
        smu.source_voltage(1, current_limit=0)
    with pytest.raises(ValueError, match=r"2 A is beyond ±1\.05 A"):
        smu.source_current(2, voltage_limit=1)
    with pytest.raises(ValueError, match=r"nplc must be within 0\.01\.\.10"):
        smu.measure_current(nplc=20)


def test_safe_state_turns_the_output_off_and_reads_it_back(scripted):
    script = [(":OUTP OFF", None), *APPLIED, (":OUTP?", "0")]
    Keithley2450(scripted(script), "smu").safe_state()
    stuck = [(":OUTP OFF", None), *APPLIED, (":OUTP?", "1")] * 2
    with pytest.raises(InstrumentError, match="the output still reads ON") as caught:
        Keithley2450(scripted(stuck), "smu").safe_state()
    assert caught.value.kind == KIND_NOT_APPLIED


def test_is_a_source_meter():
    assert issubclass(Keithley2450, SourceMeter)
