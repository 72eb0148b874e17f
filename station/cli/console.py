"""What the operator sees at the terminal: the unit, each phase as it ends, and a verdict that
cannot be missed.

- the header names the unit, the station, the operator and the date and time (local);
- each phase: its outcome, time, and measurements with SI prefixes at a resolution that fits
  their limits (`1.95 mV`, `3.102 V`, never `0.00194757`: the record keeps full precision),
  the marginal band when a value is in it, the questions asked and their answers, the files
  attached, then the phase's log lines (under the phase they belong to);
- the verdict: PASS / FAIL / ERROR / TIMEOUT / ABORTED in a frame, then the summary line
  (`== FVT1 FAIL  SN-1  4 phases  2.31 s`), the failing checks restated
  (`rail_3v3 = 3.102 V < 3.22 V`) or the reason, and the attachments.

Colour only on a terminal, and never with NO_COLOR set. In `station run --loop` the console
also prints each unit's counters and a closing summary.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, TextIO

from station.line.display import marginal_band, measurement_display
from station.line.events import failures_of
from station.records.listener import RunListener
from station.records.model import (
    AttachmentRecord,
    LogEntry,
    MeasurementRecord,
    PhaseRecord,
    RunRecord,
)

if TYPE_CHECKING:
    from station.line.session import Counters, UnitResult

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
_VERDICT_COLORS = {  # bold, reverse video: the verdict block stands out from across the bench
    "PASS": "1;7;32",
    "FAIL": "1;7;31",
    "ERROR": "1;7;31",
    "TIMEOUT": "1;7;33",
    "ABORTED": "1;7;35",
}
_QUIET_LEVELS = {"DEBUG"}
VERDICT_WIDTH = 64  # characters of the verdict frame
INDENT = " " * 10


def _size(size: int) -> str:
    for unit in ("B", "kB", "MB"):
        if size < 1000 or unit == "MB":
            return f"{size} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000  # type: ignore[assignment]  # a float from here on, shown with one decimal
    return f"{size} B"


def _local_time(when: datetime) -> str:
    """`2026-03-01 10:02:03 CET`: the bench's local date and time."""
    local = when.astimezone()
    zone = local.tzname() or ""
    return local.strftime("%Y-%m-%d %H:%M:%S") + (f" {zone}" if zone else "")


