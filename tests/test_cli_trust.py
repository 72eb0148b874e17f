"""The command line keeps its promises at the edges: --version, no command, bad output paths,
a closed stdout, unexpected exceptions and threads a procedure leaves running."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import station
from station.cli import listing
from station.cli.main import main

REPO = Path(__file__).resolve().parents[1]

QUICK_STATION = """\
station: {name: Bench T}
data_dir: runs
procedures:
  T1: {module: t1.py}
"""
QUICK_PROCEDURE = """\
from station import phase, measure

@phase
@measure("v", low=1, high=2)
def check(measurements):
    measurements.v = 1.5
"""


def station_cmd(
    *args: str, cwd: Path, timeout: float = 60, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "STATION_OPERATOR": "tester", "NO_COLOR": "1", **(env or {})}
    full_env.pop("STATION_CONFIG", None)
    return subprocess.run(
        [sys.executable, "-m", "station", *args],
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
    )


@pytest.fixture
def quick(tmp_path: Path) -> Path:
    """A station with one instrument-free procedure that passes in milliseconds."""
    (tmp_path / "station.yaml").write_text(QUICK_STATION)
    (tmp_path / "t1.py").write_text(QUICK_PROCEDURE)
    return tmp_path


def run_dirs(root: Path) -> list[Path]:
    runs = root / "runs"  # .pending, .tofupilot: the data directory's own state
    return sorted(d for d in runs.iterdir() if not d.name.startswith(".")) if runs.is_dir() else []


# -- --version and no command ------------------------------------------------------------------


def test_version_prints_the_version(tmp_path: Path) -> None:
    result = station_cmd("--version", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"station {station.__version__}"


def test_no_command_prints_the_commands_as_a_usage_error(tmp_path: Path) -> None:
    result = station_cmd(cwd=tmp_path)
    assert result.returncode == 2
    assert result.stdout == ""
    for command in ("run", "check", "list", "upload", "runs", "sim"):
        assert f"\n    {command} " in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


# -- --json-out ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("missing/dir/record.json", "does not exist"),
        (".", "is a directory"),
        ("t1.py/record.json", "is not a directory"),
        ("", "the file name is empty"),
    ],
)
def test_a_bad_json_out_path_is_a_usage_error_before_anything_runs(
    quick: Path, target: str, expected: str
) -> None:
    result = station_cmd("run", "T1", "--serial", "SN-1", "--json-out", target, cwd=quick)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("station: --json-out") and expected in line, line
    assert run_dirs(quick) == []  # nothing was tested


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_an_unwritable_json_out_is_a_usage_error_before_anything_runs(quick: Path) -> None:
    locked = quick / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        result = station_cmd(
            "run", "T1", "--serial", "SN-1", "--json-out", "locked/r.json", cwd=quick
        )
    finally:
        locked.chmod(0o700)
    assert result.returncode == 2, result.stderr
    assert "cannot write" in result.stderr and "Traceback" not in result.stderr
    assert run_dirs(quick) == []


def test_json_out_writes_the_record_and_leaves_no_empty_file_on_refusal(quick: Path) -> None:
    result = station_cmd("run", "T1", "--serial", "SN-1", "--json-out", "r.json", cwd=quick)
    assert result.returncode == 0, result.stderr
    assert json.loads((quick / "r.json").read_text())["outcome"] == "PASS"
    # A run refused for another reason does not leave a new empty record file behind.
    result = station_cmd("run", "NOPE", "--serial", "SN-1", "--json-out", "n.json", cwd=quick)
    assert result.returncode == 2 and not (quick / "n.json").exists()


def test_json_out_dash_puts_the_record_alone_on_stdout(quick: Path) -> None:
    result = station_cmd("run", "T1", "--serial", "SN-1", "--json-out", "-", cwd=quick)
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout)  # nothing else on stdout
    assert record["outcome"] == "PASS" and record["serial_number"] == "SN-1"
    assert "== T1 PASS" in result.stderr  # the console went to stderr
    assert not (quick / "-").exists()


# -- a closed stdout -------------------------------------------------------------------------------


def _with_closed_stdout(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> tuple[int, str]:
    """Run `station ARGS` whose stdout reader has gone away (`station ... | head -0`)."""
    full_env = {**os.environ, "STATION_OPERATOR": "tester", "NO_COLOR": "1", **(env or {})}
    full_env.pop("STATION_CONFIG", None)
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before the first line is written
    try:
        process = subprocess.Popen(
            [sys.executable, "-m", "station", *args],
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            env=full_env,
        )
    finally:
        os.close(write_end)
    _, err = process.communicate(timeout=60)
    return process.returncode, err


def test_a_closed_stdout_does_not_turn_a_pass_into_an_error(quick: Path) -> None:
    code, err = _with_closed_stdout("run", "T1", "--serial", "SN-1", "--no-upload", cwd=quick)
    assert code == 0, err
    assert err == "", err
    (run_dir,) = run_dirs(quick)
    assert json.loads((run_dir / "run.json").read_text())["outcome"] == "PASS"


def test_runs_into_a_closed_pipe_is_quiet(quick: Path) -> None:
    for serial in ("SN-1", "SN-2"):
        assert (
            station_cmd("run", "T1", "--serial", serial, "--no-upload", cwd=quick).returncode == 0
        )
    for command in (["runs"], ["list"], ["--help"]):
        code, err = _with_closed_stdout(*command, cwd=quick)
        assert code == 0 and err == "", (command, err)


# -- unexpected exceptions -------------------------------------------------------------------------


def test_an_unknown_simulated_fault_in_the_serial_is_a_usage_error(tmp_path: Path) -> None:
    shutil.copy(REPO / "station.yaml", tmp_path / "station.yaml")
    result = station_cmd(
        "run", "FVT1", "--sim", "--serial", "SN-F:bogus", "--no-upload", cwd=tmp_path
    )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert "unknown fault 'bogus'" in result.stderr


def _boom(args: object) -> int:
    raise RuntimeError("something the code did not expect\nwith a second line")


def test_an_unexpected_exception_is_one_line_and_exit_3(
    quick: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("STATION_DEBUG", raising=False)
    monkeypatch.setattr(listing, "cmd_list", _boom)
    assert main(["list", "--config", str(quick / "station.yaml")]) == 3
    err = capsys.readouterr().err
    assert "Traceback" not in err
    (line,) = err.strip().splitlines()
    assert line.startswith("station: internal error: RuntimeError: something the code")
    assert "STATION_DEBUG=1" in line


def test_station_debug_shows_the_traceback(
    quick: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("STATION_DEBUG", "1")
    monkeypatch.setattr(listing, "cmd_list", _boom)
    assert main(["list", "--config", str(quick / "station.yaml")]) == 3
    err = capsys.readouterr().err
    assert "Traceback" in err and "_boom" in err


# -- threads a procedure leaves running -----------------------------------------------------------

STRAY_THREAD_PROCEDURE = """\
import threading, time
from station import phase

