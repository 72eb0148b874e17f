"""The per-run upload claim.

A run is uploaded only by the process holding its claim, an exclusive non-blocking `flock` on
`upload.lock` in the run directory; others skip it. `station run` claims its run directory as soon
as it exists, so an interrupted-run recovery or a `station upload` started meanwhile never touches
a run that is still going on or being uploaded.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from station.records.listener import RunListener
from station.records.model import RunRecord
from station.testing import faultpoints

if TYPE_CHECKING:
    from station.tofupilot.outbox import Outbox

LOCK_FILE = "upload.lock"
CLAIM_WAIT_S = 2.0  # how long a starting run waits for a claim held for an instant elsewhere


def try_claim(run_dir: Path) -> int | None:
    """Take the claim on `run_dir` without waiting: the locked descriptor (closing it releases
    the claim), or None if another process has it or the lock file cannot be opened."""
    try:
        fd = os.open(run_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:
        return None
    faultpoints.reached("claim_opened")
    if not _try_lock(fd):
        os.close(fd)
        return None
    _sign(fd)
    return fd


def claimed_before(run_dir: Path) -> bool:
    """True once a process has held the claim on `run_dir` (its lock file is signed).

    A lock file that exists but is empty was only opened: its process may be about to lock it,
    so it proves nothing about a run that is just starting.
    """
    try:
        return (run_dir / LOCK_FILE).stat().st_size > 0
    except OSError:
        return False


def _sign(fd: int) -> None:
    """Write the holder's pid into the lock file, under the lock: it has been claimed."""
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
    except OSError:
        pass  # the claim holds all the same; the directory just looks unclaimed a little longer


class RunClaim(RunListener):
    """Holds the upload claim on a run's directory from the moment the journal creates it.

    Put it right after the journal in the runner's listeners: from then on no `station upload`
    or interrupted-run recovery in another process touches the run, until this process has
    uploaded it (or exits).
    """

    def __init__(self, outbox: Outbox, run_dir: Callable[[], Path | None]) -> None:
        super().__init__()
        self._outbox = outbox
        self._run_dir = run_dir

    def run_started(self, record: RunRecord) -> None:
        run_dir = self._run_dir()
        if run_dir is None:
            return
        # Another process may hold it for an instant (a `station runs` probing whether the
        # directory is busy): try again rather than run unclaimed.
        deadline = time.monotonic() + CLAIM_WAIT_S
        while not self._outbox.claim(run_dir):
            if time.monotonic() > deadline:
                raise RuntimeError(f"could not claim {run_dir}: another process holds it")
            time.sleep(0.01)


def _try_lock(fd: int) -> bool:
    try:
        import fcntl
    except ImportError:  # Windows
        import msvcrt

        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    return True
