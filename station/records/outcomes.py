"""Outcomes of runs and phases (kept free of heavy imports: the CLI and procedures load it)."""

from enum import StrEnum


class Outcome(StrEnum):
    """Run outcome. Precedence when combining phases: ABORTED > TIMEOUT > ERROR > FAIL > PASS."""

    PASS = "PASS"
    FAIL = "FAIL"
    ERROR = "ERROR"
    TIMEOUT = "TIMEOUT"
    ABORTED = "ABORTED"


class PhaseOutcome(StrEnum):
    PASS = "PASS"
    FAIL = "FAIL"
    SKIP = "SKIP"
    ERROR = "ERROR"
    TIMEOUT = "TIMEOUT"
    ABORTED = "ABORTED"
