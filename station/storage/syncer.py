"""Group commit: fsync a file from a background thread, many requests per fsync.

The journal writes every event to the kernel before the run moves on, so a killed process loses
nothing. Only a power cut needs the fsync, and an fsync costs from ~0.2 ms (a fast SSD) to
several ms (4 ms median on the virtual disk the benchmarks ran on): more than a whole trivial
phase, and writes to the file stall while one is in flight. So a phase end *requests* an fsync
and the run goes on; the syncer fsyncs at most every `interval_s` (20 ms; the first one an
interval after it starts), covering every request made so far, and at once for a caller that
`wait()`s.

After a power cut the journal therefore holds every phase that ended more than `interval_s`
plus one fsync before it (about 25 ms on that disk). The end of a run needs no journal fsync:
run.json, written whole and fsynced, is what makes it durable (`journal`), so the journal's
syncer is closed without one.

Why a thread and not an fsync at each phase end on the runner's thread: measured with
`bench.cases.overhead_station`, 1,000 trivial phases with the record on disk cost 0.15-0.37 ms
per phase with this thread and 6.6 ms per phase with an inline fsync, against OpenHTF's 3.5 ms
(budget: 0.2x OpenHTF). An error of a background fsync is raised to the next caller.

One thread serves every journal of the process, started with the first: in the production loop
a thread started and joined per unit cost more than the unit's own phases. `DirectorySync` hands
it one directory fsync to finish later; `fsync_dir` is the plain fsync of a directory, on the
caller's thread, that the rest of `storage` shares.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

__all__ = ["DEFAULT_INTERVAL_S", "DirectorySync", "Syncer", "fsync_dir"]

DEFAULT_INTERVAL_S = 0.02

# Every Syncer's counters are guarded by this one condition, which the fsync thread waits on.
_cond = threading.Condition()
_active: list[Syncer] = []
_thread: threading.Thread | None = None
_thread_pid = 0


class Syncer:
    """fsyncs one file descriptor on request, in the background, coalescing requests."""

    def __init__(self, fd: int, interval_s: float = DEFAULT_INTERVAL_S) -> None:
        self._fd = fd
        self._interval_s = interval_s
        self._requested = 0  # tickets handed out
        self._synced = 0  # every ticket up to this one is on disk
        self._waiters = 0  # callers blocked in wait(): sync now, not at the next interval
        self._error: OSError | None = None
        self._closing = False
        self._in_flight = False  # the thread is in fsync(fd): the descriptor must stay open
        self._last_sync = time.monotonic()  # the first fsync comes one interval in
        with _cond:
            _active.append(self)
            _start_thread()

    def request(self) -> int:
        """Ask for everything written so far to reach the disk; returns a ticket to wait on."""
        with _cond:
            self._raise_pending()
            self._requested += 1
            if self._requested == self._synced + 1:
                # Idle until now: the thread must time this fsync. Otherwise it already does,
                # and waking it per request would cost the run a thread switch per phase.
                _cond.notify_all()
            return self._requested

    def wait(self, ticket: int | None = None) -> None:
        """Block until `ticket` (default: every request so far) is on disk; raise its OSError."""
        with _cond:
            target = self._requested if ticket is None else ticket
            self._waiters += 1
            _cond.notify_all()
            try:
                while self._synced < target and self._error is None:
                    _cond.wait()
            finally:
                self._waiters -= 1
            self._raise_pending()

    def close(self, sync: bool = True) -> None:
        """Stop syncing this descriptor, first syncing what was requested. With `sync=False` the
        requests not yet under way are dropped, for a caller that makes the data durable another
        way; an fsync in flight still ends first (the caller may close the descriptor once this
        returns), and an error of an earlier fsync is still raised."""
        try:
            if sync:
                self.wait()
        finally:
            with _cond:
                if not sync:
                    self._requested = self._synced
                self._closing = True
                _cond.notify_all()
                while self._in_flight or (self._synced < self._requested and self._error is None):
                    _cond.wait()
                if self in _active:
                    _active.remove(self)
        with _cond:
            self._raise_pending()

    def _raise_pending(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error


def fsync_dir(directory: Path) -> None:
    """fsync `directory` now, on the caller's thread, so the entries made in it are on disk."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return  # a directory cannot be opened here (Windows): its entries need no fsync
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class DirectorySync:
    """An fsync of a directory, started now on the fsync thread and waited for by `finish()`: for
    an entry that must be on disk by some later point (a run's directory, before its verdict)
    but need not hold the caller up until then."""

    def __init__(self, directory: Path) -> None:
        self._fd: int | None = None
        self._syncer: Syncer | None = None
        try:
            self._fd = os.open(directory, os.O_RDONLY)
        except OSError:
            return  # a directory cannot be opened here (Windows): its entries need no fsync
        self._syncer = Syncer(self._fd, interval_s=0.0)
        self._syncer.request()

    def finish(self) -> None:
        """Wait for the fsync (raise its OSError), then let go of the directory. Idempotent."""
        syncer, self._syncer = self._syncer, None
        try:
            if syncer is not None:
                syncer.close()
        finally:
            fd, self._fd = self._fd, None
            if fd is not None:
                os.close(fd)


def _start_thread() -> None:
    """Start the fsync thread unless this process has it running (called with `_cond` held)."""
    global _thread, _thread_pid
    if _thread is not None and _thread_pid == os.getpid() and _thread.is_alive():
        return
    _thread = threading.Thread(target=_serve, name="station-fsync", daemon=True)
    _thread_pid = os.getpid()
    _thread.start()


def _due() -> tuple[Syncer | None, float | None]:
    """The syncer to fsync now, else how long until one is due (None: nothing requested)."""
    now = time.monotonic()
    soonest: float | None = None
    for syncer in _active:
        if syncer._synced >= syncer._requested or syncer._in_flight:
            continue
        due = syncer._last_sync + syncer._interval_s - now
        if due <= 0 or syncer._waiters or syncer._closing:
            return syncer, None
        soonest = due if soonest is None else min(soonest, due)
    return None, soonest


def _serve() -> None:
    while True:
        with _cond:
            syncer, wait_s = _due()
            while syncer is None:
                _cond.wait(wait_s)
                syncer, wait_s = _due()
            target = syncer._requested
            syncer._in_flight = True
        error: OSError | None = None
        try:
            os.fsync(syncer._fd)  # releases the GIL: the runs go on meanwhile
        except OSError as exc:
            error = exc
        with _cond:
            syncer._in_flight = False
            syncer._synced = max(syncer._synced, target)  # an error is reported once, then done
            if error is not None:
                syncer._error = error
            else:
                syncer._last_sync = time.monotonic()
            _cond.notify_all()


def _forget_in_child() -> None:
    """A forked child has no fsync thread and no journals of its own yet."""
    global _cond, _thread
    _cond = threading.Condition()
    _active.clear()
    _thread = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_in_child)
