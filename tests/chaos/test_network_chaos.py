"""Runs uploaded through a server that answers a seeded random mix of 200, 429, 500, hangs and
answers lost after the run was stored: every run arrives exactly once, its body exactly the one
its run.json stands for, and its attachment's bytes once.

Every attachment holding bytes ends up finalized: a failed finalize is retried on later passes
(it only needs the attachment's id, so it never duplicates anything). Known and reported, not
asserted: an attachment whose creation answer is lost is created again (the API has no
idempotency key for attachments), leaving an empty one on the server.

The default suite uploads 30 runs; the soak (`-m soak`) uploads 200:

    STATION_SOAK_SEED=7 pytest -m soak -s tests/chaos/test_network_chaos.py
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import pytest
from reporting_fixtures import (
    attachment_bytes,
    emulator_fixture,  # noqa: F401 - fixture
    expected_body,
    ledger,
    record_runs,
    ref_of,
    run_dirs,
    run_posts,
    soak_fixture,  # noqa: F401 - fixture
    stored_body,
)

from station.tofupilot.client import TofuPilotClient
from station.tofupilot.outbox import PARKED, Outbox

MIX = {"ok": 10, "429": 2, "500": 2, "hang": 1, "drop_after_store": 2}
HANG_S = 0.6  # longer than the client waits: a hang is a timeout
CLIENT_TIMEOUT_S = 0.3


def upload_through_chaos(tmp_path: Path, emulator, count: int, seed: int) -> None:
    data_dir = record_runs(tmp_path, count)
    emulator.faults.hang_s = HANG_S
    emulator.faults.random_mix(seed, MIX)
    key = emulator.station_key

    outbox = Outbox(
        data_dir,
        lambda: TofuPilotClient(emulator.url, key, timeout_s=CLIENT_TIMEOUT_S),
        sleep=lambda seconds: None,  # backoff is the policy's business, not this test's
    )
    passes, bound = 0, 20 * count
    with outbox:
        while passes < bound:
            left = outbox.drain(retry_parked=False)
            passes += 1
            assert not [s for s in left if s.state == PARKED], left
            if not left:  # nothing queued, and no finalize still to retry
                break
    emulator.faults.clear()

    dirs = run_dirs(data_dir)
    figures = ledger(emulator, dirs)
    faults = Counter(r.fault for r in emulator.requests)
    posts = run_posts(emulator)
    attachments = [a for run in emulator.runs.values() for a in run.attachments]
    empty = sum(1 for a in attachments if a.data is None)
    unfinalized = sum(1 for a in attachments if a.data is not None and not a.finalized)
    print(
        f"\nnetwork chaos (seed {seed}): runs {count}, drain passes {passes}, "
        f"requests {len(emulator.requests)} ({', '.join(f'{k} {v}' for k, v in faults.items())}), "
        f"run POSTs {sum(posts.values())} (most for one run {max(posts.values())}), "
        f"on server {figures['on server']}, duplicates {figures['duplicates']}, "
        f"lost {figures['lost']}; attachments: empty re-created {empty}, "
        f"unfinalized {unfinalized}"
    )
    assert passes < bound, "the outbox never emptied"
    assert figures == {
        "run directories": count,
        "on server": count,
        "uploaded": count,
        "duplicates": 0,
        "lost": 0,
        "strays": 0,
    }
    for run_dir in dirs:
        expected = expected_body(run_dir, emulator)
        assert stored_body(emulator, ref_of(run_dir)) == expected, run_dir.name
    for run in emulator.runs.values():
        serial = run.body["serial_number"]
        holding = [a for a in run.attachments if a.data is not None]
        assert [(a.name, a.data) for a in holding] == [
            (f"{serial}.txt", attachment_bytes(serial))
        ], serial
    assert set(posts) == {ref_of(d) for d in dirs}
    assert unfinalized == 0, f"{unfinalized} attachment(s) with bytes left unfinalized"


def test_thirty_runs_through_a_misbehaving_server_arrive_once_and_intact(tmp_path, emulator):
    upload_through_chaos(tmp_path, emulator, count=30, seed=424242)


@pytest.mark.soak
def test_soak_two_hundred_runs_through_a_misbehaving_server(tmp_path, emulator, soak):
    seed = int(os.environ.get("STATION_SOAK_SEED", "7"))
    upload_through_chaos(tmp_path, emulator, count=200, seed=seed)
