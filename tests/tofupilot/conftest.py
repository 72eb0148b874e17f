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


# -- the emulator's fast schema check against jsonschema on the original schema -----------------

_SWAPS: tuple[Any, ...] = (None, True, False, 0, -1, 2.0, 1.5, "", "x", "PASS", [], {}, ["x"])


def mutations(body: Any, limit: int | None = None) -> Iterator[Any]:
    """Copies of `body` with one change each: every value swapped for each of a few of another
    type, every object key dropped, an unknown key added to every object, a bad item appended
    to every list. With `limit`, an even sample of them (deterministic)."""
    import copy

    def edits(node: Any, path: tuple[Any, ...]) -> Iterator[tuple[tuple[Any, ...], str, Any]]:
        for swap in _SWAPS:
            if swap != node or type(swap) is not type(node):
                yield path, "set", swap
        if isinstance(node, dict):
            yield path, "add", ("zz_unknown", 1)
            for key, value in node.items():
                yield path, "drop", key
                yield from edits(value, (*path, key))
        elif isinstance(node, list):
            yield path, "append", None
            for i, value in enumerate(node):
                yield from edits(value, (*path, i))

    every = list(edits(body, ()))
    step = max(1, len(every) // limit) if limit else 1
    for path, kind, arg in every[::step]:
        copied = copy.deepcopy(body)
        if kind == "set" and not path:
            yield arg
            continue
        parent = copied
        for part in path[:-1] if kind == "set" else path:
            parent = parent[part]
        if kind == "set":
            parent[path[-1]] = arg
        elif kind == "add":
            parent[arg[0]] = arg[1]
        elif kind == "drop":
            del parent[arg]
        else:
            parent.append(arg)
        yield copied


def errors_of(validator: Any, instance: Any) -> list[tuple[list[Any], str]]:
    return sorted(
        ((list(e.absolute_path), e.message) for e in validator.iter_errors(instance)),
        key=repr,
    )


@pytest.fixture(scope="session")
def same_verdicts(run_validator: Draft202012Validator) -> Any:
    """`check(body, limit)`: on `body` and its mutations, the emulator's validator (compiled
    check, then jsonschema on the dereferenced schema) says exactly what jsonschema says on the
    original schema: valid or not, and the same errors. Returns how many instances it checked."""
    from sim.tofupilot import run_schema_validator

    fast = run_schema_validator()
    assert fast.compiled

    def check(body: Any, limit: int | None = None) -> int:
        count = 0
        for instance in [body, *mutations(body, limit)]:
            expected = errors_of(run_validator, instance)
            assert fast.is_valid(instance) == (not expected), instance
            assert fast.validator.is_valid(instance) == (not expected), instance
            assert errors_of(fast, instance) == expected, instance
            count += 1
        return count

    return check
