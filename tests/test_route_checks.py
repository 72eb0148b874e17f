"""Route checks: `requires_passed: [ICT]` refuses a unit whose latest ICT run is not PASS (or
that never ran ICT) before any instrument opens, from TofuPilot when reachable, else from this
station's runs; the run header says when a unit is a retest."""

from __future__ import annotations

import re
import shutil
from datetime import datetime

import pytest
import test_history

from station.tofupilot.history import local_time, unit_route

REPO, RouteSite = test_history.REPO, test_history.RouteSite
emulator, site = test_history.emulator, test_history.site  # the same fixtures


def route(site, serial, *, key=None, procedure="FVT1", **kw):
    key = site.emulator.station_key if key is None else key
    return unit_route(site.config(), procedure, serial, api_key=key, **kw)


def at(day: str) -> str:
    return local_time(datetime.fromisoformat(f"{day}T10:00:00+00:00"))


def test_a_unit_that_never_ran_ict_is_refused(site):
    checked = route(site, "SN-1")
    assert checked.refusal == (
        "FVT1 requires a PASS of ICT first: no run of ICT found for SN-1 in TofuPilot"
    )
    assert checked.source == "TofuPilot" and checked.retest_note is None


def test_the_latest_ict_run_decides(site, emulator):
    ict_station = emulator.key_of("station", 1)
    site.post("ICT", "SN-1", "FAIL", "2026-01-01", key=ict_station)
    failed = route(site, "SN-1")
    assert failed.refusal == (
        f"FVT1 requires a PASS of ICT first: the last run of ICT on SN-1 was FAIL on "
        f"{at('2026-01-01')} (TofuPilot, station Rework bench)"
    )
    site.post("ICT", "SN-1", "PASS", "2026-01-02", key=ict_station)
    assert route(site, "SN-1").refusal is None
    site.post("ICT", "SN-1", "ERROR", "2026-01-03", key=ict_station)
    assert "was ERROR on" in route(site, "SN-1").refusal
    # another unit's runs never count
    assert "no run of ICT found for SN-2" in route(site, "SN-2").refusal


def test_a_procedure_without_requirements_is_never_refused(site):
    assert route(site, "SN-1", procedure="ICT").refusal is None


def test_retest_note_counts_earlier_runs_of_this_procedure(site, emulator):
    site.post("ICT", "SN-1", "PASS", "2026-01-01")
    assert route(site, "SN-1").retest_note is None
    site.post("FVT1", "SN-1", "FAIL", "2026-01-02", key=emulator.station_key)
    site.post("FVT1", "SN-1", "FAIL", "2026-01-03", key=emulator.station_key)
    checked = route(site, "SN-1")
    assert checked.refusal is None
    assert checked.retest_note == f"retest 2, last FAIL {at('2026-01-03')}"
    site.record_local("FVT1", "SN-1", passed=True)  # recorded here, not uploaded yet
    note = route(site, "SN-1").retest_note
    assert note is not None and note.startswith("retest 3, last PASS ")


def test_pinned_id_matches_by_id_not_by_name(site, emulator):
    """Two procedures named ICT in TofuPilot: only the pinned one's runs count."""
    other = emulator.create_procedure("ICT")
    emulator.link(other)
    site.post(other, "SN-1", "PASS", "2026-01-05")
    real = emulator.procedure_id(next(p.id for p in emulator.linked() if p.name == "ICT"))
    site.write(ict_extra=f"tofupilot_id: {real}\n")
    assert "no run of ICT found" in route(site, "SN-1").refusal
    site.post(real, "SN-1", "PASS", "2026-01-01")
    assert route(site, "SN-1").refusal is None


def test_a_procedure_of_another_station_is_matched_by_its_tofupilot_name(site, emulator):
    """`Burn-in` is not a procedure of this station.yaml: TofuPilot's name decides."""
    emulator.link("burn-in", emulator.key_of("station", 1))
    site.write(requires="[ICT, Burn-in]")
    site.post("ICT", "SN-1", "PASS", "2026-01-01")
    assert route(site, "SN-1").refusal == (
        "FVT1 requires a PASS of Burn-in first: no run of Burn-in found for SN-1 in TofuPilot"
    )
    site.post("burn-in", "SN-1", "PASS", "2026-01-02", key=emulator.key_of("station", 1))
    assert route(site, "SN-1").refusal is None


