"""KeysightE36312A against recorded exchanges."""

from __future__ import annotations

import pytest

from drivers import InstrumentError
from drivers.models.psu import KeysightE36312A, PowerSupply

IDN = "Keysight Technologies,E36312A,MY59002391,2.1.0-1.0.4-1.12"
APPLIED = [("*OPC?", "1"), ("SYST:ERR?", '+0,"No error"')]


def test_connect_checks_the_model(scripted):
    assert KeysightE36312A(scripted([("*IDN?", IDN)]), "psu").connect() == IDN
    rigol = "RIGOL TECHNOLOGIES,DP832,DP8C000000000,00.01.16"
    with pytest.raises(InstrumentError, match="expected Keysight E36312A, got 'RIGOL"):
        KeysightE36312A(scripted([("*IDN?", rigol)]), "psu").connect()


def test_settings_use_the_channel_list_and_are_confirmed(scripted):
    transport = scripted(
        [
            ("CURR 0.25,(@1)", None), *APPLIED,
            ("VOLT:PROT 5.5,(@1)", None), *APPLIED,
            ("VOLT 5,(@1)", None), *APPLIED,
            ("OUTP ON,(@1)", None), *APPLIED,
            ("OUTP OFF,(@3)", None), *APPLIED,
        ]
    )  # fmt: skip
    psu = KeysightE36312A(transport, "psu")
    psu.set_current_limit(1, 0.25)
    psu.set_ovp(1, 5.5)
    psu.set_voltage(1, 5.0)
    psu.enable(1)
    psu.disable(3)


def test_measurements_and_output_state_in_nr3_and_1_0(scripted):
    transport = scripted(
        [
            ("MEAS:VOLT? (@1)", "+5.00012000E+00"),
            ("MEAS:CURR? (@1)", "+7.00100000E-02"),
            ("OUTP? (@1)", "1"),
            ("OUTP? (@2)", "0"),
            ("OUTP? (@3)", "ON?"),
        ]
    )
    psu = KeysightE36312A(transport, "psu")
    assert psu.measure_voltage(1) == 5.00012
    assert psu.measure_current(1) == 0.07001
    assert psu.is_enabled(1) is True
    assert psu.is_enabled(2) is False
    with pytest.raises(InstrumentError, match="expected 1 or 0 from 'OUTP\\? \\(@3\\)'"):
        psu.is_enabled(3)


def test_safe_state_switches_every_output_off_in_one_command(scripted):
    read_back = [(f"OUTP? (@{channel})", "0") for channel in (1, 2, 3)]
    psu = KeysightE36312A(scripted([("OUTP OFF,(@1:3)", None), *APPLIED, *read_back]), "psu")
    assert psu.channels == (1, 2, 3)
    psu.safe_state()


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda psu: psu.set_voltage(1, 6.5), r"Keysight E36312A CH1 is rated 6 V / 5 A; 6\.5 V"),
        (lambda psu: psu.set_current_limit(1, 5.1), r"CH1 is rated 6 V / 5 A; 5\.1 A is above"),
        (lambda psu: psu.set_voltage(2, 26), r"CH2 is rated 25 V / 1 A; 26 V is above"),
        (lambda psu: psu.set_current_limit(3, 1.5), r"CH3 is rated 25 V / 1 A; 1\.5 A is above"),
        (lambda psu: psu.set_voltage(2, -1), r"CH2: -1 V is not a valid setting"),
        (lambda psu: psu.set_ovp(1, 0), r"CH1: OVP level must be positive"),
        (lambda psu: psu.enable(4), r"no channel 4 on this supply; valid channels: 1, 2, 3"),
    ],
)
def test_settings_beyond_a_channels_rating_are_refused_before_any_io(scripted, call, message):
    with pytest.raises(ValueError, match=message):
        call(KeysightE36312A(scripted([]), "psu"))


def test_within_rating_at_the_limit_is_sent(scripted):
    transport = scripted([("VOLT 25,(@3)", None), *APPLIED, ("CURR 5,(@1)", None), *APPLIED])
    psu = KeysightE36312A(transport, "psu")
    psu.set_voltage(3, 25)
    psu.set_current_limit(1, 5)


def test_instrument_error_after_a_setting_carries_its_text(scripted):
    transport = scripted(
        [
            ("VOLT:PROT 30,(@2)", None),
            ("*OPC?", "1"),
            ("SYST:ERR?", '-222,"Data out of range"'),
            ("SYST:ERR?", '+0,"No error"'),
        ]
    )
    with pytest.raises(InstrumentError, match=r'psu .*-222,"Data out of range"'):
        KeysightE36312A(transport, "psu").set_ovp(2, 30)


def test_is_a_power_supply():
    assert issubclass(KeysightE36312A, PowerSupply)
