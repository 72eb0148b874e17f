"""The station command, run as the operator runs it: a real subprocess, real signals."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from sim_process import station_sim

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def station(
    *args: str, cwd: Path, stdin=subprocess.DEVNULL, timeout: float = 60
) -> subprocess.CompletedProcess:
    env = {**os.environ, "STATION_OPERATOR": "tester", "NO_COLOR": "1"}
    env.pop("STATION_CONFIG", None)
    return subprocess.run(
        [sys.executable, "-m", "station", *args],
        cwd=cwd,
        stdin=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


@pytest.fixture
def example(tmp_path: Path) -> Path:
    """The repo's example station.yaml, with its runs going to a temp dir."""
    shutil.copy(REPO / "station.yaml", tmp_path / "station.yaml")
    return tmp_path


def run_dirs(root: Path) -> list[Path]:
    runs = root / "runs"  # .pending, .tofupilot: the data directory's own state
    return sorted(d for d in runs.iterdir() if not d.name.startswith(".")) if runs.is_dir() else []


def test_fvt1_passes_on_the_simulated_bench(example):
    result = station("run", "FVT1", "--sim", "--serial", "SN-0001", cwd=example)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for phase in ("identify", "power_up", "rail_3v3", "ripple", "power_down"):
        assert re.search(rf"\[PASS\]\s+{phase}", out), out
    for measurement in ("vin", "input_current", "rail_3v3", "rail_ripple"):
        assert re.search(rf"^\s+{measurement}\s+\S+ [mµ]?[VA]\s+.*PASS$", out, re.M), out
    assert "== FVT1 PASS  SN-0001" in out
    (run_dir,) = run_dirs(example)
    assert (run_dir / "journal.jsonl").is_file()
    record = json.loads((run_dir / "run.json").read_text())
    assert record["outcome"] == "PASS" and record["operator"] == "tester"
    assert record["part_number"] == "PCBA01" and record["procedure_version"] == "1.0.0"
    assert record["metadata"]["psu"].startswith("RIGOL TECHNOLOGIES,DP832")


def test_faulty_board_fails_with_the_measurement_against_its_limits(example):
    result = station("run", "FVT1", "--sim", "--serial", "SN-0002-F", cwd=example)
    assert result.returncode == 1, result.stderr
    # The station.yaml override (3.22..3.38) is what the operator sees and what decided.
    assert re.search(r"rail_3v3\s+3\.1\d* V\s+\[3\.22, 3\.38\]\s+FAIL", result.stdout), (
        result.stdout
    )
    assert "== FVT1 FAIL" in result.stdout


def test_no_serial_and_no_terminal_is_a_clear_usage_error(example):
    result = station("run", "FVT1", "--sim", cwd=example)
    assert result.returncode == 2
    assert "no --serial given and no terminal to ask on" in result.stderr
    assert run_dirs(example) == []


def test_unknown_procedure_lists_what_exists(example):
    result = station("run", "FVT9", "--sim", "--serial", "SN-1", cwd=example)
    assert result.returncode == 2
    assert "unknown procedure 'FVT9'" in result.stderr and "FVT1" in result.stderr
    assert "Traceback" not in result.stderr


def test_config_error_names_file_line_and_field(example):
    path = example / "station.yaml"
    path.write_text(path.read_text().replace("driver: rigol-dp832", "drivr: rigol-dp832"))
    result = station("run", "FVT1", "--sim", "--serial", "SN-1", cwd=example)
    assert result.returncode == 2
    assert re.search(
        r"station\.yaml:\d+: instruments\.psu\.drivr: unknown key 'drivr' "
        r"\(did you mean 'driver'\?\)",
        result.stderr,
    ), result.stderr
    assert "Traceback" not in result.stderr


def test_unknown_driver_is_located_in_station_yaml(example):
    path = example / "station.yaml"
    path.write_text(path.read_text().replace("driver: rigol-dp832", "driver: rigol-dp833"))
    result = station("check", cwd=example)
    assert result.returncode == 2
    assert re.search(
        r"station\.yaml:\d+: instruments\.psu\.driver: unknown driver 'rigol-dp833'; "
        r"available drivers: .*rigol-dp832",
        result.stderr,
    ), result.stderr


def test_check_and_list(example):
    result = station("check", "--sim", cwd=example)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "instrument dmm: keysight-34461a at TCPIP::127.0.0.1::" in result.stdout
    assert "Keysight Technologies,34461A" in result.stdout
    listing = station("list", cwd=example)
    assert listing.returncode == 0 and "FVT1" in listing.stdout and "rigol-dp832" in listing.stdout


