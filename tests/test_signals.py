"""Signals against a real `station run`: every stop signal gets teardown, a verified safe state and
an ABORTED record; a second signal cannot skip the safe state; a Ctrl-C while the record is
written cannot lose a PASS (issue 9 §2).

The simulated bench runs in its own `station sim` process, so the PSU can be read back over its
socket after the station process is gone.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from sim_process import station_sim

pytestmark = pytest.mark.slow

PROCEDURES = {
    # The phase powers the unit and waits; teardown does NOT switch the supply off, so only the
    # safe state can: the tests see whether it happened.
    "HANG": """
        from station import phase

        @phase
        def powered(psu, run):
            psu.set_voltage(1, 5.0)
            psu.enable(1)
            print("PHASE-RUNNING", flush=True)
            run.sleep(60)

        @phase
        def never():
            pass

        @phase(teardown=True, timeout_s=10)
        def slow_teardown(run):
            print("TEARDOWN-RUNNING", flush=True)
            run.sleep(1.0)
    """,
    "QUICK": """
        from station import phase

        @phase
        def powered(psu):
            psu.set_voltage(1, 5.0)
            psu.enable(1)
    """,
}


@pytest.fixture
def served_bench(tmp_path: Path):
    """`station sim` in its own process; station.yaml in tmp_path points at its twins."""
    config = tmp_path / "station.yaml"
    for name, source in PROCEDURES.items():
        (tmp_path / f"{name.lower()}.py").write_text(textwrap.dedent(source))

    def write(dmm: str, psu: str) -> None:
        procedures = "".join(f"  {name}: {{module: {name.lower()}.py}}\n" for name in PROCEDURES)
        config.write_text(
            "station: {name: Signal bench}\n"
            "instruments:\n"
            f'  dmm: {{driver: keysight-34461a, resource: "{dmm}"}}\n'
            f'  psu: {{driver: rigol-dp832, resource: "{psu}"}}\n'
            f"procedures:\n{procedures}"
        )

    with station_sim(config, write, tmp_path) as resources:
        yield tmp_path, resources


def psu_output_state(resource: str) -> str:
    """Ask the simulated PSU directly over a raw socket: a bench probe, not a second station."""
    match = re.match(r"TCPIP0?::([\d.]+)::(\d+)::SOCKET", resource)
    assert match is not None
    with socket.create_connection((match[1], int(match[2])), timeout=5) as probe:
        probe.sendall(b":OUTP? CH1\n")
        return probe.makefile().readline().strip()


def start_run(root: Path, procedure: str, until: str, env: dict[str, str] | None = None):
    process = subprocess.Popen(
        [sys.executable, "-m", "station", "run", procedure, "--serial", "SN-9", "--no-upload"],
        cwd=root,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "NO_COLOR": "1", **(env or {})},
    )
    assert process.stdout is not None
    for line in process.stdout:
        if until in line:
            return process
    raise AssertionError(process.communicate()[1])


def the_record(root: Path) -> dict:
    (run_dir,) = sorted((root / "runs").glob("[!.]*"))
    return json.loads((run_dir / "run.json").read_text())


@pytest.mark.parametrize(
    ("signum", "said"),
    [(signal.SIGHUP, "terminal was closed (SIGHUP)"), (signal.SIGQUIT, "(SIGQUIT)")],
)
def test_sighup_and_sigquit_stop_the_run_like_sigterm(served_bench, signum, said):
    root, resources = served_bench
    process = start_run(root, "HANG", "PHASE-RUNNING")
    assert psu_output_state(resources["psu"]) == "ON"
    process.send_signal(signum)
    _, err = process.communicate(timeout=30)
    assert process.returncode == 130, err
    record = the_record(root)
    assert record["outcome"] == "ABORTED"
    assert said in record["outcome_reason"]
    outcomes = {p["name"]: p["outcome"] for p in record["phases"]}
    assert outcomes == {"powered": "ABORTED", "never": "SKIP", "slow_teardown": "PASS"}
    assert psu_output_state(resources["psu"]) == "OFF"


def test_second_signal_during_teardown_does_not_skip_the_safe_state(served_bench):
    root, resources = served_bench
    process = start_run(root, "HANG", "PHASE-RUNNING")
    process.send_signal(signal.SIGTERM)
    assert process.stdout is not None
    for line in process.stdout:
        if "TEARDOWN-RUNNING" in line:
            break
    for second in (signal.SIGHUP, signal.SIGINT, signal.SIGTERM, signal.SIGQUIT):
        process.send_signal(second)
        time.sleep(0.05)
    _, err = process.communicate(timeout=30)
    assert process.returncode == 130, err
    record = the_record(root)
    assert record["outcome"] == "ABORTED" and "SIGTERM" in record["outcome_reason"]
    assert record["phases"][-1]["name"] == "slow_teardown"
    assert record["phases"][-1]["outcome"] == "PASS"
    assert psu_output_state(resources["psu"]) == "OFF"


def test_ctrl_c_while_the_record_is_written_keeps_the_pass(served_bench, tmp_path):
    root, resources = served_bench
    marker = tmp_path / "reached"
    process = start_run(
        root,
        "QUICK",
        "SN-9",  # the console's first line: the run has started
        env={
            "STATION_FAULT_POINT": "record_write_journaled",  # run.json is about to be written
            "STATION_FAULT_MARKER": str(marker),
            "STATION_FAULT_SLEEP": "0.5",
        },
    )
    deadline = time.monotonic() + 20
    while not marker.exists():
        assert time.monotonic() < deadline, "the fault point was never reached"
        time.sleep(0.01)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=30)
    record = the_record(root)
    assert record["outcome"] == "PASS", err
    assert psu_output_state(resources["psu"]) == "OFF"
    # The Ctrl-C is not lost either: it is delivered once run.json is on disk.
    assert process.returncode == 130, err
