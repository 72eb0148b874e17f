"""Opt-in kill points for crash tests; inert unless `STATION_FAULT_POINT` names one.

`reached(name)` does nothing unless the environment variable `STATION_FAULT_POINT` equals `name`
(read on every call, never at import). Then it creates the file named by `STATION_FAULT_MARKER`
(if set), says so on stderr and sleeps `STATION_FAULT_SLEEP` seconds (default 60), so a test
can SIGKILL the process at exactly that point, or let it go on after the pause. With
`STATION_FAULT_RELEASE` naming a file, the pause ends as soon as that file exists, so a test can
hold the process at the point for exactly as long as it needs, whatever the machine's load. Points:
`run_started` (the run directory exists and is claimed, no phase has started),
`phase:<name>` (that phase has started and is in the journal, it has not ended),
`record_write` (every phase has ended, the run's final record is not written yet),
`record_write_journaled` (the journal holds the run's end, run.json is not written yet) and
`claim_opened` (the claim's lock file is open, not locked yet). `listeners()` gives the run
listeners that reach the run points: `(before_journal, after_claim)`, both empty when unarmed.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from station.records.listener import RunListener
from station.records.model import RunRecord

ENV_POINT = "STATION_FAULT_POINT"
ENV_MARKER = "STATION_FAULT_MARKER"
ENV_SLEEP = "STATION_FAULT_SLEEP"
ENV_RELEASE = "STATION_FAULT_RELEASE"


def armed() -> str | None:
    return os.environ.get(ENV_POINT) or None


def reached(name: str) -> None:
    if os.environ.get(ENV_POINT) != name:
        return
    marker = os.environ.get(ENV_MARKER)
    if marker:
        Path(marker).write_text(f"{name} {os.getpid()}\n", encoding="utf-8")
    print(f"station: fault point {name} reached", file=sys.stderr, flush=True)
    pause_s = float(os.environ.get(ENV_SLEEP) or 60)
    release = os.environ.get(ENV_RELEASE)
    if not release:
        time.sleep(pause_s)
        return
    deadline = time.monotonic() + pause_s
    while not Path(release).exists() and time.monotonic() < deadline:
        time.sleep(0.01)


class _BeforeJournal(RunListener):
    def run_ended(self, record: RunRecord) -> None:
        reached("record_write")


class _AfterClaim(RunListener):
    def run_started(self, record: RunRecord) -> None:
        reached("run_started")

    def phase_started(self, name: str, attempt: int) -> None:
        reached(f"phase:{name}")


def listeners() -> tuple[list[RunListener], list[RunListener]]:
    if armed() is None:
        return [], []
    return [_BeforeJournal()], [_AfterClaim()]
