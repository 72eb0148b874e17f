"""What every `station` command shares: exit codes, the usage error, loading station.yaml,
showing a path, and the simulated bench behind `--sim`.

Importing this module must stay cheap (no pydantic, httpx or pyvisa): `main` imports it to
build the parser and map errors to exit codes, and `station --help` must stay fast.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, cast

from station.config.errors import display_path

if TYPE_CHECKING:
    from sim import SimBench
    from station.config.model import StationConfig

__all__ = [
    "EXIT_ABORTED",
    "EXIT_CODES",
    "EXIT_ERROR",
    "EXIT_FAIL",
    "EXIT_PASS",
    "EXIT_TIMEOUT",
    "EXIT_USAGE",
    "UsageError",
    "apply_wire_faults",
    "bench_resources",
    "config_display",
    "display_path",
    "load_config",
    "simulation_plan",
]

# The exit codes the README documents; a line's automation branches on them.
EXIT_PASS = 0  # the unit passed (or the command did what it was asked)
EXIT_FAIL = 1  # the unit failed a limit (upload: some runs are still not uploaded)
EXIT_USAGE = 2  # the command line, station.yaml or a procedure is wrong: nothing was tested
EXIT_ERROR = 3  # the test could not be carried out (instrument, bug, incomplete record)
EXIT_TIMEOUT = 4  # a phase ran out of time
EXIT_ABORTED = 130  # Ctrl-C or a termination signal
EXIT_CODES = {
    "PASS": EXIT_PASS,
    "FAIL": EXIT_FAIL,
    "ERROR": EXIT_ERROR,
    "TIMEOUT": EXIT_TIMEOUT,
    "ABORTED": EXIT_ABORTED,
}


class UsageError(Exception):
    """The command line (or the lack of a terminal) does not allow the command to proceed."""


def load_config(args: argparse.Namespace) -> StationConfig:
    """The station.yaml named by `--config`, else `$STATION_CONFIG`, else `./station.yaml`.

    Also checks, before any command does anything, that the API key in the environment (if
    set) can be one: a key with a line break or an en dash from a copy and paste would
    otherwise end up in files or crash the upload (the message never quotes the key).
    """
    from station.config.model import find_config_path
    from station.config.model import load_config as load_file
    from station.tofupilot.client import api_key_problem

    config = load_file(find_config_path(args.config))
    env = config.tofupilot.api_key_env
    key = os.environ.get(env, "").strip()
    problem = api_key_problem(key) if key else None
    if problem is not None:
        raise UsageError(
            f"${env} does not hold a usable API key: {problem}; set it again to the key "
            "exactly as TofuPilot shows it"
        )
    return config


def config_display(config: StationConfig) -> str:
    """Where `config` was loaded from, as the operator should read it."""
    return display_path(config.path) if config.path is not None else "(config built in code)"


@contextlib.contextmanager
def bench_resources(
    config: StationConfig,
    enabled: bool,
    fault: str | None = None,
    *,
    replay: str | os.PathLike[str] | None = None,
    port_base: int | None = None,
    trace: Callable[[str, str], None] | None = None,
) -> Iterator[tuple[SimBench | None, dict[str, str]]]:
    """With --sim, the running simulated bench and its twins' resource strings; otherwise
    (None, {}): no resource is replaced.

    `replay` (a run directory recorded with --trace-io) serves replay twins instead
    (`sim.replay`), and checks every transport call against them (`trace.PeerCheck`), so a
    command that departs from the recording fails the call that sent it. `port_base` and
    `trace` are `sim.start_bench`'s (stable ports, every message a twin receives). On the way
    out, a `--wire-fault` that never fired and recorded commands never replayed are reported on
    stderr. This is the one place the framework reaches into `sim`.
    """
    if replay is not None:
        with _replay_resources(config, replay, port_base, trace) as replayed:
            yield replayed
        return
    if not enabled:
        yield None, {}
        return
    import sim

    specs, in_process = simulation_plan(config)
    try:
        bench = sim.start_bench(
            specs,
            board=config.sim.board,
            fault=fault or config.sim.fault,
            seed=config.sim.seed,
            port_base=port_base,
            trace=trace,
        )
    except ValueError as exc:  # unknown board, fault or simulated model: the message says which
        raise UsageError(f"--sim: {exc}") from None
    except OSError as exc:  # --port: a port in use
        raise UsageError(f"--sim: cannot serve the twins: {exc.strerror or exc}") from None
    try:
        yield bench, {**bench.resources, **in_process}
    finally:
        bench.close()
        for spec in bench.unfired_faults():
            print(
                f"station: warning: --wire-fault {spec} never fired: no command matched it, so "
                "it tested nothing",
                file=sys.stderr,
            )


def simulation_plan(config: StationConfig) -> tuple[dict[str, Any], dict[str, str]]:
    """What `--sim` puts in place of each instrument: the twins to serve (a driver name with
    a simulated model, or a `sim.TwinSpec` for a `sim:` twin class or a generic driver's
    `sim_config`), and the resources of instruments replaced in-process by their plain
    `sim:` class (`SIM_CLASS_PREFIX` + the class).

    An instrument of your own with no `sim:` is a ConfigError naming it, at its line:
    `--sim` never connects to a real instrument.
    """
    import sim
    from station.bench.instruments import (
        SIM_CLASS_PREFIX,
        is_twin_class,
        is_user_class,
        sim_class,
    )

    specs: dict[str, Any] = {}
    in_process: dict[str, str] = {}
    for name, inst in config.instruments.items():
        replacement = sim_class(config, name)
        if replacement is not None and is_twin_class(replacement):
            specs[name] = sim.TwinSpec(twin=replacement, options=dict(inst.sim_config))
        elif replacement is not None:
            in_process[name] = SIM_CLASS_PREFIX + str(inst.sim)
        elif is_user_class(inst.driver):
            raise config.error(
                f"instruments.{name}",
                f"--sim: instrument {name!r} ({inst.driver}) has no simulation, and --sim never "
                "connects to a real instrument: add `sim: package.module:ClassName` to it (a "
                "class built instead of it, or a twin served on loopback for it to connect to)",
            )
        elif inst.sim_config:
            specs[name] = sim.TwinSpec(driver=inst.driver, options=dict(inst.sim_config))
        else:
            specs[name] = inst.driver
    return specs, in_process


@contextlib.contextmanager
def _replay_resources(
    config: StationConfig,
    run_dir: str | os.PathLike[str],
    port_base: int | None,
    trace: Callable[[str, str], None] | None,
) -> Iterator[tuple[SimBench | None, dict[str, str]]]:
    """`bench_resources` with replay twins: see there."""
    from drivers.transport import trace as io_hooks
    from drivers.transport.seam import is_serial_resource
    from sim import SERIAL_MODELS
    from sim.replay import ReplayError, start_replay
    from station.bench.instruments import SIM_CLASS_PREFIX, is_twin_class, sim_class

    # A plain-class instrument does no transport I/O (nothing of it is recorded): its `sim:`
    # class stands in for it, as with --sim. Every other instrument gets a replay twin.
    in_process: dict[str, str] = {}
    for name, inst in config.instruments.items():
        replacement = sim_class(config, name)
        if replacement is not None and not is_twin_class(replacement):
            in_process[name] = SIM_CLASS_PREFIX + str(inst.sim)
    serial = {
        name: inst.driver in SERIAL_MODELS or is_serial_resource(inst.resource or "")
        for name, inst in config.instruments.items()
        if name not in in_process
    }

    def said(message: str) -> None:
        print(f"station: replay: {message}", file=sys.stderr, flush=True)

    try:
        bench = start_replay(
            run_dir, serial, port_base=port_base, on_message=trace, on_divergence=said
        )
    except ReplayError as exc:
        raise UsageError(f"--sim-replay: {exc}") from None
    except OSError as exc:
        raise UsageError(f"--sim-replay: cannot serve the twins: {exc.strerror or exc}") from None
    try:
        with io_hooks.installed(io_hooks.PeerCheck(bench)):
            yield cast("SimBench", bench), {**bench.resources, **in_process}
    finally:
        bench.close()
        diverged = {name for name, twin in bench.replay_twins.items() if twin.divergence}
        for name, left in bench.unplayed().items():
            if name in diverged:
                continue  # the divergence said it: what follows was never going to be played
            print(
                f"station: replay: {name}: {len(left)} recorded command(s) never replayed, "
                f"from #{left[0].number} {left[0].text!r}",
                file=sys.stderr,
            )


def apply_wire_faults(bench: SimBench | None, specs: list[str]) -> None:
    """Inject `--wire-fault` specs into the simulated bench (a bad spec is a usage error)."""
    if specs and bench is None:
        raise UsageError("--wire-fault needs --sim")
    for spec in specs:
        assert bench is not None
        try:
            bench.set_wire_fault(spec)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
