"""Bad station.yaml, generated: the station explains, it never crashes and never hangs.

Whatever the file holds (wrong types, unknown keys, broken YAML, huge values, unicode, deep
nesting, alias and merge-key bombs), `load_config` either returns a config or raises one
`ConfigError` whose message names the file and the line or the field; and `python -m station
check` / `run` print that message and exit 2, never a traceback.

The default suite draws a fixed set of examples (derandomized); the soak draws thousands:

    pytest -m soak tests/chaos/test_fuzz_config.py
"""

from __future__ import annotations

import copy
import random
import re
import resource
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from fuzz_fixtures import FUZZ, SOAK, soak_only, station_cli  # noqa: F401
from hypothesis import given, settings
from hypothesis import strategies as st

from station.config.model import ConfigError, StationConfig, load_config

# A valid bench: every mutation below starts from here.
VALID: dict[str, Any] = {
    "station": {"name": "Bench 3"},
    "tofupilot": {"url": "https://tofupilot.example/api", "api_key_env": "TOFUPILOT_API_KEY"},
    "data_dir": "runs",
    "instruments": {
        "dmm": {
            "driver": "keysight-34461a",
            "resource": "TCPIP::127.0.0.1::1::SOCKET",
            "timeout_ms": 300,
        }
    },
    "procedures": {
        "T1": {
            "module": "proc_t.py",
            "part_number": "PCBA01",
            "revision": "B",
            "timeout_s": 30,
            "limits": {"v": {"low": 1.0, "high": 2.0, "marginal": [1.1, 1.9]}},
        }
    },
    "sim": {"board": "pcba01", "seed": 0},
}

PROCEDURE = """
    from station import measure, phase

    @phase
    @measure("v", low=0.5, high=2.5)
    def measure_v(measurements):
        measurements.v = 1.5
"""

LOAD_BUDGET_S = 10.0  # a station.yaml loads in milliseconds; an expanding bomb takes minutes


# ------------------------------------------------------------------------------------------------
# The property every document must satisfy


def loads_or_explains(path: Path) -> StationConfig | ConfigError:
    """Load `path`; a ConfigError must read like a compiler error for this file."""
    started = time.monotonic()
    try:
        result: StationConfig | ConfigError = load_config(path)
    except ConfigError as exc:
        result = exc
    elapsed = time.monotonic() - started
    assert elapsed < LOAD_BUDGET_S, f"load_config took {elapsed:.1f} s"
    if isinstance(result, ConfigError):
        assert_explains(result, str(path))
    return result


def assert_explains(error: ConfigError, display: str) -> None:
    message = str(error)
    lines = message.splitlines()
    assert lines, "an empty error message"
    assert lines[0].startswith(display), message[:500]
    assert error.line is not None or error.field or "the file is empty" in message, message[:500]
    assert len(message) < 20_000, f"a {len(message)}-character message is not read at the bench"
    for pydantic_noise in ("pydantic", "errors.pydantic.dev", "type=", "input_value="):
        assert pydantic_noise not in message, message[:500]


# ------------------------------------------------------------------------------------------------
# Strategies

_TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=30)
_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**40), max_value=10**40),
    st.floats(allow_nan=True, allow_infinity=True),
    _TEXT,
    st.sampled_from(["", " ", "~", "yes", "0x1F", "1e999", "${NOPE}", "${", "$${X}", "é☃😀"]),
    st.sampled_from(["x" * 100_000, "ü" * 20_000]),  # huge values
)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(_TEXT, inner, max_size=4)),
    max_leaves=12,
)


@st.composite
def _deep(draw: st.DrawFn) -> Any:
    value: Any = draw(_SCALARS)
    for _ in range(draw(st.integers(min_value=1, max_value=150))):
        value = [value] if draw(st.booleans()) else {"k": value}
    return value


BAD_VALUES = st.one_of(_VALUES, _deep())


def _paths(data: Any, prefix: tuple = ()) -> list[tuple]:
    """Every location in the document, containers included."""
    found = [prefix]
    if isinstance(data, dict):
        for key, value in data.items():
            found += _paths(value, (*prefix, key))
    elif isinstance(data, list):
        for index, value in enumerate(data):
            found += _paths(value, (*prefix, index))
    return found


def _parent_and_key(doc: Any, path: tuple) -> tuple[Any, Any]:
    parent = doc
    for part in path[:-1]:
        parent = parent[part]
    return parent, path[-1]


@st.composite
def mutated_documents(draw: st.DrawFn) -> dict[str, Any]:
    """The valid bench with 1-4 edits: a value replaced, a key added, or a key removed."""
    doc = copy.deepcopy(VALID)
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        path = draw(st.sampled_from(_paths(doc)))
        action = draw(st.sampled_from(["replace", "add", "remove"]))
        if not path:
            if action == "add":
                doc[draw(_TEXT)] = draw(BAD_VALUES)
            continue
        parent, key = _parent_and_key(doc, path)
        if action == "replace":
            parent[key] = draw(BAD_VALUES)
        elif action == "add" and isinstance(parent[key], dict):
            parent[key][draw(_TEXT)] = draw(BAD_VALUES)
        elif isinstance(parent, dict):
            del parent[key]
    return doc


