"""Measurements as an operator reads them: SI prefixes, a resolution that fits the limits, the
failing check restated.

The record keeps every value at full precision; these are for screens only (the terminal
console, the operator page, the `display` field of measurement events):

    format_value(0.00194757, "V")                     -> "1.95 mV"
    format_value(3.10213, "V", limits=(3.22, 3.38))   -> "3.102 V"   (one digit more than 3.22)
    format_bound(0.02, "V")                            -> "20 mV"     (a limit as written)
    failed_check(record)                               -> "rail_3v3 = 3.102 V < 3.22 V"
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from station.records.model import MeasurementRecord

__all__ = [
    "SI_UNITS",
    "failed_check",
    "format_bound",
    "format_value",
    "limit_numbers",
    "marginal_band",
    "measurement_display",
]

# Units that take an SI prefix (1.95 mV, 12.0 kHz); any other unit (%, dB, °C, ppm, or one
# already prefixed such as mA) is shown as given after a plain number.
SI_UNITS = frozenset(
    {"V", "A", "W", "VA", "Ω", "ohm", "Ohm", "Hz", "F", "H", "s", "S", "J", "C", "Wb", "T", "N"}
)
_PREFIXES = {-12: "p", -9: "n", -6: "µ", -3: "m", 0: "", 3: "k", 6: "M", 9: "G", 12: "T"}
_MIN_DIGITS = 3  # significant digits shown at least
_MAX_DIGITS = 7
_MAX_TEXT = 40  # characters of a text value shown


def _significant_digits(number: float) -> int:
    """Significant digits of a limit as written (3.22 -> 3, 0.005 -> 1, 120 -> 2)."""
    if not math.isfinite(number) or number == 0:
        return 1
    text = f"{abs(number):.12g}"
    mantissa = text.split("e")[0].replace(".", "").lstrip("0")
    if "." not in text.split("e")[0]:
        mantissa = mantissa.rstrip("0")
    return max(1, len(mantissa))


def _digits_for(limits: Iterable[float]) -> int:
    """One significant digit more than the finest limit, so a value can be read against it."""
    finest = max((_significant_digits(x) for x in limits), default=0)
    return min(_MAX_DIGITS, max(_MIN_DIGITS, finest + 1))


def format_value(value: Any, unit: str | None = None, *, limits: Iterable[float] = ()) -> str:
    """`value` with its unit, an SI prefix where the unit takes one, and as many significant
    digits as its limits need (at least 3). Text is quoted and cut at 40 characters."""
    suffix = f" {unit}" if unit else ""
    if value is None:
        return "(not set)"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int) and abs(value) < 10**15:
        number: float = float(value)
        if unit not in SI_UNITS or abs(value) < 1000:
            return f"{value}{suffix}"
    elif isinstance(value, float):
        number = value
    elif isinstance(value, str):
        text = repr(value)
        return text if len(text) <= _MAX_TEXT else text[: _MAX_TEXT - 3] + "..."
    else:
        text = str(value)
        return text if len(text) <= _MAX_TEXT else text[: _MAX_TEXT - 3] + "..."
    return _format_number(number, unit, _digits_for(limits))


def format_bound(bound: float, unit: str | None = None) -> str:
    """A limit as it was written, with an SI prefix: 3.22 -> `3.22 V`, 0.02 -> `20 mV`."""
    return _format_number(float(bound), unit, _significant_digits(float(bound)))


def _format_number(number: float, unit: str | None, digits: int) -> str:
    suffix = f" {unit}" if unit else ""
    if not math.isfinite(number):
        return ("NaN" if math.isnan(number) else ("inf" if number > 0 else "-inf")) + suffix
    if number == 0:
        return f"0{suffix}"
    exponent = math.floor(math.log10(abs(number)))
    if unit in SI_UNITS and -12 <= exponent < 15:
        engineering = max(-12, min(12, 3 * math.floor(exponent / 3)))
        scaled = number / 10**engineering
        if round(abs(scaled), max(0, digits - 1 - (exponent - engineering))) >= 1000:
            engineering = min(12, engineering + 3)  # 999.96 mV rounds to 1.000 V
            scaled = number / 10**engineering
        integer_digits = len(str(int(abs(scaled)))) if abs(scaled) >= 1 else 1
        decimals = max(0, digits - integer_digits)
        return f"{scaled:.{decimals}f} {_PREFIXES[engineering]}{unit}"
    return f"{number:.{digits}g}{suffix}"


def limit_numbers(record: MeasurementRecord) -> list[float]:
    """The numeric bounds among a measurement's limits (decisive or marginal)."""
    numbers: list[float] = []
    for v in record.validators:
        expected = v.expected_value
        if isinstance(expected, int | float) and not isinstance(expected, bool):
            numbers.append(float(expected))
        elif isinstance(expected, list):
            numbers.extend(
                float(x) for x in expected if isinstance(x, int | float) and not isinstance(x, bool)
            )
    return numbers


def measurement_display(record: MeasurementRecord) -> str:
    """The measured value of `record` as the operator should read it."""
    return format_value(record.measured_value, record.units, limits=limit_numbers(record))


def marginal_band(record: MeasurementRecord) -> str | None:
    """The marginal band, e.g. `marginal band [3.24 V, 3.36 V]`, when the measurement has one."""
    low = next(
        (v.expected_value for v in record.validators if not v.is_decisive and v.operator == ">="),
        None,
    )
    high = next(
        (v.expected_value for v in record.validators if not v.is_decisive and v.operator == "<="),
        None,
    )
    if low is None and high is None:
        return None

    def show(x: Any) -> str:
        return format_bound(x, record.units) if x is not None else "..."

    return f"marginal band [{show(low)}, {show(high)}]"


_NEGATION = {">=": "<", "<=": ">", "==": "!=", "in": "not in", "matches": "does not match"}


def failed_check(record: MeasurementRecord) -> str:
    """The check a measurement failed, restated: `rail_3v3 = 3.102 V < 3.22 V`,
    `fw = '1.0' != '1.2'`, `rail_5v0 not set`. For a passing one, its value."""
    if record.outcome == "UNSET":
        return f"{record.name} not set"
    shown = measurement_display(record)
    for v in record.validators:
        if v.is_decisive and v.outcome != "PASS":
            expected = v.expected_value
            if isinstance(expected, int | float) and not isinstance(expected, bool):
                bound = format_bound(expected, record.units)
            elif v.operator == "matches":
                bound = f"/{expected}/"
            elif isinstance(expected, list):
                bound = "{" + ", ".join(repr(x) for x in expected) + "}"
            else:
                bound = repr(expected)
            negation = _NEGATION.get(v.operator, f"fails {v.operator}")
            return f"{record.name} = {shown} {negation} {bound}"
    return f"{record.name} = {shown}"
