"""Turning what a phase did into records: measurements checked against their limits, values
made recordable, exceptions described with the procedure's own file and line.

Everything here must never raise on a procedure's hostile input (an exception whose `str()`
raises, ints too large for JSON, NaN): the run has to be recorded whatever the phase did.
"""

from __future__ import annotations

import math
import os
import traceback
from pathlib import Path
from typing import Any

from station.authoring.helpers import Measurements
from station.authoring.limits import check
from station.records.model import ErrorInfo, MeasurementRecord, ValidatorRecord

MAX_MESSAGE = 10_000
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


def safe_str(obj: object) -> str:
    try:
        text = str(obj)
    except BaseException:  # the object is the procedure's: its __str__ may raise anything
        text = f"<{type(obj).__name__}: str() raised>"
    return text if len(text) <= MAX_MESSAGE else text[:MAX_MESSAGE] + "... (truncated)"


def safe_repr(obj: object) -> str:
    try:
        text = repr(obj)
    except BaseException:
        text = f"<{type(obj).__name__}>"
    return text[:200]


NON_FINITE_TEXT = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}


def recordable_metadata(metadata: dict[str, Any]) -> dict[str, Any]:
    """Run metadata with non-finite numbers as text, like measured values."""
    return {
        key: NON_FINITE_TEXT[str(value)]
        if isinstance(value, float) and not math.isfinite(value)
        else value
        for key, value in metadata.items()
    }


def _recordable(value: Any) -> Any:
    """Values the record can hold: JSON scalars and lists of them; anything else as its repr."""
    if isinstance(value, float):
        # Limits were checked on the number; the record keeps non-finite values as text, so
        # run.json is valid JSON and reads back equal (see station.record).
        return value if math.isfinite(value) else NON_FINITE_TEXT[str(value)]
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):  # beyond _MAX_INT, JSON readers (run.json) refuse the number
        return value if -_MAX_INT < value < _MAX_INT else f"<int of {value.bit_length()} bits>"
    if isinstance(value, str):
        return value if len(value) <= MAX_MESSAGE else value[:MAX_MESSAGE] + "... (truncated)"
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
