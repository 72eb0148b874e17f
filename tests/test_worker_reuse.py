"""The phase thread outlives a run (the loop's units do not start a thread each), but a thread
whose phase was stopped never runs another phase."""

from __future__ import annotations

import sys
import threading
import types

import pytest

RECORDS_THREAD = """
    import threading
    import station_threads
    from station import phase

    @phase
    def which_thread():
        station_threads.SEEN.append(threading.current_thread())
"""

STOPPED = """
    import threading
    import time
    import station_threads
    from station import phase

    @phase(timeout_s=0.2)
    def too_slow():
        station_threads.SEEN.append(threading.current_thread())
        while True:
            time.sleep(0.01)
"""


@pytest.fixture
def seen(monkeypatch: pytest.MonkeyPatch) -> list[threading.Thread]:
    module = types.ModuleType("station_threads")
    module.SEEN = []  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "station_threads", module)
    return module.SEEN  # type: ignore[attr-defined,no-any-return]


def phase_threads() -> int:
    return sum(1 for thread in threading.enumerate() if thread.name == "station-phase")


def test_consecutive_runs_share_one_phase_thread(bench, seen):
    for _ in range(5):
        assert bench.run(RECORDS_THREAD).outcome == "PASS"
    assert len(seen) == 5
    assert len(set(seen)) == 1
    assert seen[0] is not threading.current_thread()  # a phase thread, not the runner's


def test_a_thread_whose_phase_was_stopped_is_never_reused(bench, seen):
    assert bench.run(STOPPED).outcome == "TIMEOUT"
    stopped = seen[0]
    for _ in range(3):
        assert bench.run(RECORDS_THREAD).outcome == "PASS"
    assert all(thread is not stopped for thread in seen[1:])
    assert stopped.stop_reason  # marked: its instrument I/O is refused from then on
    assert len(set(seen[1:])) == 1


def test_runs_at_once_get_their_own_threads_and_one_is_kept(bench, seen):
    bench.write(RECORDS_THREAD)
    procedure = bench.load()
    gate = threading.Barrier(2)
    from station.authoring.helpers import Dut
    from station.engine.runner import Runner

    def run() -> None:
        gate.wait(5)
        Runner(procedure, Dut("SN-1"), handle_signals=False).execute()

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert len(seen) == 2
    # Whatever the interleaving, at most one idle phase thread is kept afterwards.
    deadline = threading.Event()
    for _ in range(100):
        if phase_threads() <= 1:
            break
        deadline.wait(0.02)
    assert phase_threads() <= 1
