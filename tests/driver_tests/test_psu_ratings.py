"""Channel ratings of the Rigol DP832: refused before any I/O, named in the message."""

from __future__ import annotations

import pytest

from drivers.models.psu import Rating, RigolDP832

APPLIED = [("*OPC?", "1"), (":SYST:ERR?", '0,"No error"')]


def test_ratings():
    ratings = RigolDP832.RATINGS
    assert ratings == {1: Rating(30, 3), 2: Rating(30, 3), 3: Rating(5, 3)}


@pytest.mark.parametrize(
    ("channel", "volts", "message"),
    [(3, 12, r"Rigol DP832 CH3 is rated 5 V / 3 A; 12 V is above its rating"),
     (1, 31, r"Rigol DP832 CH1 is rated 30 V / 3 A; 31 V is above its rating")],
)  # fmt: skip
def test_voltage_above_the_rating_is_refused(scripted, channel, volts, message):
    with pytest.raises(ValueError, match=message):
        RigolDP832(scripted([]), "psu").set_voltage(channel, volts)


def test_current_above_the_rating_is_refused(scripted):
    with pytest.raises(ValueError, match=r"CH2 is rated 30 V / 3 A; 3\.2 A is above its rating"):
        RigolDP832(scripted([]), "psu").set_current_limit(2, 3.2)


def test_the_rating_itself_is_allowed(scripted):
    transport = scripted([(":SOUR3:VOLT 5", None), *APPLIED, (":SOUR3:CURR 3", None), *APPLIED])
    psu = RigolDP832(transport, "psu")
    psu.set_voltage(3, 5)
    psu.set_current_limit(3, 3)


def test_ovp_may_sit_above_the_rating(scripted):
    transport = scripted([(":OUTP:OVP:VAL CH3,5.5", None), (":OUTP:OVP CH3,ON", None), *APPLIED])
    RigolDP832(transport, "psu").set_ovp(3, 5.5)
