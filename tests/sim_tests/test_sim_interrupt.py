"""interrupt(): another thread unblocks a call stuck in instrument I/O, promptly."""

from __future__ import annotations

import threading
import time

import pytest

from drivers import InstrumentError


def start_stuck_query(dmm, command: str = "MEAS:VOLT:DC?"):
    """Run dmm.query(command) on a thread; returns (thread, outcome dict)."""
    outcome: dict = {}

    def run() -> None:
        try:
            outcome["reply"] = dmm.query(command)
        except Exception as exc:
            outcome["error"] = exc
        outcome["ended"] = time.monotonic()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, outcome


def test_interrupt_unblocks_a_stuck_query_and_the_next_call_reconnects(
    connect, sim_bench, wait_for
):
    dmm = connect("dmm", timeout_ms=30_000)
    faults = sim_bench.twins["dmm"].server.faults
    faults.no_reply_to = r"MEAS:VOLT:DC\?"
    thread, outcome = start_stuck_query(dmm)
    wait_for(lambda: faults.swallowed == 1)  # the query is on the wire, unanswered

    started = time.monotonic()
    dmm.transport.interrupt()
    assert time.monotonic() - started < 0.1  # interrupt() itself never waits
    thread.join(timeout=2)
    assert not thread.is_alive()
    assert isinstance(outcome["error"], InstrumentError)
    assert "interrupted" in str(outcome["error"])
    assert outcome["ended"] - started < 0.5

    faults.clear()
    assert dmm.query_float("MEAS:VOLT:DC?") == pytest.approx(0.0, abs=0.01)  # fresh connection


def test_interrupt_does_not_wait_for_a_thread_holding_the_old_connection(connect):
    dmm = connect("dmm", timeout_ms=30_000)
    transport = dmm.transport
    old = transport._conn  # white-box: the connection object with its own lock
    holding, release = threading.Event(), threading.Event()

    def hold_lock() -> None:  # a thread parked inside the old connection's lock
        with old.lock:
            holding.set()
            release.wait(5)

    holder = threading.Thread(target=hold_lock, daemon=True)
    holder.start()
    holding.wait(2)
    try:
        started = time.monotonic()
        transport.interrupt()
        assert dmm.query("*IDN?").startswith("Keysight")  # new connection, new lock
        assert time.monotonic() - started < 0.5
        assert transport._conn is not old
    finally:
        release.set()
        holder.join(2)


def test_calls_queued_behind_a_stuck_call_do_not_hang(connect, sim_bench, wait_for):
    dmm = connect("dmm", timeout_ms=30_000)
    faults = sim_bench.twins["dmm"].server.faults
    faults.no_reply_to = r"READ\?"
    stuck, stuck_outcome = start_stuck_query(dmm, "READ?")
    wait_for(lambda: faults.swallowed == 1)
    queued, queued_outcome = start_stuck_query(dmm, "*IDN?")
    time.sleep(0.05)  # most likely blocked on the old connection's lock by now
    dmm.transport.interrupt()
    stuck.join(2)
    queued.join(2)
    assert not stuck.is_alive() and not queued.is_alive()
    assert "interrupted" in str(stuck_outcome["error"])
    # Queued on the old connection: interrupted too; if it was not there yet, it got a fresh one.
    if "error" in queued_outcome:
        assert "interrupted" in str(queued_outcome["error"])
    else:
        assert queued_outcome["reply"].startswith("Keysight")


def test_interrupt_when_idle_just_closes_and_the_next_call_reconnects(connect, sim_bench, wait_for):
    dmm = connect("dmm")
    server = sim_bench.twins["dmm"].server
    dmm.transport.interrupt()
    wait_for(lambda: server.connection_count == 0)
    assert dmm.query("*IDN?").startswith("Keysight")
    assert server.connection_count == 1


def test_close_aborts_a_stuck_call_too(connect, sim_bench, wait_for):
    dmm = connect("dmm", timeout_ms=30_000)
    faults = sim_bench.twins["dmm"].server.faults
    faults.no_reply_to = "MEAS"
    thread, outcome = start_stuck_query(dmm)
    wait_for(lambda: faults.swallowed == 1)
    dmm.close()
    thread.join(2)
    assert "interrupted" in str(outcome["error"])
