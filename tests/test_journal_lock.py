"""The run directory's lock is taken before the journal's first write, so the lock alone tells a
run going on from a dead one (no clock involved), and status probes never lock, create or
modify anything.

Processes that die are real processes killed with SIGKILL; the lock is the kernel's.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from station.authoring.helpers import Dut
from station.cli.main import main
from station.engine.runner import Runner
from station.storage.journal import JOURNAL, RUN_JSON, Journal
from station.storage.pending import PendingIndex
from station.storage.runlock import LOCK_FILE, held_elsewhere, try_lock
from station.tofupilot.outbox import BUSY, INTERRUPTED, QUEUED, Outbox

REPO = Path(__file__).resolve().parents[1]

PROC = """
from station import phase

@phase
def only(log):
    log.info("fine")
"""


def record(bench, serial: str = "SN-1", journal: Journal | None = None) -> Path:
    bench.write(PROC)
    procedure = bench.load()
    journal = journal or Journal(bench.root / "runs")
    Runner(
        procedure,
        Dut(serial, procedure.part_number, procedure.revision),
        listeners=[journal],
        handle_signals=False,
    ).execute()
    assert journal.run_dir is not None
    return journal.run_dir


def test_the_lock_is_taken_before_the_journals_first_write_and_the_run_marked_pending(bench):
    seen: dict[str, object] = {}
    holder = Outbox(bench.root / "runs", None)

    def claim(run_dir: Path) -> bool:
        seen["journal then"] = (run_dir / JOURNAL).exists()
        seen["pending then"] = run_dir.name in (PendingIndex(run_dir.parent).names() or [])
        return holder.claim(run_dir)

    run_dir = record(bench, journal=Journal(bench.root / "runs", claim=claim))
    assert seen == {"journal then": False, "pending then": True}
    assert held_elsewhere(run_dir)  # the claimer keeps it after the run (for its upload)
    holder.close()
    assert not held_elsewhere(run_dir)


def test_a_journal_without_a_claimer_holds_the_lock_until_run_json_is_written(bench):
    states: list[tuple[bool, bool]] = []

    class Probe(Journal):
        def phase_started(self, name: str, attempt: int) -> None:
            super().phase_started(name, attempt)
            assert self.run_dir is not None
            states.append((held_elsewhere(self.run_dir), (self.run_dir / RUN_JSON).exists()))

    run_dir = record(bench, journal=Probe(bench.root / "runs"))
    assert states == [(True, False)]  # locked while the run goes on
    assert not held_elsewhere(run_dir) and (run_dir / RUN_JSON).is_file()
    fd = try_lock(run_dir)  # free for whoever uploads it
    assert fd is not None
    os.close(fd)


DIES = """
import sys, time
from pathlib import Path
from station.authoring.helpers import Dut
from station.config.model import load_config
from station.config.procedure_loader import load_procedure
from station.engine.runner import Runner
from station.storage.journal import Journal

root = Path(sys.argv[1])
procedure = load_procedure("T1", load_config(root / "station.yaml"))
journal = Journal(root / "runs")
Runner(procedure, Dut("SN-DIES"), listeners=[journal], handle_signals=False).execute()
"""

SLOW_PROC = """
import time
from pathlib import Path
from station import phase

@phase
def hold(log):
    Path(__file__).with_name("inside").write_text("1")
    time.sleep(120)
"""


def test_a_killed_run_is_interrupted_at_once_and_a_live_one_is_busy_whatever_their_age(bench):
    bench.write(SLOW_PROC)
    script = bench.root / "dies.py"
    script.write_text(textwrap.dedent(DIES))
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    child = subprocess.Popen([sys.executable, str(script), str(bench.root)], env=env)
    try:
        inside = next(bench.root.rglob("inside"), None)
        deadline = time.monotonic() + 60
        while inside is None and time.monotonic() < deadline and child.poll() is None:
            time.sleep(0.02)
            inside = next(bench.root.rglob("inside"), None)
        assert inside is not None, "the phase never started"
        (run_dir,) = (bench.root / "runs").glob("*_SN-DIES_*")
        outbox = Outbox(bench.root / "runs", None)
        # Its journal is old by any clock: only the lock says the run is going on.
        old = time.time() - 3600
        os.utime(run_dir / JOURNAL, (old, old))
        assert outbox.status(run_dir).state == BUSY
        assert outbox.recover_interrupted() == []
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
        # Dead a moment ago, its journal just written: interrupted, recovered at once.
        os.utime(run_dir / JOURNAL)
        assert outbox.status(run_dir).state == INTERRUPTED
        ((recovered_dir, recovered),) = outbox.recover_interrupted()
        assert recovered_dir == run_dir and recovered.outcome is not None
        assert outbox.status(run_dir).state == QUEUED
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(timeout=30)


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every file and directory under root with its size and modification time."""
    found = {}
    for path in [root, *root.rglob("*")]:
        stat = path.stat()
        found[str(path.relative_to(root))] = (stat.st_size, stat.st_mtime_ns)
    return found


@pytest.fixture
def lock_calls():
    """The fcntl/flock calls this process makes while `on` is set (audit events)."""
    calls: list[tuple[str, tuple]] = []
    state = {"on": False}

    def hook(event: str, args: tuple) -> None:
        if state["on"] and event in ("fcntl.fcntl", "fcntl.flock", "fcntl.lockf"):
            calls.append((event, args))

    sys.addaudithook(hook)
    return calls, state


def test_status_probes_never_create_lock_or_modify_anything(bench, capsys, lock_calls):
    import fcntl

    data_dir = bench.root / "runs"
    done = record(bench, "SN-DONE")
    dead = record(bench, "SN-DEAD")
    (dead / RUN_JSON).unlink()  # interrupted: a journal, no run.json, its lock free
    (done / LOCK_FILE).unlink()  # a run whose lock file is gone
    (data_dir / ".pending" / ".complete").unlink()  # an index that must be rebuilt
    before = snapshot(bench.root)
    calls, state = lock_calls
    state["on"] = True
    try:
        outbox = Outbox(data_dir, None)
        assert {s.state for s in outbox.pending()} == {QUEUED, INTERRUPTED}
        assert outbox.status(dead).state == INTERRUPTED
        assert outbox.next_due() is not None
        assert main(["runs", "--config", str(bench.root / "station.yaml")]) == 0
    finally:
        state["on"] = False
    assert "SN-DONE" in capsys.readouterr().out
    assert snapshot(bench.root) == before  # nothing created (no lock file), nothing written
    if sys.platform.startswith("linux"):  # the lock is asked about, never taken
        commands = {args[1] for event, args in calls if event == "fcntl.fcntl"}
        assert commands <= {fcntl.F_OFD_GETLK}, calls
        assert not [c for c in calls if c[0] != "fcntl.fcntl"], calls
