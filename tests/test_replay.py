"""Record once, replay in CI: twins that answer from a run's I/O trace (`sim.replay`).

Matching rules are tested on hand-written recordings through real sockets and ptys; the whole
loop (record FVT1 with `--sim --trace-io`, replay it with `--sim-replay`, then an edited
procedure) runs the `station` command as the operator does.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from drivers import InstrumentError
from drivers.registry import create_driver
from drivers.transport import trace
from sim import start_bench
from sim.bench import SimulatedClock
from sim.replay import ReplayError, load_recording, start_replay

REPO = Path(__file__).resolve().parents[1]
T0 = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)


def write_recording(
    run_dir: Path,
    events: list[tuple[str, str, str]],
    *,
    serial: dict[str, bool] | None = None,
    phases: list[tuple[str, int, int]] = (),
) -> Path:
    """A run directory with a trace of `events` (instrument, "send"/"recv"/"b64"/"error", text)
    as `IoTrace` writes them: a command and what came back on one line. Line N is at T0 + N s;
    the run.json's `phases` (name, first second, last second) give the phase times."""
    run_dir.mkdir(parents=True, exist_ok=True)
    lines: list[dict] = []
    opened: set[str] = set()

    def line(name: str, **fields) -> dict:
        at = (T0 + timedelta(seconds=len(lines))).isoformat().replace("+00:00", "Z")
        item = {"seq": len(lines), "t": float(len(lines)), "at": at, "ms": 0.1}
        item.update(instrument=name, resource="r", **fields)
        lines.append(item)
        return item

    pending: dict | None = None
    for name, direction, text in events:
        if name not in opened:
            opened.add(name)
            raw = (serial or {}).get(name, False)
            termination = "" if raw else "\n"
            line(name, op="open", transport="SerialTransport" if raw else "VisaTransport",
                 read_termination=termination, write_termination=termination)  # fmt: skip
        same = pending is not None and pending["instrument"] == name
        if direction == "send":
            pending = line(name, op="write", send=text)
        elif direction in ("recv", "b64"):
            key = "recv" if direction == "recv" else "recv_b64"
            if same:
                pending.update(op="query", **{key: text})
            else:
                line(name, op="read", **{key: text})
            pending = None
        else:
            if same:
                pending.update(op="error", kind="timeout", error=text)
            else:
                line(name, op="error", kind="timeout", error=text)
            pending = None
    (run_dir / "io-trace.jsonl").write_text("".join(json.dumps(e) + "\n" for e in lines))
    record = {
        "serial_number": "SN-REC",
        "procedure_id": "T1",
        "phases": [
            {
                "name": name,
                "started_at": (T0 + timedelta(seconds=first)).isoformat(),
                "ended_at": (T0 + timedelta(seconds=last)).isoformat(),
            }
            for name, first, last in phases
        ],
    }
    (run_dir / "run.json").write_text(json.dumps(record))
    return run_dir


class Client:
    """A raw socket client of a TCP replay twin."""

    def __init__(self, resource: str) -> None:
        port = int(resource.split("::")[2])
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.file = self.sock.makefile("rb")

    def ask(self, command: str) -> str:
        self.sock.sendall(command.encode() + b"\n")
        line = self.file.readline()
        if not line:
            raise ConnectionError("the twin closed the connection")
        return line.decode().rstrip("\n")

    def tell(self, command: str) -> None:
        self.sock.sendall(command.encode() + b"\n")

    def close(self) -> None:
        self.file.close()
        self.sock.close()


DMM = [
    ("dmm", "send", "*IDN?"),
    ("dmm", "recv", "ACME,DMM-1,42,1.0"),
    ("dmm", "send", "CONF:VOLT:DC 10"),
    ("dmm", "send", "READ?"),
    ("dmm", "recv", "+3.300E+00"),
    ("dmm", "send", "READ?"),
    ("dmm", "recv", "+3.310E+00"),
    ("dmm", "send", "SYST:ERR?"),
    ("dmm", "recv", '+0,"No error"'),
]


