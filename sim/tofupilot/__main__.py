"""`python -m sim.tofupilot`: serve the emulator on loopback for demos."""

from __future__ import annotations

import argparse
import time
import uuid

from .emulator import TofuPilotEmulator
from .state import Procedure, RequestLog, StoredRun, default_keys, is_uuid

DEFAULT_PROCEDURES = ("FVT1", "T1")


def stable_id(name: str) -> str:
    """The id a procedure named `name` gets when none is given: the same on every start, so a
    station that remembered it keeps uploading after the emulator restarts."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"sim.tofupilot/procedure/{name.lower()}"))


def parse_procedures(values: list[str]) -> dict[str, str]:
    """`NAME[=UUID]` values (each may hold several, comma-separated) as name -> id."""
    procedures: dict[str, str] = {}
    for value in values:
        for item in filter(None, (part.strip() for part in value.split(","))):
            name, _, procedure_id = item.partition("=")
            name, procedure_id = name.strip(), procedure_id.strip()
            if not name:
                raise ValueError(f"--procedure {item!r}: the name is empty")
            if procedure_id and not is_uuid(procedure_id):
                raise ValueError(f"--procedure {item!r}: {procedure_id!r} is not a UUID")
            procedures[name] = procedure_id.lower() or stable_id(name)
    return procedures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m sim.tofupilot",
        description="Serve a TofuPilot emulator (v2, and the legacy v1 runs API) on loopback "
        "for demos (Ctrl-C to stop).",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument(
        "--key",
        help="the station key to accept (default: a new one each start); pass the same key to "
        "keep a station's TOFUPILOT_API_KEY working across restarts",
    )
    parser.add_argument("--user-key", help="the user key to accept (default: a new one)")
    parser.add_argument(
        "--procedure",
        action="append",
        default=[],
        metavar="NAME[=UUID]",
        help="a procedure linked to the station (repeatable, or comma-separated); without "
        "=UUID its id is derived from the name, the same on every start "
        f"(default: {', '.join(DEFAULT_PROCEDURES)})",
    )
    parser.add_argument(
        "--strict-sub-units",
        action="store_true",
        help="refuse runs naming a sub-unit TofuPilot does not know (400), as the service does",
    )
    parser.add_argument(
        "--part-number-required",
        action="store_true",
        help="refuse runs for a new unit without part_number (400)",
    )
    parser.add_argument(
        "--forbid-run-attachments",
        action="store_true",
        help="answer 403 to POST /v2/runs/{id}/attachments for station keys",
    )
    parser.add_argument(
        "--fault",
        action="append",
        default=[],
        metavar="ACTION",
        help="answer the next request with ACTION (repeat for a sequence): "
        "429[:s], 500, 503, hang[:s], slow:s, drop, drop_after_store, hang_after_store[:s], ok",
    )
    parser.add_argument(
        "--mix",
        metavar="SEED:ACTION=W,...",
        help="after the --fault sequence, a seeded random mix, e.g. '7:ok=6,429=1,500=1,"
        "drop_after_store=1'",
    )
    parser.add_argument("--match", help="faults only for requests matching this regex")
    parser.add_argument("--retry-after", type=float, default=1.0, help="seconds sent with 429")
    parser.add_argument("--hang-s", type=float, default=30.0, help="how long 'hang' holds")
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="print each request, and each run stored (procedure, serial, outcome)",
    )
    args = parser.parse_args(argv)
    try:
        procedures = parse_procedures(args.procedure or list(DEFAULT_PROCEDURES))
    except ValueError as exc:
        parser.error(str(exc))

    keys = default_keys()
    station_key = next(k for k, info in keys.items() if info["type"] == "station")
    user_key = next(k for k, info in keys.items() if info["type"] == "user")
    keys[station_key]["procedures"] = list(procedures.values())
    if args.key:
        keys[args.key] = keys.pop(station_key)
        station_key = args.key
    if args.user_key:
        keys[args.user_key] = keys.pop(user_key)
        user_key = args.user_key
    if station_key == user_key:
        parser.error("--key and --user-key must differ")
    keys = {station_key: keys.pop(station_key), **keys}  # the first station key is the demo's

    def on_request(r: RequestLog) -> None:
        print(f"{r.method} {r.path} -> {r.status or 'dropped'} ({r.fault})", flush=True)

    def on_store(run: StoredRun, procedure: Procedure) -> None:
        b = run.body
        print(
            f"stored run {run.id} ({run.api}): procedure {procedure.name} ({procedure.id}), "
            f"serial {b['serial_number']}, {b['outcome']}",
            flush=True,
        )

    emulator = TofuPilotEmulator(
        args.host,
        args.port,
        keys=keys,
        procedures=procedures,
        on_request=on_request if args.verbose else None,
        on_store=on_store if args.verbose else None,
    )
    emulator.strict_sub_units = args.strict_sub_units
    emulator.part_number_required = args.part_number_required
    emulator.forbid_run_attachments = args.forbid_run_attachments
    emulator.faults.retry_after_s = args.retry_after
    emulator.faults.hang_s = args.hang_s
    try:
        if args.fault:
            emulator.faults.plan(args.fault, match=args.match)
        if args.mix:
            seed, _, spec = args.mix.partition(":")
            weights = {a: float(w) for a, _, w in (p.partition("=") for p in spec.split(","))}
            emulator.faults.random_mix(int(seed), weights, match=args.match)
    except ValueError as exc:
        parser.error(str(exc))
    with emulator:
        station = emulator.keys[station_key]
        linked = "".join(f"\n    {p.name}: {p.id}" for p in emulator.linked(station_key)) or " none"
        print(
            f"TofuPilot emulator serving on {emulator.url}\n"
            f"  station key ({station['station']['name']!r}):\n"
            f"    export TOFUPILOT_API_KEY={station_key}\n"
            f"  user key:\n"
            f"    export TOFUPILOT_API_KEY={user_key}\n"
            f"  procedures linked to the station (name: id):{linked}\n"
            f"  station.yaml:\n"
            f"    tofupilot: {{url: {emulator.url}}}\n"
            "Ctrl-C to stop.",
            flush=True,
        )
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            print("stopped", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
