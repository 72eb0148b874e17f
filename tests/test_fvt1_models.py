"""FVT1, unchanged, on benches where one instrument is another model (station run --sim).

The procedure only speaks the capability interfaces (Dmm, PowerSupply), so swapping the model
in station.yaml is all it takes; each run is a real `python -m station` subprocess.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

SWAPS = {
    "dmm-keithley-dmm6500": {"dmm": "keithley-dmm6500", "psu": "rigol-dp832"},
    "dmm-keysight-34465a": {"dmm": "keysight-34465a", "psu": "rigol-dp832"},
    "psu-keysight-e36312a": {"dmm": "keysight-34461a", "psu": "keysight-e36312a"},
}
# What each model's *IDN? starts with, as FVT1 records it in the run's metadata.
IDENTITIES = {
    "keithley-dmm6500": "KEITHLEY INSTRUMENTS,MODEL DMM6500,",
    "keysight-34461a": "Keysight Technologies,34461A,",
    "keysight-34465a": "Keysight Technologies,34465A,",
    "keysight-e36312a": "Keysight Technologies,E36312A,",
    "rigol-dp832": "RIGOL TECHNOLOGIES,DP832,",
}


def write_config(root: Path, drivers: dict[str, str]) -> Path:
    """A station.yaml for FVT1 with these drivers; runs go under root/runs."""
    config = root / "station.yaml"
    config.write_text(
        textwrap.dedent(
            f"""\
            station: {{name: Swap bench}}
            data_dir: {root / "runs"}
            instruments:
              dmm:
                driver: {drivers["dmm"]}
                resource: "TCPIP::192.0.2.1::5025::SOCKET"
              psu:
                driver: {drivers["psu"]}
                resource: "TCPIP::192.0.2.2::5025::SOCKET"
            procedures:
              FVT1:
                module: procedures.fvt1
                part_number: PCBA01
                revision: B
            sim:
              board: pcba01
              seed: 1
            """
        ),
        encoding="utf-8",
    )
    return config


def run_fvt1(config: Path, serial: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "STATION_OPERATOR": "tester", "NO_COLOR": "1"}
    env.pop("STATION_CONFIG", None)
    return subprocess.run(
        [sys.executable, "-m", "station", "run", "FVT1", "--sim", "--serial", serial,
         "--config", str(config)],
        cwd=config.parent,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )  # fmt: skip


def records(root: Path) -> dict[str, dict]:
    """run.json of every run under root/runs, by serial number."""
    found = {}
    for path in sorted((root / "runs").glob("*/run.json")):
        record = json.loads(path.read_text(encoding="utf-8"))
        found[record["serial_number"]] = record
    return found


@pytest.mark.parametrize("swap", sorted(SWAPS))
def test_fvt1_runs_unchanged_with_another_model(tmp_path, swap):
    drivers = SWAPS[swap]
    config = write_config(tmp_path, drivers)

    good = run_fvt1(config, "SN-0001")
    assert good.returncode == 0, good.stdout + good.stderr
    assert "== FVT1 PASS  SN-0001" in good.stdout
    faulty = run_fvt1(config, "SN-0002-F")
    assert faulty.returncode == 1, faulty.stdout + faulty.stderr
    assert "== FVT1 FAIL" in faulty.stdout
    # It fails on the measurement (a low rail), not on an instrument error.
    assert re.search(r"rail_3v3\s+3\.1\d* V\s+\[3\.2, 3\.4\]\s+FAIL", faulty.stdout), faulty.stdout

    runs = records(tmp_path)
    assert runs["SN-0001"]["outcome"] == "PASS"
    assert runs["SN-0002-F"]["outcome"] == "FAIL"
    for name in ("dmm", "psu"):
        assert runs["SN-0001"]["metadata"][name].startswith(IDENTITIES[drivers[name]])
