"""Measurement specs and the validators that check them.

A measurement is declared once (`@measure(...)`) as a `MeasurementSpec`: a name, a unit, and a
tuple of small validator objects, one per limit. Limits stay structured from declaration to the
TofuPilot payload (`>=`, `<=`, `==`, `matches`, `in`), never flattened to strings. Marginal limits
are the same validators with `decisive=False`: recorded with their own outcome, never failing a run.
"""

from __future__ import annotations

import math
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

PASS = "PASS"
FAIL = "FAIL"
UNSET = "UNSET"


def _is_number(value: Any) -> bool:
    # bool is an int in Python, but True is not a voltage.
    return isinstance(value, int | float) and not isinstance(value, bool)


@dataclass(frozen=True, slots=True)
class Validator(ABC):
    """One limit. `check(value)` is True when the value satisfies it."""

    expected: Any
    decisive: bool = True
    operator: ClassVar[str] = "?"

    @abstractmethod
    def check(self, value: Any) -> bool: ...

    def describe(self) -> str:
        return f"{self.operator} {self.expected!r}"


@dataclass(frozen=True, slots=True)
class AtLeast(Validator):
    operator: ClassVar[str] = ">="

    def check(self, value: Any) -> bool:
        # NaN compares False with everything, so it fails both bounds.
        return _is_number(value) and value >= self.expected

    def describe(self) -> str:
        return f">= {self.expected:g}"


@dataclass(frozen=True, slots=True)
class AtMost(Validator):
    operator: ClassVar[str] = "<="

    def check(self, value: Any) -> bool:
        return _is_number(value) and value <= self.expected

    def describe(self) -> str:
        return f"<= {self.expected:g}"


@dataclass(frozen=True, slots=True)
class EqualTo(Validator):
    operator: ClassVar[str] = "=="

    def check(self, value: Any) -> bool:
        if _is_number(self.expected):
            return _is_number(value) and value == self.expected
        return type(value) is type(self.expected) and value == self.expected


@dataclass(frozen=True, slots=True)
class Matches(Validator):
    """The whole value (as text) must match the regular expression."""

    operator: ClassVar[str] = "matches"

    def check(self, value: Any) -> bool:
        if value is None or (isinstance(value, float) and not math.isfinite(value)):
            return False
        return re.fullmatch(self.expected, str(value)) is not None

    def describe(self) -> str:
        return f"matches /{self.expected}/"


@dataclass(frozen=True, slots=True)
class OneOf(Validator):
    operator: ClassVar[str] = "in"

    def check(self, value: Any) -> bool:
        return any(EqualTo(choice).check(value) for choice in self.expected)

    def describe(self) -> str:
        return "in {" + ", ".join(repr(choice) for choice in self.expected) + "}"


class LimitError(ValueError):
    """Limits that contradict each other or cannot be checked."""


