"""Loading a procedure module and checking it before any instrument is touched.

Everything a test engineer can get wrong in a procedure file that is knowable without running it is
reported here, as one paragraph naming the file and line: a module that does not import, a phase
asking for a parameter nobody provides (or hiding an injectable behind a default value), a
measurement set but never declared, a function with `@measure` but no `@phase` (it would never
run, and the unit would PASS without the check), two phases with one name, a station.yaml limit
override for a measurement that does not exist.

Without a `PHASES` list, the phases are the `Phase` objects bound in the module's namespace, in
namespace order: where each name was first bound (a `def`, an assignment from a factory, an
import from a shared module). A Phase bound under two names runs once, at its first name.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import inspect
import subprocess
import sys
import textwrap
import traceback
from collections.abc import Collection
from dataclasses import replace
from pathlib import Path
from types import ModuleType
from typing import Any

from station.authoring.limits import LimitError
from station.authoring.procedure import (
    HELPER_NAMES,
    SPECS_ATTR,
    Phase,
    PhaseDefinitionError,
    Procedure,
)
from station.config.errors import display_path
from station.records.text import did_you_mean, safe_repr, safe_str

_MAX_DETAIL = 2000  # of an exception's message quoted in a load error


class ProcedureError(Exception):
    """A procedure that cannot be loaded, or would fail as written; the message says where, why."""


def load_procedure(
    procedure_id: str, config: Any, instrument_names: Collection[str] | None = None
) -> Procedure:
    """Import and validate the procedure `procedure_id` of a loaded station config.

    `instrument_names` are the names a phase may ask for besides the helpers; by default, every
    instrument of the config.
    """
    if procedure_id not in config.procedures:
        known = ", ".join(sorted(config.procedures)) or "(none)"
        lowered = {name.lower(): name for name in config.procedures}
        hint = (
            f" Did you mean {lowered[procedure_id.lower()]!r}?"
            if procedure_id.lower() in lowered
            else did_you_mean(procedure_id, config.procedures)
        )
        raise ProcedureError(
            f"unknown procedure {procedure_id!r}: {config.path} lists {known}.{hint}"
        )
    settings = config.procedures[procedure_id]
    if instrument_names is None:
        instrument_names = list(config.instruments)
    module = import_procedure_module(procedure_id, settings.module, Path(config.base_dir))
    main, teardown = collect_phases(procedure_id, module)
    every = [*main, *teardown]
    _check_unique_names(procedure_id, every)
    for ph in every:
        where = f"{display_path(ph.source_file)}:{ph.line}: phase {ph.name!r}: timeout_s"
        _check_timeout(procedure_id, where, ph.timeout_s)
        _check_params(procedure_id, ph, instrument_names)
        _check_measurement_assignments(procedure_id, ph)
    _apply_limit_overrides(procedure_id, every, settings.limits, config)

    version = getattr(module, "__version__", None) or _git_version(Path(str(module.__file__)))
    if version is not None:
        try:
            version = str(version)
        except Exception:
            raise ProcedureError(
                f"procedure {procedure_id}: {display_path(str(module.__file__))}: __version__ "
                "cannot be read as text; set it to a string such as '1.2.0'"
            ) from None
    stop_on_fail = settings.stop_on_fail
    if stop_on_fail is None:
        stop_on_fail = bool(getattr(module, "STOP_ON_FAIL", False))
    module_timeout = getattr(module, "TIMEOUT_S", None)
    if settings.timeout_s is None:
        where = f"{display_path(str(module.__file__))}: TIMEOUT_S"
        _check_timeout(procedure_id, where, module_timeout)
    return Procedure(
        id=procedure_id,
        phases=main,
        teardown=teardown,
        module_name=module.__name__,
        source_file=str(module.__file__),
        docstring=inspect.getdoc(module),
        version=version,
        stop_on_fail=stop_on_fail,
        timeout_s=settings.timeout_s if settings.timeout_s is not None else module_timeout,
        part_number=settings.part_number,
        revision=settings.revision,
        batch_number=settings.batch_number,
    )


def _check_timeout(procedure_id: str, where: str, timeout_s: Any) -> None:
    """A timeout the runner can wait on: None, or a positive number of seconds (not NaN)."""
    if timeout_s is None:
        return
    number = isinstance(timeout_s, int | float) and not isinstance(timeout_s, bool)
    if not number or not timeout_s > 0:  # `not > 0` also refuses NaN
        raise ProcedureError(
            f"procedure {procedure_id}: {where} must be a positive number of seconds, "
            f"got {safe_repr(timeout_s, 80)}"
        )


def _git_version(source: Path) -> str | None:
    """`git describe` of the folder holding the procedure, when it is a git checkout.

    So a run says which revision of the procedure produced it even without `__version__`.
    """
    try:
        result = subprocess.run(
            ["git", "-C", str(source.parent), "describe", "--tags", "--always", "--dirty"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None  # no git on this machine
    version = result.stdout.strip()
    return version if result.returncode == 0 and version else None


def import_procedure_module(procedure_id: str, spec: str, base_dir: Path) -> ModuleType:
    """Import `spec` (dotted path or .py file): beside station.yaml first, then installed."""
    if spec.endswith(".py"):
        path = Path(spec) if Path(spec).is_absolute() else base_dir / spec
        if not path.is_file():
            raise ProcedureError(
                f"procedure {procedure_id}: module file {display_path(path)} does not exist"
            )
        return _exec_file(procedure_id, "station_procedure_" + path.stem, path)

    local = base_dir.joinpath(*spec.split("."))
    for candidate in (local.with_suffix(".py"), local / "__init__.py"):
        if candidate.is_file():
            return _exec_file(procedure_id, spec, candidate)
    try:
        return importlib.import_module(spec)
    except ModuleNotFoundError as exc:
        if exc.name and spec.startswith(exc.name):
            raise ProcedureError(
                f"procedure {procedure_id}: module {spec!r} not found: looked for "
                f"{display_path(local.with_suffix('.py'))} beside station.yaml and in installed "
                "packages"
            ) from None
        raise _import_failure(procedure_id, spec, exc) from None
    except Exception as exc:
        raise _import_failure(procedure_id, spec, exc) from None


def _exec_file(procedure_id: str, module_name: str, path: Path) -> ModuleType:
    module_spec = importlib.util.spec_from_file_location(module_name, path)
    assert module_spec is not None and module_spec.loader is not None
    module = importlib.util.module_from_spec(module_spec)
    # Registered so dataclasses, pickling and `from <module> import x` inside it work.
    sys.modules[module_name] = module
    base = str(
        path.parent
        if module_name.startswith("station_procedure_")
        else path.parents[module_name.count(".")]
    )
    if base not in sys.path:
        sys.path.insert(0, base)  # lets a procedure import helpers kept beside it
    try:
        # Compiled from the source every time: a cached .pyc is trusted on its source's mtime in
        # whole seconds and size, so an edit made within a second of the last run that keeps the
        # file's size (a limit 3.3 -> 3.4) would silently run the old code.
        code = compile(path.read_bytes(), str(path), "exec", dont_inherit=True)
        exec(code, module.__dict__)
    except BaseException as exc:  # SystemExit and KeyboardInterrupt at import are load errors too
        sys.modules.pop(module_name, None)
        if isinstance(exc, KeyboardInterrupt):
            raise
        raise _import_failure(procedure_id, str(path), exc) from None
    return module


def _import_failure(procedure_id: str, what: str, exc: BaseException) -> ProcedureError:
    """One paragraph: file, line, and the exception, pointing at the procedure's own code."""
    if isinstance(exc, SyntaxError) and exc.filename:
        where = f"{display_path(exc.filename)}:{exc.lineno}"
        return ProcedureError(f"procedure {procedure_id}: {where}: syntax error: {exc.msg}")
    frames = traceback.extract_tb(exc.__traceback__)
    # Point at the procedure's own line (a bad @measure, a NameError), not at the framework frame
    # that raised on its behalf; failing that, the deepest frame outside the import machinery.
    own = [f for f in frames if f.filename == what]
    ours = [f for f in frames if "importlib" not in f.filename and f.filename != __file__]
    candidates = own or ours or frames
    frame = candidates[-1] if candidates else None
    where = f"{display_path(frame.filename)}:{frame.lineno}" if frame else what
    detail = safe_str(exc, _MAX_DETAIL)  # the module's own exception: its __str__ may raise
    return ProcedureError(
        f"procedure {procedure_id}: {where}: cannot import {what}: {type(exc).__name__}: {detail}"
    )


