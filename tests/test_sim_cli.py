"""`station sim` for a developer: stable ports, a station.yaml fragment to paste, a trace of what
each twin receives, and wire faults that never fired reported instead of silently testing nothing.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml

from drivers.registry import create_driver
from sim import start_bench
from sim.bench import SimulatedClock

REPO = Path(__file__).resolve().parents[1]


def env_for(root: Path) -> dict[str, str]:
    env = {**os.environ, "STATION_OPERATOR": "tester", "NO_COLOR": "1"}
    env["STATION_LOCK_DIR"] = str(root / "locks")
    env.pop("STATION_CONFIG", None)
    return env


def station(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "station", *args],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=60,
        env=env_for(root),
    )


@pytest.fixture
def example(tmp_path: Path) -> Path:
    shutil.copy(REPO / "station.yaml", tmp_path / "station.yaml")
    shutil.copytree(REPO / "procedures", tmp_path / "procedures")
    return tmp_path


def free_ports(count: int) -> int:
    """A base port such that BASE ... BASE+count-1 are free (checked by binding them)."""
    for _ in range(50):
        with contextlib.ExitStack() as stack:
            first = stack.enter_context(socket.socket())
            first.bind(("127.0.0.1", 0))
            base = first.getsockname()[1]
            try:
                for port in range(base + 1, base + count):
                    stack.enter_context(socket.socket()).bind(("127.0.0.1", port))
            except (OSError, OverflowError):
                continue
        return base
    raise RuntimeError(f"no {count} consecutive free ports")


def configured(root: Path) -> dict[str, dict]:
    return yaml.safe_load((root / "station.yaml").read_text())["instruments"]


@contextmanager
def served(root: Path, *args: str) -> Iterator[tuple[subprocess.Popen, list[str]]]:
    """`station sim ARGS` in its own process; yields it and its startup lines (to Ctrl-C)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "station", "sim", *args],
        cwd=root,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env_for(root),
    )
    try:
        lines = []
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line.rstrip("\n"))
            if line.startswith("Ctrl-C"):
                break
        assert lines and lines[-1].startswith("Ctrl-C"), (
            process.stderr.read() if process.stderr else ""
        )
        yield process, lines
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)


def fragment_of(lines: list[str]) -> str:
    start = lines.index("instruments:")
    end = next(i for i in range(start, len(lines)) if lines[i].startswith("Ctrl-C"))
    return "\n".join(lines[start:end]) + "\n"


@pytest.mark.slow
def test_port_base_gives_stable_ports_and_a_fragment_a_station_can_use(example):
    instruments = configured(example)
    assert list(instruments)[:2] == ["dmm", "psu"]
    base = free_ports(len(instruments))
    with served(example, "--port", str(base)) as (_, lines):
        assert f"  dmm          TCPIP::127.0.0.1::{base}::SOCKET" in lines
        assert f"  psu          TCPIP::127.0.0.1::{base + 1}::SOCKET" in lines
        fragment = yaml.safe_load(fragment_of(lines))["instruments"]
        assert list(fragment) == list(instruments)  # station.yaml's order, ports in turn
        for offset, (name, settings) in enumerate(instruments.items()):
            assert fragment[name]["driver"] == settings["driver"]
            assert fragment[name]["resource"] == f"TCPIP::127.0.0.1::{base + offset}::SOCKET"
            assert fragment[name]["timeout_ms"] == settings.get("timeout_ms", 3000)
        # Pasted over `instruments:`, it is a station.yaml that reaches the twins.
        text = (example / "station.yaml").read_text()
        start = text.index("instruments:")
        end = text.index("\nprocedures:")
        (example / "bench.yaml").write_text(text[:start] + fragment_of(lines) + text[end:])
        result = station(example, "check", "--config", "bench.yaml")
        assert "instrument dmm: keysight-34461a at TCPIP::127.0.0.1::" in result.stdout, (
            result.stdout + result.stderr
        )
        assert f"instrument psu: rigol-dp832 at TCPIP::127.0.0.1::{base + 1}::SOCKET" in (
            result.stdout
        )
    # Restarted on the same base: the same ports (nothing to edit in bench.yaml).
    with served(example, "--port", str(base)) as (_, lines):
        assert f"  dmm          TCPIP::127.0.0.1::{base}::SOCKET" in lines


