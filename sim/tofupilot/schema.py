"""Fast validation of run-create bodies against the vendored schema, still the reference one.

The schema is small but full of `$ref`s, and jsonschema resolves each one on every use (a body of
10 phases x 100 measurements costs about 9,000 lookups). So, once, when the emulator starts:

1. `dereference()` inlines every local `#/$defs/...` reference, giving a self-contained schema
   that accepts and rejects exactly what the original does (a `$ref` whose siblings are only
   annotations becomes the definition itself; one with other keywords becomes an `allOf`, which
   is what a `$ref` next to other keywords means in draft 2020-12). A definition that refers to
   itself, directly or not, cannot be inlined: references to it stay, with its `$defs` entry.
2. a Draft 2020-12 `jsonschema` validator is built on that schema, once;
3. `compile_check()` turns the self-contained schema into nested Python checks that answer only
   "valid or not", for the keywords this schema uses (type, enum of strings/null, properties,
   required, additionalProperties, items, oneOf, minLength, pattern, format, minimum,
   maxProperties, dependentRequired). A schema with anything else is not compiled.

`RunSchemaValidator.iter_errors(body)` runs the compiled check first: a valid body is accepted
there (a few ms instead of 100+); a body it rejects, or every body when the schema could not be
compiled, goes through jsonschema, whose errors are what the emulator answers with. Both are
checked against jsonschema on the original schema in tests/tofupilot/test_schema.py.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterator
from typing import Any

# Keywords that never change whether an instance is valid.
ANNOTATIONS = frozenset(
    {
        "$schema",
        "$id",
        "$comment",
        "$defs",
        "title",
        "description",
        "default",
        "examples",
        "deprecated",
        "readOnly",
        "writeOnly",
    }
)
# Keywords that change how references resolve: a schema holding them below its root is not
# dereferenced (inlining would move their scope).
_SCOPE_KEYWORDS = frozenset({"$id", "$anchor", "$dynamicAnchor", "$dynamicRef", "$recursiveRef"})
_DEFS_PREFIX = "#/$defs/"

Check = Callable[[Any], bool]


class Unsupported(Exception):
    """The schema uses something `compile_check` does not implement."""


# -- dereferencing -------------------------------------------------------------------------------


def _is_annotation(key: str) -> bool:
    return key in ANNOTATIONS or key.startswith("x-")


def _local_refs(node: Any) -> Iterator[str]:
    """Names of the `#/$defs/<name>` references anywhere in `node`."""
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith(_DEFS_PREFIX):
            yield ref[len(_DEFS_PREFIX) :]
        for key, value in node.items():
            if key != "$defs":
                yield from _local_refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _local_refs(item)


def _has_scope_keywords(node: Any, root: bool = True) -> bool:
    if isinstance(node, dict):
        keys = _SCOPE_KEYWORDS - {"$id"} if root else _SCOPE_KEYWORDS
        if any(k in node for k in keys):
            return True
        return any(_has_scope_keywords(v, False) for v in node.values())
    if isinstance(node, list):
        return any(_has_scope_keywords(v, False) for v in node)
    return False


def recursive_defs(schema: dict[str, Any]) -> set[str]:
    """The `$defs` entries that refer to themselves, directly or through others."""
    defs = schema.get("$defs") or {}
    graph = {name: {r for r in _local_refs(body) if r in defs} for name, body in defs.items()}
    recursive = set()
    for start in graph:
        seen, todo = set(), list(graph[start])
        while todo:
            name = todo.pop()
            if name == start:
                recursive.add(start)
                break
            if name not in seen:
                seen.add(name)
                todo.extend(graph[name])
    return recursive


def dereference(schema: dict[str, Any]) -> dict[str, Any]:
    """A copy of `schema` with its local `#/$defs/...` references inlined (see the module doc).

    References to recursive definitions and to anything else than `#/$defs/<name>` stay as they
    are, and so does `$defs` then. A schema with `$anchor`, `$dynamicRef` or a nested `$id` is
    returned as it is: inlining could change what its references mean.
    """
    if _has_scope_keywords(schema):
        return schema
    defs = schema.get("$defs") or {}
    keep = recursive_defs(schema)
    done: dict[str, Any] = {}

    def inline(node: Any) -> Any:
        if isinstance(node, list):
            return [inline(item) for item in node]
        if not isinstance(node, dict):
            return node
        out = {k: (v if k == "$defs" else _inline_values(k, v, inline)) for k, v in node.items()}
        ref = out.get("$ref")
        if not isinstance(ref, str) or not ref.startswith(_DEFS_PREFIX):
            return out
        name = ref[len(_DEFS_PREFIX) :]
        if name not in defs or name in keep:
            return out
        if name not in done:
            done[name] = inline(defs[name])
        target = done[name]
        rest = {k: v for k, v in out.items() if k != "$ref"}
        if all(_is_annotation(k) for k in rest):
            return {**target, **rest} if isinstance(target, dict) else target
        return {**rest, "allOf": [*rest.get("allOf", []), target]}

    result = inline({k: v for k, v in schema.items() if k != "$defs"})
    if any(True for _ in _local_refs(result)) or _has_other_refs(result):
        result["$defs"] = {name: inline(body) for name, body in defs.items()}
    return result


def _inline_values(key: str, value: Any, inline: Callable[[Any], Any]) -> Any:
    if key in ("properties", "patternProperties", "dependentSchemas") and isinstance(value, dict):
        return {name: inline(sub) for name, sub in value.items()}
    if key in ("enum", "const", "required", "dependentRequired", "examples", "default"):
        return value  # data, not schemas
    return inline(value)


def _has_other_refs(node: Any) -> bool:
    if isinstance(node, dict):
        if "$ref" in node:
            return True
        return any(_has_other_refs(v) for k, v in node.items() if k != "$defs")
    if isinstance(node, list):
        return any(_has_other_refs(v) for v in node)
    return False


# -- a compiled yes/no check ---------------------------------------------------------------------


def _is_number(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)


def _is_integer(x: Any) -> bool:
    if isinstance(x, bool):
        return False
    return isinstance(x, int) or (isinstance(x, float) and x.is_integer())


_TYPES: dict[str, Check] = {
    "object": lambda x: isinstance(x, dict),
    "array": lambda x: isinstance(x, list),
    "string": lambda x: isinstance(x, str),
    "number": _is_number,
    "integer": _is_integer,
    "boolean": lambda x: isinstance(x, bool),
    "null": lambda x: x is None,
}
_CLASSES: dict[str, type] = {
    "object": dict,
    "array": list,
    "string": str,
    "boolean": bool,
    "null": type(None),
}


def compile_check(schema: Any, format_checker: Any = None) -> Check:
    """`schema` (self-contained: no `$ref`) as one function instance -> valid?

    Raises `Unsupported` for a keyword (or keyword value) it does not implement, so a schema it
    compiles is checked completely. `format_checker` is jsonschema's (`format` is asserted only
    as far as it asserts it, like jsonschema with `format_checker=`).
    """
    if schema is True:
        return lambda x: True
    if schema is False:
        return lambda x: False
    if not isinstance(schema, dict):
        raise Unsupported(f"schema {schema!r}")
    checks: list[Check] = []
    keys = set(schema)
    object_checks: list[Check] = []

    if "type" in keys:
        checks.append(_type_check(schema["type"]))
    if "enum" in keys:
        checks.append(_enum_check(schema["enum"]))
    if "minLength" in keys:
        n = _count(schema["minLength"])
        checks.append(lambda x: not isinstance(x, str) or len(x) >= n)
    if "pattern" in keys:
        search = re.compile(schema["pattern"]).search
        checks.append(lambda x: not isinstance(x, str) or search(x) is not None)
    if "format" in keys and format_checker is not None:
        fmt, conforms = schema["format"], format_checker.conforms
        checks.append(lambda x: conforms(x, fmt))
    if "minimum" in keys:
        low = schema["minimum"]
        if not _is_number(low):
            raise Unsupported("minimum")
        checks.append(lambda x: not _is_number(x) or x >= low)
    if "maxProperties" in keys:
        most = _count(schema["maxProperties"])
        object_checks.append(lambda x: len(x) <= most)
    if "required" in keys:
        required = tuple(schema["required"])
        object_checks.append(lambda x: all(k in x for k in required))
    if "dependentRequired" in keys:
        dependent = {k: tuple(v) for k, v in schema["dependentRequired"].items()}
        object_checks.append(
            lambda x: all(all(d in x for d in deps) for k, deps in dependent.items() if k in x)
        )
    if "properties" in keys or "additionalProperties" in keys:
        object_checks.append(
            _properties_check(
                schema.get("properties", {}),
                schema.get("additionalProperties", True),
                format_checker,
            )
        )
    if "items" in keys:
        item = compile_check(schema["items"], format_checker)
        checks.append(lambda x: not isinstance(x, list) or all(item(i) for i in x))
    if "oneOf" in keys:
        options = [compile_check(s, format_checker) for s in schema["oneOf"]]
        checks.append(lambda x: sum(1 for o in options if o(x)) == 1)
    if "allOf" in keys:
        parts = [compile_check(s, format_checker) for s in schema["allOf"]]
        checks.append(lambda x: all(p(x) for p in parts))

    known = {
        "type",
        "enum",
        "minLength",
        "pattern",
        "format",
        "minimum",
        "maxProperties",
        "required",
        "dependentRequired",
        "properties",
        "additionalProperties",
        "items",
        "oneOf",
        "allOf",
    }
    unknown = sorted(k for k in keys - known if not _is_annotation(k))
    if unknown:  # `$ref` among them: a reference left in (a recursive definition)
        raise Unsupported(", ".join(unknown))

    if object_checks:
        on_object = _all_of(object_checks)
        checks.append(lambda x: not isinstance(x, dict) or on_object(x))
    return _all_of(checks)


def _all_of(checks: list[Check]) -> Check:
    """One function for all of `checks` (unrolled for the usual few: this runs per node)."""
    if not checks:
        return lambda x: True
    if len(checks) == 1:
        return checks[0]
    if len(checks) == 2:
        a, b = checks
        return lambda x: a(x) and b(x)
    if len(checks) == 3:
        a, b, c = checks
        return lambda x: a(x) and b(x) and c(x)
    return lambda x: all(c(x) for c in checks)


def _count(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise Unsupported(f"count {value!r}")
    return value


def _type_check(types: Any) -> Check:
    names = [types] if isinstance(types, str) else list(types)
    if not names or any(n not in _TYPES for n in names):
        raise Unsupported(f"type {types!r}")
    if all(n in _CLASSES for n in names):  # one isinstance() (bool is no subclass of these)
        classes = tuple(_CLASSES[n] for n in names)
        return lambda x: isinstance(x, classes)
    tests = [_TYPES[n] for n in names]
    if len(tests) == 1:
        return tests[0]
    return lambda x: any(t(x) for t in tests)


def _enum_check(members: Any) -> Check:
    """Only members that are strings or null: jsonschema's equality is plain there."""
    if not isinstance(members, list) or not all(m is None or isinstance(m, str) for m in members):
        raise Unsupported("enum other than strings and null")
    strings = frozenset(m for m in members if m is not None)
    allow_null = None in members
    return lambda x: (x is None and allow_null) or (isinstance(x, str) and x in strings)