def collect_phases(procedure_id: str, module: ModuleType) -> tuple[list[Phase], list[Phase]]:
    """The module's phases in run order: `PHASES` if defined, else in namespace order.

    Namespace order is the order in which the module first bound each name (`def`, assignment,
    import): a phase built by a factory runs where it is assigned, not where the factory's code
    is, and a phase imported from a shared module runs where the import stands. A Phase bound
    under two names runs once, at its first. Nothing with a phase's marks is dropped silently: a
    function carrying `@measure` that is not a phase is refused.
    """
    where = display_path(module.__file__ or module.__name__)
    phases: list[Phase] = []
    if hasattr(module, "PHASES"):
        if not isinstance(module.PHASES, list | tuple):
            raise ProcedureError(
                f"procedure {procedure_id}: {where}: PHASES is {safe_repr(module.PHASES, 80)}; "
                "it must be a list of phase functions, in run order"
            )
        for index, item in enumerate(module.PHASES):
            if isinstance(item, Phase):
                phases.append(item)
            elif inspect.isfunction(item):
                phases.append(_phase_of_plain_function(procedure_id, item))
            else:
                raise ProcedureError(
                    f"procedure {procedure_id}: {where}: PHASES[{index}] is "
                    f"{safe_repr(item, 80)}, not a phase function"
                )
    else:
        seen: set[int] = set()
        for value in vars(module).values():
            if isinstance(value, Phase) and id(value) not in seen:
                seen.add(id(value))
                phases.append(value)
        _refuse_measure_without_phase(procedure_id, module, phases)
    # Copies, so limit overrides never leak into the module's own phase objects.
    phases = [replace(ph) for ph in phases]
    if not any(not ph.teardown for ph in phases):
        raise ProcedureError(
            f"procedure {procedure_id}: {where} defines no phases: decorate each "
            "step with @phase (teardown phases alone are not a test)"
        )
    return [ph for ph in phases if not ph.teardown], [ph for ph in phases if ph.teardown]


