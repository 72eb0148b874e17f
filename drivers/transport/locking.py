"""An OS file lock per instrument, so two station processes never drive the same instrument.

VISA locks do not work on pyvisa-py sockets or serial ports (`lock_excl()` is unsupported and
`access_mode=exclusive_lock` is silently ignored), so the framework locks by itself: one lock file
per instrument, locked with `flock` and holding the owner's pid. The kernel releases a flock when
its process dies, so a crashed station never leaves a stale lock behind.

One instrument, one lock file, whoever asks:

- The key is the instrument's address, not its spelling: host names are resolved to their IP
  (`TCPIP::localhost::5025::SOCKET`, `TCPIP0::127.0.0.1::5025::SOCKET` and
  `socket://localhost:5025` are one instrument), VISA names are canonical
  (`TCPIP::h::INSTR` = `TCPIP0::h::inst0::INSTR`), device paths have their symlinks resolved
  (`/dev/serial/by-id/usb-...` = `/dev/ttyUSB0`).
- The directory is one per machine, the same for every user and shell (ssh, cron, sudo: no
  `$XDG_RUNTIME_DIR`, no per-user path): `/run/lock/station` where it can be created, else
  `<tempfile.gettempdir()>/station-locks` (e.g. `/tmp/station-locks`). It is created with mode
  1777 (sticky, like /tmp) and each lock file with mode 0666, so every user's station can lock.
  `$STATION_LOCK_DIR` overrides it, for tests and isolated setups only: stations that use
  different directories do not see each other's locks.

Inside one process the lock is shared (reference counted): threads of one process are already
serialised by the transport's per-connection lock, and tests open several drivers on one twin.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import socket
import stat
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from drivers.errors import KIND_IN_USE, InstrumentError

if sys.platform != "win32":
    import fcntl

LOCK_DIR_ENV = "STATION_LOCK_DIR"
MACHINE_LOCK_DIR = Path("/run/lock/station")
FALLBACK_LOCK_DIR_NAME = "station-locks"

_held: dict[str, _Held] = {}
_held_lock = threading.Lock()


@dataclass
class _Held:
    fd: int
    path: Path
    users: int = 1


def canonical_resource(resource: str) -> str:
    """One key per instrument: resolved address, canonical VISA name, or real device path.

    `TCPIP::localhost::5025::SOCKET` and `TCPIP0::127.0.0.1::5025::SOCKET` are the same
    instrument, and so are `/dev/serial/by-id/usb-...` and the `/dev/ttyUSB0` it points to.
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
        return _canonical_url(text)
    try:
        from pyvisa import rname

        canonical = rname.to_canonical_name(text)
    except Exception:  # not a VISA name pyvisa can parse: the string itself is the key
        return text
    parts = canonical.split("::")
    if parts[0].upper().startswith("TCPIP") and len(parts) > 2:
        host, comma, port = parts[1].partition(",")  # VXI-11 may name its port: "host,port"
        parts[1] = resolve_host(host) + comma + port
    return "::".join(parts)


def _canonical_url(url: str) -> str:
    """A pyserial URL's key: a TCP endpoint (`socket://host:port`, `rfc2217://host:port`) has the
    key of the VISA ::SOCKET resource at the same resolved address and port, since it is the
    same instrument; other URLs (`loop://`) are their own key."""
    try:
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port
    except ValueError:
        return url
    if not host or port is None:
        return url
    return f"TCPIP0::{resolve_host(host)}::{port}::SOCKET"


def resolve_host(host: str) -> str:
    """The IP address `host` names (IPv4 preferred), or the name itself if it cannot be
    resolved (then opening it fails anyway)."""
    try:
        return socket.gethostbyname(host)
    except (OSError, UnicodeError):
        pass
    try:
        return str(socket.getaddrinfo(host, None)[0][4][0])
    except (OSError, UnicodeError, IndexError):
        return host.lower()


