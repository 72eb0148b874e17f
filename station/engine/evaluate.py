"""Turning what a phase did into records: measurements checked against their limits, values
made recordable, exceptions described with the procedure's own file and line.

Everything here must never raise on a procedure's hostile input (an exception whose `str()`
raises, ints too large for JSON, NaN): the run has to be recorded whatever the phase did.
"""

from __future__ import annotations

import numbers
import os
import traceback
from pathlib import Path
from typing import Any

from station.authoring.helpers import Measurements
from station.authoring.limits import check
from station.records.model import ErrorInfo, MeasurementRecord, ValidatorRecord
from station.records.text import MAX_TEXT, safe_repr, safe_str, truncate

__all__ = [
    "MAX_MESSAGE",
    "error_info",
    "measurement_records",
    "recordable_metadata",
    "safe_repr",
    "safe_str",
]

MAX_MESSAGE = MAX_TEXT  # characters of a message, traceback or text value a record keeps
_MAX_INT = 1 << 1000  # beyond this JSON readers (run.json) refuse the number


def error_info(error: BaseException, procedure_dir: Path) -> ErrorInfo:
    """An exception as the record keeps it, pointing at the deepest line in the procedure."""
    frames = traceback.extract_tb(error.__traceback__)
    ours = [f for f in frames if Path(f.filename).resolve().is_relative_to(procedure_dir)]
    frame = ours[-1] if ours else (frames[-1] if frames else None)
    try:
        text = "".join(traceback.format_exception(error))
    except BaseException:  # a __str__ that raises even KeyboardInterrupt must not end the run
        text = None
    return ErrorInfo(
        type=type(error).__name__,
        message=safe_str(error),
        traceback=text[-MAX_MESSAGE:] if text else None,
        source_file=_relative(frame.filename, procedure_dir) if frame else None,
        line_number=frame.lineno if frame else None,
    )


def measurement_records(measurements: Measurements) -> list[MeasurementRecord]:
    """Each declared measurement checked against its limits."""
    records = []
    for spec, value, is_set in measurements.items():
        result = check(spec, value, is_set)
        records.append(
            MeasurementRecord(
                name=spec.name,
                outcome=result.outcome,
                measured_value=_recordable(value) if is_set else None,
                units=spec.unit,
                description=spec.description,
                marginal=result.marginal,
                limits=spec.limits_text,
                validators=[
                    ValidatorRecord(
                        operator=v.operator,
                        expected_value=_recordable(v.expected),
                        outcome=outcome,
                        is_decisive=v.decisive,
                    )
                    for v, outcome in result.validator_outcomes
                ],
            )
        )
    return records


def recordable_metadata(metadata: dict[str, Any]) -> dict[str, Any]:
    """Run metadata as the record keeps it: a copy. Non-finite numbers stay numbers, like
    measured values (the record writes them as an explicit fact: station.records.model)."""
    return dict(metadata)


def _recordable(value: Any) -> Any:
    """Values the record can hold: JSON scalars and lists of them; anything else as its repr."""
    if isinstance(value, float):
        # Non-finite values stay numbers: the record writes them as an explicit fact, so
        # run.json is valid JSON and reads back equal (see station.records.model).
        return value
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):  # beyond _MAX_INT, JSON readers (run.json) refuse the number
        return value if -_MAX_INT < value < _MAX_INT else f"<int of {value.bit_length()} bits>"
    if isinstance(value, str):
        return truncate(value, MAX_MESSAGE)
    if isinstance(value, numbers.Integral):  # numpy's ints and the like: judged as numbers
        return _recordable(int(value))
    if isinstance(value, numbers.Real):  # Fraction, numpy's float32: judged as numbers
        return float(value)
    if isinstance(value, list | tuple) and all(
        isinstance(v, bool | int | float | str) for v in value
    ):
        return [_recordable(v) for v in value]
    return safe_repr(value)


def _relative(path: str, base: Path) -> str:
    try:
        return os.path.relpath(path, base).replace(os.sep, "/")
    except ValueError:
        return path
