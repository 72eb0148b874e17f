"""Your own instrument classes, as station.yaml names them: `package.module:ClassName`.

The module is looked for beside station.yaml first (`fixtures/relay.py` or
`fixtures/relay/__init__.py` for `fixtures.relay`), as procedure modules are, then among the
installed packages; `path/to/file.py:ClassName` names a file (relative to station.yaml). Every
problem (no such module, an import that fails, no such class, something that is not a class,
config keys the constructor does not take) is a `UserClassError` whose message says what to do;
the caller reports it at the station.yaml line.

A module beside station.yaml is executed from its source each time it is loaded in a process
whose file changed (not from a cached .pyc), and registered in `sys.modules` under its dotted
name with its folder on `sys.path`, so it can import its neighbours.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import inspect
import sys
import threading
from pathlib import Path
from types import ModuleType
from typing import Any

__all__ = ["UserClassError", "check_arguments", "load_class"]

_loaded: dict[Path, tuple[int, int, ModuleType]] = {}  # file -> (mtime_ns, size, module)
_loaded_lock = threading.Lock()


class UserClassError(Exception):
    """A `package.module:ClassName` that cannot be used; the message says why and what to do."""


def load_class(spec: str, base_dir: Path) -> type:
    """The class named by `spec`, imported beside `base_dir` first, then from installed packages."""
    module_name, _, class_name = spec.strip().rpartition(":")
    module = _import(module_name, base_dir)
    try:
        found = getattr(module, class_name)
    except AttributeError:
        names = sorted(
            name
            for name, value in vars(module).items()
            if isinstance(value, type) and not name.startswith("_")
        )
        near = [n for n in names if n.lower() == class_name.lower()]
        hint = (
            f"; did you mean {near[0]!r}?"
            if near
            else (f"; it defines {', '.join(names)}" if names else "")
        )
        raise UserClassError(
            f"module {module_name!r} ({_where(module)}) has no class {class_name!r}{hint}"
        ) from None
    if not isinstance(found, type):
        raise UserClassError(
            f"{spec!r} is a {type(found).__name__}, not a class: name the class the station "
            "should build"
        )
    return found


def _where(module: ModuleType) -> str:
    return str(getattr(module, "__file__", None) or module.__name__)


def _import(module_name: str, base_dir: Path) -> ModuleType:
    if module_name.endswith(".py"):
        path = Path(module_name)
        path = path if path.is_absolute() else base_dir / path
        if not path.is_file():
            raise UserClassError(f"module file {path} does not exist")
        return _exec_file("station_instruments_" + path.stem, path, path.parent)
    local = base_dir.joinpath(*module_name.split("."))
    for candidate in (local.with_suffix(".py"), local / "__init__.py"):
        if candidate.is_file():
            return _exec_file(module_name, candidate, base_dir)
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise UserClassError(
                f"module {module_name!r} not found: looked for {local.with_suffix('.py')} "
                "beside station.yaml and in installed packages"
            ) from None
        raise _failed(module_name, exc) from None
    except Exception as exc:
        raise _failed(module_name, exc) from None


def _exec_file(module_name: str, path: Path, base: Path) -> ModuleType:
    stat = path.stat()
    with _loaded_lock:
        cached = _loaded.get(path.resolve())
        if (
            cached is not None
            and cached[:2] == (stat.st_mtime_ns, stat.st_size)
            and sys.modules.get(module_name) is cached[2]
        ):
            return cached[2]
        if str(base) not in sys.path:
            sys.path.insert(0, str(base))  # lets the module import its neighbours
        if "." in module_name:  # the parent packages, from beside station.yaml or installed
            parent = module_name.rpartition(".")[0]
            try:
                importlib.import_module(parent)
            except Exception as exc:
                raise _failed(parent, exc) from None
        module_spec = importlib.util.spec_from_file_location(module_name, path)
        assert module_spec is not None and module_spec.loader is not None
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[module_name] = module
        try:
            code = compile(path.read_bytes(), str(path), "exec", dont_inherit=True)
            exec(code, module.__dict__)
        except BaseException as exc:
            sys.modules.pop(module_name, None)
            if isinstance(exc, KeyboardInterrupt):
                raise
            raise _failed(str(path), exc) from None
        _loaded[path.resolve()] = (stat.st_mtime_ns, stat.st_size, module)
        return module


def _failed(what: str, exc: BaseException) -> UserClassError:
    if isinstance(exc, SyntaxError) and exc.filename:
        return UserClassError(f"{exc.filename}:{exc.lineno}: syntax error: {exc.msg}")
    # The deepest frame outside the import machinery: the module's own line.
    tb = exc.__traceback__
    where = ""
    while tb is not None:
        filename = tb.tb_frame.f_code.co_filename
        if "importlib" not in filename and filename != __file__:
            where = f"{filename}:{tb.tb_lineno}: "
        tb = tb.tb_next
    return UserClassError(f"{where}cannot import {what}: {type(exc).__name__}: {exc}")


def check_arguments(cls: type, leading: tuple[Any, ...], keywords: dict[str, Any]) -> str | None:
    """None if `cls(*leading, **keywords)` binds; else what is wrong, with the keys it takes.

    Only the signature is checked: nothing is built.
    """
    try:
        signature = inspect.signature(cls)
    except (TypeError, ValueError):  # a builtin or an extension type: cannot tell
        return None
    try:
        signature.bind(*leading, **keywords)
    except TypeError as exc:
        takes = [
            name
            for name, param in list(signature.parameters.items())[len(leading) :]
            if param.kind in (param.POSITIONAL_OR_KEYWORD, param.KEYWORD_ONLY)
        ]
        unknown = [key for key in keywords if key not in signature.parameters]
        accepts_any = any(p.kind == p.VAR_KEYWORD for p in signature.parameters.values())
        if unknown and not accepts_any:
            near = {key: difflib.get_close_matches(key, takes, n=1, cutoff=0.7) for key in unknown}
            hints = [
                f"{key!r} (did you mean {near[key][0]!r}?)" if near[key] else repr(key)
                for key in unknown
            ]
            return (
                f"{cls.__name__}() takes no config key {', '.join(hints)}; it takes "
                f"{', '.join(takes) or 'no keys'}"
            )
        return f"{cls.__name__}() cannot be built from this config: {exc}"
    return None
