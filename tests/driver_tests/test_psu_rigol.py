"""RigolDP832 against recorded exchanges."""

from __future__ import annotations

import pytest

from drivers import InstrumentError
from drivers.errors import KIND_NOT_APPLIED
from drivers.models.psu import RigolDP832

APPLIED = [("*OPC?", "1"), (":SYST:ERR?", '0,"No error"')]


def test_connect_accepts_dp832_and_dp832a(scripted):
    for idn in (
        "RIGOL TECHNOLOGIES,DP832,DP8C000000000,00.01.16",
        "RIGOL TECHNOLOGIES,DP832A,DP8B26AM00234,00.01.19",
    ):
        assert RigolDP832(scripted([("*IDN?", idn)]), "psu").connect() == idn


def test_settings_are_confirmed_before_returning(scripted):
    transport = scripted(
        [
            (":SOUR1:VOLT 5", None), *APPLIED,
            (":SOUR1:CURR 0.5", None), *APPLIED,
            (":OUTP:OVP:VAL CH1,5.5", None), (":OUTP:OVP CH1,ON", None), *APPLIED,
            (":OUTP CH1,ON", None), *APPLIED,
        ]
    )  # fmt: skip
    psu = RigolDP832(transport, "psu")
    psu.set_voltage(1, 5.0)
    psu.set_current_limit(1, 0.5)
    psu.set_ovp(1, 5.5)
    psu.enable(1)


def test_measurements_and_output_state(scripted):
    transport = scripted(
        [
            (":MEAS:VOLT? CH2", "5.000"),
            (":MEAS:CURR? CH2", "0.0700"),
            (":OUTP? CH2", "ON"),
            (":OUTP? CH3", "OFF"),
        ]
    )
    psu = RigolDP832(transport, "psu")
    assert psu.measure_voltage(2) == 5.0
    assert psu.measure_current(2) == 0.07
    assert psu.is_enabled(2) is True
    assert psu.is_enabled(3) is False


def test_unexpected_output_state_is_an_error(scripted):
    with pytest.raises(InstrumentError, match="expected ON or OFF"):
        RigolDP832(scripted([(":OUTP? CH1", "MAYBE")]), "psu").is_enabled(1)


def test_safe_state_turns_every_output_off_and_reads_each_back(scripted):
    script = []
    for channel in (1, 2, 3):
        script += [(f":OUTP CH{channel},OFF", None), *APPLIED]
    script += [(f":OUTP? CH{channel}", "OFF") for channel in (1, 2, 3)]
    RigolDP832(scripted(script), "psu").safe_state()


def test_safe_state_retries_a_channel_still_on_once_then_raises_naming_it(scripted):
    script = []
    for channel in (1, 2, 3):
        script += [(f":OUTP CH{channel},OFF", None), *APPLIED]
    script += [
        (":OUTP? CH1", "OFF"),
        (":OUTP? CH2", "ON"), (":OUTP CH2,OFF", None), *APPLIED, (":OUTP? CH2", "ON"),
        (":OUTP? CH3", "ON"), (":OUTP CH3,OFF", None), *APPLIED, (":OUTP? CH3", "OFF"),
    ]  # fmt: skip
    with pytest.raises(InstrumentError, match="safe state not verified: CH2 output") as caught:
        RigolDP832(scripted(script), "psu").safe_state()
    assert caught.value.kind == KIND_NOT_APPLIED
    assert "CH1" not in caught.value.message and "CH3" not in caught.value.message


def test_disable_all_tries_every_channel_then_raises_the_first_error(scripted):
    transport = scripted(
        [
            (":OUTP CH1,OFF", None), ("*OPC?", "1"),
            (":SYST:ERR?", '-221,"Settings conflict"'), (":SYST:ERR?", '0,"No error"'),
            (":OUTP CH2,OFF", None), *APPLIED,
            (":OUTP CH3,OFF", None), *APPLIED,
        ]
    )  # fmt: skip
    with pytest.raises(InstrumentError, match="-221"):
        RigolDP832(transport, "psu").disable_all()


@pytest.mark.parametrize("channel", [0, 4, -1])
def test_invalid_channel_names_the_valid_ones(scripted, channel):
    with pytest.raises(ValueError, match="valid channels: 1, 2, 3"):
        RigolDP832(scripted([]), "psu").set_voltage(channel, 1.0)


def test_instrument_error_from_the_queue_carries_its_text(scripted):
    transport = scripted(
        [
            (":SOUR3:VOLT 4", None),
            ("*OPC?", "1"),
            (":SYST:ERR?", '-222,"Data out of range"'),
            (":SYST:ERR?", '0,"No error"'),
        ]
    )
    with pytest.raises(InstrumentError, match=r'psu .*-222,"Data out of range"'):
        RigolDP832(transport, "psu").set_voltage(3, 4)
