"""ScpiInstrument behaviour shared by every model: error queue, numbers, common commands."""

from __future__ import annotations

import math

import pytest

from drivers import InstrumentError
from drivers.models.scpi import ScpiInstrument


def test_check_errors_reads_the_whole_queue_and_reports_every_entry(scripted):
    transport = scripted(
        [
            ("SYST:ERR?", '-113,"Undefined header"'),
            ("SYST:ERR?", '-222,"Data out of range"'),
            ("SYST:ERR?", '+0,"No error"'),
        ]
    )
    with pytest.raises(InstrumentError) as caught:
        ScpiInstrument(transport, "dmm").check_errors()
    assert caught.value.message == '-113,"Undefined header"; -222,"Data out of range"'


def test_check_errors_parses_only_the_leading_integer(scripted):
    # Keithley-style: extra fields inside the quotes; Rigol/2000-style: no sign.
    transport = scripted([("SYST:ERR?", '0,"No error;0;0 0"')])
    ScpiInstrument(transport, "dmm").check_errors()


def test_check_errors_rejects_a_garbled_reply(scripted):
    transport = scripted([("SYST:ERR?", "garbage")])
    with pytest.raises(InstrumentError, match="unexpected error-queue reply"):
        ScpiInstrument(transport, "x").check_errors()


@pytest.mark.parametrize(
    ("reply", "value"),
    [("5", 5.0), ("5.000", 5.0), ("+3.30012345E+00", 3.30012345), (" -1.5e-3 ", -0.0015),
     ("+9.90000000E+37", math.inf), ("-9.90000000E+37", -math.inf)],
)  # fmt: skip
def test_query_float_is_lenient(scripted, reply, value):
    assert ScpiInstrument(scripted([("X?", reply)]), "x").query_float("X?") == value


def test_query_float_rejects_text(scripted):
    with pytest.raises(InstrumentError, match="expected a number from 'X\\?', got 'OFF'"):
        ScpiInstrument(scripted([("X?", "OFF")]), "x").query_float("X?")


def test_reset_clear_status_and_close(scripted):
    transport = scripted([("*RST", None), ("*OPC?", "1"), ("*CLS", None)])
    instrument = ScpiInstrument(transport, "x")
    instrument.reset()
    instrument.clear_status()
    instrument.safe_state()  # default: nothing on the wire
    instrument.close()
    assert transport.closed
