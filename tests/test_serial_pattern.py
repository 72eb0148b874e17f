"""serial_pattern: a scan is a full match or it is refused, before anything runs, with the pattern
shown; the named groups part_number, revision and batch_number fill the unit's fields."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from station.config.model import load_config
from station.line.session import ScanRefused, UnitIdentity, unit_identity

REPO = Path(__file__).resolve().parents[1]
PATTERN = r"(?P<part_number>PCBA\d\d)(?P<revision>[A-Z])-(?P<batch_number>B\d{3})-\d{5}"


def write_station(root: Path, pattern: str | None = PATTERN) -> Path:
    (root / "station.yaml").write_text(
        (REPO / "station.yaml")
        .read_text()
        .replace(
            "    part_number: PCBA01\n",
            "    part_number: PCBA01\n"
            + (f"    serial_pattern: '{pattern}'\n" if pattern is not None else ""),
        )
    )
    return root / "station.yaml"


def test_named_groups_fill_the_unit_over_station_yaml(tmp_path):
    config = load_config(write_station(tmp_path))
    assert unit_identity(config, "FVT1", "  PCBA02C-B017-00042\r") == UnitIdentity(
        "PCBA02C-B017-00042", part_number="PCBA02", revision="C", batch_number="B017"
    )


def test_without_a_group_station_yaml_values_stay(tmp_path):
    config = load_config(write_station(tmp_path, r"SN-\d{4}"))
    assert unit_identity(config, "FVT1", "SN-0001") == UnitIdentity("SN-0001", "PCBA01", "B", None)


@pytest.mark.parametrize(
    "scan",
    [
        "PCBA02C-B017-0004",  # too short: a prefix match is not enough
        "xPCBA02C-B017-00042",  # nor a match inside
        "PCBA02C-B017-000421",  # nor a longer scan
        "PCBA02c-B017-00042",
    ],
)
def test_anything_but_a_full_match_is_refused_with_the_pattern(tmp_path, scan):
    config = load_config(write_station(tmp_path))
    with pytest.raises(ScanRefused) as refused:
        unit_identity(config, "FVT1", scan)
    assert PATTERN in str(refused.value) and refused.value.pattern == PATTERN
    assert "procedures.FVT1.serial_pattern" in str(refused.value)


def test_empty_or_unprintable_scans_are_refused(tmp_path):
    config = load_config(write_station(tmp_path, None))
    with pytest.raises(ScanRefused, match="empty"):
        unit_identity(config, "FVT1", "  \r\n")
    with pytest.raises(ScanRefused, match="printable"):
        unit_identity(config, "FVT1", "SN\x1b[A")


def test_a_pattern_that_does_not_compile_is_a_config_error_at_its_line(tmp_path):
    from station.config.errors import ConfigError

    with pytest.raises(ConfigError, match=r"station.yaml:\d+: .*serial_pattern"):
        load_config(write_station(tmp_path, "SN-(\\d"))


def station(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "station", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "NO_COLOR": "1", "PYTHONPATH": str(REPO)},
    )


@pytest.mark.slow
def test_a_single_run_refuses_a_bad_scan_with_exit_2_before_anything_runs(tmp_path):
    write_station(tmp_path)
    refused = station("run", "FVT1", "--sim", "--serial", "SN-0001", "--no-upload", cwd=tmp_path)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert f"does not match FVT1's serial pattern {PATTERN}" in refused.stderr
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").glob("*/journal.jsonl"))

    good = station(
        "run", "FVT1", "--sim", "--serial", "PCBA02C-B017-00042", "--no-upload", cwd=tmp_path
    )
    assert good.returncode == 0, good.stdout + good.stderr
    assert "PCBA02 rev C" in good.stdout  # the header names the unit the scan carried
    (run_json,) = (tmp_path / "runs").glob("*/run.json")
    record = json.loads(run_json.read_text())
    assert (record["part_number"], record["revision"], record["batch_number"]) == (
        "PCBA02",
        "C",
        "B017",
    )
