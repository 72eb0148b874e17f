"""`station run` killed with SIGKILL at every point of its life loses no run and duplicates none.

Each process runs FVT1 on the simulated bench against the TofuPilot emulator and is killed at a
seeded random point (or let finish): before the first phase, in the middle of a phase, while its
record is being written, while its upload waits for the server, or after the server stored the run
but before the answer reached the station. `station upload` afterwards leaves exactly one run on
the server per run directory; each run cut short is an ERROR run with the phases its journal saw.

The default suite kills a few processes, every point at least once; the soak (`-m soak`) kills 50:

    STATION_SOAK_SEED=7 pytest -m soak -s tests/chaos/test_process_death.py
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
from reporting_fixtures import (
    FVT1_PHASES,
    RUNS_PATH,
    Site,
    emulator_fixture,  # noqa: F401 - fixture
    expected_body,
    journal_phases,
    ledger,
    ref_of,
    site_fixture,  # noqa: F401 - fixture
    soak_fixture,  # noqa: F401 - fixture
    stored_body,
    stored_refs,
    wait_for,
)

from station.storage.journal import RUN_JSON

pytestmark = pytest.mark.slow

IN_RUN_POINTS = ("before_first_phase", "mid_phase", "record_write")
UPLOAD_POINTS = ("during_upload", "after_store")
KILL_POINTS = IN_RUN_POINTS + UPLOAD_POINTS
PARALLEL = 3  # station runs at once; the upload points run alone (they steer the server)


@dataclass(frozen=True)
class Job:
    serial: str
    point: str | None  # None: the run is left to finish
    detail: str = ""  # mid_phase: the phase; after_store: how the answer is lost


@dataclass
class Outcome:
    job: Job
    killed: bool
    run_dir: Path | None = None
    had_record: bool = False  # run.json was on disk when the process died


def plan_jobs(count: int, seed: int) -> list[Job]:
    """`count` runs; the first ones cover every kill point, the rest are drawn (some finish)."""
    rng = random.Random(seed)
    points = [*KILL_POINTS, None]
    points += [rng.choice([*KILL_POINTS, None]) for _ in range(count - len(points))]
    jobs = []
    for n, point in enumerate(points[:count]):
        detail = ""
        if point == "mid_phase":
            detail = rng.choice(FVT1_PHASES)
        elif point == "after_store":
            detail = rng.choice(["hang_after_store", "drop_after_store"])
        jobs.append(Job(f"SN-{n:04}", point, detail))
    return jobs


def run_and_kill(site: Site, job: Job, rng: random.Random) -> Outcome:
    """One `station run`, killed at its point once it is there (or let finish)."""
    if job.point in UPLOAD_POINTS:
        return _kill_during_upload(site, job, rng)
    marker = site.root / "logs" / f"{job.serial}.reached"
    fault_point = {
        "before_first_phase": "run_started",
        "mid_phase": f"phase:{job.detail}",
        "record_write": "record_write",
    }.get(job.point or "", "")
    args = ("run", "FVT1", "--sim", "--serial", job.serial)
    env = {"STATION_FAULT_POINT": fault_point, "STATION_FAULT_MARKER": str(marker)}
    process = site.spawn(*args, log=f"{job.serial}.log", **(env if fault_point else {}))
    if job.point is None:
        assert process.wait(timeout=60) == 0, (site.root / "logs" / f"{job.serial}.log").read_text()
        return Outcome(job, killed=False, run_dir=site.run_dir_of(job.serial), had_record=True)
    wait_for(lambda: marker.exists() or process.poll() is not None, f"{job.serial} at its point")
    assert process.poll() is None, f"{job.serial} ended before reaching {fault_point}"
    return _kill(site, job, process)


def _kill_during_upload(site: Site, job: Job, rng: random.Random) -> Outcome:
    """Hold the run's upload on the server, then kill the station while it waits for the answer."""
    faults = site.emulator.faults
    if job.point == "during_upload":  # nothing stored yet
        faults.plan(["hang:30"], match=f"^POST {RUNS_PATH}$")
    elif job.detail == "hang_after_store":  # stored, the answer never comes
        faults.plan(["hang_after_store:30"], match=f"^POST {RUNS_PATH}$")
    else:  # stored, the answer is lost, and the station's retry hangs
        faults.plan(["drop_after_store", "hang:30"], match=f"^POST {RUNS_PATH}$")
    process = site.spawn("run", "FVT1", "--sim", "--serial", job.serial, log=f"{job.serial}.log")
    try:
        wait_for(lambda: not faults.pending, f"{job.serial}'s upload to reach the server")
        if job.point == "after_store":
            run_dir = wait_for(lambda: site.run_dir_of(job.serial), "the run directory")
            wait_for(lambda: stored_refs(site.emulator)[ref_of(run_dir)], "the run to be stored")
        # The station is waiting for its answer (its timeout is seconds away): kill it.
        return _kill(site, job, process, delay=rng.uniform(0, 0.2))
    finally:
        faults.clear()