# -- a separate simulated bench process, so the test can read the PSU back after the run ---------

HANG_PROCEDURE = """
    from station import phase, measure

    @phase
    def first(log):
        log.info("first done")

    @phase
    def powered(psu, run):
        psu.set_voltage(1, 5.0)
        psu.enable(1)
        print("PHASE-RUNNING", flush=True)
        run.sleep(60)

    @phase
    def never():
        pass

    @phase(teardown=True, timeout_s=5)
    def power_down(psu):
        psu.disable_all()
"""


@pytest.fixture
def served_bench(tmp_path: Path):
    """`station sim` in its own process; station.yaml in tmp_path points at its twins."""
    config = tmp_path / "station.yaml"
    (tmp_path / "hang.py").write_text(textwrap.dedent(HANG_PROCEDURE))
    (tmp_path / "quick.py").write_text(
        "from station import phase\n\n@phase\ndef ok(psu):\n    pass\n"
    )

    def write(dmm: str, psu: str) -> None:
        config.write_text(
            textwrap.dedent(f"""\
            station: {{name: Signal bench}}
            instruments:
              dmm: {{driver: keysight-34461a, resource: "{dmm}"}}
              psu: {{driver: rigol-dp832, resource: "{psu}"}}
            procedures:
              HANG: {{module: hang.py}}
              QUICK: {{module: quick.py}}
            """)
        )

    with station_sim(config, write, tmp_path) as resources:
        yield tmp_path, resources


def psu_output_state(resource: str) -> str:
    """Ask the simulated PSU directly over a raw socket: a bench probe, not a second station.

    (A station driver would be refused: the running station holds the instrument's lock.)
    """
    host, port = re.match(r"TCPIP0?::([\d.]+)::(\d+)::SOCKET", resource).groups()
    with socket.create_connection((host, int(port)), timeout=5) as probe:
        probe.sendall(b":OUTP? CH1\n")
        return probe.makefile().readline().strip()


def start_run(root: Path) -> subprocess.Popen:
    env = {**os.environ, "NO_COLOR": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "station", "run", "HANG", "--serial", "SN-9"],
        cwd=root,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    for line in process.stdout:  # wait until the phase is running
        if "PHASE-RUNNING" in line:
            return process
    raise AssertionError(process.stderr.read())


def test_ctrl_c_aborts_runs_teardown_and_records_the_run(served_bench):
    root, resources = served_bench
    process = start_run(root)
    assert psu_output_state(resources["psu"]) == "ON"
    started = time.monotonic()
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=20)
    assert process.returncode == 130, err
    assert time.monotonic() - started < 3
    (run_dir,) = run_dirs(root)
    record = json.loads((run_dir / "run.json").read_text())
    assert record["outcome"] == "ABORTED"
    outcomes = {p["name"]: p["outcome"] for p in record["phases"]}
    assert outcomes == {
        "first": "PASS",
        "powered": "ABORTED",
        "never": "SKIP",
        "power_down": "PASS",
    }
    assert psu_output_state(resources["psu"]) == "OFF"


def test_killed_run_leaves_a_journal_with_every_finished_phase(served_bench):
    root, resources = served_bench
    process = start_run(root)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=10)
    (run_dir,) = run_dirs(root)
    assert not (run_dir / "run.json").exists()
    assert process.returncode == -signal.SIGKILL
    lines = (run_dir / "journal.jsonl").read_bytes().split(b"\n")[:-1]  # \n only: see journal
    events = [json.loads(line) for line in lines]
    ended = [e["phase"]["name"] for e in events if e["event"] == "phase_ended"]
    assert ended == ["first"]
    assert events[-1]["event"] == "phase_started" and events[-1]["phase"]["name"] == "powered"
    assert psu_output_state(resources["psu"]) == "ON"  # nothing could switch it off...

    # ...until the next run: it opens the bench in a safe state and recovers the killed run.
    result = station("run", "QUICK", "--serial", "SN-10", cwd=root)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"recovered interrupted run {run_dir.name}: ERROR" in result.stdout
    assert psu_output_state(resources["psu"]) == "OFF"
    record = json.loads((run_dir / "run.json").read_text())
    assert record["outcome"] == "ERROR"
    assert record["outcome_reason"] == "station process ended during phase 'powered'"
    assert [p["name"] for p in record["phases"]] == ["first", "powered"]
