"""Retry times carry jitter: a fleet of stations coming back from the same outage, or told by
TofuPilot to come back in 30 s, does not retry in lockstep, and every run still arrives once.

50 stations (separate data directories, one outbox and one fake clock each, on threads) drain at
once against the emulator answering 429 with Retry-After over real HTTP."""

from __future__ import annotations

import random
import threading
from pathlib import Path

from station.authoring.helpers import Dut
from station.engine.runner import Runner
from station.storage.journal import Journal
from station.tofupilot.client import ApiError, TofuPilotClient, TransportError
from station.tofupilot.outbox import QUEUED, UPLOADED, Outbox, retry_delay_s
from station.tofupilot.policy import BACKOFF_S
from station.tofupilot.upload_state import epoch

STATIONS = 50
RETRY_AFTER_S = 30
CREATE = "POST /api/v2/runs$"

PROC = """
from station import phase

@phase
def only(log):
    log.info("fine")
"""


class FakeClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_backoff_steps_are_spread_over_half_a_step_and_never_shortened():
    rng = random.Random(7)
    refused = TransportError("connect", "refused")
    for failures, step in enumerate(BACKOFF_S, start=1):
        waits = [retry_delay_s(failures, refused, rng) for _ in range(400)]
        assert min(waits) >= step and max(waits) <= step * 1.5
        assert max(waits) - min(waits) > step * 0.4  # really spread, not a constant
    limited = ApiError(429, "rate_limited", "slow down", retry_after_s=RETRY_AFTER_S)
    waits = [retry_delay_s(1, limited, rng) for _ in range(400)]
    assert min(waits) >= RETRY_AFTER_S  # the server's Retry-After is never cut short
    assert max(waits) <= RETRY_AFTER_S * 1.5 and max(waits) - min(waits) > 10


def test_fifty_stations_told_to_retry_after_30_s_come_back_spread_out_and_upload_once(
    bench, emulator, tmp_path
):
    bench.write(PROC)
    procedure = bench.load()
    start = 1_900_000_000.0
    stations: list[tuple[Path, FakeClock, Outbox]] = []
    for n in range(STATIONS):
        data_dir = tmp_path / f"station{n:02}"
        Runner(
            procedure,
            Dut(f"SN-{n:04}", procedure.part_number, procedure.revision),
            listeners=[Journal(data_dir)],
            handle_signals=False,
        ).execute()
        clock = FakeClock(start)
        outbox = Outbox(
            data_dir,
            lambda: TofuPilotClient(emulator.url, emulator.station_key, timeout_s=10),
            clock=clock,
            sleep=clock.sleep,
        )
        stations.append((data_dir, clock, outbox))

    def drain_all(now_of) -> list[list]:
        """Every station drains at once; `now_of(i)` is station i's idea of now."""
        results: list[list] = [[] for _ in stations]
        errors: list[BaseException] = []

        def one(i: int) -> None:
            try:
                results[i] = stations[i][2].drain(now=now_of(i))
            except BaseException as exc:  # reported below, not lost in the thread
                errors.append(exc)

        threads = [threading.Thread(target=one, args=(i,)) for i in range(STATIONS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        assert not errors, errors
        return results

    # The outage: every station's first create is refused with "come back in 30 s".
    emulator.faults.plan([f"429:{RETRY_AFTER_S}"] * STATIONS, match=CREATE)
    first = drain_all(lambda i: stations[i][1]())
    retry_at = []
    for (status,) in first:
        assert status.state == QUEUED and status.last_error["status"] == 429, status
        retry_at.append(epoch(status.next_retry_at))
    assert emulator.runs == {}
    waits = sorted(at - start for at in retry_at)
    assert waits[0] >= RETRY_AFTER_S - 1  # nobody before the time the server asked for
    assert waits[-1] - waits[0] >= 8, waits  # spread over seconds, not one instant
    assert len(set(waits)) >= 8, waits  # at one-second resolution: many distinct times
    biggest_second = max(waits.count(w) for w in waits)
    assert biggest_second <= STATIONS // 4, waits  # no second gets a quarter of the fleet

    # Just before its own retry time a station sends nothing.
    emulator.faults.clear()
    posts = len(emulator.requests_to("POST", "/api/v2/runs"))
    before = drain_all(lambda i: retry_at[i] - 1)
    assert all(s.state == QUEUED and not s.tried for (s,) in before)
    assert len(emulator.requests_to("POST", "/api/v2/runs")) == posts

    # At its retry time each station uploads its run, once.
    for (_, clock, _), at in zip(stations, retry_at, strict=True):
        clock.now = at
    second = drain_all(lambda i: stations[i][1]())
    assert all(s.state == UPLOADED for (s,) in second)
    refs = sorted(run.body["client_run_ref"] for run in emulator.runs.values())
    assert len(refs) == STATIONS == len(set(refs))
    assert len(emulator.requests_to("POST", "/api/v2/runs")) == 2 * STATIONS
    for _, _, outbox in stations:
        assert outbox.pending() == [] and outbox.index.names() == []
        outbox.close()
