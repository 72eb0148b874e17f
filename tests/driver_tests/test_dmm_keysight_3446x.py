"""The Truevolt family against recorded exchanges: configure once then read, and the 34465A."""

from __future__ import annotations

import pytest

from drivers import InstrumentError
from drivers.models.dmm import Dmm, DmmFunction, Keysight34461A, Keysight34465A

IDN_34465A = "Keysight Technologies,34465A,MY59008389,A.03.01-03.15-03.01-00.52-03-02"
NO_ERROR = ("SYST:ERR?", '+0,"No error"')


def test_configure_once_then_read_sends_only_read(scripted):
    transport = scripted(
        [
            ("CONF:VOLT:DC 10", None),
            ("SENS:VOLT:DC:NPLC 0.2", None),
            NO_ERROR,
            ("READ?", "+3.30010000E+00"),
            ("READ?", "+3.30020000E+00"),
            ("READ?", "+3.30030000E+00"),
        ]
    )
    dmm = Keysight34461A(transport, "dmm")
    dmm.configure("dc_voltage", range=10, nplc=0.2)
    assert [dmm.read() for _ in range(3)] == [3.3001, 3.3002, 3.3003]


def test_configure_takes_the_enum_and_autoranges_by_default(scripted):
    transport = scripted([("CONF:RES AUTO", None), NO_ERROR, ("READ?", "+1.00000000E+03")])
    dmm = Keysight34461A(transport, "dmm")
    dmm.configure(DmmFunction.RESISTANCE)
    assert dmm.read() == 1000.0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"function": "frequency"}, "unknown function 'frequency'; use one of dc_voltage"),
        ({"function": "ac_voltage", "nplc": 1}, "nplc does not apply to ac_voltage"),
        ({"function": "dc_voltage", "range": 0}, "range must be positive"),
    ],
)
def test_impossible_settings_are_refused_before_any_io(scripted, kwargs, message):
    with pytest.raises(ValueError, match=message):
        Keysight34461A(scripted([]), "dmm").configure(**kwargs)


def test_34465a_connects_and_refuses_a_34461a(scripted):
    assert Keysight34465A(scripted([("*IDN?", IDN_34465A)]), "dmm").connect() == IDN_34465A
    idn_61 = "Keysight Technologies,34461A,MY60012345,A.02.14-02.40-02.14-00.49-01-01"
    with pytest.raises(InstrumentError, match="expected Keysight 34465A, got 'Keysight T"):
        Keysight34465A(scripted([("*IDN?", idn_61)]), "dmm").connect()


@pytest.mark.parametrize(
    ("nplc", "sent"), [(0.001, "0.001"), (0.006, "0.006"), (0.06, "0.06"), (100, "100")]
)
def test_34465a_has_the_finer_integration_times(scripted, nplc, sent):
    transport = scripted(
        [
            ("CONF:VOLT:DC AUTO", None),
            ("SENS:VOLT:DC:NPLC " + sent, None),
            NO_ERROR,
            ("READ?", "+3.30000000E+00"),
        ]
    )
    assert Keysight34465A(transport, "dmm").measure_dc_voltage(nplc=nplc) == 3.3


def test_34461a_does_not_have_them(scripted):
    with pytest.raises(ValueError, match=r"Keysight 34461A does not support nplc=0\.06"):
        Keysight34461A(scripted([]), "dmm").measure_dc_voltage(nplc=0.06)
    with pytest.raises(ValueError, match=r"use one of 0\.001, 0\.002, 0\.006, 0\.02, 0\.06"):
        Keysight34465A(scripted([]), "dmm").measure_dc_voltage(nplc=0.5)


def test_a_firmware_without_the_aperture_reports_it(scripted):
    transport = scripted(
        [
            ("CONF:VOLT:DC AUTO", None),
            ("SENS:VOLT:DC:NPLC 0.001", None),
            ("SYST:ERR?", '-222,"Data out of range"'),
            NO_ERROR,
        ]
    )
    with pytest.raises(InstrumentError, match='-222,"Data out of range"'):
        Keysight34465A(transport, "dmm").configure("dc_voltage", nplc=0.001)


def test_the_models_are_dmms_sharing_one_base():
    assert issubclass(Keysight34465A, Dmm)
    assert Keysight34465A.COMMANDS is Keysight34461A.COMMANDS
