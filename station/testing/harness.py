"""Test a phase, or a whole procedure, with fake instruments: no bench, no station.yaml.

`run_phase` runs one phase through the real engine (`station.engine.runner.Runner` with a
one-phase procedure): the same injection, limit checks, retries, `run_if`, timeouts and
outcome rules as on the line. No instrument is opened, no signal handler is installed and no
file is written (an attached file is recorded at its own path). Instruments are whatever plain
objects you pass under the names the phase asks for; a name the phase asks for and you did not
pass is a `MissingInjectablesError` naming each one. `dut`, `log`, `run` and `measurements` are
made for you as in a real run (pass `dut=` to choose the unit, `state=` to seed `run.state`).

    from station import measure, phase
    from station.testing import run_phase

    class FakeDmm:
        def __init__(self, volts):
            self.volts = volts

        def measure_dc_voltage(self, range=None, nplc=None):
            return self.volts

    @phase(timeout_s=10)
    @measure("rail_3v3", unit="V", low=3.20, high=3.40)
    def rail_3v3(dmm, measurements):
        measurements.rail_3v3 = dmm.measure_dc_voltage(range=10, nplc=1)

    result = run_phase(rail_3v3, dmm=FakeDmm(3.10))
    assert result.outcome == "FAIL"
    assert result.values == {"rail_3v3": 3.10}

`run_procedure(module_or_path, instruments={...})` loads a whole procedure module with every
load-time check `station run` makes and runs it the same way, returning its `RunRecord`.

This module imports the engine and the config layer, so nothing in `station` imports it: it is
for procedure authors' tests (and the framework's own).
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from station.authoring.helpers import Dut, PromptProvider
from station.authoring.procedure import HELPER_NAMES, Phase, Procedure, phase
from station.config.model import StationConfig
from station.config.procedure_loader import (
    ProcedureError,
    collect_phases,
    import_procedure_module,
    load_procedure,
)
from station.engine.runner import Runner
from station.records.model import (
    ErrorInfo,
    LogEntry,
    MeasurementRecord,
    PhaseRecord,
    RunRecord,
)
from station.records.outcomes import PhaseOutcome

__all__ = [
    "DEFAULT_SERIAL_NUMBER",
    "HarnessError",
    "MissingInjectablesError",
    "PhaseResult",
    "run_phase",
    "run_procedure",
]

#: The serial number of the unit a harness run tests when no `dut=` is passed.
DEFAULT_SERIAL_NUMBER = "TEST-0001"
#: What `prompt=` takes: answers by prompt key or text, a function of the question's text, or
#: a prompt provider (None: a phase that prompts raises PromptError, as on a station with nobody
#: to ask).
Prompts = PromptProvider | Mapping[str, object] | Callable[[str], object] | None

# Helpers the runner makes for every run; a test cannot replace them (`dut` has its own option).
_MADE_BY_RUNNER = frozenset(HELPER_NAMES) - {"dut"}


class HarnessError(Exception):
    """`run_phase`/`run_procedure` was called with something it cannot run."""


class MissingInjectablesError(HarnessError):
    """The phase (or procedure) asks for instruments the test did not pass.

    `missing` holds their names, sorted, so a test can assert on them.
    """

    def __init__(self, message: str, missing: Collection[str]) -> None:
        super().__init__(message)
        self.missing: tuple[str, ...] = tuple(sorted(missing))


@dataclass(frozen=True, slots=True)
class PhaseResult:
    """What one `run_phase` produced: every attempt of the phase, and the run around it.

    The properties read the last attempt, the one that decides (earlier attempts were retried).
    `state` is `run.state` as the phase left it.
    """

    run: RunRecord
    state: dict[str, Any]

    @property
    def attempts(self) -> list[PhaseRecord]:
        """Every attempt, first to last: one unless the phase has `retries` and was retried."""
        return list(self.run.phases)

    @property
    def record(self) -> PhaseRecord:
        """The last attempt's record, exactly as the journal and TofuPilot would get it."""
        return self.run.phases[-1]

    @property
    def outcome(self) -> PhaseOutcome:
        """PASS, FAIL, ERROR, TIMEOUT, SKIP or ABORTED (a `str` enum: compare with "PASS")."""
        return self.record.outcome

    @property
    def measurements(self) -> dict[str, MeasurementRecord]:
        """Each declared measurement by name: value, outcome and one validator per limit."""
        return {m.name: m for m in self.record.measurements}

    @property
    def values(self) -> dict[str, Any]:
        """The value of each measurement the phase set (an unset one is left out)."""
        return {m.name: m.measured_value for m in self.record.measurements if m.outcome != "UNSET"}

    @property
    def logs(self) -> list[LogEntry]:
        """What the phase logged through its `log` helper, in order."""
        return list(self.record.logs)

    @property
    def error(self) -> ErrorInfo | None:
        """Why the phase ended ERROR, TIMEOUT or ABORTED (type, message, file and line)."""
        return self.record.error

    @property
    def reason(self) -> str | None:
        """Why the phase was skipped, timed out or aborted."""
        return self.record.reason


