"""KeysightDAQ970A against recorded exchanges: every byte it sends and every reply it parses."""

from __future__ import annotations

import pytest

from drivers import InstrumentError
from drivers.errors import KIND_GARBAGE, KIND_NOT_APPLIED, KIND_WRONG_MODEL
from drivers.models.mux import KeysightDAQ970A, Multiplexer

IDN = "Keysight Technologies,DAQ970A,MY58000001,A.03.00-01.00-03.00-00.02-01-00"
APPLIED = [("*OPC?", "1"), ("SYST:ERR?", '+0,"No error"')]
ALL = "(@101:120)"


def test_connect_checks_the_mainframe_and_the_card_in_slot_1(scripted):
    transport = scripted(
        [("*IDN?", IDN), ("SYST:CTYP? 100", "Keysight Technologies,DAQM901A,0,1.0")]
    )
    assert KeysightDAQ970A(transport, "mux").connect() == IDN
    empty = scripted([("*IDN?", IDN), ("SYST:CTYP? 100", "0,0,0,0")])
    mux = KeysightDAQ970A(empty, "mux")
    with pytest.raises(InstrumentError, match="slot 1 holds '0,0,0,0', not a DAQM901A") as caught:
        mux.connect()
    assert caught.value.kind == KIND_WRONG_MODEL and mux.identity is None


def test_relays_close_open_and_read_back(scripted):
    transport = scripted(
        [
            ("ROUT:CLOS (@101,105)", None), *APPLIED,
            ("ROUT:OPEN (@105)", None), *APPLIED,
            (f"ROUT:CLOS? {ALL}", ",".join(["1"] + ["0"] * 19)),
            (f"ROUT:CLOS? {ALL}", ",".join(["1"] + ["0"] * 19)),
            (f"ROUT:OPEN {ALL}", None), *APPLIED,
        ]
    )  # fmt: skip
    mux = KeysightDAQ970A(transport, "mux")
    mux.close_channels(101, 105)
    mux.open_channels(105)
    assert mux.closed_channels() == [101]
    assert mux.is_closed(101) is True
    mux.open_all()


def test_scan_configures_the_list_then_reads_one_value_per_channel(scripted):
    transport = scripted(
        [
            ("CONF:VOLT:DC AUTO,(@101,102,103,104)", None),
            ("VOLT:DC:NPLC 1,(@101,102,103,104)", None),
            ("ROUT:SCAN (@101,102,103,104)", None),
            ("SYST:ERR?", '+0,"No error"'),
            ("READ?", "+1.80001639E+00,+4.99297258E+00,+2.50000015E+00,+3.29999806E+00"),
            ("CONF:VOLT:DC 10,(@103)", None),
            ("ROUT:SCAN (@103)", None),
            ("SYST:ERR?", '+0,"No error"'),
            ("READ?", "+2.50000015E+00"),
        ]
    )  # fmt: skip
    mux = KeysightDAQ970A(transport, "mux")
    readings = mux.scan([101, 102, 103, 104], nplc=1)
    assert readings == {101: 1.80001639, 102: 4.99297258, 103: 2.50000015, 104: 3.29999806}
    assert list(readings) == [101, 102, 103, 104]
    assert mux.scan([103], range=10) == {103: 2.50000015}
    # READ? was given the scan's integration time on top of the configured timeout
    assert transport.query_timeouts[-1] > transport.timeout_ms
    assert transport.timeout_ms == 3000


def test_scan_reply_of_the_wrong_length_is_garbage(scripted):
    transport = scripted(
        [("CONF:VOLT:DC AUTO,(@101,102)", None), ("ROUT:SCAN (@101,102)", None),
         ("SYST:ERR?", '+0,"No error"'), ("READ?", "+1.8E+00")]
    )  # fmt: skip
    with pytest.raises(InstrumentError, match="expected 2 readings from 'READ\\?'") as caught:
        KeysightDAQ970A(transport, "mux").scan([101, 102])
    assert caught.value.kind == KIND_GARBAGE


def test_bad_channels_and_settings_are_refused_before_any_io(scripted):
    mux = KeysightDAQ970A(scripted([]), "mux")
    with pytest.raises(
        ValueError, match=r"no channel 201 on this multiplexer; channels: 101\.\.120"
    ):
        mux.close_channels(201)
    with pytest.raises(ValueError, match="no channel given"):
        mux.open_channels()
    with pytest.raises(ValueError, match="listed twice"):
        mux.scan([101, 101])
    with pytest.raises(ValueError, match="does not support nplc=3"):
        mux.scan([101], nplc=3)


def test_safe_state_opens_everything_and_reads_every_relay_back(scripted):
    open_states = ",".join(["0"] * 20)
    transport = scripted([(f"ROUT:OPEN {ALL}", None), *APPLIED, (f"ROUT:CLOS? {ALL}", open_states)])
    KeysightDAQ970A(transport, "mux").safe_state()
    stuck = ",".join(["0", "0", "1"] + ["0"] * 17)
    transport = scripted([(f"ROUT:OPEN {ALL}", None), *APPLIED, (f"ROUT:CLOS? {ALL}", stuck)] * 2)
    with pytest.raises(InstrumentError, match="channels 103 still read closed") as caught:
        KeysightDAQ970A(transport, "mux").safe_state()
    assert caught.value.kind == KIND_NOT_APPLIED


def test_close_still_ends_the_session(scripted):
    """`close()` is the session's (the InstrumentSet's final close), never a relay command."""
    transport = scripted([])
    KeysightDAQ970A(transport, "mux").close()
    assert transport.closed


def test_is_a_multiplexer():
    assert issubclass(KeysightDAQ970A, Multiplexer)
