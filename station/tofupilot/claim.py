"""The per-run upload claim: the run directory's lock (`station.storage.runlock`), held by the
process that records or uploads the run.

A run is uploaded only by the process holding its claim; others skip it. The journal takes the
lock before its first write (through `Outbox.claim` in `station run`, so the same process then
uploads the run without letting go), so an interrupted-run recovery or a `station upload`
started meanwhile never touches a run that is still going on or being uploaded, and a journal
without run.json whose lock is free is a run whose process died.

A claim held by another process (`try_claim` returns None) is not the same as a claim that cannot
be taken at all: a lock file that cannot be created (read-only or full data directory) raises
`ClaimUnavailable`, so nobody is told "busy in another process" when the disk is the problem.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from station.records.listener import RunListener
from station.records.model import RunRecord
from station.storage.runlock import LOCK_FILE, ClaimUnavailable, held_elsewhere
from station.storage.runlock import try_lock as try_claim

__all__ = [
    "LOCK_FILE",
    "ClaimUnavailable",
    "RunClaim",
    "held_elsewhere",
    "try_claim",
]


class RunClaim(RunListener):
    """Takes the upload claim on a run's directory when the run starts, if nobody holds it.

    Not needed when the journal is given the claim (`Journal(data_dir, claim=outbox.claim)`),
    which takes it before its first write; kept for callers that list it after the journal. A
    journal built without a claim holds the directory's lock itself until run.json is written:
    then this listener leaves it to the journal, and the outbox claims the run when it uploads.
    """

    def __init__(self, claim: Callable[[Path], bool], run_dir: Callable[[], Path | None]) -> None:
        """`claim(run_dir)` takes the claim (`Outbox.claim`), `run_dir()` says where the run is."""
        super().__init__()
        self._claim = claim
        self._run_dir = run_dir

    def run_started(self, record: RunRecord) -> None:
        run_dir = self._run_dir()
        if run_dir is not None:
            self._claim(run_dir)  # re-entrant for the outbox that already holds it