def test_replies_come_in_recorded_order_and_repeated_queries_are_consumed_in_turn(tmp_path):
    run_dir = write_recording(tmp_path / "run", DMM)
    with start_replay(run_dir) as bench:
        client = Client(bench.resources["dmm"])
        assert client.ask("*IDN?") == "ACME,DMM-1,42,1.0"
        client.tell("CONF:VOLT:DC 10")
        assert [client.ask("READ?"), client.ask("READ?")] == ["+3.300E+00", "+3.310E+00"]
        assert client.ask("SYST:ERR?") == '+0,"No error"'
        client.close()
        assert bench.divergences() == [] and bench.unplayed() == {}


def test_a_departing_command_names_the_instrument_its_number_phase_expected_and_sent(tmp_path):
    run_dir = write_recording(tmp_path / "run", DMM, phases=[("identify", 0, 1), ("rail", 2, 8)])
    with start_replay(run_dir) as bench:
        client = Client(bench.resources["dmm"])
        assert client.ask("*IDN?").startswith("ACME")
        client.tell("CONF:VOLT:DC 100")
        with pytest.raises(ConnectionError):  # the link is dropped at once
            client.ask("READ?")
        client.close()
        (message,) = bench.divergences()
    assert message == (
        "replay of run diverged at dmm command #2 of 5 (recorded in phase 'rail'): "
        "expected 'CONF:VOLT:DC 10', sent 'CONF:VOLT:DC 100'"
    )


def test_a_command_past_the_end_of_the_recording_is_a_divergence(tmp_path):
    run_dir = write_recording(tmp_path / "run", DMM[:2])
    with start_replay(run_dir) as bench:
        client = Client(bench.resources["dmm"])
        client.ask("*IDN?")
        with pytest.raises(ConnectionError):
            client.ask("*IDN?")
        client.close()
        assert bench.divergences() == [
            "replay of run diverged at dmm: sent '*IDN?' after the last recorded command "
            "(#1, '*IDN?')"
        ]


def test_after_a_divergence_later_commands_are_answered_from_the_recording(tmp_path):
    """So teardown and the safe state still run; the divergence is reported once."""
    run_dir = write_recording(tmp_path / "run", DMM)
    with start_replay(run_dir) as bench:
        twin = bench.replay_twins["dmm"]
        assert twin.feed(b"*IDN?\n") == (b"ACME,DMM-1,42,1.0\n", False)
        assert twin.feed(b"READ? 5\n") == (b"", True)  # diverged: drop the link
        assert twin.feed(b"SYST:ERR?\n") == (b'+0,"No error"\n', False)  # the next identical
        assert twin.feed(b"*IDN?\n") == (b"ACME,DMM-1,42,1.0\n", False)  # or an earlier one
        assert twin.feed(b"FOO\n") == (b"", True)  # nothing like it: dropped, not reported
        assert twin.take_divergence() is not None and twin.take_divergence() is None
        assert twin.take_divergence(again=True) == bench.divergences()[0]


def test_a_recorded_timeout_gets_no_reply_and_a_recorded_binary_reply_its_bytes(tmp_path):
    events = [
        ("dmm", "send", "READ?"),
        ("dmm", "error", "no reply within 1000 ms to 'READ?'"),
        ("dmm", "send", "DATA?"),
        ("dmm", "b64", "AAEC/w=="),
    ]
    run_dir = write_recording(tmp_path / "run", events)
    with start_replay(run_dir) as bench:
        twin = bench.replay_twins["dmm"]
        assert twin.feed(b"READ?\n") == (b"", False)
        assert twin.feed(b"DATA?\n") == (b"\x00\x01\x02\xff", False)


