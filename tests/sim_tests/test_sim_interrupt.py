"""interrupt(): another thread unblocks a call stuck in instrument I/O, promptly."""

from __future__ import annotations

import threading
import time

import pytest

from drivers import InstrumentError
from drivers.errors import KIND_CLOSED, KIND_INTERRUPTED, KIND_STOPPED


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


# -- close() is final --------------------------------------------------------------------------


def lock_is_held(resource: str) -> bool:
    """Whether some open file holds the OS lock of `resource` (flock conflicts across fds)."""
    import fcntl
    import os

    from drivers.transport.locking import lock_path

    path = lock_path(resource)
    if not path.exists():
        return False
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)
    return False


@pytest.fixture
def isolated_locks(tmp_path, monkeypatch):
    from drivers.transport.locking import LOCK_DIR_ENV

    monkeypatch.setenv(LOCK_DIR_ENV, str(tmp_path / "locks"))


def test_close_is_final_no_call_from_any_thread_reopens_the_link_or_the_lock(
    connect, sim_bench, wait_for, isolated_locks
):
    psu = connect("psu")
    server = sim_bench.twins["psu"].server
    assert lock_is_held(psu.transport.resource)
    psu.close()
    wait_for(lambda: server.connection_count == 0)
    assert not lock_is_held(psu.transport.resource)

    outcome: dict = {}

    def phase_that_swallowed_its_cancel() -> None:  # the retry loop, after teardown
        try:
            psu.enable(1)
        except InstrumentError as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=phase_that_swallowed_its_cancel)
    thread.start()
    thread.join(5)
    assert outcome["error"].kind == KIND_CLOSED
    assert not sim_bench.bench.channel(1).enabled
    for call in (psu.transport.open, lambda: psu.query("*IDN?"), psu.transport.read):
        with pytest.raises(InstrumentError) as caught:
            call()
        assert caught.value.kind == KIND_CLOSED and "closed" in str(caught.value)
    time.sleep(0.05)
    assert server.connection_count == 0 and not lock_is_held(psu.transport.resource)
    psu.close()  # idempotent
    assert psu.transport.interrupt() is True  # nothing in flight


def test_a_call_queued_behind_a_stuck_one_when_close_comes_raises_closed(
    connect, sim_bench, wait_for
):
    dmm = connect("dmm", timeout_ms=30_000)
    faults = sim_bench.twins["dmm"].server.faults
    faults.no_reply_to = r"READ\?"
    stuck, stuck_outcome = start_stuck_query(dmm, "READ?")
    wait_for(lambda: faults.swallowed == 1)
    dmm.close()
    stuck.join(2)
    assert stuck_outcome["error"].kind == KIND_INTERRUPTED
    with pytest.raises(InstrumentError) as caught:
        dmm.query("*IDN?")
    assert caught.value.kind == KIND_CLOSED


# -- the call guard ----------------------------------------------------------------------------


def test_call_guard_refuses_io_from_a_stopped_thread_before_anything_is_sent(
    connect, sim_bench, wait_for
):
    psu = connect("psu")
    stopped: set[threading.Thread] = set()
    psu.transport.set_call_guard(
        lambda: "phase 'power_up' was stopped" if threading.current_thread() in stopped else None
    )
    outcome: dict = {}

    def phase() -> None:
        stopped.add(threading.current_thread())
        try:
            psu.enable(1)
        except InstrumentError as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=phase)
    thread.start()
    thread.join(5)
    error = outcome["error"]
    assert error.kind == KIND_STOPPED
    assert "phase 'power_up' was stopped" in str(error) and ":OUTP CH1,ON" in str(error)
    assert not sim_bench.bench.channel(1).enabled
    assert psu.is_enabled(1) is False  # other threads are not affected
    psu.transport.set_call_guard(None)


def test_call_guard_is_checked_before_waiting_for_the_connection_lock(connect):
    dmm = connect("dmm", timeout_ms=30_000)
    transport = dmm.transport
    conn = transport._conn  # white-box: hold its lock as a stuck call would
    holding, release = threading.Event(), threading.Event()

    def hold_lock() -> None:
        with conn.lock:
            holding.set()
            release.wait(10)

    holder = threading.Thread(target=hold_lock, daemon=True)
    holder.start()
    holding.wait(2)
    try:
        transport.set_call_guard(lambda: "stopped")
        started = time.monotonic()
        with pytest.raises(InstrumentError) as caught:
            dmm.query("READ?")
        assert caught.value.kind == KIND_STOPPED
        assert time.monotonic() - started < 1.0  # not the 30 s the lock could take
    finally:
        release.set()
        holder.join(2)


# -- a session that cannot abort a read (VXI-11 through pyvisa-py) -------------------------------


@pytest.fixture
def vxi11_dmm(sim_bench):
    """(driver, server): the bench's 34461A twin served as a VXI-11 INSTR device."""
    from drivers import create_driver
    from sim.vxi11_server import Vxi11Server

    with Vxi11Server(sim_bench.twins["dmm"].server.twin) as server:
        dmm = create_driver("keysight-34461a", server.resource, name="dmm", timeout_ms=800)
        dmm.connect()
        try:
            yield dmm, server
        finally:
            dmm.close()


def test_interrupt_that_cannot_abort_says_so_and_the_next_call_reuses_the_cleared_session(
    vxi11_dmm, wait_for
):
    dmm, server = vxi11_dmm
    server.faults.no_reply_to, server.faults.count = r"READ\?", 1
    stuck, outcome = start_stuck_query(dmm, "READ?")
    wait_for(lambda: server.faults.swallowed == 1 and dmm.transport.in_flight() is not None)

    assert dmm.transport.interrupt() is False  # pyvisa-py cannot abort a VXI-11 read
    # Teardown's next call waits for the stuck read to end at its timeout, clears, reuses.
    assert dmm.query("*IDN?").startswith("Keysight")
    stuck.join(5)
    assert not stuck.is_alive()
    assert outcome["error"].kind == KIND_INTERRUPTED
    assert "cannot abort" in str(outcome["error"])
    assert server.links == 1  # never a second session to an instrument still in a transfer
    assert server.clears >= 1
    assert dmm.query_float("READ?") == pytest.approx(0.0, abs=0.01)  # replies stay in step


def test_close_during_an_unabortable_read_keeps_the_lock_until_it_ends(
    vxi11_dmm, wait_for, isolated_locks
):
    dmm, server = vxi11_dmm
    dmm.close()  # re-open under the isolated lock directory
    from drivers import create_driver

    dmm = create_driver("keysight-34461a", server.resource, name="dmm", timeout_ms=800)
    dmm.connect()
    server.faults.no_reply_to, server.faults.count = r"READ\?", 1
    stuck, outcome = start_stuck_query(dmm, "READ?")
    wait_for(lambda: server.faults.swallowed == 1 and dmm.transport.in_flight() is not None)
    dmm.close()
    assert lock_is_held(dmm.transport.resource)  # still talking to it: still ours
    stuck.join(5)
    assert outcome["error"].kind == KIND_INTERRUPTED
    wait_for(lambda: not lock_is_held(dmm.transport.resource) and server.open_links == 0)
    with pytest.raises(InstrumentError) as caught:
        dmm.query("*IDN?")
    assert caught.value.kind == KIND_CLOSED
    assert server.links == 2  # the fixture's and this one: close never reopened
