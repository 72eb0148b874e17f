"""Phases and procedures: the `@phase` and `@measure` decorators and the objects they build.

A phase is a plain function. `@measure` attaches measurement specs to it, `@phase` wraps it in a
`Phase` carrying its options. Decorators only record; they never touch instruments or the run,
so importing a procedure module has no side effects. Order of decorators does not matter.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ParamSpec, TypeVar, cast

from station.authoring.limits import LimitError, MeasurementSpec
from station.records.text import did_you_mean

__all__ = [
    "HELPER_NAMES",
    "SKIP",
    "SPECS_ATTR",
    "Phase",
    "PhaseDefinitionError",
    "Procedure",
    "did_you_mean",
    "measure",
    "phase",
]

#: Where `@measure` keeps its specs on a function not (yet) wrapped by `@phase`.
SPECS_ATTR = "__station_measurements__"

#: What a phase can ask for by name besides instruments (station.authoring.helpers). The one list:
#: station.yaml refuses an instrument with one of these names, the loader offers them.
HELPER_NAMES = ("measurements", "log", "dut", "run")

_P = ParamSpec("_P")
_R = TypeVar("_R")


class _Skip:
    """Return `station.SKIP` from a phase to record it as skipped."""

    _instance: _Skip | None = None

    def __new__(cls) -> _Skip:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "station.SKIP"


SKIP = _Skip()


@dataclass(eq=False)
class Phase:
    """One step of a procedure: the function plus how to run it."""

    func: Callable[..., Any]
    name: str
    timeout_s: float | None = None
    retries: int = 0
    run_if: Callable[..., Any] | None = None
    teardown: bool = False
    measurements: tuple[MeasurementSpec, ...] = ()
    params: tuple[str, ...] = field(init=False)  # parameters to inject, by name
    run_if_params: tuple[str, ...] = field(init=False)
    # Parameters with a default value: never injected (the loader refuses injectable names here).
    defaulted_params: tuple[str, ...] = field(init=False)
    run_if_defaulted_params: tuple[str, ...] = field(init=False)
    docstring: str | None = field(init=False)

    def __post_init__(self) -> None:
        _require_plain_function(self.func, "phase")
        self.params, self.defaulted_params = _parameters(self.func)
        self.run_if_params, self.run_if_defaulted_params = (
            _parameters(self.run_if) if self.run_if else ((), ())
        )
        if self.run_if is not None:
            _require_plain_function(self.run_if, "run_if of phase")
        self.docstring = inspect.getdoc(self.func)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Call the phase function directly (handy in a unit test with fake instruments)."""
        return self.func(*args, **kwargs)

    @property
    def source_file(self) -> str:
        return self.func.__code__.co_filename

    @property
    def line(self) -> int:
        return self.func.__code__.co_firstlineno

    def spec(self, name: str) -> MeasurementSpec | None:
        return next((spec for spec in self.measurements if spec.name == name), None)

    def __repr__(self) -> str:
        return f"<Phase {self.name} at {self.source_file}:{self.line}>"


class PhaseDefinitionError(TypeError):
    """A function that cannot be a phase as written (async, a generator, `*args`).

    Raised when the phase is declared, so importing the procedure fails at the author's line.
    `filename` and `line` say where the function is (None when it has no code object); `problem`
    is the message without them, for callers that display the file their own way.
    """

    def __init__(self, func: Callable[..., Any], problem: str) -> None:
        code = getattr(func, "__code__", None)
        self.filename: str | None = code.co_filename if code else None
        self.line: int | None = code.co_firstlineno if code else None
        self.problem = problem
        super().__init__(f"{self.filename}:{self.line}: {problem}" if code else problem)


def _require_plain_function(func: Callable[..., Any], kind: str) -> None:
    """Refuse what the runner would call and get a coroutine or a generator back.

    Such a call does none of the phase's work and returns at once, so the phase could never
    measure anything; refused when the phase is declared, not discovered at run time.
    """
    target = inspect.unwrap(func)
    if inspect.iscoroutinefunction(target) or inspect.isasyncgenfunction(target):
        what = "an async function"
    elif inspect.isgeneratorfunction(target):
        what = "a generator function (it uses yield)"
    else:
        return
    name = getattr(func, "__name__", repr(func))
    raise PhaseDefinitionError(
        func,
        f"{kind} {name!r} is {what}; phases run on their own thread and must be a plain "
        "function (def without async or yield); call async code with asyncio.run(...)",
    )


