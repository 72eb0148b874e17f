"""Every wire fault of a TCP twin becomes one clear InstrumentError within the timeout, and a
dropped link is recovered by the next command (real pyvisa-py and pyserial, loopback TCP)."""

from __future__ import annotations

import threading
import time

import pytest

import sim
from drivers import InstrumentError, create_driver
from drivers.errors import (
    KIND_GARBAGE,
    KIND_LOST,
    KIND_NOT_APPLIED,
    KIND_REFUSED,
    KIND_REPORTED,
    KIND_TIMEOUT,
)
from sim.server import TwinServer

TIMEOUT_MS = 300


def timed(call):
    """(exception raised by call(), seconds it took)."""
    started = time.monotonic()
    with pytest.raises(InstrumentError) as caught:
        call()
    return caught.value, time.monotonic() - started


@pytest.fixture(params=["visa", "serial-socket"])
def dmm(request, sim_bench):
    """A connected 34461A driver, over pyvisa-py ::SOCKET or pyserial socket://."""
    server = sim_bench.twins["dmm"].server
    resource = server.resource
    if request.param == "serial-socket":
        resource = f"socket://127.0.0.1:{server.port}"
    driver = create_driver("keysight-34461a", resource, name="dmm", timeout_ms=TIMEOUT_MS)
    driver.connect()
    # The twin integrates like the meter (10 PLC = 200 ms by default); these tests are about
    # the wire, so readings use the shortest aperture (0.4 ms).
    driver.write("SENS:VOLT:DC:NPLC 0.02")
    yield driver
    driver.close()


@pytest.fixture
def faults(sim_bench):
    return sim_bench.twins["dmm"].server.faults


def test_no_reply(dmm, faults):
    faults.no_reply_to, faults.count = r"READ\?", 1
    error, took = timed(lambda: dmm.query("READ?"))
    assert error.kind == KIND_TIMEOUT and error.command == "READ?"
    assert f"no reply within {TIMEOUT_MS} ms to 'READ?'" in str(error)
    assert took < TIMEOUT_MS / 1000 + 0.3  # the timeout, plus the quiet drain
    assert dmm.query("*IDN?").startswith("Keysight")


def test_slow_reply(dmm, faults):
    faults.delay_s = TIMEOUT_MS / 1000 + 0.05
    error, took = timed(lambda: dmm.query("*OPC?"))
    assert error.kind == KIND_TIMEOUT
    assert took < TIMEOUT_MS / 1000 + 1.1  # drain of the late reply is bounded
    faults.delay_s = 0
    assert dmm.query("*IDN?").startswith("Keysight")  # the late "1" was drained


def test_garbage_bytes(dmm, faults):
    faults.garbage_to, faults.count = r"READ\?", 1
    error, took = timed(lambda: dmm.query("READ?"))
    assert error.kind == KIND_GARBAGE and "not ASCII" in str(error)
    assert took < TIMEOUT_MS / 1000
    assert dmm.query("*IDN?").startswith("Keysight")


def test_wrong_text(dmm, faults):
    faults.garbage_to, faults.count, faults.garbage = r"READ\?", 1, b"hello"
    error, _ = timed(lambda: dmm.query_float("READ?"))
    assert "expected a number from 'READ?', got 'hello'" in str(error)


def test_dropped_connection_is_reported_at_once_and_the_next_command_reconnects(
    dmm, faults, sim_bench, wait_for
):
    faults.drop_on, faults.count = r"READ\?", 1
    error, took = timed(lambda: dmm.query("READ?"))
    assert error.kind == KIND_LOST
    assert "connection lost during 'READ?'" in str(error)
    assert "will reconnect on next command" in str(error)
    assert took < TIMEOUT_MS / 1000  # noticed on the EOF, not after the timeout
    assert dmm.query("*IDN?").startswith("Keysight")  # a new connection
    assert faults.dropped == 1


def test_error_left_in_the_queue(dmm, faults):
    faults.error_on, faults.count = "CONF", 1
    dmm.write("CONF:VOLT:DC 10")
    dmm.wait_complete()
    with pytest.raises(InstrumentError, match='-222,"Data out of range"') as caught:
        dmm.check_errors()
    assert caught.value.kind == KIND_REPORTED
    dmm.check_errors()


@pytest.mark.parametrize("scheme", ["visa", "serial-socket"])
def test_refused_at_open_gives_a_clear_error_at_connect(sim_bench, scheme):
    server = sim_bench.twins["dmm"].server
    server.faults.refuse = True
    resource = server.resource if scheme == "visa" else f"socket://127.0.0.1:{server.port}"
    dmm = create_driver("keysight-34461a", resource, name="dmm", timeout_ms=TIMEOUT_MS)
    try:
        error, took = timed(dmm.connect)
    finally:
        dmm.close()
    assert error.kind == KIND_REFUSED, error
    assert "refuses connections" in str(error)
    assert took < TIMEOUT_MS / 1000