def _phase_of_plain_function(procedure_id: str, func: Any) -> Phase:
    """A function listed in PHASES without `@phase`: a phase with default options."""
    specs = tuple(getattr(func, SPECS_ATTR, ()))
    try:
        return Phase(func=func, name=func.__name__, measurements=specs)
    except PhaseDefinitionError as exc:  # async, a generator, *args
        where = f"{display_path(exc.filename)}:{exc.line}: " if exc.filename else ""
        raise ProcedureError(f"procedure {procedure_id}: {where}{exc.problem}") from None


def _refuse_measure_without_phase(
    procedure_id: str, module: ModuleType, phases: list[Phase]
) -> None:
    """A module-level function with `@measure` but no `@phase` would never run: its limits would
    never be checked and the unit would PASS without them. Refused, naming it."""
    wrapped = {id(ph.func) for ph in phases}
    for value in vars(module).values():
        if inspect.isfunction(value) and hasattr(value, SPECS_ATTR) and id(value) not in wrapped:
            code = value.__code__
            where = f"{display_path(code.co_filename)}:{code.co_firstlineno}"
            raise ProcedureError(
                f"procedure {procedure_id}: {where}: "
                f"function {value.__name__!r} has @measure but no @phase, so it would never run "
                "and its limits would never be checked; add @phase above it (or list it in PHASES)"
            )


def _check_unique_names(procedure_id: str, phases: list[Phase]) -> None:
    seen: dict[str, Phase] = {}
    for ph in phases:
        if ph.name in seen:
            first = seen[ph.name]
            here = f"{display_path(ph.source_file)}:{ph.line}"
            there = f"{display_path(first.source_file)}:{first.line}"
            raise ProcedureError(
                f"procedure {procedure_id}: {here}: phase name "
                f"{ph.name!r} is used twice (first at {there}); "
                "phase names must be unique within a procedure: rename one or pass @phase(name=...)"
            )
        seen[ph.name] = ph


