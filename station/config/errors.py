"""station.yaml problems as operator-facing `file:line: field: problem` lines.

`ConfigError` is the one exception the loader raises. This module formats its lines, and translates
a pydantic `ValidationError` into rows of (line, location, message) with suggestions for typos. It
never imports the station models: the translator is given the root model class to look keys up in.
"""

from __future__ import annotations

import difflib
import os
import re
import types
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Union, get_args, get_origin

from station.records.text import safe_repr, safe_str

if TYPE_CHECKING:  # pydantic is imported where it validates, so importing ConfigError stays cheap
    from pydantic import BaseModel, ValidationError

__all__ = [
    "ConfigError",
    "Issue",
    "Loc",
    "display_path",
    "dotted_name",
    "make_error",
    "show_value",
    "top_level_problem",
    "translate_errors",
]

Loc = tuple[str | int, ...]
Issue = tuple[int | None, Loc, str]  # (line, location, message)


class ConfigError(Exception):
    """station.yaml is missing, unreadable or invalid.

    `str(error)` is the complete operator-facing message: one `file:line: field: problem` line per
    problem. `path`, `line` and `field` locate the first problem, for tools that want them.
    """

    def __init__(
        self,
        message: str,
        *,
        path: Path | None = None,
        line: int | None = None,
        field: str | None = None,
    ) -> None:
        super().__init__(message)
        self.path = path
        self.line = line
        self.field = field


# --------------------------------------------------------------------------------------------
# Formatting


def display_path(path: str | os.PathLike[str]) -> str:
    """`path` as the operator should read it: relative to the working directory when it lies
    under it (`procedures/fvt1.py`), else absolute (never a `../../..` chain).

    The one display rule for every message that names a file: config errors, procedure load
    errors and the command line all use it, so the same file reads the same everywhere.
    """
    try:
        relative = os.path.relpath(path)
    except ValueError:  # another drive on Windows
        return str(path)
    return str(path) if relative == ".." or relative.startswith(".." + os.sep) else relative