@phase
def starts_a_poller():
    # Explicitly not a daemon (a thread started by the phase's daemon thread would be one).
    threading.Thread(target=time.sleep, args=(3600,), name="rail-poller", daemon=False).start()
"""


def test_a_non_daemon_thread_left_by_a_phase_does_not_hang_the_command(quick: Path) -> None:
    (quick / "t1.py").write_text(STRAY_THREAD_PROCEDURE)
    started = time.monotonic()
    result = station_cmd("run", "T1", "--serial", "SN-1", "--no-upload", cwd=quick, timeout=90)
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    assert "'rail-poller'" in result.stderr and "exiting without it" in result.stderr
    assert "== T1 PASS" in result.stdout  # flushed before the process ended
    assert elapsed < 60  # bounded (the wait is 5 s; generous slack for a loaded machine)
    (run_dir,) = run_dirs(quick)
    assert json.loads((run_dir / "run.json").read_text())["outcome"] == "PASS"


def test_ctrl_c_while_waiting_for_a_stray_thread_exits_at_once(quick: Path) -> None:
    (quick / "t1.py").write_text(STRAY_THREAD_PROCEDURE)
    env = {**os.environ, "STATION_OPERATOR": "tester", "NO_COLOR": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "station", "run", "T1", "--serial", "SN-1", "--no-upload"],
        cwd=quick,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert process.stderr is not None
    try:
        for line in process.stderr:
            if "waiting up to" in line:  # the run is over, the wait has begun
                break
        else:
            pytest.fail("the command did not say it waits for the thread")
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, err
    assert "Traceback" not in err
    assert "== T1 PASS" in out
