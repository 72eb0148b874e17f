"""The index of runs not uploaded yet: one empty marker file per run in `data_dir/.pending/`.

A busy line records 300,000 runs a year, nearly all of them uploaded; an upload pass must cost
what is pending, not what was ever recorded. So the journal adds a run's marker when the run
starts (after locking its directory, before its first write, the directory fsynced so a power
cut cannot keep the journal and lose the marker), and the outbox removes it once TofuPilot has
the run. Reading the index is one directory listing of a handful of names.

`.pending/.complete` says the index covers every run of the data directory. A data directory
that had runs before the index existed (recorded by an earlier version), or whose `.pending`
was deleted or damaged, has no `.complete`: `names()` answers None and the caller scans every
run once (`rebuild`, given the runs found pending), then the index is complete again. A fresh
data directory's index is complete from its first run.

A marker whose run turns out to be uploaded, gone or never started is only a little extra work:
the outbox drops it when it meets it. A run never loses its marker while it is pending: markers
are added before the journal and removed only after upload.json says uploaded.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterable
from pathlib import Path

from station.storage.syncer import fsync_dir

__all__ = ["COMPLETE", "PENDING_DIR", "PendingIndex"]

PENDING_DIR = ".pending"
COMPLETE = ".complete"


class PendingIndex:
    """The pending-run markers of one data directory. Every method is safe to call from several
    processes at once; only `add`, `discard` and `rebuild` write."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = Path(data_dir)
        self.path = self.data_dir / PENDING_DIR

    def add(self, run_name: str) -> None:
        """Mark run `run_name` (a directory of data_dir) as pending, durably (raises OSError).

        When this creates the index in a data directory holding no other run, the index is
        complete from the start.
        """
        created = False
        if not self.path.is_dir():
            with contextlib.suppress(FileExistsError):
                self.path.mkdir()
                created = True
        fd = os.open(self.path / run_name, os.O_WRONLY | os.O_CREAT, 0o644)
        os.close(fd)
        if created and not self._other_runs(run_name):
            self._mark_complete()
        fsync_dir(self.path)
        if created:
            fsync_dir(self.data_dir)

    def discard(self, run_name: str) -> None:
        """The run is uploaded (or gone): drop its marker. Never raises."""
        with contextlib.suppress(OSError):
            (self.path / run_name).unlink()

    def complete(self) -> bool:
        return (self.path / COMPLETE).is_file()

    def names(self) -> list[str] | None:
        """The pending runs' directory names, oldest first (names start with the time); None when
        the index does not cover every run (never built, deleted or unreadable)."""
        if not self.complete():
            return None
        try:
            entries = os.listdir(self.path)
        except OSError:
            return None
        return sorted(name for name in entries if not name.startswith("."))

    def rebuild(self, pending_run_dirs: Iterable[Path]) -> None:
        """Write a marker for each of `pending_run_dirs` (found by reading every run of the data
        directory: the caller knows what pending means) and mark the index complete.

        A `.pending` that is not a directory is moved aside first. Markers already there stay
        (runs that start meanwhile add their own). Raises OSError when the index cannot be
        written.
        """
        if self.path.exists() and not self.path.is_dir():
            aside = self.path.with_name(f"{PENDING_DIR}.damaged-{int(time.time())}")
            os.replace(self.path, aside)
        self.path.mkdir(exist_ok=True)
        for run_dir in pending_run_dirs:
            os.close(os.open(self.path / run_dir.name, os.O_WRONLY | os.O_CREAT, 0o644))
        fsync_dir(self.path)
        self._mark_complete()

    def _other_runs(self, run_name: str) -> bool:
        try:
            with os.scandir(self.data_dir) as entries:
                return any(
                    e.name != run_name and not e.name.startswith(".") and e.is_dir()
                    for e in entries
                )
        except OSError:
            return True  # cannot tell: let a later pass rebuild

    def _mark_complete(self) -> None:
        fd = os.open(self.path / COMPLETE, os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        fsync_dir(self.path)
