"""The thread phases run on, and how a running phase is stopped.

One long-lived worker thread runs phase after phase (a queue hand-off costs microseconds; a fresh
thread per phase costs ~0.15 ms). Stopping a phase (timeout, Ctrl-C) uses every lever in turn:

1. its cancel token is set: `run.sleep()` wakes at once and measurements can no longer be set;
2. the caller's `interrupt` hook aborts instrument I/O in flight (the transport drops its socket,
   so a read blocked on an instrument that will never answer returns now, not at the VISA timeout);
3. `PhaseCancelled` is raised asynchronously in the thread, which stops pure-Python loops.

A worker that has been stopped is retired, whether or not its thread let go in time: the next
phase gets a fresh worker, so a thread stuck in a C call can never delay the run or teardown.
"""

from __future__ import annotations

import contextlib
import ctypes
import threading
from collections.abc import Callable
from queue import SimpleQueue
from typing import Any

from station.authoring.cancel import CancelToken, PhaseCancelled, bind_token


class Job:
    """One phase call handed to the worker."""

    __slots__ = ("_done", "_lock", "error", "finished", "func", "kwargs", "result", "token")

    def __init__(
        self, func: Callable[..., Any], kwargs: dict[str, Any], token: CancelToken
    ) -> None:
        self.func = func
        self.kwargs = kwargs
        self.token = token
        self.result: Any = None
        self.error: BaseException | None = None
        self.finished = False
        self._lock = threading.Lock()
        # A bare lock held until the job is over: cheaper than an Event on the per-phase path.
        self._done = threading.Lock()
        self._done.acquire()

    def wait(self, timeout: float) -> bool:
        """True once the job is over (result or error set), waiting at most `timeout` seconds."""
        if self._done.acquire(timeout=timeout):
            self._done.release()
            return True
        return False

    def is_done(self) -> bool:
        return not self._done.locked()

    def _mark_done(self) -> None:
        if self._done.locked():
            self._done.release()


class PhaseWorker:
    """A daemon thread that runs submitted jobs one at a time until stopped or retired."""

    def __init__(self) -> None:
        self._jobs: SimpleQueue[Job | None] = SimpleQueue()
        self._retired = False
        self._thread = threading.Thread(target=self._loop, name="station-phase", daemon=True)
        self._thread.start()

    @property
    def thread_ident(self) -> int | None:
        return self._thread.ident

    @property
    def retired(self) -> bool:
        return self._retired

    def submit(self, func: Callable[..., Any], kwargs: dict[str, Any], token: CancelToken) -> Job:
        job = Job(func, kwargs, token)
        self._jobs.put(job)
        return job

    def _loop(self) -> None:
        while not self._retired:
            job = self._jobs.get()
            if job is None:
                return
            try:
                bind_token(job.token)
                try:
                    job.result = job.func(**job.kwargs)
                except BaseException as exc:  # the runner decides what every exception means
                    job.error = exc
                with job._lock:
                    job.finished = True
            except PhaseCancelled as exc:
                # Delivered after the phase returned but before it was marked finished.
                job.error = job.error or exc
            finally:
                bind_token(None)
                job._mark_done()

    def stop(
        self, job: Job, reason: str, interrupt: Callable[[], None] | None, grace_s: float
    ) -> bool:
        """Stop `job` and retire this worker. True if the thread let go within `grace_s`."""
        self._retired = True
        job.token.cancel(reason)
        if interrupt is not None:
            with contextlib.suppress(Exception):  # best effort: the async exception still applies
                interrupt()
        with job._lock:
            if not job.finished and self._thread.ident is not None:
                ctypes.pythonapi.PyThreadState_SetAsyncExc(
                    ctypes.c_ulong(self._thread.ident), ctypes.py_object(PhaseCancelled)
                )
        self._jobs.put(None)
        return job.wait(grace_s)

    def close(self) -> None:
        """Let the thread end after its current job (used at the end of a run)."""
        self._retired = True
        self._jobs.put(None)
