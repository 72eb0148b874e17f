"""`station list`: this station's procedures and instruments, as station.yaml declares them."""

from __future__ import annotations

import argparse

from station.cli.common import EXIT_PASS, config_display, load_config


def cmd_list(args: argparse.Namespace) -> int:
    config = load_config(args)
    print(f"station {config.station.name} ({config_display(config)})")
    print("procedures:")
    for name, proc in config.procedures.items():
        unit = " ".join(
            x for x in (proc.part_number, proc.revision and f"rev {proc.revision}") if x
        )
        print(f"  {name:<12} {proc.module}" + (f"  ({unit})" if unit else ""))
    print("instruments:")
    for name, inst in config.instruments.items():
        line = f"  {name:<12} {inst.driver:<18} {inst.resource or '(no resource)'}"
        library = inst.visa_library or config.visa_library
        if library is not None and inst.resource is not None:
            line += f"  (VISA {library})"
        if inst.sim is not None:
            line += f"  (--sim: {inst.sim})"
        print(line)
    return EXIT_PASS
