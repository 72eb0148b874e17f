"""The lock on a run directory: held by the process that records, recovers or uploads the run.

The lock is `upload.lock` in the run directory. The journal takes it right after creating the
directory and before its first write (`Journal`), so a directory holding a journal is always one
whose lock was taken first: a journal without `run.json` whose lock nobody holds is a run whose
process died, with no clock involved. An uploader holds it while it uploads (`Outbox.claim`).

Linux uses open-file-description locks (`F_OFD_SETLK`): like `flock`, each open of the file is
its own owner (two opens in one process exclude each other; closing the descriptor releases the
lock) and the kernel drops them when the process dies. Unlike `flock`, they can be *queried*
(`F_OFD_GETLK`) without being taken, so a status probe (`held_elsewhere`) reads without locking
anything, and never makes a run that is starting wait. Elsewhere (macOS: `flock`; Windows:
`msvcrt.locking`) the probe has to take the lock for an instant and drop it; a run starting at
that instant tries again for up to `LOCK_WAIT_S`.

A lock held by another process (`try_lock` returns None) is not the same as a lock that cannot be
taken at all: a lock file that cannot be created or opened for writing (read-only or full data
directory) raises `ClaimUnavailable`, so nobody is told "busy in another process" when the disk
is the problem.
"""

from __future__ import annotations

import os
import struct
import sys
import time
from pathlib import Path

from station.testing import faultpoints

__all__ = [
    "LOCK_FILE",
    "LOCK_WAIT_S",
    "ClaimUnavailable",
    "held_elsewhere",
    "lock_for_run",
    "try_lock",
]

LOCK_FILE = "upload.lock"
LOCK_WAIT_S = 2.0  # how long a starting run waits for a lock a probe holds for an instant

if sys.platform != "win32":
    import fcntl

    # struct flock: l_type, l_whence (short), l_start, l_len (off_t), l_pid (pid_t), padding.
    _FLOCK = "hhqqi4x"
    _OFD = sys.platform.startswith("linux") and hasattr(fcntl, "F_OFD_GETLK")
else:  # pragma: no cover - Windows
    _OFD = False


class ClaimUnavailable(OSError):
    """The lock on a run cannot be taken at all: its lock file cannot be created or opened."""


def try_lock(run_dir: Path) -> int | None:
    """Take the lock on `run_dir` without waiting: the locked descriptor (closing it releases
    the lock), or None if another owner has it. Raises `ClaimUnavailable` when the lock file
    cannot be opened for writing (read-only or full data directory, permissions)."""
    path = Path(run_dir) / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise ClaimUnavailable(
            exc.errno, f"{path} cannot be created ({exc.strerror or exc})"
        ) from None
    faultpoints.reached("claim_opened")
    if not _lock(fd):
        os.close(fd)
        return None
    _sign(fd)
    return fd


def lock_for_run(run_dir: Path, wait_s: float = LOCK_WAIT_S) -> int:
    """The lock on a directory this process has just created: waits at most `wait_s` for a
    probe that holds it for an instant (only where probes must lock). Raises
    `ClaimUnavailable` if it cannot be opened, `TimeoutError` if another owner keeps it."""
    deadline = time.monotonic() + wait_s
    while True:
        fd = try_lock(run_dir)
        if fd is not None:
            return fd
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"could not lock {Path(run_dir) / LOCK_FILE}: another process holds it"
            )
        time.sleep(0.01)


def held_elsewhere(run_dir: Path) -> bool:
    """Whether another owner holds the lock on `run_dir` (this process through another
    descriptor counts too: ask only about locks you do not hold). Needs no write access and,
    on Linux, takes no lock; never creates the lock file."""
    try:
        fd = os.open(Path(run_dir) / LOCK_FILE, os.O_RDONLY)
    except OSError:
        return False  # no lock file: nobody has locked it
    try:
        if _OFD:
            probe = struct.pack(_FLOCK, fcntl.F_WRLCK, os.SEEK_SET, 0, 0, 0)
            answer = fcntl.fcntl(fd, fcntl.F_OFD_GETLK, probe)
            return bool(struct.unpack(_FLOCK, answer)[0] != fcntl.F_UNLCK)
        return not _lock(fd)  # no way to ask: take it for an instant (closing drops it)
    finally:
        os.close(fd)


def _sign(fd: int) -> None:
    """Write the holder's pid into the lock file, under the lock (for a person looking)."""
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
    except OSError:
        pass  # the lock holds all the same


def _lock(fd: int) -> bool:
    if sys.platform == "win32":  # pragma: no cover - Windows
        import msvcrt

        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True
    try:
        if _OFD:
            whole = struct.pack(_FLOCK, fcntl.F_WRLCK, os.SEEK_SET, 0, 0, 0)
            fcntl.fcntl(fd, fcntl.F_OFD_SETLK, whole)
        else:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    return True
