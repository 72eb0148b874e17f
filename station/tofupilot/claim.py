"""The per-run upload claim.

A run is uploaded only by the process holding its claim, an exclusive non-blocking `flock` on
`upload.lock` in the run directory; others skip it. `station run` claims its run directory as soon
as it exists, so an interrupted-run recovery or a `station upload` started meanwhile never touches
a run that is still going on or being uploaded.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from station.events import RunListener
from station.record import RunRecord

if TYPE_CHECKING:
    from station.tofupilot.outbox import Outbox

LOCK_FILE = "upload.lock"


def try_claim(run_dir: Path) -> int | None:
    """Take the claim on `run_dir` without waiting: the locked descriptor (closing it releases
    the claim), or None if another process has it or the lock file cannot be opened."""
    try:
        fd = os.open(run_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:
        return None
    if not _try_lock(fd):
        os.close(fd)
        return None
    return fd


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
        if run_dir is not None:
            self._outbox.claim(run_dir)


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
