"""What the runner tells the outside world while a run goes on.

The console, the journal and anything else that follows a run subclass `RunListener` and override
what they need. The runner calls listeners on its own thread, in order; an exception in a listener
is recorded in its `failures` list and never stops the run. A listener puts in `warnings` what the
operator should know although nothing was lost (the journal: the disk filled up and the space set
aside for the run was used).
"""

from __future__ import annotations

from pathlib import Path

from station.records.model import LogEntry, PhaseRecord, RunRecord


class RunListener:
    """No-op base: override the events you care about."""

    def __init__(self) -> None:
        self.failures: list[str] = []  # what went wrong: the run's record may be incomplete
        self.warnings: list[str] = []  # what the operator should know; nothing was lost

    def run_started(self, record: RunRecord) -> None:
        """The run begins; `record` has its identity and start time, no phases yet."""

    def phase_started(self, name: str, attempt: int) -> None:
        """A phase (or a retry of it: attempt > 0) begins."""

    def phase_ended(self, record: PhaseRecord) -> None:
        """A phase attempt is over: outcome, measurements and logs are final."""

    def log_added(self, entry: LogEntry, phase: str | None) -> None:
        """The procedure logged something (phase is None outside a phase)."""

    def store_attachment(self, source: Path, name: str) -> str | None:
        """Keep a copy of an attached file; return its path relative to the run directory."""
        return None

    def run_ended(self, record: RunRecord) -> None:
        """The run is over: `record` is final (outcome, end time)."""
