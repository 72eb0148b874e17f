"""The KA3005P driver against its twin on a real pty, through pyserial's serialposix.

These run beside many others under `pytest -n auto`: they assert what the driver promises (a
timeout raises, a late reply is never taken for the next one, a stuck read can be interrupted),
with generous bounds instead of tight timings.
"""

from __future__ import annotations

import time

import pytest

import sim
from drivers import InstrumentError, create_driver
from drivers.errors import KIND_GARBAGE, KIND_TIMEOUT

TIMEOUT_MS = 300
# "Bounded" means the timeout plus a drain, not a hang: a loaded CI machine gets seconds of slack.
SLACK_S = 2.0


@pytest.fixture
def korad_bench():
    with sim.start_bench({"psu": "korad-ka3005p", "dmm": "keysight-34461a"}, seed=2) as bench:
        yield bench


@pytest.fixture
def psu(korad_bench):
    driver = create_driver(
        "korad-ka3005p", korad_bench.resources["psu"], name="psu", timeout_ms=TIMEOUT_MS
    )
    driver.connect()
    yield driver
    driver.close()


def test_served_on_a_pty(korad_bench, psu):
    assert korad_bench.resources["psu"].startswith("/dev/")
    assert psu.identity == "KORAD KA3005P V5.8 SN:03379314"


def test_channel_1_powers_the_board(korad_bench, psu):
    dmm = create_driver("keysight-34461a", korad_bench.resources["dmm"], name="dmm")
    dmm.connect()
    try:
        psu.set_current_limit(1, 0.25)
        psu.set_voltage(1, 5.0)
        psu.enable(1)
        time.sleep(0.02)
        assert korad_bench.bench.channel(1).enabled
        assert psu.measure_voltage(1) == pytest.approx(5.0, abs=0.01)
        assert psu.measure_current(1) == pytest.approx(0.070, abs=0.003)
        assert dmm.measure_dc_voltage() == pytest.approx(3.30, abs=0.01)
        psu.safe_state()
        assert not korad_bench.bench.channel(1).enabled
    finally:
        dmm.close()


def test_out_of_range_setting_is_caught_by_read_back(psu, korad_bench):
    psu.set_voltage(1, 12.0)
    psu.transport.write("VSET1:45.00")  # the firmware ignores it
    assert psu.query("VSET1?", reply_length=5) == "12.00"


def test_no_reply(psu, korad_bench):
    faults = korad_bench.twins["psu"].server.faults
    faults.no_reply_to, faults.count = r"VOUT", 1
    started = time.monotonic()
    with pytest.raises(InstrumentError, match=r"no reply within 300 ms to 'VOUT1\?'") as e:
        psu.measure_voltage(1)
    assert e.value.kind == KIND_TIMEOUT
    assert time.monotonic() - started < TIMEOUT_MS / 1000 + SLACK_S
    assert psu.measure_voltage(1) == 0.0


def test_garbage(psu, korad_bench):
    faults = korad_bench.twins["psu"].server.faults
    faults.garbage_to, faults.count, faults.garbage = r"VOUT", 1, b"\xff\xfe\x80\x81\x82"
    with pytest.raises(InstrumentError, match="not ASCII") as e:
        psu.measure_voltage(1)
    assert e.value.kind == KIND_GARBAGE
    assert psu.measure_voltage(1) == 0.0


def test_slow_reply(psu, korad_bench):
    psu.set_voltage(1, 5.0)
    psu.set_current_limit(1, 0.25)
    faults = korad_bench.twins["psu"].server.faults
    faults.delay_s, faults.delay_to = TIMEOUT_MS / 1000 + 0.05, r"VSET1\?"
    with pytest.raises(InstrumentError, match="no reply"):
        psu.query("VSET1?", reply_length=5)
    faults.clear()
    time.sleep(TIMEOUT_MS / 1000 + 0.5)  # the late "05.00" has certainly arrived by now
    # It is drained, not read as the reply to the next query (which would then say 5 A).
    assert psu.query("ISET1?", reply_length=5) == "0.250"
    assert psu.query("VSET1?", reply_length=5) == "05.00"


def test_drop_goes_silent_then_recovers(psu, korad_bench):
    faults = korad_bench.twins["psu"].server.faults
    faults.drop_s = 0.2
    faults.drop_on, faults.count = r"IOUT", 1
    with pytest.raises(InstrumentError, match="no reply"):
        psu.measure_current(1)
    assert psu.measure_current(1) == 0.0


def test_switched_off_instrument_fails_at_connect(korad_bench):
    korad_bench.twins["psu"].server.faults.refuse = True
    psu = create_driver("korad-ka3005p", korad_bench.resources["psu"], name="psu")
    with pytest.raises(InstrumentError, match=r"no reply within 1000 ms to '\*IDN\?'"):
        psu.connect()
    psu.close()


def test_interrupt_unblocks_a_stuck_read(korad_bench):
    import threading

    psu = create_driver("korad-ka3005p", korad_bench.resources["psu"], name="psu",
                        timeout_ms=30_000)  # fmt: skip
    psu.connect()
    faults = korad_bench.twins["psu"].server.faults
    faults.no_reply_to = "VOUT"
    outcome: dict = {}
    thread = threading.Thread(
        target=lambda: outcome.setdefault("error", _capture(psu.measure_voltage, 1))
    )
    thread.start()
    deadline = time.monotonic() + 10
    while not (faults.swallowed and psu.transport.in_flight()):  # the read is waiting
        assert time.monotonic() < deadline, "the query never reached the twin"
        time.sleep(0.005)
    assert psu.transport.interrupt() is True  # a serial read can be aborted
    thread.join(SLACK_S)
    assert not thread.is_alive()
    assert "interrupted" in str(outcome["error"])
    korad_bench.twins["psu"].server.faults.clear()
    assert psu.measure_voltage(1) == 0.0
    psu.close()


def _capture(call, *args):
    try:
        call(*args)
    except Exception as exc:
        return exc
    return None
