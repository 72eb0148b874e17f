"""A bench made only of user classes, run by `station run` with and without --sim.

The bench (tests/user_bench/, copied beside each test's station.yaml as a user's own modules
are): a plain relay board class talking pyserial, a `drivers.Instrument` subclass for a SCPI
fixture controller with its twin, and a `serial-line` DUT console. Without --sim the "real"
instruments are served by the test itself (the relay twin and the console on ptys, the fixture
twin on loopback TCP), so every byte goes through pyserial and pyvisa-py as on a real bench,
and the twins' state after the run says what the station did: safe state (every relay open,
vacuum and clamp off, read back) and close (`BYE`, `SYST:LOC`) on PASS, on an error, on a
timeout and on Ctrl-C.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from user_bench.fixture import FixtureTwin
from user_bench.relay import RelayTwin

from sim.pty_server import PtyServer
from sim.server import TwinServer
from sim.twins.generic import ScriptedConsole

USER_BENCH = Path(__file__).parent / "user_bench"
CONSOLE_REPLIES = {"version": "fw 1.2.3", "selftest": "SELFTEST PASS"}
PLACEHOLDERS = {
    "relay": "/dev/ttyUSB0",
    "fixture": "TCPIP::192.168.1.20::5025::SOCKET",
    "dut_console": "/dev/ttyUSB1",
}


def write_station(root: Path, resources: dict[str, str], *, console_sim: str = "") -> Path:
    """station.yaml of the user bench, with these resources; the bench's modules beside it."""
    if not (root / "user_bench").exists():
        shutil.copytree(USER_BENCH, root / "user_bench", ignore=shutil.ignore_patterns("__py*"))
    replies = ", ".join(f'{key}: "{value}"' for key, value in CONSOLE_REPLIES.items())
    path = root / "station.yaml"
    path.write_text(
        "station: {name: User bench}\n"
        "instruments:\n"
        "  relay:\n"
        "    driver: user_bench.relay:RelayBoard\n"
        f"    resource: {resources['relay']}\n"
        "    config: {channels: 4}\n"
        "    sim: user_bench.relay:SimRelayBoard\n"
        "  fixture:\n"
        "    driver: user_bench.fixture:FixtureController\n"
        f'    resource: "{resources["fixture"]}"\n'
        "    config: {settle_s: 0}\n"
        "    sim: user_bench.fixture:FixtureTwin\n"
        "    sim_config: {temperature_c: 24.0}\n"
        "  dut_console:\n"
        "    driver: serial-line\n"
        f"    resource: {resources['dut_console']}\n"
        f"{console_sim}"
        "    sim_config:\n"
        f"      replies: {{{replies}}}\n"
        "procedures:\n"
        "  ICT: {module: user_bench.ict}\n",
        encoding="utf-8",
    )
    return path


def station_env(root: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("TOFUPILOT_API_KEY", "STATION_CONFIG")}
    env["STATION_LOCK_DIR"] = str(root / "locks")
    env["NO_COLOR"] = "1"
    return env


def station(root: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "station", *args, "--config", str(root / "station.yaml")],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        env=station_env(root),
    )


def the_record(root: Path) -> dict:
    (path,) = (root / "runs").glob("*/run.json")
    record = json.loads(path.read_text(encoding="utf-8"))
    record["run_dir"] = path.parent
    return record


@dataclass
class RealBench:
    """The "real" instruments of the user bench, served by the test."""

    relay: RelayTwin
    fixture: FixtureTwin
    console: ScriptedConsole
    fixture_server: TwinServer
    resources: dict[str, str]


@pytest.fixture
def real_bench() -> Iterator[RealBench]:
    relay, fixture = RelayTwin(), FixtureTwin()
    console = ScriptedConsole(replies=CONSOLE_REPLIES, prompt="> ")
    servers = [PtyServer(relay).start(), TwinServer(fixture).start(), PtyServer(console).start()]
    try:
        yield RealBench(
            relay,
            fixture,
            console,
            servers[1],  # type: ignore[arg-type]
            {
                "relay": servers[0].resource,
                "fixture": servers[1].resource,
                "dut_console": servers[2].resource,
            },
        )
    finally:
        for server in servers:
            server.stop()