def _kill(site: Site, job: Job, process: subprocess.Popen, delay: float = 0.0) -> Outcome:
    if delay:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=delay)
    assert process.poll() is None, f"{job.serial} ended before it could be killed"
    run_dir = site.run_dir_of(job.serial)
    had_record = run_dir is not None and (run_dir / RUN_JSON).exists()
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    return Outcome(job, killed=True, run_dir=site.run_dir_of(job.serial), had_record=had_record)


def run_all(site: Site, jobs: list[Job], seed: int) -> list[Outcome]:
    """In-run kills and normal runs go `PARALLEL` at a time; upload kills go alone."""
    rng = random.Random(seed + 1)
    outcomes: list[Outcome] = []
    with ThreadPoolExecutor(PARALLEL) as pool:
        batch = []
        for job in jobs:
            if job.point in UPLOAD_POINTS:
                outcomes += [future.result() for future in batch]
                batch = []
                outcomes.append(run_and_kill(site, job, rng))
            else:
                batch.append(pool.submit(run_and_kill, site, job, random.Random(rng.random())))
        outcomes += [future.result() for future in batch]
    return outcomes


def kill_and_recover(site: Site, count: int, seed: int) -> None:
    emulator = site.emulator
    jobs = plan_jobs(count, seed)
    outcomes = run_all(site, jobs, seed)
    dirs = site.run_dirs()
    assert len(dirs) == count, "every station run that started made one run directory"
    # Cut short before their record was written: recovered from the journal, by a later
    # `station run` starting up or by `station upload`.
    interrupted = [o for o in outcomes if o.killed and not o.had_record]

    for attempt in range(2):  # noqa: B007 - reported below
        result = site.station("upload")
        if result.returncode == 0:
            break
    assert result.returncode == 0, result.stdout + result.stderr

    figures = ledger(emulator, dirs)
    killed = Counter(o.job.point for o in outcomes if o.killed)
    print(
        f"\nprocess death soak (seed {seed}): attempted {count}, "
        f"killed {sum(killed.values())} ({', '.join(f'{p} {killed[p]}' for p in KILL_POINTS)}), "
        f"finished {count - sum(killed.values())}, recovered {len(interrupted)}, "
        f"uploaded {figures['uploaded']}, on server {figures['on server']}, "
        f"duplicates {figures['duplicates']}, lost {figures['lost']}, "
        f"upload passes {attempt + 1}"
    )
    assert figures == {
        "run directories": count,
        "on server": count,
        "uploaded": count,
        "duplicates": 0,
        "lost": 0,
        "strays": 0,
    }
    for outcome in outcomes:
        body = stored_body(emulator, ref_of(outcome.run_dir))
        assert body == expected_body(outcome.run_dir, emulator), outcome.job
    for outcome in interrupted:
        assert outcome.job.point in IN_RUN_POINTS, outcome.job
        assert_recovered_as_error(emulator, outcome)
    for outcome in outcomes:
        if outcome.had_record or not outcome.killed:
            body = stored_body(emulator, ref_of(outcome.run_dir))
            assert body["outcome"] == "PASS", outcome.job


def assert_recovered_as_error(emulator, outcome: Outcome) -> None:
    """The run went up as ERROR with every phase the journal saw end, plus the one cut short."""
    body = stored_body(emulator, ref_of(outcome.run_dir))
    assert body["outcome"] == "ERROR", outcome.job
    ended, running = journal_phases(outcome.run_dir)
    sent = [(p["name"], p["outcome"]) for p in body["phases"]]
    if outcome.job.point == "mid_phase":
        assert running == outcome.job.detail
        assert sent == [*ended, (running, "ERROR")]
    else:
        assert running is None
        assert sent == ended
    if outcome.job.point == "before_first_phase":
        assert sent == []
    if outcome.job.point == "record_write":
        assert [name for name, _ in sent] == list(FVT1_PHASES)


def test_killed_station_runs_are_each_uploaded_once(site):
    kill_and_recover(site, count=8, seed=20240611)


@pytest.mark.soak
def test_soak_fifty_killed_station_runs(site, soak):
    kill_and_recover(site, count=50, seed=int(os.environ.get("STATION_SOAK_SEED", "7")))
