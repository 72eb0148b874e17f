"""What the operator sees: each phase and measurement as it completes, and a summary line."""

from __future__ import annotations

import os
import sys
from typing import TextIO

from station.records.listener import RunListener
from station.records.model import LogEntry, PhaseRecord, RunRecord

_COLORS = {
    "PASS": "32",
    "FAIL": "31",
    "ERROR": "31",
    "TIMEOUT": "33",
    "ABORTED": "35",
    "SKIP": "90",
    "UNSET": "33",
    "dim": "90",
    "bold": "1",
}
_QUIET_LEVELS = {"DEBUG"}


def _format_value(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    if value is None:
        return "(not set)"
    text = repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= 40 else text[:37] + "..."


class Console(RunListener):
    """Prints a run as it happens. Colour only on a terminal, and never with NO_COLOR set."""

    def __init__(self, stream: TextIO | None = None, color: bool | None = None) -> None:
        super().__init__()
        self.stream = stream or sys.stdout
        if color is None:
            color = self.stream.isatty() and "NO_COLOR" not in os.environ
        self.color = color

    def paint(self, text: str, style: str) -> str:
        return f"\x1b[{_COLORS[style]}m{text}\x1b[0m" if self.color and style in _COLORS else text

    def say(self, line: str = "") -> None:
        self.stream.write(line + "\n")
        self.stream.flush()

    def run_started(self, record: RunRecord) -> None:
        unit = " ".join(
            x
            for x in (record.part_number, f"rev {record.revision}" if record.revision else "")
            if x
        )
        parts = [self.paint(record.procedure_id, "bold"), f"serial {record.serial_number}"]
        if unit:
            parts.append(unit)
        if record.station_name:
            parts.append(f"station {record.station_name}")
        if record.operator:
            parts.append(f"operator {record.operator}")
        self.say("== " + "  ".join(parts))

    def log_added(self, entry: LogEntry, phase: str | None) -> None:
        if entry.level not in _QUIET_LEVELS:
            self.say(self.paint(f"         {entry.level.lower():7} {entry.message}", "dim"))

    def phase_ended(self, record: PhaseRecord) -> None:
        outcome = record.outcome.value
        seconds = (record.ended_at - record.started_at).total_seconds()
        title = record.name + (f" (retry {record.attempt})" if record.attempt else "")
        if record.teardown:
            title += " [teardown]"
        line = f"{self.paint(f'[{outcome}]'.ljust(9), outcome)} {title:<36}"
        if outcome != "SKIP":
            line += f" {seconds:7.3f} s"
        if record.reason:
            line += "  " + self.paint(record.reason, "dim" if outcome == "SKIP" else outcome)
        self.say(line)
        if record.error and record.outcome.value == "ERROR":
            where = (
                f" ({record.error.source_file}:{record.error.line_number})"
                if record.error.source_file
                else ""
            )
            self.say(
                self.paint(f"          {record.error.type}: {record.error.message}{where}", "ERROR")
            )
        if outcome == "SKIP":
            return
        for m in record.measurements:
            value = _format_value(m.measured_value) + (
                f" {m.units}" if m.units and m.outcome != "UNSET" else ""
            )
            verdict = self.paint(m.outcome, m.outcome) + (
                self.paint(" marginal", "TIMEOUT") if m.marginal else ""
            )
            self.say(f"          {m.name:<22} {value:<18} {m.limits:<22} {verdict}")

    def run_ended(self, record: RunRecord) -> None:
        outcome = record.outcome.value if record.outcome else "?"
        seconds = ((record.ended_at or record.started_at) - record.started_at).total_seconds()
        finals = {(p.name, p.teardown) for p in record.phases}
        summary = (
            f"== {record.procedure_id} {self.paint(outcome, outcome)}"
            + (self.paint(" (marginal)", "TIMEOUT") if record.marginal else "")
            + f"  {record.serial_number}  {len(finals)} phases  {seconds:.2f} s"
        )
        if record.outcome_reason and outcome != "PASS":
            summary += f"  -- {record.outcome_reason}"
        self.say(summary)