def dotted_name(loc: Iterable[str | int]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _format(display: str | None, line: int | None, field: str | None, message: str) -> str:
    where = display or ""
    if display and line is not None:
        where = f"{display}:{line}"
    parts = [p for p in (where, _clip(field or "", 200)) if p]
    return ": ".join([*parts, _clip(message, 2000)])


def _clip(text: str, limit: int) -> str:
    """Keys and values echoed in a message are the file's own: a 100 000-character key must
    not become a 100 000-character message."""
    if len(text) <= limit:
        return text
    return text[: limit - 3] + "..."


def make_error(
    display: str | None, file: Path | None, rows: Sequence[tuple[int | None, str, str]]
) -> ConfigError:
    rows = sorted(rows, key=lambda row: (row[0] is None, row[0] or 0))
    message = "\n".join(_format(display, line, field, msg) for line, field, msg in rows)
    line, field, _ = rows[0]
    return ConfigError(message, path=file, line=line, field=field or None)


_MAX_SHOWN = 80  # a value echoed in a message; a 2 MB string is not read at the bench


def show_value(value: Any) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    # Never raises, and never builds more text than is shown (the shared safe_repr/safe_str).
    show = safe_repr if isinstance(value, str) else safe_str
    text = show(value, _MAX_SHOWN + 1, "")
    return text if len(text) <= _MAX_SHOWN else text[: _MAX_SHOWN - 3] + "..."


def top_level_problem(display: str, data: Any, line: int) -> str:
    needed = (
        "it must be a mapping with at least 'station:' and 'procedures:' "
        "(see 'station.yaml' in the README)"
    )
    if data is None:
        return f"{display}: the file is empty; {needed}"
    return f"{display}:{line}: the top level is {show_value(data)}, not a mapping of keys; {needed}"


# --------------------------------------------------------------------------------------------
# Translating pydantic's ValidationError


def _unwrap(tp: Any) -> Any:
    """Strip Annotated[...] and Optional[...] down to the type that validates the value."""
    while True:
        origin = get_origin(tp)
        if origin is Annotated:
            tp = get_args(tp)[0]
        elif origin in (Union, types.UnionType):
            args = [a for a in get_args(tp) if a is not type(None)]
            if len(args) != 1:
                return tp
            tp = args[0]
        else:
            return tp


def _model_at(loc: Loc, root: type[BaseModel]) -> type[BaseModel] | None:
    """The model class that validates the mapping at `loc` under `root` (None if not a model)."""
    from pydantic import BaseModel

    tp: Any = root
    for part in loc:
        tp = _unwrap(tp)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            field = tp.model_fields.get(str(part))
            if field is None:
                return None
            tp = field.annotation
        elif get_origin(tp) is dict:
            tp = get_args(tp)[1]
        else:
            return None
    tp = _unwrap(tp)
    return tp if isinstance(tp, type) and issubclass(tp, BaseModel) else None


_SECRET_KEY = re.compile(r"(?i)(.*[_-])?(api[_-]?key|key|token|secret|password|passwd)")


def _unknown_key(
    key: str, parent: Loc, data: dict[str, Any], root: type[BaseModel], default_key_env: str
) -> str:
    if _SECRET_KEY.fullmatch(key):
        env = data.get("tofupilot", {}) if isinstance(data.get("tofupilot"), dict) else {}
        var = env.get("api_key_env") if isinstance(env.get("api_key_env"), str) else None
        var = var or default_key_env
        return (
            f"never put the API key in station.yaml: delete '{key}' and set the environment "
            f"variable {var} (named by tofupilot.api_key_env) to the key on this station instead"
        )
    model = _model_at(parent, root)
    valid = list(model.model_fields) if model else []
    close = difflib.get_close_matches(key.lower(), valid, n=1, cutoff=0.6)
    if close:
        return f"unknown key '{key}' (did you mean '{close[0]}'?)"
    if valid:
        return f"unknown key '{key}' (valid keys: {', '.join(valid)})"
    return f"unknown key '{key}'"


def _walk(data: Any, loc: tuple[Any, ...]) -> tuple[Loc, Any, tuple[Any, ...]]:
    """Follow a pydantic error location through the data; return (path, value, rest).

    Elements that are not keys of the data (union member tags and the like) are skipped.
    """
    path: list[str | int] = []
    value = data
    rest: list[Any] = []
    for part in loc:
        in_dict = isinstance(value, dict) and isinstance(part, str) and part in value
        in_list = isinstance(value, list) and isinstance(part, int) and 0 <= part < len(value)
        if in_dict or in_list:
            path.append(part)
            value = value[part]
        else:
            rest.append(part)
    return tuple(path), value, tuple(rest)


def _message(error: Any, value: Any, raw: str | None) -> str:
    kind = error["type"]
    ctx = error.get("ctx") or {}
    got = show_value(value)
    if kind in ("value_error", "assertion_error") and "error" in ctx:
        return str(ctx["error"])
    if kind == "greater_than":
        return f"must be greater than {ctx.get('gt')} (got {got})"
    if kind == "less_than_equal":
        return f"must be at most {ctx.get('le')} (got {got})"
    if kind == "string_too_short":
        return "must not be empty"
    if kind in ("int_parsing", "int_type"):
        return f"must be a whole number (got {got})"
    if kind == "int_from_float":
        return f"must be a whole number (got {got})"
    if kind in ("float_parsing", "float_type"):
        return f"must be a number (got {got})"
    if kind in ("bool_parsing", "bool_type"):
        return f"must be true or false (got {got})"
    if kind == "string_type":
        hint = ""
        if value is not None and not isinstance(value, (dict, list)):
            hint = f'; write it in quotes: "{raw if raw is not None else value}"'
        return f"must be text (got {got}){hint}"
    if kind in ("dict_type", "model_type", "model_attributes_type"):
        return f"must be a mapping of key: value (got {got})"
    if kind in ("list_type", "tuple_type"):
        return f"must be a list (got {got})"
    if kind in ("too_short", "too_long") and isinstance(value, list):
        count = f"{len(value)} value" + ("" if len(value) == 1 else "s")
        return f"must be a list of exactly 2 numbers [low, high] (got {count})"
    if kind in ("path_type", "path_parsing"):
        return f"must be a directory path (got {got})"
    text = str(error.get("msg", "is invalid"))
    return text[:1].lower() + text[1:] + (f" (got {got})" if value is not None else "")


def translate_errors(
    exc: ValidationError,
    data: dict[str, Any],
    lines: Mapping[Loc, int],
    raw: Mapping[Loc, str],
    root: type[BaseModel],
    default_key_env: str,
) -> list[Issue]:
    """One (line, location, message) row per distinct problem in `exc`.

    `data` is what `root` validated; `lines` and `raw` give each location's line and source text.
    `default_key_env` names the API key variable when the file does not set
    tofupilot.api_key_env.
    """
    issues: list[Issue] = []
    seen: set[tuple[Loc, str]] = set()
    for error in exc.errors(include_url=False):
        loc = tuple(error["loc"])
        kind = error["type"]
        issue: Issue
        if kind == "missing" and loc and isinstance(loc[-1], int):  # a short [low, high]
            path, value, _ = _walk(data, loc[:-1])
            issue = (lines.get(path), path, _message({"type": "too_short"}, value, None))
        elif kind == "missing":
            parent, _, rest = _walk(data, loc[:-1])
            name = str(loc[-1])
            where = "top-level key" if not parent else "key"
            issue = (lines.get(parent), parent, f"missing required {where} '{name}'")
        elif kind == "extra_forbidden":
            path, _, _ = _walk(data, loc)
            message = _unknown_key(str(path[-1]), path[:-1], data, root, default_key_env)
            issue = (lines.get(path), path, message)
        else:
            path, value, rest = _walk(data, loc)
            if "[key]" in rest:
                value = path[-1] if path else value
            issue = (lines.get(path), path, _message(error, value, raw.get(path)))
        key = (issue[1], issue[2])
        if key not in seen:  # a union reports one error per member; keep one
            seen.add(key)
            issues.append(issue)
    # "unknown key 'drivr' (did you mean 'driver'?)" already says what "missing 'driver'" would.
    typos = {
        (loc[:-1], msg.split("did you mean '")[1].split("'")[0])
        for _, loc, msg in issues
        if "(did you mean '" in msg
    }
    return [
        issue
        for issue in issues
        if not (
            issue[2].startswith("missing required")
            and (issue[1], issue[2].rsplit("'", 2)[1]) in typos
        )
    ]
