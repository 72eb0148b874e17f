"""Measurement specs and the validators that check them.

A measurement is declared once (`@measure(...)`) as a `MeasurementSpec`: a name, a unit, and a
tuple of small validator objects, one per limit. Limits stay structured from declaration to the
TofuPilot payload (`>=`, `<=`, `==`, `matches`, `in`), never flattened to strings. Marginal limits
are the same validators with `decisive=False`: recorded with their own outcome, never failing a run.
"""

from __future__ import annotations

import math
import numbers
import re
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

PASS = "PASS"
FAIL = "FAIL"
UNSET = "UNSET"


def is_number(value: object) -> bool:
    """True for a real number a numeric limit can judge: int, float, Fraction, numpy's.

    Not bool (True is not a voltage), not complex, not text that looks like a number.
    """
    kind = type(value)
    if kind is float or kind is int:  # the hot path: thousands of values per run
        return True
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


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
        return is_number(value) and value >= self.expected

    def describe(self) -> str:
        return f">= {self.expected:g}"


@dataclass(frozen=True, slots=True)
class AtMost(Validator):
    operator: ClassVar[str] = "<="

    def check(self, value: Any) -> bool:
        return is_number(value) and value <= self.expected

    def describe(self) -> str:
        return f"<= {self.expected:g}"


@dataclass(frozen=True, slots=True)
class EqualTo(Validator):
    operator: ClassVar[str] = "=="

    def check(self, value: Any) -> bool:
        if is_number(self.expected):
            return is_number(value) and value == self.expected
        return type(value) is type(self.expected) and value == self.expected


@dataclass(frozen=True, slots=True)
class Matches(Validator):
    """The whole value (as text) must match the regular expression."""

    operator: ClassVar[str] = "matches"

    def check(self, value: Any) -> bool:
        if value is None or (isinstance(value, float) and not math.isfinite(value)):
            return False
        try:
            text = value if isinstance(value, str) else str(value)
        except BaseException:  # the procedure's object: its __str__ may raise anything
            return False
        return re.fullmatch(self.expected, text) is not None

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


def limit_problems(
    *,
    low: Any = None,
    high: Any = None,
    equals: Any = None,
    matches: Any = None,
    one_of: Sequence[Any] | None = None,
    marginal: Sequence[Any] | None = None,
) -> list[tuple[str | None, str]]:
    """Everything wrong with a set of limits, as (field, problem) pairs; [] when they are sound.

    The one implementation of the limit rules: `@measure` (through `MeasurementSpec`) and a
    station.yaml limit override both check with it, so a rule changed here changes for both.
    `field` names the one limit at fault (`"matches"`), or is None when the limits contradict each
    other; `problem` is written to follow the field's name: `matches` + `is not a valid ...`.
    Only the limits given are checked: an override of `marginal` alone is checked against the
    declared `low`/`high` when the two are merged.
    """
    problems: list[tuple[str | None, str]] = []
    for name, bound in (("low", low), ("high", high)):
        if bound is not None and (not is_number(bound) or math.isnan(bound)):
            problems.append((name, f"must be a number (got {bound!r})"))
    if matches is not None:
        try:
            re.compile(matches)
        except (re.error, TypeError) as exc:
            problems.append(("matches", f"is not a valid regular expression: {exc}"))
    if one_of is not None and len(one_of) == 0:
        problems.append(("one_of", "must list at least one value"))
    band: tuple[Any, Any] | None = None
    if marginal is not None:
        if len(marginal) != 2 or not all(is_number(v) and not math.isnan(v) for v in marginal):
            problems.append(("marginal", f"must be [low, high]: two numbers (got {marginal!r})"))
        elif marginal[0] > marginal[1]:
            lo, hi = marginal
            problem = f"must be [low, high] with low <= high (got [{lo}, {hi}])"
            problems.append(("marginal", problem))
        else:
            band = (marginal[0], marginal[1])
    if problems:
        return problems  # the combinations below assume every limit is well-formed
    if low is not None and high is not None and low > high:
        problems.append((None, f"low ({low}) is greater than high ({high})"))
    if equals is not None and (low is not None or high is not None):
        problems.append((None, "use either equals or low/high, not both"))
    if band is not None and (
        (low is not None and band[0] < low) or (high is not None and band[1] > high)
    ):
        lo, hi = band
        problems.append((None, f"marginal band [{lo}, {hi}] must lie inside [{low}, {high}]"))
    return problems


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
    numeric: bool = field(init=False, repr=False, compare=False)  # only numbers can be judged

    def __post_init__(self) -> None:
        if not self.name or not isinstance(self.name, str):
            raise LimitError(f"measurement name must be a non-empty string, got {self.name!r}")
        problems = limit_problems(
            low=self.low,
            high=self.high,
            equals=self.equals,
            matches=self.matches,
            one_of=self.one_of,
            marginal=self.marginal,
        )
        if problems:
            where, problem = problems[0]
            raise LimitError(f"measurement {self.name!r}: {where + ' ' if where else ''}{problem}")
        object.__setattr__(self, "validators", self._build_validators())
        object.__setattr__(self, "limits_text", self._describe_limits())
        object.__setattr__(self, "numeric", self._is_numeric())

    def _is_numeric(self) -> bool:
        """True when the limits compare numbers: a value of another type cannot be judged."""
        if self.low is not None or self.high is not None or self.marginal is not None:
            return True
        if self.equals is not None:
            return is_number(self.equals)
        return self.one_of is not None and all(is_number(choice) for choice in self.one_of)

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

    def type_problem(self, value: object) -> str | None:
        """Why `value` cannot be judged against these limits, or None when it can.

        A value that is not a number, set against numeric limits, is a bug in the procedure (a
        reading left as text, a parse that returned None), not a bad unit: it must not FAIL or PASS.
        """
        if not self.numeric or is_number(value):
            return None
        return (
            f"measurement {self.name!r}: value of type {type(value).__name__} for numeric limits "
            f"{self.limits_text}; convert the reading to a number (e.g. float(...)) before "
            "setting it"
        )

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

    Decisive validators decide PASS/FAIL; marginal ones only set `marginal`. A measurement never
    set is UNSET, and every validator is UNSET with it; so is a value that is not a number set
    against numeric limits (`MeasurementSpec.type_problem`): no validator could run on it.
    """
    validators = spec.validators
    if not is_set or (spec.numeric and not is_number(value)):
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