def run_phase(
    target: Phase | Callable[..., Any],
    /,
    *,
    dut: Dut | None = None,
    state: Mapping[str, Any] | None = None,
    prompt: Prompts = None,
    instruments: Mapping[str, Any] | None = None,
    **fakes: Any,
) -> PhaseResult:
    """Run one phase through the real engine with the given fakes and return what it recorded.

    `target` is a `@phase` (or a plain function, taken as `@phase` with no options). Instruments
    are passed by keyword (`dmm=FakeDmm()`), or in `instruments` for a name that clashes with
    an option of this function. `dut` defaults to a unit with serial `DEFAULT_SERIAL_NUMBER`;
    `state` seeds `run.state` as earlier phases would have; `prompt` answers `run.prompt()`:
    a dict of answers by prompt key or question text (`{"fixture_closed": True}`), a function
    of the question's text, or a prompt provider (`station.line.prompts`); each answer is
    typed as the prompt's kind asks, and the question and answer are in the phase's record.
    The phase's own `timeout_s`, `retries` and `run_if` apply. Raises `MissingInjectablesError`
    when the phase asks for an instrument that was not passed, and `HarnessError` for a name the
    runner makes itself (`measurements`, `log`, `run`).
    """
    ph = _as_phase(target)
    given = _instruments(instruments, fakes)
    needed = set(ph.params) | set(ph.run_if_params)
    _check_given(f"run_phase: phase {ph.name!r}", needed, given)
    procedure = Procedure(
        id=ph.func.__module__,
        phases=[] if ph.teardown else [ph],
        teardown=[ph] if ph.teardown else [],
        module_name=ph.func.__module__,
        source_file=ph.source_file,
    )
    runner = Runner(
        procedure,
        dut if dut is not None else Dut(serial_number=DEFAULT_SERIAL_NUMBER),
        instruments=given,
        prompt=prompt,
        handle_signals=False,
    )
    runner.run.state.update(state or {})
    record = runner.execute()
    return PhaseResult(run=record, state=runner.run.state)


