"""`--trace-io`: every command and reply of every instrument, timed, in the run directory.

The trace is taken at the transport seam, so these tests drive real drivers against real twins
(loopback TCP through pyvisa-py, a pty through pyserial) with the hook installed, and read the
file it writes.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path

import pytest

from drivers import InstrumentError
from drivers.models.scpi import ScpiInstrument
from drivers.registry import create_driver
from drivers.transport import trace
from drivers.transport.seam import open_transport
from sim import start_bench
from sim.bench import SimulatedClock

REPO = Path(__file__).resolve().parents[1]


def lines_of(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture
def bench():
    with start_bench(
        {"dmm": "keysight-34461a", "psu": "korad-ka3005p"}, clock=SimulatedClock()
    ) as running:
        yield running


def test_every_exchange_is_recorded_with_times_direction_and_data(bench, tmp_path):
    path = tmp_path / "io-trace.jsonl"
    dmm = create_driver("keysight-34461a", bench.resources["dmm"], name="dmm", lock=False)
    psu = create_driver("korad-ka3005p", bench.resources["psu"], name="psu", lock=False)
    before = datetime.now().astimezone()
    with trace.IoTrace(path) as io, trace.installed(io):
        dmm.connect()
        psu.connect()
        dmm.measure_dc_voltage(range=10, nplc=1)
        status = psu.status()
        dmm.transport.timeout_ms = 200
        bench.twins["dmm"].server.faults.set("no-reply", "READ")
        with pytest.raises(InstrumentError, match="no reply"):
            dmm.transport.query("READ?")
    assert trace.current() is None  # uninstalled with the block
    dmm.close()
    psu.close()
    events = lines_of(path)

    assert [e["seq"] for e in events] == list(range(len(events)))
    times = [e["t"] for e in events]
    assert times == sorted(times)
    stamps = [datetime.fromisoformat(e["at"].replace("Z", "+00:00")) for e in events]
    assert stamps == sorted(stamps) and stamps[0] >= before.replace(microsecond=0)

    opens = {e["instrument"]: e for e in events if e["op"] == "open"}
    assert opens["dmm"]["transport"] == "VisaTransport"
    assert opens["dmm"]["read_termination"] == "\n"
    assert opens["psu"]["transport"] == "SerialTransport"
    assert opens["psu"]["resource"] == bench.resources["psu"]
    assert all(e["resource"] == bench.resources[e["instrument"]] for e in events)

    calls = [e for e in events if e["op"] != "open"]
    assert all(e["ms"] >= 0 for e in calls)
    dmm_io = [(e["op"], e.get("send"), e.get("recv")) for e in calls if e["instrument"] == "dmm"]
    assert dmm_io[0] == ("query", "*IDN?", dmm.identity)
    assert ("write", "CONF:VOLT:DC 10", None) in dmm_io  # a command with no reply
    assert ("query", "SYST:ERR?", '+0,"No error"') in dmm_io  # quotes escaped, and read back
    error = next(e for e in events if e["op"] == "error")
    assert error["instrument"] == "dmm" and error["kind"] == "timeout"
    assert error["send"] == "READ?" and "no reply within 200 ms to 'READ?'" in error["error"]
    assert error["ms"] >= 200

    binary = [e for e in events if e["instrument"] == "psu" and "recv_b64" in e]
    assert binary, "STATUS? replies one raw byte: recorded as base64"
    assert binary[-1]["send"] == "STATUS?"
    assert base64.b64decode(binary[-1]["recv_b64"]) == bytes([status])


class Gadget(ScpiInstrument):
    """A user's own driver: a subclass that knows nothing of tracing."""

    MODEL = "gadget"

    def voltage(self) -> float:
        return self.query_float("MEAS:VOLT:DC?")


def test_a_user_driver_is_traced_without_a_change(bench, tmp_path):
    path = tmp_path / "trace.jsonl"
    gadget = Gadget(open_transport(bench.resources["dmm"], name="gadget", lock=False), "gadget")
    with trace.IoTrace(path) as io, trace.installed(io):
        gadget.connect()
        gadget.voltage()
    gadget.close()
    sent = [e["send"] for e in lines_of(path) if "send" in e]
    assert sent == ["*IDN?", "MEAS:VOLT:DC?"]


def test_a_call_waiting_for_its_reply_is_on_disk_while_it_waits(bench, tmp_path):
    """A killed or hung process keeps the trace up to the call that hung."""
    path = tmp_path / "trace.jsonl"
    dmm = create_driver("keysight-34461a", bench.resources["dmm"], name="dmm", lock=False)
    dmm.connect()
    bench.twins["dmm"].server.faults.set("no-reply", "READ")
    dmm.transport.timeout_ms = 5000
    with trace.IoTrace(path) as io, trace.installed(io):
        failed: list[BaseException] = []

        def hang() -> None:
            try:
                dmm.transport.query("READ?")
            except InstrumentError as exc:
                failed.append(exc)

        caller = threading.Thread(target=hang)
        caller.start()
        deadline = time.monotonic() + 4.0
        while time.monotonic() < deadline and '"READ?"' not in path.read_text():
            time.sleep(0.01)
        assert caller.is_alive(), "the call ended before its command reached the file"
        (waiting,) = [e for e in lines_of(path) if e["op"] == "waiting"]
        assert waiting["send"] == "READ?" and waiting["ms"] >= trace.WAITING_S * 1000
        dmm.transport.interrupt()
        caller.join(5)
    dmm.close()
    assert failed
    last = lines_of(path)[-1]
    assert (last["op"], last["send"], last["t"]) == ("error", "READ?", waiting["t"])


