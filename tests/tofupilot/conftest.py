"""Fixtures for the TofuPilot tests: a live v2 emulator on loopback and the vendored schema."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from sim.tofupilot import TofuPilotEmulator, load_run_schema


@pytest.fixture
def emulator() -> Iterator[TofuPilotEmulator]:
    """A TofuPilot v2 emulator on a free port: `.url` (…/api), `.station_key` (linked to FVT1
    and T1), `.user_key`, `.faults`, `.runs`, `.requests`. Hang faults hold 0.3 s by default."""
    with TofuPilotEmulator(port=0) as tp:
        tp.faults.hang_s = 0.3
        tp.faults.retry_after_s = 0
        yield tp


@pytest.fixture(scope="session")
def run_schema() -> dict[str, Any]:
    return load_run_schema()


@pytest.fixture(scope="session")
def run_validator(run_schema: dict[str, Any]) -> Draft202012Validator:
    Draft202012Validator.check_schema(run_schema)
    return Draft202012Validator(run_schema, format_checker=Draft202012Validator.FORMAT_CHECKER)
