"""`station sim`: serve station.yaml's simulated bench until Ctrl-C, for scripts and demos.

`--port BASE` serves the TCP twins on BASE, BASE+1, ... in station.yaml's instrument order, so a
script or a second station.yaml can keep pointing at them across restarts; the startup prints a
ready-to-paste `instruments:` fragment either way. `--trace` prints every message a twin
receives as it arrives. `--replay RUN_DIR` serves twins that answer from the I/O trace of a run
recorded with `station run --trace-io` instead of the simulated board (see `sim.replay`). At
Ctrl-C, a `--wire-fault` that never fired and recorded commands never replayed are reported.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import sys
import threading
import time
from collections.abc import Mapping

from station.bench.instruments import SIM_CLASS_PREFIX
from station.cli.common import (
    EXIT_PASS,
    UsageError,
    apply_wire_faults,
    bench_resources,
    load_config,
)

MAX_PORT = 65535
_PLAIN = re.compile(r"[A-Za-z][A-Za-z0-9_.-]*")


def cmd_sim(args: argparse.Namespace) -> int:
    config = load_config(args)
    port_base: int | None = getattr(args, "port", None)
    replay: str | None = getattr(args, "replay", None)
    if port_base is not None and not 1 <= port_base <= MAX_PORT - len(config.instruments) + 1:
        raise UsageError(
            f"--port {port_base}: the twins need ports {port_base}..."
            f"{port_base + len(config.instruments) - 1}, which must lie in 1..{MAX_PORT}"
        )
    if replay is not None and (args.fault or args.wire_fault):
        raise UsageError("--replay serves a recording: --fault and --wire-fault do not apply")
    trace = TracePrinter() if getattr(args, "trace", False) else None
    with bench_resources(
        config, True, args.fault, replay=replay, port_base=port_base, trace=trace
    ) as (bench, resources):
        apply_wire_faults(bench, args.wire_fault)
        what = f"replaying {replay}" if replay is not None else "simulated bench running"
        print(f"{what}; point station.yaml (or your script) at:")
        for name, resource in resources.items():
            print(f"  {name:<12} {resource}")
        print()
        print("station.yaml fragment (paste it over `instruments:`):")
        print(instruments_fragment(config, resources))
        print("Ctrl-C to stop.", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()
    return EXIT_PASS


def instruments_fragment(config: object, resources: Mapping[str, str]) -> str:
    """The `instruments:` block of station.yaml pointing at `resources`: each instrument's
    driver and its other settings as configured, with the twin's resource."""
    instruments = getattr(config, "instruments", {})
    lines = ["instruments:"]
    for name, resource in resources.items():
        if resource.startswith(SIM_CLASS_PREFIX):  # no twin to point at: built in-process
            built = resource[len(SIM_CLASS_PREFIX) :]
            lines.append(f"  # {name}: --sim builds {built} in its place; keep its own entry")
            continue
        settings = instruments.get(name)
        lines.append(f"  {name}:")
        if settings is not None:
            lines.append(f"    driver: {_yaml_scalar(settings.driver)}")
        lines.append(f"    resource: {_yaml_scalar(resource)}")
        timeout_ms = getattr(settings, "timeout_ms", None)
        if timeout_ms is not None:
            lines.append(f"    timeout_ms: {timeout_ms}")
    return "\n".join(lines)


def _yaml_scalar(value: str) -> str:
    """`value` as a YAML scalar: plain when it is a simple word (a driver name), else
    double-quoted (JSON strings are valid YAML), so `::`, `:` and `#` are safe."""
    return value if _PLAIN.fullmatch(value) else json.dumps(value)


class TracePrinter:
    """`--trace`: one line per message a twin receives: seconds since start, instrument, text.

    Called from the twins' threads; a lock keeps lines whole.
    """

    def __init__(self) -> None:
        self._started = time.monotonic()
        self._lock = threading.Lock()

    def __call__(self, name: str, message: str) -> None:
        shown = message if message.isprintable() else repr(message)
        line = f"{time.monotonic() - self._started:10.3f}  {name:<12} <- {shown}\n"
        with self._lock:
            sys.stdout.write(line)
            sys.stdout.flush()