def _parameters(func: Callable[..., Any]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(names the runner must supply, names with a default value) of a phase or run_if."""
    required: list[str] = []
    defaulted: list[str] = []
    for param in inspect.signature(func).parameters.values():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            raise PhaseDefinitionError(
                func,
                f"phase {func.__name__!r} takes *{param.name}: phases receive "
                "instruments and helpers by name, so list each one as a parameter",
            )
        (required if param.default is param.empty else defaulted).append(param.name)
    return tuple(required), tuple(defaulted)


def _suggest_options(decorator: Callable[_P, _R]) -> Callable[_P, _R]:
    """Make a decorator factory answer a misspelt keyword with a did-you-mean.

    Python's own message (`got an unexpected keyword argument 'timeout'`) names the typo but not
    the option meant; this one names both. The signature type checkers see is unchanged.
    """
    parameters = inspect.signature(decorator).parameters.values()
    accepted = {param.name for param in parameters}
    options = [param.name for param in parameters if param.kind == param.KEYWORD_ONLY]

    @functools.wraps(decorator)
    def checked(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        for key in kwargs:
            if key not in accepted:
                raise TypeError(
                    f"@{decorator.__name__} has no option {key!r}.{did_you_mean(key, options)} "
                    f"(options: {', '.join(options)})"
                )
        return decorator(*args, **kwargs)

    return checked


@_suggest_options
def phase(
    func: Callable[..., Any] | None = None,
    *,
    name: str | None = None,
    timeout_s: float | None = None,
    retries: int = 0,
    run_if: Callable[..., Any] | None = None,
    teardown: bool = False,
) -> Any:
    """Mark a function as a phase. Use bare (`@phase`) or with options (`@phase(timeout_s=10)`).

    timeout_s: the phase is stopped and recorded TIMEOUT when it runs longer.
    retries: a FAIL or ERROR attempt is run again up to this many more times; the last one decides.
    run_if: a callable taking injected parameters by name (e.g. `lambda dut: ...`); the phase is
        recorded SKIP when it returns false.
    teardown: run after the main phases, always, even after an error, a timeout or Ctrl-C.
    """
    if timeout_s is not None and (not isinstance(timeout_s, int | float) or timeout_s <= 0):
        raise ValueError(
            f"@phase timeout_s must be a positive number of seconds, got {timeout_s!r}"
        )
    if not isinstance(retries, int) or isinstance(retries, bool) or retries < 0:
        raise ValueError(f"@phase retries must be a whole number >= 0, got {retries!r}")
    if run_if is not None and not callable(run_if):
        raise ValueError(f"@phase run_if must be callable, got {run_if!r}")

    def wrap(target: Callable[..., Any] | Phase) -> Phase:
        if isinstance(target, Phase):  # @phase applied twice: the outer options win
            specs, target = target.measurements, target.func
        else:
            specs = tuple(getattr(target, SPECS_ATTR, ()))
        return Phase(
            func=target,
            name=name or target.__name__,
            timeout_s=timeout_s,
            retries=retries,
            run_if=run_if,
            teardown=teardown,
            measurements=specs,
        )

    return wrap(func) if func is not None else wrap


@_suggest_options
def measure(
    name: str,
    *,
    unit: str | None = None,
    low: float | None = None,
    high: float | None = None,
    equals: Any = None,
    matches: str | None = None,
    one_of: list[Any] | tuple[Any, ...] | None = None,
    marginal: tuple[float, float] | None = None,
    description: str | None = None,
) -> Callable[[Any], Any]:
    """Declare a measurement of the phase. Limits are inclusive; `marginal` never fails a run."""
    try:
        spec = MeasurementSpec(
            name=name,
            unit=unit,
            description=description,
            low=low,
            high=high,
            equals=equals,
            matches=matches,
            one_of=tuple(one_of) if one_of is not None else None,
            # A pair by the signature; MeasurementSpec refuses any other length at run time.
            marginal=cast("tuple[float, float]", tuple(marginal)) if marginal is not None else None,
        )
    except LimitError as exc:
        raise LimitError(f"@measure: {exc}") from None

    def add(target: Any) -> Any:
        existing = (
            target.measurements if isinstance(target, Phase) else getattr(target, SPECS_ATTR, ())
        )
        if any(other.name == name for other in existing):
            where = getattr(getattr(target, "func", target), "__name__", "?")
            raise LimitError(f"@measure: measurement {name!r} is declared twice on phase {where!r}")
        # Decorators apply bottom-up; prepend so the record lists measurements top-down.
        specs = (spec, *existing)
        if isinstance(target, Phase):
            target.measurements = specs
        else:
            setattr(target, SPECS_ATTR, specs)
        return target

    return add


@dataclass
class Procedure:
    """A loaded procedure module: its ordered phases and its settings."""

    id: str
    phases: list[Phase]  # main phases, in run order
    teardown: list[Phase]
    module_name: str
    source_file: str
    docstring: str | None = None
    version: str | None = None
    stop_on_fail: bool = False
    timeout_s: float | None = None
    part_number: str | None = None
    revision: str | None = None
    batch_number: str | None = None

    @property
    def all_phases(self) -> list[Phase]:
        return [*self.phases, *self.teardown]

    @functools.cached_property
    def directory(self) -> Path:
        """The folder of the procedure's file, resolved once (every run of a loop needs it)."""
        return Path(self.source_file).resolve().parent

    @property
    def instrument_names(self) -> set[str]:
        """Parameters that are not helpers, i.e. the instruments this procedure touches."""
        used: set[str] = set()
        for ph in self.all_phases:
            used.update(ph.params)
            used.update(ph.run_if_params)
        return used - set(HELPER_NAMES)
