"""The emulator's schema check is fast and still the vendored schema's: the dereferenced schema
and the compiled check accept and reject exactly what jsonschema does on the original schema."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from conftest import errors_of, mutations
from jsonschema import Draft202012Validator

from sim.tofupilot import RunSchemaValidator, dereference, load_run_schema, run_schema_validator
from sim.tofupilot.schema import compile_check, recursive_defs

TS = "2026-03-01T10:00:00.123Z"


def full_body() -> dict[str, Any]:
    """A body using every part of the schema: sequences, config, secrets, axes, aggregations."""
    validator = {"operator": ">=", "expected_value": 1.0, "outcome": "PASS", "is_decisive": True}
    aggregation = {
        "type": "mean",
        "outcome": None,
        "value": 1.5,
        "unit": "V",
        "validators": [validator],
    }
    axis = {
        "data": [1, 2.5],
        "units": "s",
        "name": "t",
        "validators": [validator],
        "aggregations": [aggregation],
    }
    return {
        "outcome": "FAIL",
        "procedure_id": "FVT1",
        "started_at": TS,
        "ended_at": "2026-03-01T10:00:05+01:00",
        "serial_number": "SN-1",
        "deployment_id": None,
        "client_run_ref": "station-abc",
        "execution_id": "ex-1",
        "slot_key": "s1",
        "slot_name": "Slot 1",
        "procedure_version": "1.0",
        "operated_by": "alice",
        "part_number": "P-1",
        "revision_number": "B",
        "batch_number": "B7",
        "sub_units": ["SUB-1"],
        "docstring": "text",
        "phases": [
            {
                "name": "rails",
                "outcome": "FAIL",
                "started_at": TS,
                "ended_at": TS,
                "docstring": None,
                "retry_count": 1,
                "sequence_path": "main",
                "measurements": [
                    {
                        "name": "v",
                        "outcome": "FAIL",
                        "measured_value": 3.1,
                        "units": "V",
                        "validators": [validator, {**validator, "operator": "matches"}],
                        "aggregations": [aggregation],
                        "docstring": "why",
                        "lower_limit": 1,
                        "upper_limit": 2.5,
                    },
                    {
                        "name": "trace",
                        "outcome": "PASS",
                        "x_axis": axis,
                        "y_axis": [axis],
                        "units": ["s", "V"],
                        "measured_value": [[1, 2], [3, 4]],
                    },
                    {"name": "none", "outcome": "UNSET", "x_axis": None, "measured_value": None},
                ],
            }
        ],
        "sequences": [
            {
                "path": "main",
                "name": "Main",
                "outcome": "PASS",
                "source": None,
                "started_at": TS,
                "ended_at": None,
            }
        ],
        "logs": [
            {
                "level": "INFO",
                "timestamp": TS,
                "message": "hello",
                "source_file": "t.py",
                "line_number": 3,
            }
        ],
        "metadata": {"fixture": "F7", "gain": 2, "ok": True},
        "unit_metadata": {},
        "config": [
            {"key": "k", "value": 1, "variable_id": None, "version": 2, "source": "station"}
        ],
        "secrets": [{"key": "s", "variable_id": "v", "version": None, "source": None}],
    }


@pytest.fixture(scope="module")
def original() -> Draft202012Validator:
    return Draft202012Validator(
        load_run_schema(), format_checker=Draft202012Validator.FORMAT_CHECKER
    )


def test_the_dereferenced_schema_is_self_contained_and_valid():
    schema = load_run_schema()
    assert recursive_defs(schema) == set()  # nothing had to stay a reference
    flat = dereference(schema)
    text = json.dumps(flat)
    assert "$ref" not in text and "$defs" not in flat
    Draft202012Validator.check_schema(flat)
    assert run_schema_validator().compiled
    assert schema == load_run_schema()  # the original is left alone


def test_every_part_of_the_schema_and_every_mutation_gets_the_same_verdict(original, same_verdicts):
    body = full_body()
    assert errors_of(original, body) == []
    checked = same_verdicts(body)
    assert checked > 1000


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("started_at",), "2026-03-01"),
        (("started_at",), "2026-03-01T10:00:00"),
        (("started_at",), "2026-03-01T10:00:00+0100"),
        (("started_at",), "2026-03-01T10:00Z"),
        (("phases", 0, "retry_count"), 1.0),
        (("phases", 0, "retry_count"), -1),
        (("phases", 0, "retry_count"), True),
        (("logs", 0, "line_number"), 2.5),
        (("metadata",), {f"k{i}": i for i in range(50)}),
        (("metadata",), {f"k{i}": i for i in range(51)}),
        (("metadata", "x"), None),
        (("metadata", "x"), [1]),
        (("phases", 0, "measurements", 0, "validators", 0, "outcome"), "pass"),
        (("phases", 0, "measurements", 0, "validators", 0, "outcome"), 0),
        (("phases", 0, "measurements", 1, "x_axis", "data"), [1, True]),
        (("phases", 0, "measurements", 1, "x_axis", "data"), [1, "2"]),
        (("sequences", 0, "started_at"), "yesterday"),
        (("config", 0, "source"), "nowhere"),
        (("config", 0, "value"), None),
        (("serial_number",), ""),
        (("sub_units",), [""]),
    ],
)
def test_edge_values_get_the_same_verdict(original, path, value):
    body = full_body()
    parent = body
    for part in path[:-1]:
        parent = parent[part]
    parent[path[-1]] = value
    fast = run_schema_validator()
    expected = errors_of(original, body)
    assert fast.is_valid(body) == (not expected)
    assert errors_of(fast, body) == expected


def test_dependent_required_and_missing_required_fields(original):
    fast = run_schema_validator()
    body = full_body()
    del body["execution_id"]  # slot_key needs it
    bodies = [body, {}, [], None, {"outcome": "PASS"}]
    for instance in bodies:
        expected = errors_of(original, instance)
        assert expected
        assert not fast.is_valid(instance)
        assert errors_of(fast, instance) == expected


def test_a_large_body_gets_the_same_verdict(original, same_verdicts):
    body = full_body()
    phase = body["phases"][0]
    body["phases"] = [
        {**copy.deepcopy(phase), "name": f"p{i}", "measurements": phase["measurements"] * 30}
        for i in range(3)
    ]
    assert errors_of(original, body) == []
    assert run_schema_validator().is_valid(body)
    same_verdicts(body, limit=8)


# -- the dereferencing itself, on small schemas ----------------------------------------------------

TREE = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "properties": {"root": {"$ref": "#/$defs/Node"}, "label": {"$ref": "#/$defs/Label"}},
    "$defs": {
        "Label": {"type": "string", "minLength": 1},
        "Node": {
            "type": "object",
            "required": ["label"],
            "properties": {
                "label": {"$ref": "#/$defs/Label"},
                "children": {"type": "array", "items": {"$ref": "#/$defs/Node"}},
            },
        },
    },
}


def test_recursive_definitions_keep_their_references_and_still_validate():
    assert recursive_defs(TREE) == {"Node"}
    flat = dereference(TREE)
    assert flat["properties"]["label"] == {"type": "string", "minLength": 1}
    assert flat["properties"]["root"] == {"$ref": "#/$defs/Node"}
    assert flat["$defs"]["Node"]["properties"]["label"] == {"type": "string", "minLength": 1}
    validator = RunSchemaValidator(TREE)
    assert not validator.compiled  # a reference is left: jsonschema does it all
    reference = Draft202012Validator(TREE)
    good = {"label": "a", "root": {"label": "r", "children": [{"label": "c", "children": []}]}}
    assert errors_of(reference, good) == []
    for instance in [good, *mutations(good)]:
        assert errors_of(validator, instance) == errors_of(reference, instance)


def test_a_reference_next_to_other_keywords_keeps_both():
    schema = {
        "type": "object",
        "properties": {
            "a": {"$ref": "#/$defs/S", "maxLength": 3, "description": "kept apart"},
            "b": {"$ref": "#/$defs/S", "description": "only an annotation"},
        },
        "$defs": {"S": {"type": "string", "minLength": 2}},
    }
    flat = dereference(schema)
    assert flat["properties"]["a"] == {
        "maxLength": 3,
        "description": "kept apart",
        "allOf": [{"type": "string", "minLength": 2}],
    }
    assert flat["properties"]["b"] == {
        "type": "string",
        "minLength": 2,
        "description": "only an annotation",
    }
    reference, flat_validator = Draft202012Validator(schema), Draft202012Validator(flat)
    for a in ["", "a", "ab", "abcd", 5, None]:
        instance = {"a": a, "b": a}
        assert errors_of(flat_validator, instance) == errors_of(reference, instance)


def test_unknown_keywords_are_not_compiled():
    from sim.tofupilot.schema import Unsupported

    for schema in (
        {"type": "array", "prefixItems": [{"type": "string"}]},
        {"enum": [1, 2]},
        {"$ref": "#/$defs/X"},
        {"type": "object", "unevaluatedProperties": False},
    ):
        with pytest.raises(Unsupported):
            compile_check(schema)
