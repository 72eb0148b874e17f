"""`python -m sim.tofupilot`: serve the emulator on loopback for demos."""

from __future__ import annotations

import argparse
import time

from .emulator import TofuPilotEmulator
from .state import default_keys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m sim.tofupilot",
        description="Serve a TofuPilot v2 emulator on loopback for demos (Ctrl-C to stop).",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument(
        "--procedures",
        default="FVT1,T1",
        help="procedures linked to the station key, comma-separated (default: FVT1,T1)",
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
    parser.add_argument("-v", "--verbose", action="store_true", help="print each request")
    args = parser.parse_args(argv)

    keys = default_keys()
    station_key = next(k for k, info in keys.items() if info["type"] == "station")
    keys[station_key]["procedures"] = [p.strip() for p in args.procedures.split(",") if p.strip()]
    printer = (lambda r: print(f"{r.method} {r.path} -> {r.status or 'dropped'} ({r.fault})",
                               flush=True)) if args.verbose else None  # fmt: skip
    emulator = TofuPilotEmulator(args.host, args.port, keys=keys, on_request=printer)
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
        linked = ", ".join(station["procedures"]) or "no procedure"
        print(
            f"TofuPilot emulator serving on {emulator.url}\n"
            f"  station key ({station['station']['name']!r}, linked to {linked}):\n"
            f"    export TOFUPILOT_API_KEY={station_key}\n"
            f"  user key:\n"
            f"    export TOFUPILOT_API_KEY={emulator.user_key}\n"
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