@dataclass(frozen=True, slots=True)
class MeasurementSpec:
    """A declared measurement: what it is called, its unit, and its limits."""

    name: str
    unit: str | None = None
    description: str | None = None
    low: float | None = None
    high: float | None = None
    equals: Any = None
    matches: str | None = None
    one_of: tuple[Any, ...] | None = None
    marginal: tuple[float, float] | None = None
    # Derived once: checking a value is on the hot path (thousands per run).
    validators: tuple[Validator, ...] = field(init=False, repr=False, compare=False)
    limits_text: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.name or not isinstance(self.name, str):
            raise LimitError(f"measurement name must be a non-empty string, got {self.name!r}")
        for bound in ("low", "high"):
            value = getattr(self, bound)
            if value is not None and (not _is_number(value) or math.isnan(value)):
                raise LimitError(
                    f"measurement {self.name!r}: {bound} must be a number, got {value!r}"
                )
        if self.low is not None and self.high is not None and self.low > self.high:
            raise LimitError(f"measurement {self.name!r}: low {self.low} is above high {self.high}")
        if self.equals is not None and (self.low is not None or self.high is not None):
            raise LimitError(
                f"measurement {self.name!r}: use either equals= or low=/high=, not both"
            )
        if self.matches is not None:
            try:
                re.compile(self.matches)
            except re.error as exc:
                raise LimitError(
                    f"measurement {self.name!r}: matches={self.matches!r} is not a "
                    f"valid regular expression ({exc})"
                ) from None
        if self.one_of is not None and not self.one_of:
            raise LimitError(f"measurement {self.name!r}: one_of must list at least one value")
        if self.marginal is not None:
            self._check_marginal()
        object.__setattr__(self, "validators", self._build_validators())
        object.__setattr__(self, "limits_text", self._describe_limits())

    def _check_marginal(self) -> None:
        if len(self.marginal) != 2 or not all(_is_number(v) for v in self.marginal):
            raise LimitError(
                f"measurement {self.name!r}: marginal must be (low, high) numbers, "
                f"got {self.marginal!r}"
            )
        lo, hi = self.marginal
        if lo > hi:
            raise LimitError(
                f"measurement {self.name!r}: marginal low {lo} is above marginal high {hi}"
            )
        if (self.low is not None and lo < self.low) or (self.high is not None and hi > self.high):
            raise LimitError(
                f"measurement {self.name!r}: marginal band {self.marginal} must lie "
                f"inside the limits [{self.low}, {self.high}]"
            )

    def _build_validators(self) -> tuple[Validator, ...]:
        found: list[Validator] = []
        if self.low is not None:
            found.append(AtLeast(self.low))
        if self.high is not None:
            found.append(AtMost(self.high))
        if self.equals is not None:
            found.append(EqualTo(self.equals))
        if self.matches is not None:
            found.append(Matches(self.matches))
        if self.one_of is not None:
            found.append(OneOf(tuple(self.one_of)))
        if self.marginal is not None:
            found.append(AtLeast(self.marginal[0], decisive=False))
            found.append(AtMost(self.marginal[1], decisive=False))
        return tuple(found)

    def with_overrides(self, **limits: Any) -> MeasurementSpec:
        """A copy with some limits replaced (station.yaml overrides); None means "keep"."""
        changes = {key: value for key, value in limits.items() if value is not None}
        if "one_of" in changes:
            changes["one_of"] = tuple(changes["one_of"])
        if "marginal" in changes:
            changes["marginal"] = tuple(changes["marginal"])
        return replace(self, **changes)

    def _describe_limits(self) -> str:
        """Limits as an operator reads them: `[3.2, 3.4]`, `<= 0.15`, `== 'OK'`."""
        parts = []
        if self.low is not None and self.high is not None:
            parts.append(f"[{self.low:g}, {self.high:g}]")
        elif self.low is not None:
            parts.append(f">= {self.low:g}")
        elif self.high is not None:
            parts.append(f"<= {self.high:g}")
        for validator in self.validators:
            if validator.operator in ("==", "matches", "in"):
                parts.append(validator.describe())
        return " ".join(parts)


@dataclass(frozen=True, slots=True)
class CheckResult:
    """The outcome of one value against one spec."""

    outcome: str
    marginal: bool
    validator_outcomes: tuple[tuple[Validator, str], ...]


def check(spec: MeasurementSpec, value: Any, is_set: bool) -> CheckResult:
    """Check a value against every validator of a spec.

    Decisive validators decide PASS/FAIL; marginal ones only set `marginal`. A measurement never set
    is UNSET, and every validator is UNSET with it.
    """
    validators = spec.validators
    if not is_set:
        return CheckResult(UNSET, False, tuple((v, UNSET) for v in validators))
    outcome, marginal = PASS, False
    results = []
    for validator in validators:
        ok = validator.check(value)
        results.append((validator, PASS if ok else FAIL))
        if not ok:
            if validator.decisive:
                outcome = FAIL
            else:
                marginal = True
    return CheckResult(outcome, marginal and outcome == PASS, tuple(results))
