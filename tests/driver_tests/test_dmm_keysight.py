"""Keysight34461A against recorded exchanges."""

from __future__ import annotations

import math

import pytest

from drivers import InstrumentError
from drivers.models.dmm import Keysight34461A

IDN = "Keysight Technologies,34461A,MY60012345,A.02.14-02.40-02.14-00.49-01-01"
NO_ERROR = ("SYST:ERR?", '+0,"No error"')


def test_connect_checks_identity_with_a_short_timeout(scripted):
    transport = scripted([("*IDN?", IDN)])
    dmm = Keysight34461A(transport, "dmm")
    assert dmm.identity is None
    assert dmm.connect() == IDN
    assert dmm.identity == IDN
    assert transport.opened
    assert transport.query_timeouts == [1000]
    assert transport.timeout_ms == 3000  # restored


def test_connect_accepts_agilent_emulation(scripted):
    dmm = Keysight34461A(scripted([("*IDN?", "Agilent Technologies,34461A,MY1,A.01")]), "dmm")
    dmm.connect()


def test_connect_rejects_another_model(scripted):
    idn = "RIGOL TECHNOLOGIES,DP832,DP8C000000000,00.01.16"
    dmm = Keysight34461A(scripted([("*IDN?", idn)]), "dmm")
    with pytest.raises(InstrumentError, match="expected Keysight 34461A, got 'RIGOL TECH"):
        dmm.connect()
    assert dmm.identity is None


def test_measure_dc_voltage_sends_nplc_after_conf(scripted):
    transport = scripted(
        [
            ("CONF:VOLT:DC 10", None),
            ("SENS:VOLT:DC:NPLC 1", None),
            NO_ERROR,
            ("READ?", "+3.30012345E+00"),
        ]
    )
    assert Keysight34461A(transport, "dmm").measure_dc_voltage(range=10, nplc=1) == 3.30012345


def test_measure_defaults_to_autorange_and_preset_nplc(scripted):
    transport = scripted([("CONF:VOLT:DC AUTO", None), NO_ERROR, ("READ?", "+4.99999947E+00")])
    assert Keysight34461A(transport, "dmm").measure_dc_voltage() == pytest.approx(4.99999947)


def test_other_functions(scripted):
    transport = scripted(
        [
            ("CONF:VOLT:AC AUTO", None),
            NO_ERROR,
            ("READ?", "+2.01000000E-03"),
            ("CONF:CURR:DC 0.1", None),
            ("SENS:CURR:DC:NPLC 0.02", None),
            NO_ERROR,
            ("READ?", "-1.0E-07"),
            ("CONF:RES AUTO", None),
            ("SENS:RES:NPLC 100", None),
            NO_ERROR,
            ("READ?", "+9.90000000E+37"),
        ]
    )
    dmm = Keysight34461A(transport, "dmm")
    assert dmm.measure_ac_voltage() == pytest.approx(2.01e-3)
    assert dmm.measure_dc_current(range=0.1, nplc=0.02) == pytest.approx(-1e-7)
    assert dmm.measure_resistance(nplc=100) == math.inf


@pytest.mark.parametrize("nplc", [0.5, 5, 0, 1000])
def test_nplc_outside_the_34461a_set_is_refused_before_any_io(scripted, nplc):
    dmm = Keysight34461A(scripted([]), "dmm")
    with pytest.raises(ValueError, match=r"nplc=.*0\.02, 0\.2, 1, 10, 100"):
        dmm.measure_dc_voltage(nplc=nplc)


def test_configuration_error_raises_the_instruments_text(scripted):
    transport = scripted(
        [
            ("CONF:VOLT:DC 5000", None),
            ("SYST:ERR?", '-222,"Data out of range"'),
            ("SYST:ERR?", '+0,"No error"'),
        ]
    )
    with pytest.raises(InstrumentError, match='-222,"Data out of range"') as caught:
        Keysight34461A(transport, "dmm").measure_dc_voltage(range=5000)
    assert "dmm (TCPIP::sim::SOCKET)" in str(caught.value)
