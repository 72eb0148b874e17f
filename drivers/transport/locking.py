"""An OS file lock per instrument, so two station processes never drive the same instrument.

VISA locks do not work on pyvisa-py sockets or serial ports (`lock_excl()` is unsupported and
`access_mode=exclusive_lock` is silently ignored), so the framework locks by itself: one lock
file per instrument under a per-user runtime directory, keyed by the canonical resource string,
locked with `flock` and holding the owner's pid. The kernel releases a flock when its process
dies, so a crashed station never leaves a stale lock behind.

Inside one process the lock is shared (reference counted): threads of one process are already
serialised by the transport's per-connection lock, and tests open several drivers on one twin.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from drivers.errors import KIND_IN_USE, InstrumentError

try:
    import fcntl
except ImportError:  # Windows: no flock. Locking is then a no-op (see `acquire`).
    fcntl = None  # type: ignore[assignment]

LOCK_DIR_ENV = "STATION_LOCK_DIR"

_held: dict[str, _Held] = {}
_held_lock = threading.Lock()


@dataclass
class _Held:
    fd: int
    path: Path
    users: int = 1


def canonical_resource(resource: str) -> str:
    """One spelling per instrument: VISA names via pyvisa, device paths with symlinks resolved.

    `TCPIP::h::5025::SOCKET` and `TCPIP0::h::5025::SOCKET` are the same instrument, and so are
    `/dev/serial/by-id/usb-...` and the `/dev/ttyUSB0` it points to.
    """
    text = resource.strip()
    lowered = text.lower()
    if lowered.startswith("serial://"):
        text = text[len("serial://") :]
    if text.startswith("/"):  # a device path (/dev/ttyUSB0, /dev/serial/by-id/...)
        return os.path.realpath(text)
    if lowered.startswith("asrl/dev/") and lowered.endswith("::instr"):
        return f"ASRL{os.path.realpath(text[4:-7])}::INSTR"
    if "://" in text:
        return text
    try:
        from pyvisa import rname

        return rname.to_canonical_name(text)
    except Exception:  # not a VISA name pyvisa can parse: the string itself is the key
        return text


def lock_dir() -> Path:
    """Where lock files live: $STATION_LOCK_DIR, else $XDG_RUNTIME_DIR/station-locks, else tmp."""
    explicit = os.environ.get(LOCK_DIR_ENV)
    if explicit:
        return Path(explicit)
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isdir(runtime) and os.access(runtime, os.W_OK):
        return Path(runtime) / "station-locks"
    user = os.getuid() if hasattr(os, "getuid") else os.getlogin()
    return Path(tempfile.gettempdir()) / f"station-locks-{user}"


def lock_path(resource: str) -> Path:
    """The lock file of `resource`: readable name plus a hash, so distinct keys never collide."""
    key = canonical_resource(resource)
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", key).strip("_")[:80]
    digest = hashlib.sha1(key.encode()).hexdigest()[:10]
    return lock_dir() / f"{readable}-{digest}.lock"


class ResourceLock:
    """This process's hold on one instrument; `release()` is idempotent."""

    def __init__(self, key: str | None) -> None:
        self._key = key
        self._released = key is None

    def release(self) -> None:
        with _held_lock:
            if self._released:
                return
            self._released = True
            held = _held.get(self._key)  # type: ignore[arg-type]
            if held is None:
                return
            held.users -= 1
            if held.users > 0:
                return
            del _held[self._key]  # type: ignore[arg-type]
        # Closing the fd releases the flock. The file stays: unlinking it could race with a
        # process that has just opened it and is about to lock it.
        with contextlib.suppress(OSError):
            os.close(held.fd)


def acquire(resource: str, *, instrument: str | None = None) -> ResourceLock:
    """Lock `resource` for this process, or raise InstrumentError naming the holder's pid."""
    if fcntl is None:
        # Windows: msvcrt locks are mandatory byte-range locks that do not survive the same way;
        # rather than half-work, cross-process locking is not enforced there.
        return ResourceLock(None)
    key = canonical_resource(resource)
    with _held_lock:
        held = _held.get(key)
        if held is not None:
            held.users += 1
            return ResourceLock(key)
        path = lock_path(resource)
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            owner = _read_owner(fd)
            os.close(fd)
            pid = _owner_pid(owner)
            who = f"pid {pid}" if pid is not None else "another process"
            detail = owner.split("\n", 1)[1].strip() if "\n" in owner else ""
            raise InstrumentError(
                f"is in use by {who}" + (f" ({detail})" if detail else "") + f"; lock file {path}",
                instrument=instrument,
                resource=resource,
                kind=KIND_IN_USE,
                pid=pid,
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n{_describe_process()}\n{key}\n".encode())
        _held[key] = _Held(fd, path)
    return ResourceLock(key)


def _read_owner(fd: int) -> str:
    with contextlib.suppress(OSError):
        os.lseek(fd, 0, os.SEEK_SET)
        return os.read(fd, 4096).decode("utf-8", "replace")
    return ""


def _owner_pid(owner: str) -> int | None:
    first = owner.split("\n", 1)[0].strip()
    return int(first) if first.isdigit() else None


def _describe_process() -> str:
    """A short description of this process for the other station's error message."""
    argv = " ".join(sys.argv[:4]) if sys.argv and sys.argv[0] else "python"
    return argv[:120]