def lock_dir() -> Path:
    """Where lock files live: $STATION_LOCK_DIR, else the machine-wide directory (see module
    docstring), created if needed."""
    explicit = os.environ.get(LOCK_DIR_ENV)
    if explicit:
        return Path(explicit)
    if _usable_dir(MACHINE_LOCK_DIR):
        return MACHINE_LOCK_DIR
    return Path(tempfile.gettempdir()) / FALLBACK_LOCK_DIR_NAME


def _usable_dir(path: Path) -> bool:
    """Whether `path` is (or can be made) a directory this process may create lock files in."""
    if not path.parent.is_dir():
        return False
    _make_shared_dir(path)
    return path.is_dir() and os.access(path, os.W_OK | os.X_OK)


def _make_shared_dir(path: Path) -> None:
    """Create `path` with mode 1777 (sticky, writable by all) if missing; leave it otherwise."""
    try:
        path.mkdir(parents=True)
    except FileExistsError:
        return
    except OSError:
        return  # not ours to create: the caller checks whether it is usable
    with contextlib.suppress(OSError):
        os.chmod(path, 0o777 | stat.S_ISVTX)  # not left to the umask


def lock_path(resource: str) -> Path:
    """The lock file of `resource`: readable name plus a hash, so distinct keys never collide."""
    key = canonical_resource(resource)
    return lock_dir() / _file_name(key)


def _file_name(key: str) -> str:
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", key).strip("_")[:80]
    digest = hashlib.sha1(key.encode()).hexdigest()[:10]
    return f"{readable}-{digest}.lock"


class ResourceLock:
    """This process's hold on one instrument; `release()` is idempotent."""

    def __init__(self, key: str | None) -> None:
        self._key = key
        self._released = key is None

    def release(self) -> None:
        with _held_lock:
            if self._released or self._key is None:
                return
            self._released = True
            held = _held.get(self._key)
            if held is None:
                return
            held.users -= 1
            if held.users > 0:
                return
            del _held[self._key]
        # Closing the fd releases the flock. The file stays: unlinking it could race with a
        # process that has just opened it and is about to lock it.
        with contextlib.suppress(OSError):
            os.close(held.fd)


def acquire(resource: str, *, instrument: str | None = None) -> ResourceLock:
    """Lock `resource` for this process, or raise InstrumentError naming the holder's pid."""
    if sys.platform == "win32":
        # Windows: msvcrt locks are mandatory byte-range locks that do not survive the same way;
        # rather than half-work, cross-process locking is not enforced there.
        return ResourceLock(None)
    key = canonical_resource(resource)
    with _held_lock:
        held = _held.get(key)
        if held is not None:
            held.users += 1
            return ResourceLock(key)
        directory = lock_dir()
        if directory != MACHINE_LOCK_DIR:
            _make_shared_dir(directory)
        path = directory / _file_name(key)
        fd = _open_lock_file(path, resource, instrument)
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
        with contextlib.suppress(OSError):  # a read-only lock file still locks
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n{_describe_process()}\n{key}\n".encode())
        _held[key] = _Held(fd, path)
    return ResourceLock(key)


def _open_lock_file(path: Path, resource: str, instrument: str | None) -> int:
    """Open (creating it mode 0666) the lock file; read-only if another user's file is not
    writable for us (flock works on it all the same)."""
    flags = os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, os.O_RDWR | flags, 0o666)
    except PermissionError:
        try:
            return os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except OSError as exc:
            raise _lock_file_error(path, resource, instrument, exc) from exc
    except OSError as exc:
        raise _lock_file_error(path, resource, instrument, exc) from exc
    with contextlib.suppress(OSError):
        if os.fstat(fd).st_uid == os.geteuid():
            os.fchmod(fd, 0o666)  # not left to the umask: other users' stations must open it
    return fd


def _lock_file_error(
    path: Path, resource: str, instrument: str | None, exc: OSError
) -> InstrumentError:
    return InstrumentError(
        f"cannot open the instrument's lock file {path}: {exc.strerror or exc}",
        instrument=instrument,
        resource=resource,
    )


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
