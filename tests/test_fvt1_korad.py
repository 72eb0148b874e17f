"""FVT1, unchanged, on a bench whose supply is a Korad KA3005P (a twin on a pty)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


@pytest.fixture
def korad_station(tmp_path: Path) -> Path:
    text = (REPO / "station.yaml").read_text()
    start = text.index("  psu:\n")
    end = text.index("\n\n", start)
    text = (
        text[:start]
        + '  psu:\n    driver: korad-ka3005p\n    resource: "/dev/ttyUSB0"'
        + text[end:]
    )
    path = tmp_path / "station.yaml"
    path.write_text(text)
    shutil.copytree(REPO / "procedures", tmp_path / "procedures")
    return path


def run_fvt1(config: Path, serial: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "STATION_OPERATOR": "tester", "NO_COLOR": "1"}
    env.pop("STATION_CONFIG", None)
    args = ["run", "FVT1", "--sim", "--serial", serial, "--config", str(config)]
    if _has_no_upload():  # the TofuPilot reporter, where present, must not be reached
        args.append("--no-upload")
    return subprocess.run(
        [sys.executable, "-m", "station", *args],
        cwd=config.parent,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


def _has_no_upload() -> bool:
    from station.cli.main import build_parser

    return (
        "--no-upload" in build_parser()._subparsers._group_actions[0].choices["run"].format_help()
    )


def test_fvt1_passes_with_a_korad_supply(korad_station):
    result = run_fvt1(korad_station, "SN-0001")
    assert result.returncode == 0, result.stdout + result.stderr
    assert (
        "KORAD KA3005P"
        in (korad_station.parent / "runs")
        .joinpath(
            next(p.name for p in (korad_station.parent / "runs").glob("[!.]*") if p.is_dir()),
            "run.json",
        )
        .read_text()
    )


def test_fvt1_fails_a_low_rail_board_with_a_korad_supply(korad_station):
    result = run_fvt1(korad_station, "SN-0002-F")
    assert result.returncode == 1, result.stdout + result.stderr