@pytest.mark.parametrize("scheme", ["visa", "serial-socket"])
def test_closed_listener_is_refused_at_connect(scheme):
    server = TwinServer(object()).start()
    port = server.port
    server.stop()
    resource = (
        f"TCPIP::127.0.0.1::{port}::SOCKET" if scheme == "visa" else f"socket://127.0.0.1:{port}"
    )
    dmm = create_driver("keysight-34461a", resource, name="dmm", timeout_ms=TIMEOUT_MS)
    error, _ = timed(dmm.connect)
    assert error.kind == KIND_REFUSED
    assert "cannot open" in str(error) and "refused" in str(error).lower()


def test_reconnect_backs_off_until_a_rebooting_instrument_listens_again(sim_bench):
    server = sim_bench.twins["dmm"].server
    twin, port = server.twin, server.port
    dmm = create_driver("keysight-34461a", server.resource, name="dmm", timeout_ms=1000)
    dmm.connect()
    server.stop()  # the instrument reboots...
    rebooted: list[TwinServer] = []
    back = threading.Timer(0.15, lambda: rebooted.append(TwinServer(twin, port=port).start()))
    back.start()  # ...and listens again 150 ms later
    try:
        with pytest.raises(InstrumentError, match="will reconnect on next command"):
            dmm.query("*IDN?")
        started = time.monotonic()
        assert dmm.query("*IDN?").startswith("Keysight")  # retried 0, 50, 250 ms
        assert time.monotonic() - started < 1.0
    finally:
        back.join()
        dmm.close()
        for again in rebooted:
            again.stop()


def test_reconnect_gives_up_within_the_timeout():
    server = TwinServer(object()).start()
    from sim.bench import Bench
    from sim.boards import make_board
    from sim.instruments import SimKeysight34461A

    server.twin = SimKeysight34461A(Bench(make_board("pcba01", None, 0)))
    dmm = create_driver("keysight-34461a", server.resource, name="dmm", timeout_ms=400)
    dmm.connect()
    server.stop()
    with pytest.raises(InstrumentError, match="will reconnect"):
        dmm.query("*IDN?")
    error, took = timed(lambda: dmm.query("*IDN?"))
    assert "could not reconnect" in str(error) and error.kind == KIND_REFUSED
    assert took < 0.4 + 0.1
    dmm.close()


@pytest.mark.parametrize(
    ("driver", "off_command"),
    [("rigol-dp832", r":OUTP CH1,OFF"), ("keysight-e36312a", r"OUTP OFF,\(@1")],
)
def test_safe_state_with_the_off_command_lost_raises_naming_the_channel(driver, off_command):
    """The OFF is swallowed on the wire, yet *OPC? and the error queue answer as if applied:
    only the read-back can tell that the output is still on."""
    with sim.start_bench({"psu": driver}, seed=1) as bench:
        psu = create_driver(driver, bench.resources["psu"], name="psu", timeout_ms=TIMEOUT_MS)
        psu.connect()
        try:
            psu.set_voltage(1, 5.0)
            psu.enable(1)
            bench.twins["psu"].server.faults.no_reply_to = off_command  # every time
            with pytest.raises(InstrumentError, match="safe state not verified: CH1 ") as caught:
                psu.safe_state()
            assert caught.value.kind == KIND_NOT_APPLIED
            assert "CH2" not in caught.value.message and "CH3" not in caught.value.message
            assert bench.bench.channel(1).enabled  # what the error says: CH1 is still on
            bench.twins["psu"].server.faults.clear()
            psu.safe_state()  # the link is fine: once the OFF arrives, it verifies
            assert not bench.bench.channel(1).enabled
        finally:
            psu.close()


def test_safe_state_retries_a_lost_off_once(sim_bench):
    psu = create_driver("rigol-dp832", sim_bench.resources["psu"], name="psu")
    psu.connect()
    try:
        psu.set_voltage(1, 5.0)
        psu.enable(1)
        faults = sim_bench.twins["psu"].server.faults
        faults.no_reply_to, faults.count = r":OUTP CH1,OFF", 1
        psu.safe_state()  # the first OFF was lost; the read-back saw it and sent it again
        assert not sim_bench.bench.channel(1).enabled
        assert faults.swallowed == 1
    finally:
        psu.close()