def dump(doc: Any) -> str:
    return yaml.safe_dump(doc, allow_unicode=True, sort_keys=False, width=1_000_000)


_YAML_BITS = st.sampled_from(
    [":", ": ", "- ", "\n", "  ", "\t", "{", "}", "[", "]", ",", "&a ", "*a", "<<: ", "!!str ",
     "!!python/object ", "? ", "---\n", "...\n", "'", '"', "#", "|", ">", "%YAML 1.1\n", "\x07",
     "\ufeff", "${X}", "station", "procedures", "module", "name", "T1", "x.py", "1e9", "~"]
)  # fmt: skip


@st.composite
def broken_texts(draw: st.DrawFn) -> str:
    """The valid bench's text with characters cut, doubled or spliced in: mostly broken YAML."""
    text = dump(VALID)
    for _ in range(draw(st.integers(min_value=1, max_value=6))):
        at = draw(st.integers(min_value=0, max_value=len(text)))
        edit = draw(st.sampled_from(["insert", "cut", "insert"]))
        if edit == "insert":
            text = text[:at] + draw(st.one_of(_YAML_BITS, _TEXT)) + text[at:]
        else:
            text = text[:at] + text[at + draw(st.integers(min_value=1, max_value=20)) :]
    return text


# ------------------------------------------------------------------------------------------------
# Generated documents through load_config


def _check_document(tmp_path: Path, text: str) -> None:
    path = tmp_path / "station.yaml"
    path.write_text(text, encoding="utf-8")
    loads_or_explains(path)


@settings(FUZZ, max_examples=150)
@given(doc=mutated_documents())
def test_mutated_documents_load_or_explain_file_and_line(tmp_path: Path, doc: dict) -> None:
    _check_document(tmp_path, dump(doc))


@settings(FUZZ, max_examples=150)
@given(text=broken_texts())
def test_broken_yaml_is_explained_with_file_and_line(tmp_path: Path, text: str) -> None:
    _check_document(tmp_path, text)


@settings(FUZZ, max_examples=100)
@given(text=st.text(max_size=300))
def test_arbitrary_text_is_explained(tmp_path: Path, text: str) -> None:
    path = tmp_path / "station.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    loads_or_explains(path)


@pytest.mark.soak
@SOAK
@given(doc=mutated_documents())
@pytest.mark.usefixtures("soak_only")
def test_soak_mutated_documents(tmp_path: Path, doc: dict) -> None:
    _check_document(tmp_path, dump(doc))


@pytest.mark.soak
@SOAK
@given(text=broken_texts())
@pytest.mark.usefixtures("soak_only")
def test_soak_broken_yaml(tmp_path: Path, text: str) -> None:
    _check_document(tmp_path, text)


# ------------------------------------------------------------------------------------------------
# Bombs and extremes, each named