def test_a_command_without_terminator_waits_for_its_last_byte_then_is_judged_when_idle(tmp_path):
    events = [("psu", "send", "VSET1:5.00"), ("psu", "send", "VSET1?"), ("psu", "recv", "05.00")]
    run_dir = write_recording(tmp_path / "run", events, serial={"psu": True})
    with start_replay(run_dir) as bench:
        twin = bench.replay_twins["psu"]
        assert bench.resources["psu"].startswith("/dev/")  # served on a pty
        assert twin.feed(b"VSET1:5.0") == (b"", False)  # the start of what is expected
        assert bench.divergences() == []
        assert twin.feed(b"0VSET1?") == (b"05.00", False)
    with start_replay(run_dir) as bench:
        twin = bench.replay_twins["psu"]
        assert twin.feed(b"VSET1:5") == (b"", False)
        twin.feed(b"", idle=True)  # the line went quiet: "VSET1:5" is all there is
        assert bench.divergences() == [
            "replay of run diverged at psu command #1 of 2: expected 'VSET1:5.00', sent 'VSET1:5'"
        ]


def test_a_read_with_no_command_waits_until_the_other_instruments_caught_up(tmp_path):
    """A DUT console's banner comes after the supply switched the board on, not before."""
    events = [
        ("psu", "send", "OUTP ON"),
        ("console", "recv", "boot ok"),
        ("console", "send", "version"),
        ("console", "recv", "fw 1.2"),
    ]
    run_dir = write_recording(tmp_path / "run", events)
    with start_replay(run_dir) as bench:
        console, psu = bench.replay_twins["console"], bench.replay_twins["psu"]
        assert console.feed(b"") == (b"", False)  # the supply is not on yet: held
        assert console.waiting()
        assert psu.feed(b"OUTP ON\n") == (b"", False)
        assert console.feed(b"") == (b"boot ok\n", False)
        assert console.feed(b"version\n") == (b"fw 1.2\n", False)


def test_an_instrument_with_no_recorded_io_is_a_divergence_not_a_real_connection(tmp_path):
    run_dir = write_recording(tmp_path / "run", DMM)
    with start_replay(run_dir, {"dmm": False, "load": False}) as bench:
        assert set(bench.resources) == {"dmm", "load"}
        assert bench.resources["load"].startswith("TCPIP::127.0.0.1::")
        bench.replay_twins["load"].feed(b"*IDN?\n")
        assert bench.divergences() == [
            "replay of run diverged at load: the recording has no I/O for 'load'; sent '*IDN?'"
        ]


def test_a_directory_without_a_trace_is_refused_with_the_reason(tmp_path):
    with pytest.raises(ReplayError, match="no such run directory"):
        load_recording(tmp_path / "missing")
    (tmp_path / "run").mkdir()
    with pytest.raises(ReplayError, match=r"has no io-trace\.jsonl: record the run with"):
        load_recording(tmp_path / "run")
    (tmp_path / "run" / "io-trace.jsonl").write_text("{not json}\n")
    with pytest.raises(ReplayError, match="line 1 is not a trace event"):
        load_recording(tmp_path / "run")


def test_a_trace_cut_short_by_a_kill_is_read_up_to_its_last_whole_line(tmp_path):
    run_dir = write_recording(tmp_path / "run", DMM)
    path = run_dir / "io-trace.jsonl"
    path.write_text(path.read_text() + '{"seq": 99, "instrument": "dm')
    assert load_recording(run_dir).scripts["dmm"].commands == 5


# -- recorded and replayed through the drivers -------------------------------------------------


def drive_korad(psu) -> tuple:
    psu.connect()
    psu.set_voltage(1, 5.0)
    psu.set_current_limit(1, 0.25)
    psu.enable(1)
    values = (psu.identity, psu.measure_voltage(1), psu.measure_current(1), psu.regulation(1))
    psu.safe_state()
    return values


