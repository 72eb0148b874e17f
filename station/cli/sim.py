"""`station sim`: serve station.yaml's simulated bench until Ctrl-C, for scripts and demos."""

from __future__ import annotations

import argparse
import contextlib
import threading

from station.cli.common import EXIT_PASS, apply_wire_faults, bench_resources, load_config


def cmd_sim(args: argparse.Namespace) -> int:
    config = load_config(args)
    with bench_resources(config, True, args.fault) as (bench, resources):
        apply_wire_faults(bench, args.wire_fault)
        print("simulated bench running; point station.yaml (or your script) at:")
        for name, resource in resources.items():
            print(f"  {name:<12} {resource}")
        print("Ctrl-C to stop.", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()
    return EXIT_PASS
