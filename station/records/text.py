"""Text of any object, for records and messages, that never raises and never grows without bound.

A procedure hands the framework arbitrary objects: values, exceptions, log arguments, metadata.
Their `__str__`/`__repr__` are the procedure's code and may raise anything (even
`KeyboardInterrupt` or `SystemExit`) or return megabytes. The run must be recorded whatever they
do, so every place that turns such an object into text uses these functions: the one
implementation of "a repr that never raises". Truncation is always visible (`TRUNCATED` is
appended), never a silent cut.

`did_you_mean` is the one spelling-suggestion rule of the authoring API and the procedure loader
(a phase parameter, a decorator keyword, a measurement or procedure name).
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["MAX_TEXT", "TRUNCATED", "did_you_mean", "safe_repr", "safe_str", "truncate"]

MAX_TEXT = 10_000  # characters of one message or value a record keeps
TRUNCATED = "... (truncated)"


def truncate(text: str, limit: int = MAX_TEXT, marker: str = TRUNCATED) -> str:
    """`text` if it has at most `limit` characters, else its start followed by `marker`.

    The result never exceeds `limit + len(marker)` characters.
    """
    return text if len(text) <= limit else text[:limit] + marker


def safe_str(obj: object, limit: int = MAX_TEXT, marker: str = TRUNCATED) -> str:
    """`str(obj)`, cut to `limit` characters; `<Type: str() raised>` when `str()` raises."""
    try:
        text = str(obj)
    except BaseException:  # the object is the procedure's: its __str__ may raise anything
        text = f"<{type(obj).__name__}: str() raised>"
    return truncate(text, limit, marker)


def safe_repr(obj: object, limit: int = 200, marker: str = TRUNCATED) -> str:
    """`repr(obj)`, cut to `limit` characters; `<Type>` when `repr()` raises."""
    try:
        text = repr(obj)
    except BaseException:  # the object is the procedure's: its __repr__ may raise anything
        text = f"<{type(obj).__name__}>"
    return truncate(text, limit, marker)


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """`" Did you mean 'x'?"` for the choice closest to a misspelt `name`, or `""` if none is close.

    Written to be appended to a sentence: `f"unknown option {name!r}.{did_you_mean(name, known)}"`.
    """
    import difflib  # only when a name is misspelt: keeps `import station` cheap

    close = difflib.get_close_matches(name, list(choices), n=1)
    return f" Did you mean {close[0]!r}?" if close else ""