def test_a_serial_instrument_recorded_on_a_pty_replays_on_a_pty(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    with start_bench({"psu": "korad-ka3005p"}, clock=SimulatedClock()) as bench:
        bench.insert_dut("SN-1")
        psu = create_driver("korad-ka3005p", bench.resources["psu"], name="psu", lock=False)
        with trace.IoTrace(run_dir / "io-trace.jsonl") as io, trace.installed(io):
            recorded = drive_korad(psu)
        psu.close()
    with start_replay(run_dir) as replay, trace.installed(trace.PeerCheck(replay)):
        psu = create_driver("korad-ka3005p", replay.resources["psu"], name="psu", lock=False)
        assert drive_korad(psu) == recorded
        psu.close()
        assert replay.divergences() == [] and replay.unplayed() == {}


def test_the_write_that_diverges_raises_in_its_own_call(tmp_path):
    """A write needs no reply, yet the divergence is the write's error, not the next call's."""
    run_dir = write_recording(tmp_path / "run", DMM)
    with start_replay(run_dir) as replay, trace.installed(trace.PeerCheck(replay)):
        dmm = create_driver("keysight-34461a", replay.resources["dmm"], name="dmm", lock=False)
        assert dmm.transport.query("*IDN?") == "ACME,DMM-1,42,1.0"
        with pytest.raises(InstrumentError) as caught:
            dmm.transport.write("CONF:VOLT:DC 100")
        assert caught.value.kind == trace.KIND_DIVERGED
        assert caught.value.command == "CONF:VOLT:DC 100"
        assert "expected 'CONF:VOLT:DC 10', sent 'CONF:VOLT:DC 100'" in str(caught.value)
        # A later failure on that instrument (the link was dropped) says why it happened.
        with pytest.raises(InstrumentError, match="expected 'CONF:VOLT:DC 10'"):
            dmm.transport.query("READ?")
        dmm.close()


# -- the station command -----------------------------------------------------------------------


def station(*args: str, cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "station", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=station_env(cwd),
    )


def station_env(cwd: Path) -> dict[str, str]:
    env = {**os.environ, "STATION_OPERATOR": "tester", "NO_COLOR": "1"}
    env["STATION_LOCK_DIR"] = str(cwd / "locks")
    env.pop("STATION_CONFIG", None)
    return env


def run_dirs(root: Path) -> list[Path]:
    return sorted(p for p in (root / "runs").iterdir() if p.is_dir() and p.name[0] != ".")


def measurements(record: dict) -> list[tuple[str, str, float]]:
    return [
        (phase["name"], m["name"], m["measured_value"])
        for phase in record["phases"]
        for m in phase["measurements"]
    ]


@pytest.fixture
def recorded(tmp_path: Path) -> tuple[Path, Path]:
    """FVT1 recorded with --trace-io on the simulated bench: (station dir, run dir)."""
    shutil.copy(REPO / "station.yaml", tmp_path / "station.yaml")
    shutil.copytree(REPO / "procedures", tmp_path / "procedures")
    result = station(
        "run", "FVT1", "--sim", "--trace-io", "--serial", "SN-7", "--no-upload", cwd=tmp_path
    )
    assert result.returncode == 0, result.stdout + result.stderr
    (run_dir,) = run_dirs(tmp_path)
    return tmp_path, run_dir


@pytest.mark.slow
def test_a_recorded_run_replays_to_the_same_outcome_and_measurements(recorded):
    root, run_dir = recorded
    original = json.loads((run_dir / "run.json").read_text())
    result = station(
        "run", "FVT1", "--sim-replay", str(run_dir), "--no-upload", "--json-out", "-", cwd=root
    )
    assert result.returncode == 0, result.stdout + result.stderr
    replayed = json.loads(result.stdout)
    assert replayed["outcome"] == original["outcome"] == "PASS"
    assert replayed["serial_number"] == "SN-7"  # the recorded unit, with no --serial
    assert replayed["simulated"] is True
    assert measurements(replayed) == measurements(original)
    assert "never replayed" not in result.stderr  # every recorded command was sent again


@pytest.mark.slow
def test_an_edited_procedure_that_sends_another_command_fails_with_the_divergence(recorded):
    root, run_dir = recorded
    source = (root / "procedures" / "fvt1.py").read_text()
    assert "range=10, nplc=1" in source
    (root / "procedures" / "fvt1.py").write_text(
        source.replace("range=10, nplc=1", "range=100, nplc=1")
    )
    result = station(
        "run", "FVT1", "--sim-replay", str(run_dir), "--no-upload", "--json-out", "out.json",
        cwd=root,
    )  # fmt: skip
    assert result.returncode == 3, result.stdout + result.stderr
    divergence = (
        f"replay of {run_dir.name} diverged at dmm command #2 of 8 (recorded in phase "
        "'rail_3v3'): expected 'CONF:VOLT:DC 10', sent 'CONF:VOLT:DC 100'"
    )
    assert divergence in result.stdout  # on the console
    record = json.loads((root / "out.json").read_text())
    assert record["outcome"] == "ERROR"
    assert divergence in record["outcome_reason"]  # and in run.json, as the reason
    assert "safe state NOT verified" not in record["outcome_reason"]


@pytest.mark.slow
def test_replay_refuses_a_run_without_a_trace_and_the_options_it_replaces(recorded):
    root, run_dir = recorded
    (run_dir / "io-trace.jsonl").rename(root / "elsewhere.jsonl")
    result = station("run", "FVT1", "--sim-replay", str(run_dir), "--no-upload", cwd=root)
    assert result.returncode == 2
    assert "has no io-trace.jsonl: record the run with `station run --trace-io`" in result.stderr
    result = station("run", "FVT1", "--sim", "--sim-replay", str(run_dir), cwd=root)
    assert result.returncode == 2 and "drop --sim" in result.stderr


@pytest.mark.slow
def test_station_sim_replay_serves_the_recording_to_another_process(recorded):
    root, run_dir = recorded
    server = subprocess.Popen(
        [sys.executable, "-m", "station", "sim", "--replay", str(run_dir), "--trace"],
        cwd=root,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=station_env(root),
    )
    try:
        resources = {}
        assert server.stdout is not None
        for line in server.stdout:
            if line.startswith("Ctrl-C"):
                break
            parts = line.split()
            if len(parts) == 2 and parts[1].startswith("TCPIP::"):
                resources[parts[0]] = parts[1]
        client = Client(resources["dmm"])
        assert client.ask("*IDN?").startswith("Keysight Technologies,34461A")
        with pytest.raises(ConnectionError):
            client.ask("*RST")  # not what FVT1 sent next
        client.close()
        # The --trace line comes before the divergence is judged: wait for it.
        seen = ""
        deadline = time.monotonic() + 10
        while "*RST" not in seen and time.monotonic() < deadline:
            seen += server.stdout.readline()
    finally:
        server.send_signal(signal.SIGINT)
        _, err = server.communicate(timeout=10)
    assert "dmm" in seen and "<- *RST" in seen
    assert "diverged at dmm command #2 of 8" in err and "sent '*RST'" in err
    assert server.returncode == 0


@pytest.mark.slow
def test_a_bench_of_user_classes_records_and_replays(tmp_path):
    """The user bench of tests/user_bench (a plain-class relay board, a `drivers.Instrument`
    subclass on TCP, a `serial-line` DUT console on a pty): the session-based ones are traced
    at the seam and replayed (the console on a pty again); the plain class, which does no
    transport I/O, is replaced by its `sim:` class as under --sim."""
    from test_user_instruments import PLACEHOLDERS, write_station

    write_station(tmp_path, PLACEHOLDERS)
    result = station(
        "run", "ICT", "--sim", "--trace-io", "--serial", "SN-2", "--no-upload", cwd=tmp_path
    )
    assert result.returncode == 0, result.stdout + result.stderr
    (run_dir,) = run_dirs(tmp_path)
    recording = load_recording(run_dir)
    assert set(recording.scripts) == {"fixture", "dut_console"}  # the relay is a plain class
    assert recording.scripts["dut_console"].serial
    original = json.loads((run_dir / "run.json").read_text())
    result = station(
        "run", "ICT", "--sim-replay", str(run_dir), "--no-upload", "--json-out", "-", cwd=tmp_path
    )
    assert result.returncode == 0, result.stdout + result.stderr
    replayed = json.loads(result.stdout)
    assert replayed["outcome"] == "PASS"
    assert measurements(replayed) == measurements(original)
    instruments = {item["name"]: item["resource"] for item in replayed["instruments"]}
    assert instruments["dut_console"].startswith("/dev/")
    assert instruments["fixture"].startswith("TCPIP::127.0.0.1::")