@pytest.mark.slow
def test_port_base_out_of_range_or_in_use_is_a_usage_error(example):
    last = 65535 + len(configured(example)) - 1
    result = station(example, "sim", "--port", "65535")
    assert result.returncode == 2
    assert f"--port 65535: the twins need ports 65535...{last}, which must lie" in result.stderr
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = station(example, "sim", "--port", str(port))
    assert result.returncode == 2, result.stdout + result.stderr
    assert "cannot serve the twins" in result.stderr


@pytest.mark.slow
def test_trace_prints_what_each_twin_receives_and_unfired_faults_are_reported(example):
    args = ("--trace", "--wire-fault", "dmm:no-reply:NEVER:SENT", "--wire-fault", "psu:error")
    with served(example, *args) as (process, lines):
        resource = next(line.split()[1] for line in lines if line.startswith("  dmm "))
        psu_resource = next(line.split()[1] for line in lines if line.startswith("  psu "))
        dmm = create_driver("keysight-34461a", resource, name="dmm", lock=False)
        dmm.connect()
        dmm.measure_dc_voltage(range=10, nplc=1)
        dmm.close()
        psu = create_driver("rigol-dp832", psu_resource, name="psu", lock=False)
        psu.transport.open()
        psu.transport.query("*IDN?")  # the message after which the error is queued
        psu.close()
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=10)
    traced = [line.split(None, 1)[1] for line in out.splitlines() if " <- " in line]
    assert traced[:4] == [
        "dmm          <- *IDN?",
        "dmm          <- CONF:VOLT:DC 10",
        "dmm          <- SENS:VOLT:DC:NPLC 1",
        "dmm          <- SYST:ERR?",
    ]
    assert "psu          <- *IDN?" in traced
    assert (
        "station: warning: --wire-fault dmm:no-reply:NEVER:SENT never fired: no command "
        "matched it, so it tested nothing"
    ) in err
    assert "psu:error never fired" not in err  # it acted on *IDN?


@pytest.mark.slow
def test_check_reports_a_wire_fault_that_never_fired(example):
    result = station(example, "check", "--sim", "--wire-fault", "dmm:garbage:MEAS:CURR")
    assert "--wire-fault dmm:garbage:MEAS:CURR never fired" in result.stderr, result.stderr
    result = station(example, "check", "--sim", "--wire-fault", "dmm:no-reply:IDN")
    assert "never fired" not in result.stderr


def test_unfired_faults_of_every_kind_are_told_apart_from_those_that_acted():
    with start_bench(
        {"dmm": "keysight-34461a", "psu": "korad-ka3005p"}, clock=SimulatedClock()
    ) as bench:
        for spec in ("dmm:slow:0.01:READ", "dmm:drop:NOPE", "dmm:refuse", "psu:garbage:VSET2"):
            bench.set_wire_fault(spec)
        assert bench.unfired_faults() == [
            "dmm:slow:0.01:READ",
            "dmm:drop:NOPE",
            "dmm:refuse",
            "psu:garbage:VSET2",
        ]
        dmm = create_driver("keysight-34461a", bench.resources["dmm"], name="dmm", lock=False)
        with pytest.raises(Exception, match=r"refuse|closed"):
            dmm.connect()  # refused: that fault fired
        dmm.close()
        assert bench.unfired_faults() == [
            "dmm:slow:0.01:READ",
            "dmm:drop:NOPE",
            "psu:garbage:VSET2",
        ]
        bench.twins["dmm"].server.faults.refuse = False
        dmm = create_driver("keysight-34461a", bench.resources["dmm"], name="dmm", lock=False)
        dmm.connect()
        dmm.measure_dc_voltage(range=10, nplc=1)  # READ? is late: slow fired
        dmm.close()
        assert bench.unfired_faults() == ["dmm:drop:NOPE", "psu:garbage:VSET2"]


def test_trace_callback_and_port_base_of_start_bench():
    base = free_ports(2)
    seen: list[tuple[str, str]] = []
    with start_bench(
        {"dmm": "keysight-34461a", "psu": "korad-ka3005p"},
        clock=SimulatedClock(),
        port_base=base,
        trace=lambda name, message: seen.append((name, message)),
    ) as bench:
        assert bench.resources["dmm"] == f"TCPIP::127.0.0.1::{base}::SOCKET"
        assert bench.resources["psu"].startswith("/dev/")  # a pty: its port number unused
        psu = create_driver("korad-ka3005p", bench.resources["psu"], name="psu", lock=False)
        psu.connect()
        psu.close()
    assert ("psu", "*IDN?") in seen
