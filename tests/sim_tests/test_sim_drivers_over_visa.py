"""Each driver against its twin through pyvisa-py over loopback TCP."""

from __future__ import annotations

import time

import pytest

from drivers import InstrumentError, create_driver


def power_up(psu, limit: float = 0.5) -> None:
    psu.set_voltage(1, 5.0)
    psu.set_current_limit(1, limit)
    psu.enable(1)
    time.sleep(0.02)  # 10 time constants of the rail


def test_identity_check_passes(connect):
    assert connect("dmm").identity.startswith("Keysight Technologies,34461A,")
    assert connect("psu").identity.startswith("RIGOL TECHNOLOGIES,DP832,")


def test_wrong_model_is_refused(sim_bench):
    dmm = create_driver("keysight-34461a", sim_bench.resources["psu"], name="dmm")
    with pytest.raises(InstrumentError, match="expected Keysight 34461A, got 'RIGOL"):
        dmm.connect()
    dmm.close()


def test_psu_round_trip(connect, sim_bench):
    psu = connect("psu")
    power_up(psu)
    assert psu.is_enabled(1)
    assert sim_bench.twins["psu"].personality.bench.channel(1).enabled
    assert psu.measure_voltage(1) == pytest.approx(5.0, abs=0.005)
    assert psu.measure_current(1) == pytest.approx(0.070, abs=0.002)
    psu.safe_state()
    assert not any(psu.is_enabled(channel) for channel in psu.channels)
    assert psu.measure_current(1) == 0.0


def test_good_board_reads_3v3(connect):
    psu, dmm = connect("psu"), connect("dmm")
    power_up(psu)
    assert dmm.measure_dc_voltage(nplc=10) == pytest.approx(3.30, abs=0.005)
    assert dmm.measure_ac_voltage() == pytest.approx(0.002, abs=0.001)
    assert dmm.measure_resistance() == float("inf")


def test_shorted_rail_is_current_limited(connect, sim_bench):
    sim_bench.insert_dut("SN-9-F:shorted_rail")
    psu, dmm = connect("psu"), connect("dmm")
    power_up(psu, limit=0.5)
    assert psu.measure_current(1) == pytest.approx(0.5, abs=0.002)
    assert psu.measure_voltage(1) < 2.0
    assert abs(dmm.measure_dc_voltage()) < 0.01


@pytest.mark.parametrize(("serial", "rail"), [("SN-1-F", 3.10), ("SN-2-F:dead_regulator", 0.0)])
def test_board_faults_show_on_the_rail(connect, sim_bench, serial, rail):
    sim_bench.insert_dut(serial)
    psu, dmm = connect("psu"), connect("dmm")
    power_up(psu)
    assert dmm.measure_dc_voltage(nplc=10) == pytest.approx(rail, abs=0.005)


def test_unknown_command_lands_in_the_queue_and_check_errors_raises_it(
    connect, sim_bench, wait_for
):
    dmm = connect("dmm")
    dmm.write("VOLT:DC:BOGUS 1")
    twin = sim_bench.twins["dmm"].personality
    wait_for(lambda: twin.errors == [(-113, "Undefined header")])  # a write is not awaited
    with pytest.raises(InstrumentError, match='-113,"Undefined header"'):
        dmm.check_errors()
    dmm.check_errors()  # the queue is empty again


def test_instrument_rejects_an_out_of_range_setting(connect):
    psu = connect("psu")
    with pytest.raises(InstrumentError, match=r'psu .*-222,"Data out of range"'):
        psu.set_ovp(3, 8.0)  # CH3's OVP goes to 5.5 V at most


def test_no_reply_times_out_and_the_next_query_works(connect, sim_bench):
    dmm = connect("dmm", timeout_ms=200)
    server = sim_bench.twins["dmm"].server
    server.faults.no_reply_to, server.faults.count = r"READ\?", 1
    with pytest.raises(InstrumentError, match=r"no reply within 200 ms to 'READ\?'") as caught:
        dmm.query("READ?")
    assert caught.value.command == "READ?"
    assert caught.value.instrument == "dmm"
    assert dmm.query("*IDN?").startswith("Keysight")


def test_late_reply_is_drained_so_replies_stay_in_step(connect, sim_bench):
    dmm = connect("dmm", timeout_ms=200)
    server = sim_bench.twins["dmm"].server
    # The reply arrives 50 ms after the timeout, inside the 100 ms quiet window of the drain.
    server.faults.delay_s = 0.25
    with pytest.raises(InstrumentError, match="no reply within 200 ms"):
        dmm.query("*OPC?")
    server.faults.delay_s = 0.0
    assert dmm.query("*IDN?").startswith("Keysight")  # not the late "1"


def test_dropped_connection_is_reported_and_the_next_call_reconnects(connect, sim_bench):
    dmm = connect("dmm", timeout_ms=300)
    server = sim_bench.twins["dmm"].server
    server.drop_connections()  # as an instrument reboot would
    with pytest.raises(InstrumentError) as caught:
        dmm.query("*IDN?")
    assert "connection" in str(caught.value)
    assert dmm.query("*IDN?").startswith("Keysight")


def test_refused_connection_fails_at_connect():
    import socket

    with socket.socket() as probe:  # a port that nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    dmm = create_driver("keysight-34461a", f"TCPIP::127.0.0.1::{port}::SOCKET", name="dmm")
    with pytest.raises(InstrumentError, match=r"dmm \(TCPIP::127\.0\.0\.1::\d+::SOCKET\): cannot"):
        dmm.connect()


def test_several_connections_to_one_twin_share_the_bench(connect, sim_bench):
    first = connect("psu")
    second = create_driver("rigol-dp832", sim_bench.resources["psu"], name="psu2")
    second.connect()
    try:
        first.set_voltage(2, 3.3)
        first.enable(2)
        assert second.is_enabled(2)
        assert second.measure_voltage(2) == pytest.approx(3.3, abs=0.005)
    finally:
        second.close()