def run_procedure(
    module: ModuleType | str | os.PathLike[str],
    /,
    *,
    instruments: Mapping[str, Any] | None = None,
    dut: Dut | None = None,
    prompt: Prompts = None,
) -> RunRecord:
    """Load a procedure module with `station run`'s load-time checks and run it with fakes.

    `module` is an imported module, a dotted name (found beside the current directory first,
    then installed) or a path to a `.py` file. The module is executed afresh, as `station run`
    does, so its phases are run with no station.yaml limit overrides. Returns the run's record.
    Raises `MissingInjectablesError` for instruments its phases ask for and `instruments` lacks,
    and `ProcedureError` for anything else `station run` would refuse to load.
    """
    given = _instruments(instruments, {})
    spec, procedure_id = _module_spec(module)
    config = StationConfig.model_validate(
        {"station": {"name": "run_procedure"}, "procedures": {procedure_id: {"module": spec}}}
    )
    try:
        procedure = load_procedure(procedure_id, config, list(given))
    except ProcedureError:
        # Say which instruments are missing, all of them at once, rather than the first one
        # as not being "in station.yaml" (there is none here). Anything else: the load error.
        module_object = import_procedure_module(procedure_id, spec, config.base_dir)
        main, teardown = collect_phases(procedure_id, module_object)
        needed = {name for ph in [*main, *teardown] for name in (*ph.params, *ph.run_if_params)}
        _check_given(f"run_procedure: procedure {procedure_id}", needed, given)
        raise
    if dut is None:
        dut = Dut(
            serial_number=DEFAULT_SERIAL_NUMBER,
            part_number=procedure.part_number,
            revision=procedure.revision,
            batch_number=procedure.batch_number,
        )
    runner = Runner(procedure, dut, instruments=given, prompt=prompt, handle_signals=False)
    return runner.execute()


def _as_phase(target: Phase | Callable[..., Any]) -> Phase:
    if isinstance(target, Phase):
        return target
    if not callable(target):
        raise HarnessError(f"run_phase: {target!r} is not a phase or a function")
    made: Phase = phase(target)  # a plain function keeps the specs its @measure attached
    return made


def _instruments(mapping: Mapping[str, Any] | None, fakes: Mapping[str, Any]) -> dict[str, Any]:
    given = dict(mapping or {})
    twice = sorted(set(given) & set(fakes))
    if twice:
        names = ", ".join(map(repr, twice))
        raise HarnessError(f"{names} passed both by keyword and in instruments=")
    given.update(fakes)
    reserved = sorted(set(given) & set(HELPER_NAMES))
    if reserved:
        raise HarnessError(
            f"{', '.join(map(repr, reserved))}: the runner makes "
            f"{', '.join(sorted(_MADE_BY_RUNNER))} for every run, so they cannot be passed as "
            "instruments; pass the unit under test as dut=Dut(...)"
        )
    return given


def _check_given(what: str, needed: Collection[str], given: Mapping[str, Any]) -> None:
    """Raise `MissingInjectablesError` naming every instrument `needed` and not `given`."""
    missing = sorted(set(needed) - set(HELPER_NAMES) - set(given))
    if not missing:
        return
    unused = [name for name in given if name not in needed]
    hints = []
    for name in missing:
        close = difflib.get_close_matches(name, unused, n=1)
        if close:
            hints.append(f" {close[0]!r} was passed but is not used: did you mean {name!r}?")
    names = ", ".join(repr(name) for name in missing)
    example = ", ".join(f"{name}=<fake>" for name in missing)
    raise MissingInjectablesError(
        f"{what} asks for {names}, which {'was' if len(missing) == 1 else 'were'} not passed: "
        f"pass a fake for each ({example}).{''.join(hints)}",
        missing,
    )


def _module_spec(module: ModuleType | str | os.PathLike[str]) -> tuple[str, str]:
    """(what ProcedureConfig.module takes, a procedure id) for a module, a name or a path."""
    if isinstance(module, ModuleType):
        file = getattr(module, "__file__", None)
        if not file or not file.endswith(".py"):
            raise HarnessError(f"run_procedure: module {module.__name__!r} has no .py source file")
        module = Path(file)
    if isinstance(module, str) and not module.endswith(".py"):
        return module, _procedure_id(module.rsplit(".", 1)[-1])
    path = Path(module).resolve()
    if path.suffix != ".py":
        raise HarnessError(f"run_procedure: {path} is not a .py file")
    return str(path), _procedure_id(path.parent.name if path.stem == "__init__" else path.stem)


def _procedure_id(name: str) -> str:
    # Procedure ids go into run directory names: no whitespace, no '/'.
    return re.sub(r"[\s/]+", "_", name) or "procedure"
