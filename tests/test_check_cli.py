"""`station check` and `station sim --wire-fault`, run as the operator runs them."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def env_for(tmp_path: Path) -> dict[str, str]:
    env = {**os.environ, "STATION_OPERATOR": "tester", "NO_COLOR": "1"}
    env["STATION_LOCK_DIR"] = str(tmp_path / "locks")
    env.pop("STATION_CONFIG", None)
    return env


def station(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "station", *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        env=env_for(tmp_path),
    )


@pytest.fixture
def example(tmp_path: Path) -> Path:
    shutil.copy(REPO / "station.yaml", tmp_path / "station.yaml")
    shutil.copytree(REPO / "procedures", tmp_path / "procedures")
    return tmp_path


def test_check_prints_identity_model_and_round_trip(example):
    result = station(example, "check", "--sim")
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(
        r"instrument dmm: keysight-34461a at TCPIP::127\.0\.0\.1::\d+::SOCKET: "
        r"Keysight Technologies,34461A,\S+ \(model Keysight 34461A OK; open [\d.]+ ms, "
        r"round trip [\d.]+ ms\)",
        result.stdout,
    ), result.stdout


@pytest.mark.parametrize(
    ("fault", "message", "hint"),
    [
        ("dmm:no-reply:IDN", r"no reply within 1000 ms to '\*IDN\?'", r"check read/write term"),
        ("dmm:refuse", "refuses connections", "is the instrument on and the port right"),
        ("dmm:garbage:IDN", "not ASCII text", "the reply is not text"),
    ],
)
def test_check_reports_each_failure_with_a_hint(example, fault, message, hint):
    result = station(example, "check", "--sim", "--wire-fault", fault)
    assert result.returncode == 3, result.stdout + result.stderr
    assert re.search(rf"instrument dmm: FAILED: dmm \(.*{message}", result.stdout), result.stdout
    assert re.search(rf"  hint: .*{hint}", result.stdout), result.stdout
    assert "instrument psu: rigol-dp832 at" in result.stdout  # the others are still checked


@pytest.fixture
def served(example, tmp_path):
    """`station sim` in its own process; yields a bench.yaml pointing at its twins."""
    process = subprocess.Popen(
        [sys.executable, "-m", "station", "sim", "--config", str(example / "station.yaml")],
        cwd=example,
        stdout=subprocess.PIPE,
        text=True,
        env=env_for(tmp_path),
    )
    try:
        resources = {}
        for line in process.stdout:
            if line.startswith("Ctrl-C"):
                break
            match = re.match(r"\s+(\w+)\s+(\S+::SOCKET)$", line)
            if match:
                resources[match[1]] = match[2]
        config = example / "bench.yaml"
        text = (example / "station.yaml").read_text()
        text = re.sub(r'resource: "USB0::0x2A8D[^"]*"', f'resource: "{resources["dmm"]}"', text)
        text = re.sub(r'resource: "USB0::0x1AB1[^"]*"', f'resource: "{resources["psu"]}"', text)
        config.write_text(text)
        yield config, resources
    finally:
        process.kill()
        process.wait(5)


def test_check_names_the_driver_line_for_a_wrong_model(example, served):
    config, _ = served
    config.write_text(config.read_text().replace("driver: rigol-dp832", "driver: keysight-34461a"))
    result = station(example, "check", "--config", str(config))
    assert result.returncode == 3, result.stdout + result.stderr
    line = [n for n, text in enumerate(config.read_text().splitlines(), 1) if "driver:" in text][1]
    expected = (
        r"instrument psu: FAILED: .*expected Keysight 34461A, got 'RIGOL TECHNOLOGIES,DP832,.*\n"
        rf"  hint: fix the driver in bench\.yaml line {line} \(the reply looks like rigol-dp832\)"
    )
    assert re.search(expected, result.stdout), result.stdout


def test_check_names_the_pid_holding_an_instrument(example, served, tmp_path):
    config, resources = served
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, resources["dmm"]],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env_for(tmp_path),
    )
    try:
        assert holder.stdout.readline().strip() == "holding"
        result = station(example, "check", "--config", str(config))
        assert result.returncode == 3, result.stdout + result.stderr
        assert f"is in use by pid {holder.pid}" in result.stdout
        assert f"hint: held by pid {holder.pid}" in result.stdout
        assert "instrument psu: rigol-dp832 at" in result.stdout
    finally:
        holder.kill()
        holder.wait(5)


def test_sim_applies_wire_faults(example, tmp_path):
    process = subprocess.Popen(
        [sys.executable, "-m", "station", "sim", "--config", str(example / "station.yaml"),
         "--wire-fault", "dmm:error:-222,\"Data out of range\""],
        cwd=example, stdout=subprocess.PIPE, text=True, env=env_for(tmp_path),
    )  # fmt: skip
    try:
        resource = next(
            line.split()[1] for line in process.stdout if line.strip().startswith("dmm ")
        )
        from drivers import InstrumentError, create_driver

        dmm = create_driver("keysight-34461a", resource, name="dmm", lock=False)
        dmm.connect()  # *IDN? is the message after which the error is queued
        with pytest.raises(InstrumentError, match='-222,"Data out of range"'):
            dmm.check_errors()
        dmm.check_errors()
        dmm.close()
    finally:
        process.kill()
        process.wait(5)


HOLDER = textwrap.dedent(
    """
    import sys
    from drivers import create_driver
    dmm = create_driver("keysight-34461a", sys.argv[1], name="dmm")
    dmm.connect()
    print("holding", flush=True)
    sys.stdin.readline()
    """
)


def test_bad_wire_fault_is_a_usage_error(example):
    result = station(example, "check", "--sim", "--wire-fault", "dmm:melt")
    assert result.returncode == 2
    assert "INSTRUMENT:KIND[:PATTERN]" in result.stderr
    result = station(example, "check", "--wire-fault", "dmm:drop")
    assert result.returncode == 2 and "needs --sim" in result.stderr