class Console(RunListener):
    """Prints a run as it happens. Colour only on a terminal, and never with NO_COLOR set."""

    def __init__(self, stream: TextIO | None = None, color: bool | None = None) -> None:
        super().__init__()
        self.stream = stream or sys.stdout
        if color is None:
            try:
                tty = self.stream.isatty()
            except (AttributeError, OSError, ValueError):
                tty = False
            color = tty and "NO_COLOR" not in os.environ
        self.color = color
        self._record: RunRecord | None = None
        self._phase_logs: list[LogEntry] = []
        self._shown_attachments = 0
        self._notes: list[str] = []

    # -- output ---------------------------------------------------------------------------------

    def paint(self, text: str, style: str) -> str:
        return f"\x1b[{_COLORS[style]}m{text}\x1b[0m" if self.color and style in _COLORS else text

    def say(self, line: str = "") -> None:
        self.stream.write(line + "\n")
        self.stream.flush()

    def ask(self, text: str) -> None:
        """Write a question (no line break: the answer is typed after it)."""
        self.stream.write(text)
        self.stream.flush()

    def header_note(self, text: str) -> None:
        """Add `text` to the next run's header line (e.g. `retest 2, last FAIL ...`)."""
        self._notes.append(text)

    # -- the run --------------------------------------------------------------------------------

    def run_started(self, record: RunRecord) -> None:
        self._record = record
        self._phase_logs = []
        self._shown_attachments = 0
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
        parts.append(_local_time(record.started_at))
        if record.simulated:
            parts.append(self.paint("[simulated bench]", "TIMEOUT"))
        parts.extend(self._notes)
        self._notes = []
        self.say("== " + "  ".join(parts))

    def phase_started(self, name: str, attempt: int) -> None:
        self._phase_logs = []

    def log_added(self, entry: LogEntry, phase: str | None) -> None:
        if entry.level in _QUIET_LEVELS:
            return
        if phase is not None:
            self._phase_logs.append(entry)  # shown under the phase, once it has ended
            return
        self.say(self.paint(f"{INDENT}{entry.level.lower():7} {entry.message}", "dim"))

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
        if record.error and outcome == "ERROR":
            where = (
                f" ({record.error.source_file}:{record.error.line_number})"
                if record.error.source_file
                else ""
            )
            self.say(
                self.paint(f"{INDENT}{record.error.type}: {record.error.message}{where}", "ERROR")
            )
        if outcome != "SKIP":
            for m in record.measurements:
                self._measurement(m)
        for prompt in record.prompts:
            answer = "(no answer)" if prompt.answered_at is None else repr(prompt.answer)
            by = f" ({prompt.answered_by})" if prompt.answered_by else ""
            self.say(self.paint(f"{INDENT}asked   {prompt.text} -> {answer}{by}", "dim"))
        for attachment in self._new_attachments():
            self.say(f"{INDENT}attached {attachment.name} ({_size(attachment.size)})")
        for entry in self._phase_logs:
            self.say(self.paint(f"{INDENT}{entry.level.lower():7} {entry.message}", "dim"))
        self._phase_logs = []

    def _measurement(self, m: MeasurementRecord) -> None:
        value = measurement_display(m) if m.outcome != "UNSET" else "(not set)"
        verdict = self.paint(m.outcome, m.outcome)
        if m.marginal:
            band = marginal_band(m)
            verdict += self.paint(
                " marginal" + (f": outside the {band}" if band else ""), "TIMEOUT"
            )
        self.say(f"{INDENT}{m.name:<22} {value:<14} {m.limits:<22} {verdict}")

    def _new_attachments(self) -> list[AttachmentRecord]:
        if self._record is None:
            return []
        new = self._record.attachments[self._shown_attachments :]
        self._shown_attachments = len(self._record.attachments)
        return list(new)

    def run_ended(self, record: RunRecord) -> None:
        outcome = record.outcome.value if record.outcome else "?"
        seconds = ((record.ended_at or record.started_at) - record.started_at).total_seconds()
        finals = {(p.name, p.teardown) for p in record.phases}
        self._verdict(outcome + (" (marginal)" if record.marginal else ""), outcome)
        summary = (
            f"== {record.procedure_id} {self.paint(outcome, outcome)}"
            + (self.paint(" (marginal)", "TIMEOUT") if record.marginal else "")
            + f"  {record.serial_number}  {len(finals)} phases  {seconds:.2f} s"
        )
        failures = failures_of(record) if outcome == "FAIL" else []
        if record.outcome_reason and outcome != "PASS" and not failures:
            summary += f"  -- {record.outcome_reason}"
        self.say(summary)
        for failure in failures:
            self.say(self.paint(f"   {failure}", "FAIL"))
        if outcome == "FAIL" and record.outcome_reason and not failures:
            self.say(f"   {record.outcome_reason}")
        if record.attachments:
            names = ", ".join(a.name for a in record.attachments)
            self.say(f"   attachments: {names}")
        self._record = None

    def _verdict(self, text: str, outcome: str) -> None:
        """The verdict in a frame, wide and spaced out, in reverse video on a colour terminal."""
        word = " ".join(text.split(" ", 1)[0]) + (
            "  " + text.split(" ", 1)[1] if " " in text else ""
        )
        inner = VERDICT_WIDTH - 2
        middle = "|" + word.center(inner) + "|"
        edge = "+" + "=" * inner + "+"
        if self.color and outcome in _VERDICT_COLORS:
            code = _VERDICT_COLORS[outcome]
            middle = f"\x1b[{code}m{middle}\x1b[0m"
            edge = f"\x1b[{code}m{edge}\x1b[0m"
        self.say(edge)
        self.say(middle)
        self.say(edge)

    # -- the production loop --------------------------------------------------------------------

    def unit_done(self, result: UnitResult, counters: Counters) -> None:
        """After a unit in `station run --loop`: where its record is, and the counters."""
        if result.run_dir is not None:
            from station.config.errors import display_path

            self.say(f"   record: {display_path(result.run_dir)}")
        self.say(self.paint(f"   {counters.summary()}", "bold"))

    def loop_ended(self, counters: Counters, recent: Sequence[UnitResult]) -> None:
        """The loop's closing summary: counters and where the uploads stand."""
        self.say(f"== loop ended: {counters.summary()}")
        states: dict[str, int] = {}
        for result in recent:
            states[result.upload] = states.get(result.upload, 0) + 1
        if states:
            shown = ", ".join(f"{count} {state}" for state, count in sorted(states.items()))
            self.say(f"   uploads of the last {len(recent)} units: {shown}")
