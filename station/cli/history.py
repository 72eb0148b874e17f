"""`station history SN`: a unit's runs, from TofuPilot and this station, newest first; and the
route check `station run` makes before any instrument opens (`check_route`).

One line per run: when it started (the bench's local time), the procedure, the outcome, the
station, and where the run is (TofuPilot, or local with its upload state: queued, parked...).
When TofuPilot cannot be asked, one line says why and only this station's runs not uploaded yet
are listed. Exit 0 when the listing was shown (even offline), 2 for a bad serial or limit.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from station.cli.common import EXIT_PASS, UsageError, load_config

if TYPE_CHECKING:
    from station.cli.console import Console
    from station.config.model import StationConfig


def check_route(
    config: StationConfig,
    procedure_key: str,
    serial: str,
    console: Console,
    *,
    simulated: bool,
    ask: bool = True,
) -> None:
    """Refuse the run (UsageError: exit 2, nothing tested) when the unit's route does not allow
    it (`requires_passed`), and put the retest note on the run's header.

    TofuPilot is asked (within `ROUTE_TIMEOUT_S`, else this station's runs decide) when the
    procedure requires others, and otherwise for the retest note only when `ask` (False for
    `--no-upload`: a run that must not reach the network for its own upload does not query it
    for a note either)."""
    from station.tofupilot.history import unit_route

    settings = config.procedures.get(procedure_key)
    required = settings is not None and bool(settings.requires_passed)
    key = None if required or ask else ""  # "": TofuPilot is not asked
    route = unit_route(config, procedure_key, serial, simulated=simulated, api_key=key)
    if route.refusal is not None:
        raise UsageError(f"refused: {route.refusal}")
    if route.retest_note is not None:
        console.header_note(route.retest_note)


def cmd_history(args: argparse.Namespace) -> int:
    from station.tofupilot.history import UnitRun, local_time, unit_history

    serial = args.serial.strip()
    if not serial or not serial.isprintable():
        raise UsageError(f"serial number {serial[:40]!r} is not valid: scan or type it again")
    if args.limit < 1:
        raise UsageError(f"--limit must be at least 1 (got {args.limit})")
    config = load_config(args)
    history = unit_history(config, serial, limit=args.limit)
    if history.note and not history.online:
        print(f"offline: {history.note}")
    if not history.runs:
        where = "in TofuPilot or on this station" if history.online else "on this station"
        print(f"no runs of {serial} {where}")
        return EXIT_PASS

    def row(run: UnitRun) -> list[str]:
        outcome = (run.outcome or "-") + (" (sim)" if run.simulated else "")
        return [local_time(run.started_at), run.procedure, outcome, run.station or "?", run.where]

    rows = [["started (local)", "procedure", "outcome", "station", "where"]]
    rows += [row(run) for run in history.runs]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for r in rows:
        print("  ".join([*(cell.ljust(w) for cell, w in zip(r, widths, strict=False)), r[-1]]))
    if history.note and history.online:
        print(history.note)
    return EXIT_PASS
