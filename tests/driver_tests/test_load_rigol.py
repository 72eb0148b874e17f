"""RigolDL3021 against recorded exchanges: every byte it sends and every reply it parses."""

from __future__ import annotations

import pytest

from drivers import InstrumentError
from drivers.errors import KIND_GARBAGE, KIND_NOT_APPLIED, KIND_REPORTED
from drivers.models.load import ElectronicLoad, LoadMode, RigolDL3021

APPLIED = [("*OPC?", "1"), (":SYST:ERR?", '0,"No error"')]


def test_connect_accepts_dl3021_and_dl3021a_and_refuses_others(scripted):
    for idn in (
        "RIGOL TECHNOLOGIES,DL3021,DL3A204800938,00.01.05.00.01",
        "RIGOL TECHNOLOGIES,DL3021A,DL3A000000000,00.01.00.00.00",
    ):
        assert RigolDL3021(scripted([("*IDN?", idn)]), "load").connect() == idn
    wrong = scripted([("*IDN?", "RIGOL TECHNOLOGIES,DP832,DP8C0,00.01.16")])
    with pytest.raises(InstrumentError, match="expected Rigol DL3021, got 'RIGOL"):
        RigolDL3021(wrong, "load").connect()


def test_configure_sets_the_level_before_the_mode_each_confirmed(scripted):
    transport = scripted(
        [
            (":SOUR:CURR:LEV:IMM 0.5", None), *APPLIED,
            (":SOUR:FUNC CURR", None), *APPLIED,
            (":SOUR:VOLT:LEV:IMM 3", None), *APPLIED,
            (":SOUR:FUNC VOLT", None), *APPLIED,
            (":SOUR:RES:LEV:IMM 6.6", None), *APPLIED,
            (":SOUR:FUNC RES", None), *APPLIED,
            (":SOUR:INP:STAT ON", None), *APPLIED,
            (":SOUR:INP:STAT OFF", None), *APPLIED,
        ]
    )  # fmt: skip
    load = RigolDL3021(transport, "load")
    load.configure(LoadMode.CC, 0.5)
    load.configure("cv", 3.0)
    load.configure("CR", 6.6)
    load.enable_input()
    load.disable_input()


def test_readings_mode_level_and_input_state(scripted):
    transport = scripted(
        [
            (":MEAS:VOLT?", "3.280020"),
            (":MEAS:CURR?", "0.500006"),
            (":MEAS:POW?", "1.640033"),
            (":SOUR:FUNC?", "CC"),
            (":SOUR:FUNC?", "VOLTAGE"),
            (":SOUR:CURR:LEV:IMM?", "0.500000"),
            (":SOUR:INP:STAT?", "1"),
            (":SOUR:INP:STAT?", "OFF"),
        ]
    )
    load = RigolDL3021(transport, "load")
    assert load.measure_voltage() == 3.28002
    assert load.measure_current() == 0.500006
    assert load.measure_power() == 1.640033
    assert load.mode() is LoadMode.CC
    assert load.mode() is LoadMode.CV
    assert load.level("cc") == 0.5
    assert load.is_input_enabled() is True
    assert load.is_input_enabled() is False


def test_levels_beyond_the_rating_are_refused_before_any_io(scripted):
    load = RigolDL3021(scripted([]), "load")
    with pytest.raises(ValueError, match=r"CC level must be within 0\.\.40 A; got 41 A"):
        load.set_level("cc", 41)
    with pytest.raises(ValueError, match=r"CR level must be within 0\.08\.\.15000 Ω"):
        load.configure("cr", 0.01)
    with pytest.raises(ValueError, match="unknown load mode 'cp'; use one of cc, cv, cr"):
        load.set_mode("cp")


def test_a_rejected_setting_raises_with_the_instruments_error(scripted):
    transport = scripted(
        [(":SOUR:CURR:LEV:IMM 39", None), ("*OPC?", "1"),
         (":SYST:ERR?", '-222,"Data out of range"'), (":SYST:ERR?", '0,"No error"')]
    )  # fmt: skip
    with pytest.raises(InstrumentError, match='-222,"Data out of range"') as caught:
        RigolDL3021(transport, "load").set_level("cc", 39)
    assert caught.value.kind == KIND_REPORTED


def test_unknown_mode_reply_is_garbage(scripted):
    with pytest.raises(InstrumentError, match="unexpected mode 'CP'") as caught:
        RigolDL3021(scripted([(":SOUR:FUNC?", "CP")]), "load").mode()
    assert caught.value.kind == KIND_GARBAGE


def test_safe_state_turns_the_input_off_and_reads_it_back(scripted):
    transport = scripted([(":SOUR:INP:STAT OFF", None), *APPLIED, (":SOUR:INP:STAT?", "0")])
    RigolDL3021(transport, "load").safe_state()


def test_safe_state_tries_twice_then_names_what_is_not_safe(scripted):
    transport = scripted(
        [
            (":SOUR:INP:STAT OFF", None), *APPLIED, (":SOUR:INP:STAT?", "1"),
            (":SOUR:INP:STAT OFF", None), *APPLIED, (":SOUR:INP:STAT?", "1"),
        ]
    )  # fmt: skip
    with pytest.raises(InstrumentError, match="safe state not verified: the input still reads ON"):
        RigolDL3021(transport, "load").safe_state()


def test_safe_state_failure_kind(scripted):
    transport = scripted(
        [
            (":SOUR:INP:STAT OFF", None), *APPLIED, (":SOUR:INP:STAT?", "ON"),
            (":SOUR:INP:STAT OFF", None), *APPLIED, (":SOUR:INP:STAT?", "0"),
        ]
    )  # fmt: skip
    RigolDL3021(transport, "load").safe_state()  # the second try read back off: safe
    transport = scripted(
        [
            (":SOUR:INP:STAT OFF", None), *APPLIED, (":SOUR:INP:STAT?", "ON"),
            (":SOUR:INP:STAT OFF", None), *APPLIED, (":SOUR:INP:STAT?", "ON"),
        ]
    )  # fmt: skip
    with pytest.raises(InstrumentError) as caught:
        RigolDL3021(transport, "load").safe_state()
    assert caught.value.kind == KIND_NOT_APPLIED


def test_is_an_electronic_load():
    assert issubclass(RigolDL3021, ElectronicLoad)
