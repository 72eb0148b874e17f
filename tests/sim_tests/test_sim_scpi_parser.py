"""The twins' SCPI parser: spellings, compound messages, error queue."""

from __future__ import annotations

import pytest

from sim.bench import Bench, SimulatedClock
from sim.boards.pcba01 import Pcba01
from sim.instruments import SimKeysight34461A, SimRigolDP832
from sim.twins.scpi import compile_header, split_message


@pytest.fixture
def dmm() -> SimKeysight34461A:
    return SimKeysight34461A(Bench(Pcba01(), clock=SimulatedClock()))  # readings take no time


@pytest.fixture
def psu() -> SimRigolDP832:
    return SimRigolDP832(Bench(Pcba01()))


@pytest.mark.parametrize(
    "header", ["MEAS:VOLT:DC?", "meas:volt:dc?", "MEASURE:VOLTAGE:DC?", ":Meas:Volt?"]
)
def test_long_short_case_and_optional_nodes_match(header):
    assert compile_header("MEASure:VOLTage[:DC]?").fullmatch(header)


@pytest.mark.parametrize("header", ["MEASU:VOLT:DC?", "MEAS:VOLT:DC", "MEAS:DC?", "XMEAS:VOLT?"])
def test_partial_words_and_missing_query_mark_do_not_match(header):
    assert not compile_header("MEASure:VOLTage[:DC]?").fullmatch(header)


def test_optional_leading_node_and_numeric_suffix():
    nplc = compile_header("[SENSe:]VOLTage[:DC]:NPLCycles")
    assert nplc.fullmatch("SENS:VOLT:DC:NPLC") and nplc.fullmatch("volt:nplcycles")
    source = compile_header("SOURce#:VOLTage")
    assert source.fullmatch("SOUR2:VOLT").group(1) == "2"
    assert source.fullmatch(":SOURCE:VOLT").group(1) == ""


def test_split_message_keeps_quoted_semicolons():
    assert split_message('*RST; DISP:TEXT "a;b" ;*OPC?') == ["*RST", 'DISP:TEXT "a;b"', "*OPC?"]


def test_compound_message_answers_every_query_in_order(dmm):
    assert dmm.handle("*CLS;*IDN?;SENS:VOLT:DC:NPLC 1;VOLT:DC:NPLC?") == (
        f"{dmm.IDN};+1.00000000E+00"
    )


def test_unknown_header_queues_113_and_the_rest_still_runs(dmm):
    assert dmm.handle("FOO:BAR 1;*OPC?") == "1"
    assert dmm.handle("SYST:ERR?") == '-113,"Undefined header"'
    assert dmm.handle("SYST:ERR?") == '+0,"No error"'


def test_bad_arguments_queue_222_and_104(dmm, psu):
    dmm.handle("SENS:VOLT:DC:NPLC 1000")
    dmm.handle("SENS:VOLT:DC:NPLC fast")
    assert dmm.errors == [(-222, "Data out of range"), (-104, "Data type error")]
    psu.handle(":SOUR3:VOLT 12")
    psu.handle(":OUTP CH1,MAYBE")
    assert psu.handle(":SYST:ERR?") == '-222,"Data out of range"'
    assert psu.handle(":SYST:ERR?") == '-104,"Data type error"'
    assert psu.handle(":SYST:ERR?") == '0,"No error"'  # Rigol: no sign


def test_cls_clears_the_queue_and_rst_restores_defaults(dmm, psu):
    dmm.handle("NOPE")
    dmm.handle("*CLS")
    assert dmm.errors == []
    dmm.handle("CONF:VOLT:AC;VOLT:DC:NPLC 0.2")
    dmm.handle("*RST")
    assert (dmm.function, dmm.nplc["VOLT:DC"]) == ("VOLT:DC", 10.0)
    psu.handle(":SOUR1:VOLT 5;:OUTP CH1,ON")
    assert psu.handle(":OUTP? CH1;:SOUR1:VOLT?") == "ON;5.000"
    psu.handle("*RST")
    assert psu.handle(":OUTP? CH1;:SOUR1:VOLT?") == "OFF;0.000"


def test_rigol_channel_addressing_forms(psu):
    psu.handle(":INST:NSEL 2;:VOLT 3.3")
    psu.handle(":SOURce3:VOLTage:LEVel:IMMediate:AMPLitude 1.8")
    psu.handle(":INST CH1;:CURR 0.25")
    assert psu.handle(":SOUR2:VOLT?;:SOUR3:VOLT?;:SOUR1:CURR?") == "3.300;1.800;0.250"


def test_keysight_conf_presets_nplc_and_reads_nr3(dmm):
    dmm.handle("SENS:VOLT:DC:NPLC 1;CONF:VOLT:DC")
    assert dmm.handle("SENS:VOLT:DC:NPLC?") == "+1.00000000E+01"
    assert dmm.handle("READ?").startswith("+")  # unpowered: noise around 0 V, NR3
    dmm.handle("CONF:RES")
    assert dmm.handle("READ?") == "+9.90000000E+37"
