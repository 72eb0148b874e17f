"""Disk space set aside so that a disk filling up mid-run does not cost the run its last phases.

A journal that meets a full disk gives the reserve back and writes the rest of its run in the
space freed (see `journal`); run.json does the same when it does not fit. The reserve is a file
with no name (`O_TMPFILE`, else a file unlinked as soon as it is created) held open, so no crash
can leave it behind: the kernel frees it with the process. Where an open file cannot be unlinked
(Windows) there is no reserve.

A journal of its own sets one aside per run. The production loop gives its journals one reserve
for all its units (`Journal(reserve=...)`), set aside again only after a unit used it: allocating
and freeing a megabyte per unit cost more than the unit's phases on a disk mounted with online
discard.
"""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path

__all__ = ["RESERVE_BYTES", "Reserve"]

RESERVE_BYTES = 1 << 20  # at most; never more than a quarter of the free space
_MIN_BYTES = 4096


class Reserve:
    """Up to RESERVE_BYTES held on the file system of `directory`. Thread-safe; never raises."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self._lock = threading.Lock()
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def ensure(self) -> None:
        """Set the space aside unless it is held already (or the disk is nearly full)."""
        with self._lock:
            if self._fd is None:
                self._fd = _set_aside(self.directory)

    def give_back(self) -> bool:
        """Free the space for the caller's next write; False if none was held."""
        with self._lock:
            fd, self._fd = self._fd, None
        if fd is None:
            return False
        with contextlib.suppress(OSError):
            os.close(fd)  # the file has no name: closing it frees its blocks
        return True


def _set_aside(directory: Path) -> int | None:
    """A descriptor on a nameless file holding the reserve, or None (no room, not supported)."""
    try:
        stats = os.statvfs(directory)
    except (OSError, AttributeError):  # AttributeError: no statvfs (Windows)
        return None
    size = min(RESERVE_BYTES, stats.f_bavail * stats.f_frsize // 4)
    if size < _MIN_BYTES:
        return None
    fd = _nameless_file(directory)
    if fd is None:
        return None
    try:
        try:
            os.posix_fallocate(fd, 0, size)
        except (AttributeError, OSError):  # not supported here: write it out
            os.ftruncate(fd, 0)
            os.write(fd, b"\0" * size)
    except OSError:
        os.close(fd)
        return None
    return fd


def _nameless_file(directory: Path) -> int | None:
    tmpfile = getattr(os, "O_TMPFILE", 0)
    if tmpfile:
        with contextlib.suppress(OSError):  # a file system without O_TMPFILE: the way below
            return os.open(directory, tmpfile | os.O_WRONLY, 0o600)
    path = directory / f".reserve-{os.getpid()}-{threading.get_ident()}"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError:
        return None
    try:
        os.unlink(path)
    except OSError:  # an open file cannot be unlinked here (Windows): no reserve
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(path)
        return None
    return fd
