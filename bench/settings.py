"""How hard `python -m bench` works: repetition counts for a full or a `--quick` run."""

from __future__ import annotations

import importlib.metadata
import importlib.util
from dataclasses import dataclass


def openhtf_version() -> str | None:
    """The installed OpenHTF version, found without importing it (its import has side effects)."""
    if importlib.util.find_spec("openhtf") is None:
        return None
    try:
        return importlib.metadata.version("openhtf")
    except importlib.metadata.PackageNotFoundError:
        return "unknown version"


@dataclass(frozen=True)
class Settings:
    """Repetitions per case. Full: about 3-4 minutes on 2 cores; quick: about 1 minute."""

    quick: bool = False
    profile: bool = False  # one extra, profiled repetition of our side in each child
    openhtf: str | None = None  # version, or None when not installed

    @property
    def overhead_reps(self) -> int:
        return 3 if self.quick else 7

    @property
    def warmup(self) -> int:
        return 1

    @property
    def cold_reps(self) -> int:
        return 5 if self.quick else 15

    @property
    def io_queries(self) -> int:
        return 500 if self.quick else 2000  # per repetition

    @property
    def io_reps(self) -> int:
        return 3 if self.quick else 5

    @property
    def upload_reps(self) -> int:
        return 10 if self.quick else 30

    @property
    def drain_runs(self) -> int:
        return 200

    @property
    def drain_reps(self) -> int:
        return 1 if self.quick else 3

    @property
    def memory_runs(self) -> int:
        return 1000  # the growth after the first 100 runs needs the whole 1,000 to mean anything

    @property
    def memory_sample_every(self) -> int:
        return 100