def _properties_check(properties: Any, additional: Any, format_checker: Any) -> Check:
    if not isinstance(properties, dict):
        raise Unsupported("properties")
    named = {k: compile_check(v, format_checker) for k, v in properties.items()}
    if additional is True:
        return lambda x: all(named[k](v) for k, v in x.items() if k in named)
    if additional is False:
        return lambda x: all(k in named and named[k](v) for k, v in x.items())
    other = compile_check(additional, format_checker)

    def check(x: dict[str, Any]) -> bool:
        for k, v in x.items():
            test = named.get(k, other)
            if not test(v):
                return False
        return True

    return check


# -- the validator the emulator uses --------------------------------------------------------------


class RunSchemaValidator:
    """Validates bodies against `schema` (draft 2020-12), quickly. Build it once.

    `iter_errors(instance)` yields jsonschema's errors (none for a valid instance), like
    `Draft202012Validator.iter_errors`. `compiled` says whether the fast check is in use.
    """

    def __init__(self, schema: dict[str, Any]) -> None:
        from jsonschema import Draft202012Validator

        Draft202012Validator.check_schema(schema)
        self.schema = dereference(schema)
        self.format_checker = Draft202012Validator.FORMAT_CHECKER
        self.validator = Draft202012Validator(self.schema, format_checker=self.format_checker)
        try:
            self._fast: Check | None = compile_check(self.schema, self.format_checker)
        except Unsupported:
            self._fast = None

    @property
    def compiled(self) -> bool:
        return self._fast is not None

    def is_valid(self, instance: Any) -> bool:
        if self._fast is not None:
            return self._fast(instance)
        return self.validator.is_valid(instance)

    def iter_errors(self, instance: Any) -> Iterator[Any]:
        if self._fast is not None and self._fast(instance):
            return iter(())
        return self.validator.iter_errors(instance)


@functools.cache
def run_schema_validator() -> RunSchemaValidator:
    """The validator of the vendored run-create schema, built once per process (thread-safe:
    it holds no state between calls)."""
    from .state import load_run_schema

    return RunSchemaValidator(load_run_schema())