def _laughs(levels: int = 9) -> str:
    rows = ['l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for n in range(1, levels):
        rows.append(f"l{n}: &l{n} [" + ", ".join([f"*l{n - 1}"] * 9) + "]")
    return "\n".join(["station: {name: x}", "procedures: {T1: {module: proc_t.py}}", *rows]) + "\n"


def _merge_bomb(levels: int = 9) -> str:
    rows = ["m0: &m0 {" + ", ".join(f"k{i}: {i}" for i in range(9)) + "}"]
    for n in range(1, levels):
        rows.append(f"m{n}: &m{n} {{<<: [" + ", ".join([f"*m{n - 1}"] * 9) + "]}")
    return "\n".join(["station: {name: x}", "procedures: {T1: {module: proc_t.py}}", *rows]) + "\n"


HEAD = "station: {name: x}\nprocedures: {T1: {module: proc_t.py}}\n"

EXTREMES: dict[str, tuple[str, str | None]] = {
    # name: (document, words the explanation must contain; None: any file:line explanation)
    "billion laughs (alias expansion)": (_laughs(), "aliases"),
    # The promise, not the guard: refused quickly with file:line. Whether one of our guards
    # fires (PyYAML 6.0.3 copies merged keys) or the merge stays small and only the unknown
    # top-level keys are reported (6.0.4) depends on PyYAML's internals.
    "merge-key bomb": (_merge_bomb(), None),
    "an alias inside itself": (HEAD + "a: &a [1, *a]\n", "alias"),
    "a merge of itself": (HEAD + "a: &a {<<: *a}\n", "merge"),
    "1000 nested lists": (HEAD + "sim: " + "[" * 1000 + "]" * 1000 + "\n", "nested"),
    "1000 nested mappings": (HEAD + "sim: " + "{a: " * 1000 + "1" + "}" * 1000 + "\n", "nested"),
    "a 5000-digit number": (
        "station: {name: x}\nprocedures: {T1: {module: proc_t.py, timeout_s: "
        + "9" * 5000
        + "}}\n",
        "procedures.T1.timeout_s",
    ),
    "a date that is not one": (HEAD.replace("name: x", "name: 2024-13-45"), "station.name"),
    "a control character": (HEAD + "sim: {board: \x07}\n", "control character"),
    "a NaN limit": (
        "station: {name: x}\nprocedures: {T1: {module: proc_t.py, limits: {v: {low: .nan}}}}\n",
        "procedures.T1.limits.v.low",
    ),
    "a huge timeout_ms": (
        HEAD + "instruments: {dmm: {driver: d, resource: r, timeout_ms: 1e300}}\n",
        "instruments.dmm.timeout_ms",
    ),
    "a 100 000-character value": (HEAD + "sim: {seed: " + "x" * 100_000 + "}\n", "sim.seed"),
    "a 100 000-character key": (HEAD + "sim:\n  ? " + "k" * 100_000 + "\n  : 1\n", "sim"),
    "a python tag": (HEAD + "sim: !!python/object:os.system {}\n", "tags"),
}


@pytest.mark.parametrize("name", list(EXTREMES))
def test_extreme_documents_are_refused_quickly_with_file_line_and_field(
    tmp_path: Path, name: str
) -> None:
    text, words = EXTREMES[name]
    path = tmp_path / "station.yaml"
    path.write_text(text, encoding="utf-8")
    error = loads_or_explains(path)  # within LOAD_BUDGET_S
    assert isinstance(error, ConfigError)
    assert words is None or words in str(error)
    assert re.match(rf"{re.escape(str(path))}:\d+", str(error)), str(error)[:300]


# ------------------------------------------------------------------------------------------------
# Through the command line, as the operator runs it


def _cli_document(seed: int) -> str:
    """A reproducible bad (or occasionally still valid) document for seed `seed`."""
    rng = random.Random(seed)
    pool: list[Any] = [
        None, True, -1, 0, 10**30, 1e300, float("nan"), "", "x" * 50_000, "é☃😀", [1, [2]],
        {"a": {"b": None}}, "${NOT_SET_ANYWHERE}", "drivr", [[[[[]]]]],
    ]  # fmt: skip
    doc = copy.deepcopy(VALID)
    for _ in range(rng.randint(1, 3)):
        path = rng.choice(_paths(doc)[1:])
        parent, key = _parent_and_key(doc, path)
        if path[0] in ("data_dir", "procedures") and path[-1] in ("data_dir", "module"):
            parent[key] = rng.choice([None, 5, [1], {"a": 1}])  # never a path outside tmp
        elif rng.random() < 0.2 and isinstance(parent[key], dict):
            parent[key][rng.choice(["drivr", "resorce", "api_key", "extra"])] = rng.choice(pool)
        else:
            parent[key] = rng.choice(pool)
    return dump(doc)


CLI_CASES = {
    **{f"seed {seed}": _cli_document(seed) for seed in range(6)},
    "billion laughs": _laughs(),
    "broken YAML": dump(VALID).replace("station:", "station: [", 1),
}

_MEMORY_LIMIT = 1 << 30  # a bomb that expanded would need far more than 1 GiB


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (_MEMORY_LIMIT, _MEMORY_LIMIT))


@pytest.mark.slow
@pytest.mark.parametrize("name", list(CLI_CASES))
def test_station_check_and_run_explain_bad_config_without_a_traceback(
    tmp_path: Path, name: str
) -> None:
    text = CLI_CASES[name]
    (tmp_path / "station.yaml").write_text(text, encoding="utf-8")
    (tmp_path / "proc_t.py").write_text(textwrap.dedent(PROCEDURE), encoding="utf-8")
    try:
        load_config(tmp_path / "station.yaml")
        expected = None
    except ConfigError as exc:
        expected = exc

    for command in (
        ["check", "--config", "station.yaml"],
        ["run", "T1", "--config", "station.yaml", "--serial", "SN-1", "--no-upload"],
    ):
        seen = station_cli(tmp_path, *command, timeout=30, preexec=_limit_memory)
        seen.assert_no_traceback()
        if expected is not None:
            assert seen.code == 2, seen.err[-2000:]
            first = str(expected).splitlines()[0].replace(str(tmp_path / "station.yaml"), "")
            assert seen.err.startswith("station: station.yaml"), seen.err[:500]
            where = f"station.yaml:{expected.line}" if expected.line else "station.yaml"
            assert where in seen.err, seen.err[:500]
            assert first.split(": ", 1)[-1][:60] in seen.err, (first, seen.err[:500])
        else:
            assert seen.code in (0, 1, 2, 3), seen.err[-2000:]
