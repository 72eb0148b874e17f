"""KeithleyDMM6500 against recorded exchanges."""

from __future__ import annotations

import math

import pytest

from drivers import InstrumentError
from drivers.models.dmm import KeithleyDMM6500

IDN = "KEITHLEY INSTRUMENTS,MODEL DMM6500,04592428,1.7.12b"
NO_ERROR = (":SYST:ERR?", '0,"No error;0;1970/01/01 00:00:00.000"')


def test_connect_checks_identity_then_the_command_set(scripted):
    transport = scripted([("*IDN?", IDN), ("*LANG?", "SCPI")])
    dmm = KeithleyDMM6500(transport, "dmm")
    assert dmm.connect() == IDN
    assert dmm.identity == IDN
    assert transport.query_timeouts == [1000, 3000]  # only *IDN? is hurried


@pytest.mark.parametrize("language", ["TSP", "SCPI2000", "SCPI34401"])
def test_connect_refuses_another_command_set(scripted, language):
    dmm = KeithleyDMM6500(scripted([("*IDN?", IDN), ("*LANG?", language)]), "dmm")
    message = f"command set is {language}, this driver needs SCPI"
    with pytest.raises(InstrumentError, match=message) as caught:
        dmm.connect()
    assert dmm.identity is None
    assert caught.value.kind == "wrong_model"


def test_connect_refuses_another_model(scripted):
    idn = "KEITHLEY INSTRUMENTS INC.,MODEL 2000,1308393,A20  /A02"
    with pytest.raises(InstrumentError, match="expected Keithley DMM6500, got 'KEITHLEY"):
        KeithleyDMM6500(scripted([("*IDN?", idn)]), "dmm").connect()


def test_measure_dc_voltage_selects_a_quoted_function_and_scoped_settings(scripted):
    transport = scripted(
        [
            (':SENS:FUNC "VOLT:DC"', None),
            (":SENS:VOLT:RANG 10", None),
            (":SENS:VOLT:NPLC 1", None),
            NO_ERROR,
            (":READ?", "3.300123E+00"),
        ]
    )
    assert KeithleyDMM6500(transport, "dmm").measure_dc_voltage(range=10, nplc=1) == 3.300123


def test_other_functions_autorange_by_default(scripted):
    transport = scripted(
        [
            (':SENS:FUNC "VOLT:AC"', None), (":SENS:VOLT:AC:RANG:AUTO ON", None), NO_ERROR,
            (":READ?", "2.0E-03"),
            (':SENS:FUNC "CURR:DC"', None), (":SENS:CURR:RANG 0.1", None),
            (":SENS:CURR:NPLC 0.01", None), NO_ERROR,
            (":READ?", "-1.0E-07"),
            (':SENS:FUNC "RES"', None), (":SENS:RES:RANG:AUTO ON", None), NO_ERROR,
            (":READ?", "9.9E+37"),
        ]
    )  # fmt: skip
    dmm = KeithleyDMM6500(transport, "dmm")
    assert dmm.measure_ac_voltage() == pytest.approx(2e-3)
    assert dmm.measure_dc_current(range=0.1, nplc=0.01) == pytest.approx(-1e-7)
    assert dmm.measure_resistance() == math.inf


def test_configure_once_then_read(scripted):
    transport = scripted(
        [
            (':SENS:FUNC "VOLT:DC"', None),
            (":SENS:VOLT:RANG:AUTO ON", None),
            (":SENS:VOLT:NPLC 0.1", None),
            NO_ERROR,
            (":READ?", "3.3E+00"),
            (":READ?", "3.31E+00"),
        ]
    )
    dmm = KeithleyDMM6500(transport, "dmm")
    dmm.configure("dc_voltage", nplc=0.1)
    assert (dmm.read(), dmm.read()) == (3.3, 3.31)


def test_errors_with_extra_fields_raise_the_instruments_text(scripted):
    transport = scripted(
        [
            (':SENS:FUNC "VOLT:DC"', None),
            (":SENS:VOLT:RANG:AUTO ON", None),
            (":SENS:VOLT:NPLC 50", None),
            (":SYST:ERR?", '-222,"Parameter data out of range;1;2024/05/01 10:00:00.123"'),
            NO_ERROR,
        ]
    )
    with pytest.raises(InstrumentError, match=r'-222,"Parameter data out of range;1;2024'):
        KeithleyDMM6500(transport, "dmm").configure("dc_voltage", nplc=50)


def test_nplc_for_ac_is_refused_before_any_io(scripted):
    with pytest.raises(ValueError, match="nplc does not apply to ac_voltage"):
        KeithleyDMM6500(scripted([]), "dmm").configure("ac_voltage", nplc=1)
