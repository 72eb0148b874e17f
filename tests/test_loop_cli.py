"""`station run --loop` as an operator or a launcher drives it: serials from a pipe, a refused
scan asked again, counters after each unit, Ctrl-C or SIGTERM between units ending the loop
cleanly, Ctrl-C during a unit aborting it (teardown, safe state) and then ending the loop.

The bench runs in its own `station sim` process, so the PSU can be read back after the station
process is gone.
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
from pathlib import Path

import pytest
from sim_process import station_sim

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]

PROCEDURES = {
    "QUICK": """
        from station import phase

        @phase
        def powered(psu):
            psu.set_voltage(1, 5.0)
            psu.enable(1)  # left on: only the safe state switches it off
    """,
    "HANG": """
        from station import phase

        @phase
        def powered(psu, dut, run):
            psu.set_voltage(1, 5.0)
            psu.enable(1)
            print(f"PHASE-RUNNING {dut.serial_number}", flush=True)
            run.sleep(60)

        @phase(teardown=True, timeout_s=10)
        def tidy():
            print("TEARDOWN-RUNNING", flush=True)
    """,
}


@pytest.fixture
def served_bench(tmp_path: Path):
    config = tmp_path / "station.yaml"
    for name, source in PROCEDURES.items():
        (tmp_path / f"{name.lower()}.py").write_text(textwrap.dedent(source))

    def write(dmm: str, psu: str) -> None:
        procedures = "".join(
            f"  {name}: {{module: {name.lower()}.py, serial_pattern: 'SN-\\d+'}}\n"
            for name in PROCEDURES
        )
        config.write_text(
            "station: {name: Loop bench}\n"
            "instruments:\n"
            f'  dmm: {{driver: keysight-34461a, resource: "{dmm}"}}\n'
            f'  psu: {{driver: rigol-dp832, resource: "{psu}"}}\n'
            f"procedures:\n{procedures}"
        )

    with station_sim(config, write, tmp_path) as resources:
        yield tmp_path, resources


def psu_output_state(resource: str) -> str:
    match = re.match(r"TCPIP0?::([\d.]+)::(\d+)::SOCKET", resource)
    assert match is not None
    with socket.create_connection((match[1], int(match[2])), timeout=5) as probe:
        probe.sendall(b":OUTP? CH1\n")
        return probe.makefile().readline().strip()


def start_loop(root: Path, procedure: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "station", "run", procedure, "--loop", "--no-upload"],
        cwd=root,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        bufsize=1,
        env={**os.environ, "NO_COLOR": "1", "PYTHONPATH": str(REPO)},
    )


def read_until(process: subprocess.Popen[str], text: str) -> str:
    assert process.stdout is not None
    seen = []
    for line in process.stdout:
        seen.append(line)
        if text in line:
            return "".join(seen)
    raise AssertionError("".join(seen) + process.communicate(timeout=30)[1])


def records(root: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((root / "runs").glob("*/run.json"))]


def test_serials_from_a_pipe_each_unit_recorded_a_bad_scan_asked_again(served_bench):
    root, resources = served_bench
    result = subprocess.run(
        [sys.executable, "-m", "station", "run", "QUICK", "--loop", "--no-upload"],
        cwd=root,
        input="SN-1\nBAD-7\n\nSN-2\nq\nSN-3\n",  # q ends the loop: SN-3 is never tested
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "NO_COLOR": "1", "PYTHONPATH": str(REPO)},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "refused: serial number 'BAD-7' does not match QUICK's serial pattern SN-\\d+" in out
    assert out.count("Scan or type the serial number:") == 5  # SN-1, BAD-7, blank, SN-2, q
    assert "tested 1  passed 1  failed 0  first-pass yield 100.0%" in out
    assert "== loop ended: tested 2  passed 2" in out
    assert sorted(r["serial_number"] for r in records(root)) == ["SN-1", "SN-2"]
    assert psu_output_state(resources["psu"]) == "OFF"


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_stop_between_units_ends_the_loop_cleanly(served_bench, signum):
    root, resources = served_bench
    process = start_loop(root, "QUICK")
    assert process.stdin is not None
    process.stdin.write("SN-1\n")
    process.stdin.flush()
    read_until(process, "tested 1")  # the unit is done; the loop waits for the next scan
    assert psu_output_state(resources["psu"]) == "OFF"  # safe-stated between units
    process.send_signal(signum)
    out, err = process.communicate(timeout=30)
    assert process.returncode == 130, out + err
    assert "interrupted: the loop ends" in out and "== loop ended: tested 1" in out
    assert [r["outcome"] for r in records(root)] == ["PASS"]
    assert psu_output_state(resources["psu"]) == "OFF"


def test_ctrl_c_during_a_unit_aborts_it_then_the_loop_ends(served_bench):
    root, resources = served_bench
    process = start_loop(root, "HANG")
    assert process.stdin is not None
    process.stdin.write("SN-1\nSN-2\n")
    process.stdin.flush()
    read_until(process, "PHASE-RUNNING SN-1")
    assert psu_output_state(resources["psu"]) == "ON"
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 130, out + err
    assert "TEARDOWN-RUNNING" in out and "PHASE-RUNNING SN-2" not in out
    (record,) = records(root)
    assert record["outcome"] == "ABORTED" and "Ctrl-C" in record["outcome_reason"]
    assert [p["name"] for p in record["phases"]] == ["powered", "tidy"]
    assert psu_output_state(resources["psu"]) == "OFF"
