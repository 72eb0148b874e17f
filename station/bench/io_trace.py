"""`--trace-io`: every instrument command and reply of a run, in its run directory.

`tracing()` installs a `drivers.transport.trace.IoTrace` at the transport seam for as long as
the instruments are open (opening, identifying and the final safe state included), and
`TraceListener` gives it the run directory once the run has one and attaches the file
(`io-trace.jsonl`) to the run's record, so it is uploaded with the run. Lines recorded before the
run directory exists (the instruments' `*IDN?` at open) are written into it first. The file is
what `station run --sim-replay RUN_DIR` and `station sim --replay RUN_DIR` play back.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path

from drivers.transport.trace import TRACE_FILE, IoTrace, installed
from station.records.listener import RunListener
from station.records.model import AttachmentRecord, LogEntry, PhaseRecord, RunRecord

__all__ = ["TRACE_FILE", "TraceListener", "tracing"]


@contextlib.contextmanager
def tracing(enabled: bool) -> Iterator[IoTrace | None]:
    """An installed I/O trace while the block runs (None when not `enabled`); closed after."""
    if not enabled:
        yield None
        return
    trace = IoTrace()
    try:
        with installed(trace):
            yield trace
    finally:
        trace.close()


class TraceListener(RunListener):
    """Points an `IoTrace` at the run directory and attaches the trace to the run.

    Put it before the journal in the listeners: `run_dir()` (the journal's directory) is read at
    the first event after the run started, and at the end the attachment is added to the record
    before the journal writes run.json. The trace goes on being written until the instruments
    are closed (their last safe state is in it too).
    """

    def __init__(self, trace: IoTrace, run_dir: Callable[[], Path | None]) -> None:
        super().__init__()
        self._trace = trace
        self._run_dir = run_dir
        self._path: Path | None = None

    def _attach(self) -> Path | None:
        if self._path is None:
            run_dir = self._run_dir()
            if run_dir is not None:
                self._path = run_dir / TRACE_FILE
                self._trace.attach(self._path)
        return self._path

    def phase_started(self, name: str, attempt: int) -> None:
        self._attach()

    def phase_ended(self, record: PhaseRecord) -> None:
        self._attach()

    def log_added(self, entry: LogEntry, phase: str | None) -> None:
        self._attach()

    def run_ended(self, record: RunRecord) -> None:
        path = self._attach()
        if path is None:
            return
        self._trace.flush()
        self.failures.extend(self._trace.errors)
        size = path.stat().st_size if path.is_file() else 0
        record.attachments.append(AttachmentRecord(name=TRACE_FILE, path=TRACE_FILE, size=size))
