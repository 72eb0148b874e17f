"""The per-run upload claim.

A run is uploaded only by the process holding its claim, an exclusive non-blocking `flock` on
`upload.lock` in the run directory; others skip it. `station run` claims its run directory as soon
as it exists, so an interrupted-run recovery or a `station upload` started meanwhile never touches
a run that is still going on or being uploaded.

A claim held by another process (`try_claim` returns None) is not the same as a claim that cannot
be taken at all: a lock file that cannot be created (read-only or full data directory) raises
`ClaimUnavailable`, so nobody is told "busy in another process" when the disk is the problem.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

from station.records.listener import RunListener
from station.records.model import RunRecord
from station.testing import faultpoints

__all__ = [
    "CLAIM_WAIT_S",
    "LOCK_FILE",
    "ClaimUnavailable",
    "RunClaim",
    "claimed_before",
    "held_elsewhere",
    "try_claim",
]

LOCK_FILE = "upload.lock"
CLAIM_WAIT_S = 2.0  # how long a starting run waits for a claim held for an instant elsewhere


class ClaimUnavailable(OSError):
    """The claim on a run cannot be taken at all: its lock file cannot be created or opened."""


def try_claim(run_dir: Path) -> int | None:
    """Take the claim on `run_dir` without waiting: the locked descriptor (closing it releases
    the claim), or None if another process has it. Raises `ClaimUnavailable` when the lock file
    cannot be opened (read-only or full data directory, permissions)."""
    path = run_dir / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise ClaimUnavailable(
            exc.errno, f"{path} cannot be created ({exc.strerror or exc})"
        ) from None
    faultpoints.reached("claim_opened")
    if not _try_lock(fd):
        os.close(fd)
        return None
    _sign(fd)
    return fd


def held_elsewhere(run_dir: Path) -> bool:
    """Whether a process holds the claim on `run_dir` (one that has it through another file
    descriptor counts too: ask only about claims you do not hold). Needs no write access."""
    try:
        fd = os.open(run_dir / LOCK_FILE, os.O_RDONLY)
    except OSError:
        return False  # no lock file: nobody has claimed it
    try:
        return not _try_lock(fd)
    finally:
        os.close(fd)  # drops the lock taken to test it


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

    def __init__(self, claim: Callable[[Path], bool], run_dir: Callable[[], Path | None]) -> None:
        """`claim(run_dir)` takes the claim (`Outbox.claim`), `run_dir()` says where the run is."""
        super().__init__()
        self._claim = claim
        self._run_dir = run_dir

    def run_started(self, record: RunRecord) -> None:
        run_dir = self._run_dir()
        if run_dir is None:
            return
        # Another process may hold it for an instant (a `station runs` probing whether the
        # directory is busy): try again rather than run unclaimed.
        deadline = time.monotonic() + CLAIM_WAIT_S
        while not self._claim(run_dir):
            if time.monotonic() > deadline:
                raise RuntimeError(f"could not claim {run_dir}: another process holds it")
            time.sleep(0.01)


def _try_lock(fd: int) -> bool:
    if sys.platform == "win32":
        import msvcrt

        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True
    import fcntl

    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    return True
