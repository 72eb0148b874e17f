"""README "Your own instruments": the bench it prints (its classes module, station.yaml and
procedure, as printed) runs under --sim and PASSes, with every instrument's identity recorded;
`station list` shows what --sim uses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def block(language: str, containing: str) -> str:
    """The one fenced block of README.md in `language` that contains `containing`."""
    found, opened, body = [], None, []
    for line in (REPO / "README.md").read_text(encoding="utf-8").split("\n"):
        if line.startswith("```"):
            if opened is None:
                opened, body = line[3:].strip(), []
            else:
                if opened == language and containing in "\n".join(body):
                    found.append("\n".join(body) + "\n")
                opened = None
        elif opened is not None:
            body.append(line)
    assert len(found) == 1, f"README.md: expected one {language} block with {containing!r}"
    return found[0]


@pytest.fixture
def readme_bench(tmp_path: Path) -> Path:
    (tmp_path / "fixtures").mkdir()
    (tmp_path / "fixtures" / "acme.py").write_text(block("python", "# fixtures/acme.py"), "utf-8")
    (tmp_path / "procedures").mkdir()
    (tmp_path / "procedures" / "ict.py").write_text(block("python", "# procedures/ict.py"), "utf-8")
    (tmp_path / "station.yaml").write_text(block("yaml", "fixtures.acme:RelayBoard"), "utf-8")
    return tmp_path


def station(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("TOFUPILOT_API_KEY", "STATION_CONFIG")}
    env["STATION_LOCK_DIR"] = str(root / "locks")
    return subprocess.run(
        [sys.executable, "-m", "station", *args],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
        env=env,
    )


@pytest.mark.slow
def test_the_readme_bench_of_your_own_instruments_passes_under_sim(readme_bench):
    result = station(readme_bench, "run", "ICT", "--sim", "--serial", "SN-0001", "--no-upload")
    assert result.returncode == 0, result.stdout + result.stderr
    (path,) = (readme_bench / "runs").glob("*/run.json")
    record = json.loads(path.read_text(encoding="utf-8"))
    assert record["outcome"] == "PASS"
    identities = {item["name"]: item["identity"] for item in record["instruments"]}
    assert identities == {
        "console": None,
        "fixture": "ACME,FX-2,FX2-SIM,1.4",
        "relay": "ACME,RB-8,SIM-1,2.1",
    }
    assert any(a["name"] == "console-console.txt" for a in record["attachments"])


def test_station_list_shows_resources_and_what_sim_uses(readme_bench, capsys):
    import argparse

    from station.cli.listing import cmd_list

    assert cmd_list(argparse.Namespace(config=str(readme_bench / "station.yaml"))) == 0
    out = capsys.readouterr().out
    assert "relay        fixtures.acme:RelayBoard" in out
    assert "(--sim: fixtures.acme:SimRelayBoard)" in out
    assert "console      serial-line        /dev/ttyUSB1" in out
