"""Group commit: fsync a file from a background thread, many requests per fsync.

The journal writes and flushes every event before the run moves on, so a killed process loses
nothing: the bytes are in the kernel. Only a power cut needs the fsync, and an fsync costs ~0.2 ms
on a typical disk, more than a whole trivial phase. So a phase end *requests* an fsync and the run
goes on; requests that arrive while an fsync is running are all covered by the next one. The
window a power cut can hit is one fsync long, and `wait()` makes it zero where it matters (the
end of the run, before run.json is written).
"""

from __future__ import annotations

import os
import threading


class Syncer:
    """fsyncs one file descriptor on request, in a daemon thread, coalescing requests."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._cond = threading.Condition()
        self._requested = 0  # tickets handed out
        self._synced = 0  # every ticket up to this one is on disk
        self._error: OSError | None = None
        self._closing = False
        self._thread = threading.Thread(target=self._loop, name="station-fsync", daemon=True)
        self._thread.start()

    def request(self) -> int:
        """Ask for everything written so far to reach the disk; returns a ticket to wait on."""
        with self._cond:
            self._raise_pending()
            self._requested += 1
            self._cond.notify_all()
            return self._requested

    def wait(self, ticket: int | None = None) -> None:
        """Block until `ticket` (default: every request so far) is on disk; raise its OSError."""
        with self._cond:
            target = self._requested if ticket is None else ticket
            while self._synced < target and self._error is None:
                self._cond.wait()
            self._raise_pending()

    def close(self) -> None:
        """Sync what was requested, then stop the thread."""
        try:
            self.wait()
        finally:
            with self._cond:
                self._closing = True
                self._cond.notify_all()
            self._thread.join()

    def _raise_pending(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def _loop(self) -> None:
        while True:
            with self._cond:
                while self._synced == self._requested and not self._closing:
                    self._cond.wait()
                if self._synced == self._requested:
                    return
                target = self._requested
            try:
                os.fsync(self._fd)  # releases the GIL: the run goes on meanwhile
            except OSError as exc:
                with self._cond:
                    self._error = exc
                    self._synced = target  # reported once, to the next caller
                    self._cond.notify_all()
                continue
            with self._cond:
                self._synced = target
                self._cond.notify_all()
