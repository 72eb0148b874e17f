"""Simulated runs never pollute production data: `station run --sim` marks the record and the
metadata it uploads as simulated, and sends it only to a TofuPilot on this machine unless the run
was made with `--upload-sim` (remembered in the record, so a later `station upload` honours it).
The run's instruments go into its metadata within TofuPilot's 50 keys."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from station.records.model import InstrumentRecord, RunRecord
from station.records.outcomes import Outcome
from station.storage.journal import write_atomic
from station.tofupilot.client import TofuPilotClient
from station.tofupilot.outbox import LOCAL_ONLY, Outbox
from station.tofupilot.payload import MAX_METADATA_KEYS, build_run_body, instrument_text
from station.tofupilot.policy import is_loopback_url, local_only_reason

REPO = Path(__file__).resolve().parents[2]
FAR = "https://tofupilot.invalid/api"  # not this machine (and never resolvable: .invalid)
KEY = "tp_station_0123456789abcdefghij"
UUID = "3f2b8c1e-1d2a-4c5b-9e8f-0a1b2c3d4e5f"


class Site:
    """A copy of the example station pointed at `url`; runs `station` for real."""

    def __init__(self, root: Path, url: str, key: str) -> None:
        self.root, self.key = root, key
        text = (REPO / "station.yaml").read_text()
        (root / "station.yaml").write_text(text.replace("https://www.tofupilot.app/api", url))

    def station(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "TOFUPILOT_API_KEY": self.key, "NO_COLOR": "1"}
        env.pop("STATION_CONFIG", None)
        return subprocess.run(
            [sys.executable, "-m", "station", *args],
            cwd=self.root,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
        )

    def run_dir(self, serial: str) -> Path:
        (found,) = [d for d in (self.root / "runs").iterdir() if f"_{serial}_" in d.name]
        return found

    def saved(self, serial: str) -> dict:
        return json.loads((self.run_dir(serial) / "upload.json").read_text())

    def record(self, serial: str) -> dict:
        return json.loads((self.run_dir(serial) / "run.json").read_text())


def test_a_simulated_run_uploads_to_a_loopback_tofupilot_marked_simulated(tmp_path, emulator):
    site = Site(tmp_path, emulator.url, emulator.station_key)
    result = site.station("run", "FVT1", "--sim", "--serial", "SN-SIM-1")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "uploaded: run" in result.stdout
    record = site.record("SN-SIM-1")
    assert record["simulated"] is True and record["upload_simulated"] is False
    (stored,) = emulator.runs.values()
    metadata = stored.body["metadata"]
    assert next(iter(metadata.items())) == ("simulated", True)  # first: never the key dropped
    # Every instrument the run opened, who it is and where it was reached.
    for instrument in record["instruments"]:
        text = metadata[f"instrument.{instrument['name']}"]
        assert text.endswith(f" @ {instrument['resource']}"), text
        assert f"SN {instrument['serial_number']} fw {instrument['firmware']}" in text
    assert {"instrument.dmm", "instrument.psu"} <= set(metadata)


def test_a_simulated_run_stays_local_when_tofupilot_is_not_on_this_machine(tmp_path):
    site = Site(tmp_path, FAR, KEY)
    result = site.station("run", "FVT1", "--sim", "--serial", "SN-SIM-2")
    assert result.returncode == 0, result.stdout + result.stderr
    local = (
        "local only: simulated run (--sim), not sent to TofuPilot at tofupilot.invalid; "
        "simulated runs go only to a TofuPilot on this machine (a loopback URL), or anywhere "
        "when the run is made with 'station run --sim --upload-sim'"
    )
    assert f"   not uploaded: {local}\n" in result.stdout
    saved = site.saved("SN-SIM-2")
    assert saved["parked"] and saved["last_error"]["kind"] == LOCAL_ONLY
    assert saved["run_id"] is None

    listing = site.station("runs")
    assert f"PASS     {local}" in listing.stdout
    for args in (("upload",), ("upload", "--retry-parked")):  # never retried against it
        result = site.station(*args)
        assert f"local-only {site.run_dir('SN-SIM-2').name}  {local}" in result.stdout
        saved = site.saved("SN-SIM-2")
        assert saved["last_error"]["kind"] == LOCAL_ONLY  # never a connection error: not tried


def test_upload_sim_is_remembered_so_a_later_station_upload_sends_it(tmp_path, emulator):
    site = Site(tmp_path, FAR, KEY)
    result = site.station("run", "FVT1", "--sim", "--upload-sim", "--serial", "SN-SIM-3")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "queued for upload (cannot reach the server)" in result.stdout  # it was tried
    record = site.record("SN-SIM-3")
    assert record["simulated"] is True and record["upload_simulated"] is True
    # A later `station upload` (no --upload-sim there) tries it too: not kept local.
    result = site.station("upload")
    assert "local only" not in result.stdout
    assert site.saved("SN-SIM-3")["last_error"]["kind"] == "connect"
    # Once a server answers, it lands there, marked simulated.
    site = Site(tmp_path, emulator.url, emulator.station_key)
    result = site.station("upload")
    assert result.returncode == 0, result.stdout + result.stderr
    (stored,) = emulator.runs.values()
    assert stored.body["metadata"]["simulated"] is True


def test_a_run_on_the_real_bench_is_not_marked(tmp_path):
    record = RunRecord(
        run_id="a" * 32, procedure_id="FVT1", serial_number="SN-1", started_at=datetime.now(UTC)
    )
    assert local_only_reason(record, FAR) is None
    body = build_run_body(record, client_run_ref="r", procedure_id=UUID)
    assert "metadata" not in body


def test_the_gate_sends_nothing_at_all(tmp_path):
    """Outbox level, with a transport that records every request: none is made."""
    run_dir = tmp_path / "runs" / "20260101T000000Z_FVT1_SN-1_aaaaaaaa"
    run_dir.mkdir(parents=True)
    record = RunRecord(
        run_id="a" * 32,
        procedure_id="FVT1",
        serial_number="SN-1",
        started_at=datetime(2026, 1, 1, tzinfo=UTC),
        ended_at=datetime(2026, 1, 1, 0, 0, 1, tzinfo=UTC),
        outcome=Outcome.PASS,
        simulated=True,
    )
    write_atomic(run_dir / "run.json", record.to_json().encode())
    seen: list[httpx.Request] = []

    def client() -> TofuPilotClient:
        made = TofuPilotClient(FAR, KEY)

        def handler(request: httpx.Request) -> httpx.Response:
            seen.append(request)
            return httpx.Response(500)

        made._http = httpx.Client(transport=httpx.MockTransport(handler))
        return made

    with Outbox(tmp_path / "runs", client) as box:
        assert box.upload(run_dir).state == LOCAL_ONLY
        assert box.upload(run_dir, retry_parked=True).state == LOCAL_ONLY
        assert [s.state for s in box.drain(retry_parked=True)] == [LOCAL_ONLY]
    assert seen == []


@pytest.mark.parametrize(
    ("url", "loopback"),
    [
        ("http://127.0.0.1:8000/api", True),
        ("http://127.1.2.3/api", True),
        ("http://localhost:9/api", True),
        ("http://[::1]:9/api", True),
        ("https://www.tofupilot.app/api", False),
        ("https://10.0.0.5/api", False),
        ("https://localhost.example.com/api", False),
    ],
)
def test_what_counts_as_this_machine(url, loopback):
    assert is_loopback_url(url) is loopback


def test_instrument_metadata_reads_like_a_calibration_label():
    dmm = InstrumentRecord(
        name="dmm",
        driver="keysight-34461a",
        resource="USB0::0x2A8D::0x1301::MY60012345::INSTR",
        identity="Keysight Technologies,34461A,MY60012345,A.03.01",
        manufacturer="Keysight",
        model="34461A",
        serial_number="MY60012345",
        firmware="A.03.01",
    )
    assert instrument_text(dmm) == (
        "Keysight 34461A SN MY60012345 fw A.03.01 @ USB0::0x2A8D::0x1301::MY60012345::INSTR"
    )
    relay = InstrumentRecord(name="relay", driver="fixtures.relay:RelayBoard", identity="relay v2")
    assert instrument_text(relay) == "relay v2"
    bare = InstrumentRecord(name="x", driver="scpi", resource="TCPIP::10.0.0.9::5025::SOCKET")
    assert instrument_text(bare) == "scpi (no identity) @ TCPIP::10.0.0.9::5025::SOCKET"


def test_metadata_stays_within_the_key_limit_simulated_first():
    record = RunRecord(
        run_id="a" * 32,
        procedure_id="FVT1",
        serial_number="SN-1",
        started_at=datetime(2026, 1, 1, tzinfo=UTC),
        simulated=True,
        metadata={f"k{n:02}": n for n in range(45)} | {"simulated": False},
        instruments=[InstrumentRecord(name=f"i{n}", driver="scpi") for n in range(10)],
    )
    body = build_run_body(record, client_run_ref="r", procedure_id=UUID)
    metadata = body["metadata"]
    assert len(metadata) == MAX_METADATA_KEYS
    assert metadata["simulated"] is True  # a procedure's key never unmarks a simulated run
    assert [k for k in metadata if k.startswith("instrument.")] == [
        f"instrument.i{n}" for n in range(4)
    ]
    assert (
        "metadata: 6 keys not sent (TofuPilot keeps at most 50): instrument.i4" in body["docstring"]
    )


def test_upload_sim_without_the_flag_is_false_in_the_record_by_default():
    data = json.loads(
        RunRecord(
            run_id="a" * 32, procedure_id="T1", serial_number="S", started_at=datetime.now(UTC)
        ).to_json()
    )
    assert data["simulated"] is False and data["upload_simulated"] is False