def assert_left_safe_and_closed(bench: RealBench) -> None:
    """What the twins saw: the framework's safe state (read back) after the phases, then
    each instrument's own close()."""
    assert not any(bench.relay.relays.values()), bench.relay.relays
    assert "ALL OFF" in bench.relay.history, bench.relay.history
    assert bench.relay.history[-1] == "BYE", bench.relay.history[-6:]
    last_safe = max(i for i, c in enumerate(bench.relay.history) if c == "ALL OFF")
    # Safe state reads every relay back after switching them off.
    assert [c for c in bench.relay.history[last_safe:] if c.startswith("REL?")] == [
        f"REL? {n}" for n in range(1, 5)
    ]
    assert not bench.fixture.vacuum and not bench.fixture.clamped
    history = bench.fixture.history
    assert history[-1] == "SYST:LOC", history[-6:]
    assert history[-5:-1] == ["VAC OFF", "CLAMP OFF", "VAC?", "CLAMP?"], history[-6:]


@pytest.mark.slow
def test_user_bench_passes_on_real_instruments_with_identities_and_transcript(tmp_path, real_bench):
    write_station(tmp_path, real_bench.resources)
    result = station(tmp_path, "run", "ICT", "--serial", "SN-1", "--no-upload")
    assert result.returncode == 0, result.stdout + result.stderr
    record = the_record(tmp_path)
    assert record["outcome"] == "PASS"
    assert record["simulated"] is False
    instruments = {item["name"]: item for item in record["instruments"]}
    assert instruments["relay"] == {
        "name": "relay",
        "driver": "user_bench.relay:RelayBoard",
        "resource": real_bench.resources["relay"],
        "identity": "ACME,RB-8,RB8-0042,2.1",
        "manufacturer": "ACME",
        "model": "RB-8",
        "serial_number": "RB8-0042",
        "firmware": "2.1",
    }
    fixture = instruments["fixture"]
    assert (fixture["driver"], fixture["resource"]) == (
        "user_bench.fixture:FixtureController",
        real_bench.resources["fixture"],
    )
    assert (fixture["model"], fixture["serial_number"], fixture["firmware"]) == (
        "FX-2",
        "FX2-0007",
        "1.4",
    )
    assert instruments["dut_console"]["driver"] == "serial-line"
    # The console transcript is attached to the run, with both directions.
    (attachment,) = [a for a in record["attachments"] if a["name"].endswith("console.txt")]
    transcript = (record["run_dir"] / attachment["path"]).read_text(encoding="utf-8")
    assert "> version" in transcript and "< fw 1.2.3" in transcript, transcript
    assert "< SELFTEST PASS" in transcript
    measured = {m["name"]: m["measured_value"] for p in record["phases"] for m in p["measurements"]}
    assert measured == {"firmware": "1.2.3", "selftest": "PASS", "fixture_temp": 23.5}
    assert_left_safe_and_closed(real_bench)


@pytest.mark.slow
def test_user_bench_passes_under_sim_with_the_sim_classes(tmp_path):
    write_station(tmp_path, PLACEHOLDERS)
    result = station(tmp_path, "run", "ICT", "--sim", "--serial", "SN-2", "--no-upload")
    assert result.returncode == 0, result.stdout + result.stderr
    record = the_record(tmp_path)
    assert record["outcome"] == "PASS"
    instruments = {item["name"]: item for item in record["instruments"]}
    # The plain relay was replaced in-process by its sim class; the fixture's own driver talked
    # to its twin on loopback; the console to the scripted console on a pty.
    assert instruments["relay"]["resource"] == "sim-class:user_bench.relay:SimRelayBoard"
    assert instruments["relay"]["serial_number"] == "SIM-0001"
    assert instruments["fixture"]["resource"].startswith("TCPIP::127.0.0.1::")
    assert instruments["fixture"]["identity"] == "ACME,FX-2,FX2-0007,1.4"
    assert instruments["dut_console"]["resource"].startswith("/dev/pts/")
    measured = {m["name"]: m["measured_value"] for p in record["phases"] for m in p["measurements"]}
    assert measured["fixture_temp"] == 24.0  # sim_config reached the twin