def test_a_call_refused_before_the_wire_has_no_send_line(bench, tmp_path):
    path = tmp_path / "trace.jsonl"
    transport = open_transport(bench.resources["dmm"], name="dmm", lock=False)
    transport.set_call_guard(lambda: "the phase was stopped")
    with trace.IoTrace(path) as io, trace.installed(io), pytest.raises(InstrumentError):
        transport.query("*IDN?")
    transport.close()
    (event,) = [e for e in lines_of(path) if e["op"] != "open"]
    assert (event["op"], event["kind"]) == ("error", "stopped")
    assert "send" not in event  # it never reached the instrument


def test_hooks_nest_and_the_outer_one_sees_what_the_inner_one_raises(bench):
    seen: list[str] = []

    class Refuse:
        def call(self, endpoint, command, run):
            run()
            raise InstrumentError("refused by the inner hook", instrument=endpoint.name)

        def on_wire(self, endpoint, command):
            seen.append(f"inner {command}")

    class Watch:
        def call(self, endpoint, command, run):
            try:
                return run()
            except InstrumentError as exc:
                seen.append(f"outer saw {exc.message}")
                raise

        def on_wire(self, endpoint, command):
            seen.append(f"outer {command}")

    transport = open_transport(bench.resources["dmm"], name="dmm", lock=False)
    with (
        trace.installed(Refuse()),
        trace.installed(Watch()),
        pytest.raises(InstrumentError, match="inner hook"),
    ):
        transport.query("*IDN?")
    transport.close()
    assert seen == ["outer *IDN?", "inner *IDN?", "outer saw refused by the inner hook"]


def station(*args: str, cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess:
    env = {**os.environ, "STATION_OPERATOR": "tester", "NO_COLOR": "1"}
    env["STATION_LOCK_DIR"] = str(cwd / "locks")
    env.pop("STATION_CONFIG", None)
    return subprocess.run(
        [sys.executable, "-m", "station", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def run_dirs(root: Path) -> list[Path]:
    return sorted(p for p in (root / "runs").iterdir() if p.is_dir() and p.name[0] != ".")


@pytest.mark.slow
def test_station_run_trace_io_writes_the_trace_into_the_run_and_attaches_it(tmp_path):
    shutil.copy(REPO / "station.yaml", tmp_path / "station.yaml")
    result = station(
        "run", "FVT1", "--sim", "--trace-io", "--serial", "SN-1", "--no-upload", cwd=tmp_path
    )
    assert result.returncode == 0, result.stdout + result.stderr
    (run_dir,) = run_dirs(tmp_path)
    record = json.loads((run_dir / "run.json").read_text())
    (attachment,) = [a for a in record["attachments"] if a["name"] == "io-trace.jsonl"]
    path = run_dir / attachment["path"]
    events = lines_of(path)
    assert attachment["size"] > 0 and path.stat().st_size >= attachment["size"]
    assert {e["instrument"] for e in events} == {"dmm", "psu"}
    sent = [(e["instrument"], e["send"]) for e in events if "send" in e]
    # From the identification at open, through the phases, to the safe state at close.
    assert sent[0][1] == "*IDN?"
    assert ("psu", ":OUTP CH1,ON") in sent and ("dmm", "CONF:VOLT:DC 10") in sent
    on = sent.index(("psu", ":OUTP CH1,ON"))
    assert ("psu", ":OUTP CH1,OFF") in sent[on:]
    psu_sent = [text for name, text in sent if name == "psu"]
    assert psu_sent[-3:] == [":OUTP? CH1", ":OUTP? CH2", ":OUTP? CH3"]  # verified at close
    replies = [e["recv"] for e in events if e.get("send") == "READ?"]
    value = record["phases"][2]["measurements"][0]["measured_value"]
    readings = [float(reply) for reply in replies]
    assert value in readings  # the measurement is the reply the trace shows
    # Without the flag, nothing is traced.
    result = station("run", "FVT1", "--sim", "--serial", "SN-2", "--no-upload", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    newest = max(run_dirs(tmp_path))
    assert not (newest / "io-trace.jsonl").exists()


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_a_trace_that_cannot_be_written_never_fails_the_instrument_call(bench):
    dmm = create_driver("keysight-34461a", bench.resources["dmm"], name="dmm", lock=False)
    with trace.IoTrace("/dev/full") as io, trace.installed(io):
        assert dmm.connect().startswith("Keysight")  # the disk is full: the call still works
        io.flush()
    dmm.close()
    assert io.errors and "I/O trace lines lost" in io.errors[0]
    assert io.lines == 0