def _check_params(procedure_id: str, ph: Phase, instrument_names: Collection[str]) -> None:
    available = [*sorted(instrument_names), *HELPER_NAMES]
    for kind, params, defaulted, func in (
        ("phase", ph.params, ph.defaulted_params, ph.func),
        ("run_if of phase", ph.run_if_params, ph.run_if_defaulted_params, ph.run_if),
    ):
        code = getattr(func, "__code__", None)
        where = (
            f"{display_path(code.co_filename)}:{code.co_firstlineno}"
            if code
            else display_path(ph.source_file)
        )
        for param in defaulted:
            if param in available:
                raise ProcedureError(
                    f"procedure {procedure_id}: {where}: {kind} {ph.name!r} gives {param!r} a "
                    f"default value, so it is never injected (the default would be used "
                    f"instead of the {'helper' if param in HELPER_NAMES else 'instrument'}); "
                    f"remove the default: `{param}` instead of `{param}=...`"
                )
        for param in params:
            if param in available:
                continue
            instruments = ", ".join(sorted(instrument_names)) or "none"
            raise ProcedureError(
                f"procedure {procedure_id}: {where}: {kind} {ph.name!r} asks for {param!r}, "
                "which is "
                f"neither an instrument in station.yaml ({instruments}) nor a helper "
                f"({', '.join(HELPER_NAMES)}).{did_you_mean(param, available)}"
            )


def _check_measurement_assignments(procedure_id: str, ph: Phase) -> None:
    """Find `measurements.x = ...` and `measurements["x"] = ...` for undeclared names."""
    if "measurements" not in ph.params:
        return
    try:
        source = textwrap.dedent(inspect.getsource(ph.func))
        tree = ast.parse(source)
    except (OSError, TypeError, SyntaxError):
        return  # no source available (e.g. built dynamically): checked when set at run time
    declared = {spec.name for spec in ph.measurements}
    first_line = ph.func.__code__.co_firstlineno
    for node in ast.walk(tree):
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, ast.AugAssign | ast.AnnAssign):
            targets = [node.target]
        for target in targets:
            name = _measurement_name(target)
            if name is not None and name not in declared:
                line = first_line + target.lineno - 1
                known = ", ".join(sorted(declared)) or "none"
                raise ProcedureError(
                    f"procedure {procedure_id}: {display_path(ph.source_file)}:{line}: "
                    f"phase {ph.name!r} "
                    f"sets measurement {name!r} but never declares it (declared: {known}); add "
                    f"@measure({name!r}, ...) above the phase.{did_you_mean(name, declared)}"
                )


def _measurement_name(target: ast.expr) -> str | None:
    """'x' for `measurements.x` or `measurements["x"]`; None for any other assignment target."""
    if not isinstance(target, ast.Attribute | ast.Subscript):
        return None
    if not (isinstance(target.value, ast.Name) and target.value.id == "measurements"):
        return None
    if isinstance(target, ast.Attribute):
        return target.attr
    key = target.slice
    return key.value if isinstance(key, ast.Constant) and isinstance(key.value, str) else None


def _apply_limit_overrides(
    procedure_id: str, phases: list[Phase], overrides: dict[str, Any], config: Any
) -> None:
    """Replace limits from station.yaml. Keys are `measurement` or `phase.measurement`."""
    for key, override in overrides.items():
        field = f"procedures.{procedure_id}.limits.{key}"
        if "." in key:
            phase_name, name = key.split(".", 1)
            targets = [ph for ph in phases if ph.name == phase_name and ph.spec(name)]
        else:
            name = key
            targets = [ph for ph in phases if ph.spec(name)]
        if not targets:
            known = sorted({spec.name for ph in phases for spec in ph.measurements})
            raise config.error(
                field,
                f"procedure {procedure_id} declares no measurement {key!r} "
                f"(it declares: {', '.join(known) or 'none'}).{did_you_mean(name, known)}",
            )
        if len(targets) > 1:
            names = ", ".join(f"{ph.name}.{name}" for ph in targets)
            raise config.error(
                field, f"{name!r} is measured by several phases; write one of: {names}"
            )
        ph = targets[0]
        spec = ph.spec(name)
        assert spec is not None  # targets hold only phases that declare it
        values = override.model_dump(exclude_none=True)
        try:
            new = spec.with_overrides(**values)
        except (LimitError, TypeError) as exc:
            raise config.error(field, str(exc)) from None
        ph.measurements = tuple(new if old.name == name else old for old in ph.measurements)
