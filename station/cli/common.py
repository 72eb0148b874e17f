"""What every `station` command shares: exit codes, the usage error, loading station.yaml,
showing a path, and the simulated bench behind `--sim`.

Importing this module must stay cheap (no pydantic, httpx or pyvisa): `main` imports it to
build the parser and map errors to exit codes, and `station --help` must stay fast.
"""

from __future__ import annotations

import argparse
import contextlib
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING

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
    config: StationConfig, enabled: bool, fault: str | None = None
) -> Iterator[tuple[SimBench | None, dict[str, str]]]:
    """With --sim, the running simulated bench and its twins' resource strings; otherwise
    (None, {}): no resource is replaced.

    This is the one place the framework reaches into `sim`.
    """
    if not enabled:
        yield None, {}
        return
    import sim

    try:
        bench = sim.start_bench(
            {name: inst.driver for name, inst in config.instruments.items()},
            board=config.sim.board,
            fault=fault or config.sim.fault,
            seed=config.sim.seed,
        )
    except ValueError as exc:  # unknown board, fault or simulated model: the message says which
        raise UsageError(f"--sim: {exc}") from None
    try:
        yield bench, bench.resources
    finally:
        bench.close()


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