@pytest.mark.slow
@pytest.mark.parametrize(
    ("serial", "outcome", "code"), [("SN-3-ERR", "ERROR", 3), ("SN-4-HANG", "TIMEOUT", 4)]
)
def test_user_bench_is_left_safe_and_closed_after_an_error_or_a_timeout(
    tmp_path, real_bench, serial, outcome, code
):
    if serial.endswith("-HANG"):
        real_bench.fixture_server.faults.no_reply_to = "MEAS:TEMP"
    write_station(tmp_path, real_bench.resources)
    started = time.monotonic()
    result = station(tmp_path, "run", "ICT", "--serial", serial, "--no-upload")
    assert result.returncode == code, result.stdout + result.stderr
    record = the_record(tmp_path)
    assert record["outcome"] == outcome, record["outcome_reason"]
    if outcome == "TIMEOUT":
        # The phase (2 s) was stopped before the fixture's own timeout (3 s) ran out: its
        # session was interrupted, and safe state reconnected to it.
        assert "'MEAS:TEMP?' in progress" in record["outcome_reason"], record["outcome_reason"]
        assert time.monotonic() - started < 30
    # Before safe state, the phase had the vacuum on and two relays closed.
    assert "VAC ON" in real_bench.fixture.history and "REL 2 ON" in real_bench.relay.history
    assert_left_safe_and_closed(real_bench)


@pytest.mark.slow
def test_user_bench_is_left_safe_and_closed_after_ctrl_c(tmp_path, real_bench):
    write_station(tmp_path, real_bench.resources)
    process = subprocess.Popen(
        [sys.executable, "-m", "station", "run", "ICT", "--serial", "SN-5-WAIT", "--no-upload"],
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=station_env(tmp_path),
    )
    try:
        deadline = time.monotonic() + 60
        # The phase is waiting once the relay board saw its relays closed.
        while "REL 2 ON" not in real_bench.relay.history:
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, real_bench.relay.history
            time.sleep(0.02)
        time.sleep(0.2)
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 130, out + err
    record = the_record(tmp_path)
    assert record["outcome"] == "ABORTED"
    assert_left_safe_and_closed(real_bench)


@pytest.mark.slow
def test_check_opens_every_user_instrument_and_shows_its_identity(tmp_path, real_bench):
    write_station(tmp_path, real_bench.resources)
    result = station(tmp_path, "check")
    assert "instrument relay: user_bench.relay:RelayBoard" in result.stdout, result.stdout
    assert "ACME,RB-8,RB8-0042,2.1" in result.stdout
    assert "ACME,FX-2,FX2-0007,1.4" in result.stdout
    assert "instrument dut_console: serial-line" in result.stdout
    assert_left_safe_and_closed(real_bench)


@pytest.mark.slow
def test_an_instrument_without_a_simulation_is_refused_under_sim_naming_it(tmp_path):
    path = write_station(tmp_path, PLACEHOLDERS)
    text = path.read_text(encoding="utf-8")
    path.write_text(text.replace("    sim: user_bench.relay:SimRelayBoard\n", ""), "utf-8")
    result = station(tmp_path, "run", "ICT", "--sim", "--serial", "SN-6", "--no-upload")
    assert result.returncode == 2, result.stdout + result.stderr
    assert "station.yaml:3: instruments.relay:" in result.stderr, result.stderr
    assert "has no simulation" in result.stderr and "never connects to a real" in result.stderr
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").glob("*/run.json"))


@pytest.mark.slow
def test_identities_reach_tofupilot_in_the_run_metadata(tmp_path, real_bench):
    from sim.tofupilot import TofuPilotEmulator

    with TofuPilotEmulator(port=0) as emulator:
        emulator.link("ICT")
        path = write_station(tmp_path, real_bench.resources)
        text = path.read_text(encoding="utf-8")
        path.write_text(text + f"tofupilot: {{url: '{emulator.url}'}}\n", encoding="utf-8")
        env = {**station_env(tmp_path), "TOFUPILOT_API_KEY": emulator.station_key}
        result = subprocess.run(
            [sys.executable, "-m", "station", "run", "ICT", "--serial", "SN-7"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
            stdin=subprocess.DEVNULL,
            env=env,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        (stored,) = emulator.runs.values()
    metadata = stored.body["metadata"]
    assert "ACME RB-8 SN RB8-0042" in metadata["instrument.relay"], metadata
    assert "ACME FX-2 SN FX2-0007 fw 1.4" in metadata["instrument.fixture"], metadata
    assert real_bench.resources["fixture"] in metadata["instrument.fixture"]
