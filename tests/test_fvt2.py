"""FVT2, the second worked procedure, as the operator runs it: `python -m station run FVT2
--sim --serial ...` in a real subprocess, against the repository's station.yaml. A good board
passes; each fault mode fails the measurements it should, and only those; attachments and the
safe bench are checked in the record and on disk."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow

# fault mode -> the measurements that must FAIL (every other one of these phases must PASS)
FAULTS = {
    "weak_regulator": {"rail_loaded", "load_regulation"},
    "noisy": {"ripple_vpp"},
    "bad_1v8": {"tp_1v8"},
    "leaky_enable": {"en_current", "en_in_compliance"},
    "shorted_rail": {"vin", "input_current", "psu_mode", "rail_rise_time"},
}


@pytest.fixture
def example(tmp_path: Path) -> Path:
    shutil.copy(REPO / "station.yaml", tmp_path / "station.yaml")
    return tmp_path


def run_fvt2(root: Path, serial: str) -> tuple[subprocess.CompletedProcess, dict]:
    env = {**os.environ, "STATION_OPERATOR": "tester", "NO_COLOR": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "station", "run", "FVT2", "--sim", "--serial", serial,
         "--no-upload"],
        cwd=root, capture_output=True, text=True, timeout=120, env=env,
    )  # fmt: skip
    (run_dir,) = [d for d in (root / "runs").iterdir() if serial.replace(":", "_") in d.name]
    record = json.loads((run_dir / "run.json").read_text())
    record["_dir"] = str(run_dir)
    return result, record


def measurements(record: dict) -> dict[str, dict]:
    return {m["name"]: m for phase in record["phases"] for m in phase["measurements"]}


def test_a_good_board_passes_with_its_waveforms_attached(example):
    result, record = run_fvt2(example, "SN-0001")
    assert result.returncode == 0, result.stdout + result.stderr
    assert record["outcome"] == "PASS"
    values = {name: m["measured_value"] for name, m in measurements(record).items()}
    assert values["psu_mode"] == "CV" and values["psu_mode_loaded"] == "CV"
    assert 0.0035 < values["rail_rise_time"] < 0.0053  # 2 ms x ln 9
    assert 0.015 < values["load_regulation"] < 0.025  # 40 mOhm x 0.5 A
    assert values["ripple_frequency"] == pytest.approx(100e3, rel=0.01)
    assert values["tp_vref"] == pytest.approx(2.5, abs=0.001)
    run_dir = Path(record["_dir"])
    attachments = sorted(path.name for path in (run_dir / "attachments").iterdir())
    assert attachments == ["power_up.csv", "ripple.csv", "ripple.png"]
    rows = list(csv.reader((run_dir / "attachments" / "ripple.csv").open()))
    assert rows[0] == ["time_s", "ch1_volts"] and len(rows) == 1201
    volts = [float(v) for _, v in rows[1:]]
    assert max(volts) - min(volts) == pytest.approx(values["ripple_vpp"], abs=1e-9)
    png = (run_dir / "attachments" / "ripple.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    # what it used is on record, and the bench was left safe by the teardown and safe state
    assert record["metadata"]["scope"].startswith("RIGOL TECHNOLOGIES,DS1054Z,")
    assert record["metadata"]["smu"].startswith("KEITHLEY INSTRUMENTS,MODEL 2450,")
    assert "safe state NOT verified" not in result.stdout


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_each_fault_mode_fails_what_it_should(example, fault):
    result, record = run_fvt2(example, f"SN-0002-F:{fault}")
    assert result.returncode == 1, result.stdout + result.stderr
    assert record["outcome"] == "FAIL"
    failed = {name for name, m in measurements(record).items() if m["outcome"] == "FAIL"}
    expected = FAULTS[fault]
    if fault == "shorted_rail":  # no rail at all: everything downstream of VIN fails too
        assert expected <= failed
    else:
        assert failed == expected, result.stdout
    assert all(phase["outcome"] in ("PASS", "FAIL") for phase in record["phases"])
