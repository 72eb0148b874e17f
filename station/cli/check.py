"""`station check`: the config, every procedure, every instrument and TofuPilot, each verified."""

from __future__ import annotations

import argparse
import os
from typing import TYPE_CHECKING

from station.cli.common import (
    EXIT_ERROR,
    EXIT_PASS,
    UsageError,
    apply_wire_faults,
    bench_resources,
    config_display,
    display_path,
    load_config,
)

if TYPE_CHECKING:
    from station.config.model import StationConfig


def cmd_check(args: argparse.Namespace) -> int:
    from drivers import InstrumentError
    from station.bench.instruments import (
        InstrumentSet,
        check_drivers,
        failure_hint,
        measure_round_trip,
    )
    from station.config.procedure_loader import load_procedure

    config = load_config(args)
    print(f"config: {config_display(config)} is valid")
    check_drivers(config)
    for procedure_id in config.procedures:
        procedure = load_procedure(procedure_id, config)
        print(
            f"procedure {procedure_id}: {len(procedure.phases)} phases, "
            f"{len(procedure.teardown)} teardown ({display_path(procedure.source_file)})"
        )
    if args.wire_fault and not args.sim:
        raise UsageError("--wire-fault needs --sim")
    failures = 0
    with bench_resources(config, args.sim) as (bench, resources):
        apply_wire_faults(bench, args.wire_fault)
        for name, settings in config.instruments.items():
            resource = resources.get(name, settings.resource)
            instruments = InstrumentSet(config, [name], resources)
            try:
                instruments.open()
                item = instruments.opened[0]
                where = f" at {resource}" if resource else ""
                timing = f"open {item.round_trip_ms:.1f} ms"
                if item.answers_idn:
                    timing += f", round trip {measure_round_trip(item.driver):.2f} ms"
                    checked = f"model {item.model} OK"
                else:
                    checked = item.model
                print(
                    f"instrument {name}: {settings.driver}{where}: "
                    f"{item.identity or '(no identity)'} ({checked}; {timing})"
                )
            except InstrumentError as exc:
                failures += 1
                print(f"instrument {name}: FAILED: {exc}")
                print(f"  hint: {failure_hint(config, name, exc, config_display(config))}")
            finally:
                instruments.close()
    failures += _check_reporting(config)
    return EXIT_ERROR if failures else EXIT_PASS


def _check_reporting(config: StationConfig) -> int:
    """Print the TofuPilot part of `check`; 1 if a configured key does not work, else 0.

    No key at all is reported but is not a failure: runs are still recorded and queued.
    """
    from station.tofupilot.check import check_tofupilot

    ok, lines = check_tofupilot(config)
    for line in lines:
        print(line)
    key_given = bool(os.environ.get(config.tofupilot.api_key_env, "").strip())
    return 0 if ok or not key_given else 1