def test_offline_the_local_runs_decide_and_the_message_says_so(site, emulator):
    site.post("ICT", "SN-1", "PASS", "2026-01-01")
    emulator.stop()
    refused = route(site, "SN-1", timeout_s=1)
    assert refused.refusal == (
        "FVT1 requires a PASS of ICT first: no run of ICT found for SN-1 in the runs "
        "recorded here and not uploaded yet (TofuPilot unreachable)"
    )
    site.record_local("ICT", "SN-1", passed=True)
    assert route(site, "SN-1", timeout_s=1).refusal is None
    no_key = route(site, "SN-1", key="")
    assert no_key.refusal is None and "TOFUPILOT_API_KEY is not set" in no_key.source


def test_simulated_runs_never_let_a_real_unit_skip_its_route(site, emulator):
    site.post("ICT", "SN-1", "PASS", "2026-01-01", metadata={"simulated": True})
    assert "no run of ICT found" in route(site, "SN-1").refusal
    assert route(site, "SN-1", simulated=True).refusal is None


# -- `station run`, as the operator runs it ------------------------------------------------------


@pytest.fixture
def bench_site(tmp_path, emulator):
    """The example bench (FVT1 on the simulated PCBA01) requiring ICT, pointed at the emulator;
    its instruments are USB resources no machine here has, so opening them would fail."""
    shutil.copytree(REPO / "procedures", tmp_path / "procedures")
    text = (REPO / "station.yaml").read_text(encoding="utf-8")
    text = text.replace("https://www.tofupilot.app/api", emulator.url)
    text = text.replace(
        "    revision: B\n    timeout_s: 120\n    limits:",
        "    revision: B\n    timeout_s: 120\n    requires_passed: [ICT]\n    limits:",
        1,
    )
    assert "requires_passed: [ICT]" in text
    (tmp_path / "station.yaml").write_text(text, encoding="utf-8")
    return RouteSite(tmp_path, emulator, files=False)


@pytest.mark.slow
def test_station_run_refuses_before_any_instrument_opens(bench_site, emulator):
    site, root = bench_site, bench_site.root
    refused = site.station("run", "FVT1", "--serial", "SN-7", key=emulator.station_key)
    # Without --sim the instruments are absent: refusing after opening them would be exit 3.
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert (
        "refused: FVT1 requires a PASS of ICT first: no run of ICT found for SN-7 in TofuPilot"
    ) in refused.stderr
    assert not (root / "runs").exists() or not [
        d for d in (root / "runs").iterdir() if not d.name.startswith(".")
    ]
    site.post("ICT", "SN-7", "FAIL", "2026-01-01", key=emulator.key_of("station", 1))
    again = site.station("run", "FVT1", "--serial", "SN-7", key=emulator.station_key)
    assert again.returncode == 2 and f"was FAIL on {at('2026-01-01')}" in again.stderr


@pytest.mark.slow
def test_station_run_of_a_passed_unit_goes_on_and_a_retest_says_so(bench_site, emulator):
    site = bench_site
    site.post("ICT", "SN-8", "PASS", "2026-01-01", key=emulator.key_of("station", 1))
    site.post("FVT1", "SN-8", "FAIL", "2026-01-02", key=emulator.station_key)
    result = site.station("run", "FVT1", "--sim", "--serial", "SN-8", key=emulator.station_key)
    assert result.returncode == 0, result.stdout + result.stderr
    header = next(line for line in result.stdout.splitlines() if line.startswith("== "))
    assert header.endswith(f"retest 1, last FAIL {at('2026-01-02')}"), header
    assert re.search(r"uploaded: run \S+", result.stdout)


def test_the_readme_example_is_a_valid_station_yaml_fragment(tmp_path):
    """README's `requires_passed` block, merged into the example station.yaml, loads."""
    import yaml

    from station.config.model import load_config

    text = (REPO / "README.md").read_text(encoding="utf-8")
    (block,) = re.findall(r"```yaml\n(procedures:\n.*?requires_passed.*?)```", text, re.S)
    example = yaml.safe_load((REPO / "station.yaml").read_text(encoding="utf-8"))
    example["procedures"]["FVT1"].update(yaml.safe_load(block)["procedures"]["FVT1"])
    shutil.copytree(REPO / "procedures", tmp_path / "procedures")
    (tmp_path / "station.yaml").write_text(yaml.safe_dump(example), encoding="utf-8")
    config = load_config(tmp_path / "station.yaml")
    assert config.procedures["FVT1"].requires_passed == ["ICT"]
    assert config.procedures["FVT1"].module == "procedures.fvt1"
