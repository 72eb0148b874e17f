"""What a benchmark case hands back, and how it is printed and saved.

A case produces `Row`s (one figure: ours and, when there is one, the reference, each as the
median and min-max of several repetitions) and `Target`s (a budget from the issue that asked
for it, MET or MISSED with the figure that decided it). Figures never fail the run: a missed
target is a line in the report, and a case that crashed is reported as such.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

OPENHTF_MISSING = "openhtf not installed (pip install -e '.[bench]')"


@dataclass(frozen=True)
class Stats:
    """The median and spread of repeated measurements of one figure."""

    median: float
    low: float
    high: float
    n: int

    @classmethod
    def of(cls, values: Sequence[float]) -> Stats:
        if not values:
            raise ValueError("no values to summarize")
        return cls(statistics.median(values), min(values), max(values), len(values))

    def scaled(self, factor: float) -> Stats:
        """The same figures in another unit (e.g. seconds per run to microseconds per phase)."""
        return Stats(self.median * factor, self.low * factor, self.high * factor, self.n)

    def text(self) -> str:
        if self.n == 1:
            return fmt(self.median)
        return f"{fmt(self.median)} [{fmt(self.low)}-{fmt(self.high)}]"


@dataclass
class Row:
    """One figure of a case. `ratio` is ours over the reference as a cost (lower is better)."""

    case: str
    label: str
    unit: str
    ours: Stats | None = None
    reference: Stats | None = None
    reference_note: str | None = None  # why there is no reference figure, or what it is
    higher_is_better: bool = False  # throughputs: the ratio is then reference over ours
    error: str | None = None  # our side failed

    @property
    def ratio(self) -> float | None:
        if self.ours is None or self.reference is None:
            return None
        num, den = (
            (self.reference.median, self.ours.median)
            if self.higher_is_better
            else (self.ours.median, self.reference.median)
        )
        return num / den if den > 0 else None


@dataclass
class Target:
    """A budget: `met` is None when it could not be checked (reference missing, case failed)."""

    case: str
    text: str  # what is promised, e.g. "per phase <= 0.1x OpenHTF"
    met: bool | None
    figure: str  # what was measured, in words

    @property
    def verdict(self) -> str:
        return {True: "MET", False: "MISSED", None: "NOT CHECKED"}[self.met]


@dataclass
class CaseResult:
    """Everything one case produced, including extra data for the JSON (curves, profiles)."""

    name: str
    title: str
    rows: list[Row] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    profiles: dict[str, str] = field(default_factory=dict)  # label -> cProfile text
    seconds: float = 0.0  # how long the case took to run


def fmt(value: float) -> str:
    """Three significant digits, no exponent for the ranges benchmarks produce."""
    if value is None or math.isnan(value):
        return "-"
    if math.isinf(value):
        return "inf"
    magnitude = abs(value)
    if magnitude >= 100:
        return f"{value:,.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 1:
        return f"{value:.2f}"
    return f"{value:.3g}"


def ratio_text(row: Row) -> str:
    ratio = row.ratio
    return "-" if ratio is None else f"{fmt(ratio)}x"


def render(results: Sequence[CaseResult], header: Sequence[str] = ()) -> str:
    """The table printed by `python -m bench`: one block per case, then the targets."""
    lines = list(header)
    columns = ("figure", "unit", "ours: median [min-max]", "reference: median [min-max]", "ratio")
    table: list[tuple[str, ...]] = []
    for result in results:
        table.append((f"== {result.title}",))
        for row in result.rows:
            ours = row.error or (row.ours.text() if row.ours else "-")
            if row.reference is not None:
                reference = row.reference.text()
                if row.reference_note:
                    reference += f" ({row.reference_note})"
            else:
                reference = row.reference_note or "-"
            table.append(("  " + row.label, row.unit, ours, reference, ratio_text(row)))
    widths = [max(len(columns[i]), *(len(r[i]) for r in table if len(r) > 1)) for i in range(3)]
    widths.append(max(len(columns[3]), *(len(r[3]) for r in table if len(r) > 1)))

    def line(cells: Sequence[str]) -> str:
        return (
            f"{cells[0]:<{widths[0]}}  {cells[1]:<{widths[1]}}  {cells[2]:>{widths[2]}}  "
            f"{cells[3]:>{widths[3]}}  {cells[4]:>7}"
        ).rstrip()

    lines.append(line(columns))
    lines.append("ratio = ours / reference as a cost (time, memory): lower is better")
    for cells in table:
        lines.append(cells[0] if len(cells) == 1 else line(cells))
    for result in results:
        for note in result.notes:
            lines.append(f"note ({result.name}): {note}")
    lines.append("")
    lines.append("Targets")
    for result in results:
        for target in result.targets:
            lines.append(f"  {target.verdict:<11} {target.case}: {target.text}: {target.figure}")
    return "\n".join(lines)


def render_profiles(results: Sequence[CaseResult]) -> str:
    parts = []
    for result in results:
        for label, text in result.profiles.items():
            parts.append(f"-- cProfile: {result.name}: {label}\n{text.rstrip()}")
    return "\n\n".join(parts)


def to_json(results: Sequence[CaseResult], meta: dict[str, Any]) -> dict[str, Any]:
    """The same figures as the table, plus curves and profiles, for tooling."""

    def row_dict(row: Row) -> dict[str, Any]:
        data = asdict(row)
        data["ratio"] = row.ratio
        return data

    return {
        **meta,
        "cases": {
            r.name: {
                "title": r.title,
                "seconds": round(r.seconds, 2),
                "rows": [row_dict(row) for row in r.rows],
                "targets": [{**asdict(t), "verdict": t.verdict} for t in r.targets],
                "notes": r.notes,
                "extra": r.extra,
                "profiles": r.profiles,
            }
            for r in results
        },
    }


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, allow_nan=True) + "\n", encoding="utf-8")
