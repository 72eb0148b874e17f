"""The thread phases run on, and how a running phase is stopped.

One long-lived worker thread runs phase after phase (a queue hand-off costs microseconds; a fresh
thread per phase costs ~0.15 ms). Stopping a phase (timeout, Ctrl-C) goes in stages, gentlest
first, so that a phase that can exit cleanly does:

1. the thread is marked stopped (`PhaseThread.stop_reason`): from now on its instrument I/O is
   refused at the transport boundary (`refuse_stopped_phase_io` is the runner's call guard);
   its cancel token is set, so `run.sleep()` wakes at once and measurements can no longer be
   set; the caller's `interrupt` hook aborts instrument I/O in flight (a read blocked on an
   instrument that will never answer returns now, not at the VISA timeout);
2. a short grace for the phase to exit by itself (longer when some I/O could not be aborted:
   then the phase is waited for until that call ends at its instrument timeout);
3. only then `PhaseCancelled` is raised asynchronously in the thread, which stops pure-Python
   loops. It is never injected earlier: an exception landing inside a library that holds a lock
   (pyvisa-py closing a session, `logging`) can deadlock the teardown that follows.

Between runs the worker waits for the next run of the process (`take`, `release`: the production
loop's units would otherwise start a thread each). A worker that has been stopped is retired,
whether or not its thread let go in time: the next phase gets a fresh worker, so a thread stuck
in a C call, or a phase that swallows every exception, can never delay the run or teardown. Such
a thread is abandoned (it is a daemon) and can no longer reach an instrument.
"""

from __future__ import annotations

import ctypes
import os
import threading
from collections.abc import Callable
from queue import SimpleQueue
from typing import Any

from station.authoring.cancel import CancelToken, PhaseCancelled, bind_token


class PhaseThread(threading.Thread):
    """The daemon thread of a `PhaseWorker`; `stop_reason` is set once its phase is stopped."""

    stop_reason: str | None = None


def refuse_stopped_phase_io() -> str | None:
    """A transport call guard: why the calling thread may not do instrument I/O, or None.

    Only a phase thread whose phase was stopped (timed out, aborted) is refused; the main
    thread (safe state, close) and the threads of phases still running are not. The guard reads
    the calling thread only, so one function serves every run and every instrument.
    """
    thread = threading.current_thread()
    return thread.stop_reason if isinstance(thread, PhaseThread) else None


class Job:
    """One phase call handed to the worker: `done` is set once `result` or `error` is final."""

    __slots__ = ("done", "error", "func", "kwargs", "result", "token")

    def __init__(
        self, func: Callable[..., Any], kwargs: dict[str, Any], token: CancelToken
    ) -> None:
        self.func = func
        self.kwargs = kwargs
        self.token = token
        self.result: Any = None
        self.error: BaseException | None = None
        self.done = threading.Event()


class PhaseWorker:
    """A daemon thread that runs submitted jobs one at a time until stopped or closed."""

    def __init__(self) -> None:
        self._jobs: SimpleQueue[Job | None] = SimpleQueue()
        self._retired = False
        self._thread = PhaseThread(target=self._loop, name="station-phase", daemon=True)
        self._thread.start()

    @classmethod
    def take(cls) -> PhaseWorker:
        """The worker an earlier run of this process released, or a new one."""
        global _spare
        with _spare_lock:
            worker, _spare = _spare, None
        if worker is not None and not worker.retired and worker._thread.is_alive():
            return worker
        return cls()

    def release(self) -> None:
        """The run is over: keep this worker for the next run (one is kept), or close it."""
        global _spare
        if self._retired:
            return
        with _spare_lock:
            if _spare is None:
                _spare = self
                return
        self.close()

    @property
    def thread_ident(self) -> int | None:
        return self._thread.ident

    @property
    def retired(self) -> bool:
        """True once a job was stopped or the worker closed: it takes no more jobs."""
        return self._retired

    def submit(self, func: Callable[..., Any], kwargs: dict[str, Any], token: CancelToken) -> Job:
        job = Job(func, kwargs, token)
        self._jobs.put(job)
        return job

    def _loop(self) -> None:
        job: Job | None = None
        try:
            while (job := self._jobs.get()) is not None:
                bind_token(job.token)
                try:
                    job.result = job.func(**job.kwargs)
                except BaseException as exc:  # the runner decides what every exception means
                    job.error = exc
                finally:
                    bind_token(None)
                    job.done.set()
        except PhaseCancelled:
            # A stop's asynchronous exception that arrived just after its phase returned. The
            # worker was retired by that stop: end the thread quietly.
            if job is not None:
                job.done.set()

    def stop(
        self, job: Job, reason: str, interrupt: Callable[[], float] | None, grace_s: float
    ) -> bool:
        """Stop `job` in stages (see the module docstring) and retire this worker.

        `interrupt()` aborts instrument I/O in flight and returns how long (s) a call it could
        not abort may still block the phase (0 if none): the cooperative wait is that much
        longer. True if the thread let go, False if it was abandoned.
        """
        self._retired = True
        self._jobs.put(None)
        self._thread.stop_reason = f"the phase on this thread was stopped ({reason})"
        job.token.cancel(reason)
        unabortable_s = 0.0
        if interrupt is not None:
            try:
                unabortable_s = interrupt()
            except Exception:  # best effort: the asynchronous exception still applies
                unabortable_s = 0.0
        if job.done.wait(grace_s + unabortable_s):
            return True
        ident = self._thread.ident
        if ident is not None and not job.done.is_set():
            ctypes.pythonapi.PyThreadState_SetAsyncExc(
                ctypes.c_ulong(ident), ctypes.py_object(PhaseCancelled)
            )
        return job.done.wait(grace_s)

    def close(self) -> None:
        """Let the thread end after its current job."""
        self._retired = True
        self._jobs.put(None)


_spare: PhaseWorker | None = None  # the idle worker kept for the next run (see `take`)
_spare_lock = threading.Lock()


def _forget_spare() -> None:
    """A forked child does not have the spare's thread."""
    global _spare, _spare_lock
    _spare, _spare_lock = None, threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_spare)
