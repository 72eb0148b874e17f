"""Several `station` processes on one data directory never upload a run twice, and never touch a
run that is still going on: the claim (a lock per run directory) keeps them apart. Checked with
the server's request log: one `POST /v2/runs` per client_run_ref, one run per run directory."""

from __future__ import annotations

import pytest
from reporting_fixtures import (
    Site,
    emulator_fixture,  # noqa: F401 - fixture
    expected_body,
    ledger,
    ref_of,
    run_posts,
    site_fixture,  # noqa: F401 - fixture
    stored_body,
    wait_for,
)

from station.storage.journal import RUN_JSON

pytestmark = pytest.mark.slow


def log_of(site: Site, name: str) -> str:
    return (site.root / "logs" / name).read_text()


def assert_each_run_sent_once(site: Site) -> None:
    dirs = site.run_dirs()
    figures = ledger(site.emulator, dirs)
    assert figures["on server"] == figures["uploaded"] == len(dirs), figures
    assert figures["duplicates"] == figures["lost"] == figures["strays"] == 0, figures
    assert run_posts(site.emulator) == {ref_of(d): 1 for d in dirs}
    for run_dir in dirs:
        body = stored_body(site.emulator, ref_of(run_dir))
        assert body == expected_body(run_dir, site.emulator)
        assert body["outcome"] == "PASS", run_dir.name


def test_two_runs_at_once_on_one_data_directory_each_upload_their_own_run_once(site, emulator):
    emulator.faults.random_mix(1, {"slow:0.3": 1})  # uploads long enough to overlap
    for round_ in range(3):
        runs = [
            site.spawn("run", "FVT1", "--sim", "--serial", f"SN-{round_}{n}", log=f"{round_}{n}")
            for n in range(2)
        ]
        for n, process in enumerate(runs):
            assert process.wait(timeout=60) == 0, log_of(site, f"{round_}{n}")
            assert "uploaded: run" in log_of(site, f"{round_}{n}")
    assert len(site.run_dirs()) == 6
    assert_each_run_sent_once(site)


def test_station_upload_while_a_run_finishes_and_uploads_sends_it_once(site, emulator):
    emulator.faults.random_mix(1, {"slow:0.4": 1})
    run = site.spawn("run", "FVT1", "--sim", "--serial", "SN-0001", log="run")
    uploads = 0
    while run.poll() is None:
        upload = site.spawn("upload", log=f"upload-{uploads}")
        assert upload.wait(timeout=60) == 0, log_of(site, f"upload-{uploads}")
        uploads += 1
    assert run.returncode == 0, log_of(site, "run")
    assert uploads >= 2
    assert site.station("upload").stdout.strip() == "nothing to upload"
    assert_each_run_sent_once(site)


@pytest.mark.parametrize(
    "point",
    [
        "phase:ripple",  # the run is in the middle of a phase
        "run_started",  # the run has its directory and its claim, no phase yet
        "claim_opened",  # the run has opened its lock file and not locked it yet
    ],
)
def test_station_upload_leaves_a_run_that_is_still_going_on_alone(site, emulator, point):
    marker = site.root / "logs" / "reached"
    release = site.root / "logs" / "release"
    run = site.spawn(
        "run",
        "FVT1",
        "--sim",
        "--serial",
        "SN-0001",
        log="run",
        STATION_FAULT_POINT=point,
        STATION_FAULT_MARKER=str(marker),
        STATION_FAULT_SLEEP="120",
        STATION_FAULT_RELEASE=str(release),
    )
    wait_for(lambda: marker.exists() or run.poll() is not None, f"the run at {point}")
    assert run.poll() is None, log_of(site, "run")
    for _ in range(2):
        upload = site.station("upload")
        assert upload.returncode == 0, upload.stdout + upload.stderr
        assert "recovered" not in upload.stdout, upload.stdout
    assert run.poll() is None, "the run must still be held at its fault point: " + log_of(
        site, "run"
    )
    (run_dir,) = site.run_dirs()
    assert not (run_dir / RUN_JSON).exists()
    assert emulator.runs == {}

    release.touch()
    assert run.wait(timeout=60) == 0, log_of(site, "run")
    assert "uploaded: run" in log_of(site, "run")
    assert_each_run_sent_once(site)
