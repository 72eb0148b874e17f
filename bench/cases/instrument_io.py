"""Case 3, the instrument I/O path: queries per second to the simulated DMM over loopback TCP.

Ours: `create_driver("keysight-34461a", resource, name="dmm")`, `connect()`, `driver.query(...)`,
i.e. the driver, its transport and pyvisa-py. Reference: a stdlib socket client (`sendall` +
`makefile().readline()`) talking to the same twin server. The server runs in this (parent)
process, idle while it waits; each client runs in its own subprocess, so client and server do not
share a GIL, as with a real instrument.
Target: ours within 2x of the raw socket (raw q/s / our q/s <= 2).
"""

from __future__ import annotations

import socket
import time
from typing import Any

from bench.child import ChildError, profile_text, run_child
from bench.report import CaseResult, Row, Stats, Target, fmt
from bench.settings import Settings

NAME = "instrument_io"
TITLE = "3. Instrument I/O: queries/s to the simulated 34461A over loopback TCP (ref: raw socket)"
QUERIES = ("*IDN?", "MEAS:VOLT:DC?")
MAX_RATIO = 2.0  # raw q/s / ours q/s
WARMUP_QUERIES = 50


def driver_client(args: dict[str, Any]) -> dict[str, Any]:
    """Child: queries per second through the station driver stack."""
    from drivers.registry import create_driver

    driver = create_driver("keysight-34461a", args["resource"], name="dmm")
    driver.connect()
    try:
        for _ in range(WARMUP_QUERIES):
            driver.query(args["query"])

        def batch() -> float:
            started = time.perf_counter()
            for _ in range(args["count"]):
                driver.query(args["query"])
            return args["count"] / (time.perf_counter() - started)

        result: dict[str, Any] = {"qps": [batch() for _ in range(args["reps"])]}
        if args.get("profile"):
            result["profile"] = profile_text(batch)
        return result
    finally:
        driver.close()


def raw_client(args: dict[str, Any]) -> dict[str, Any]:
    """Child: queries per second with a bare socket, newline-terminated like the driver."""
    message = args["query"].encode("ascii") + b"\n"
    with socket.create_connection((args["host"], args["port"]), timeout=5) as sock:
        reader = sock.makefile("rb")
        for _ in range(WARMUP_QUERIES):
            sock.sendall(message)
            reader.readline()

        def batch() -> float:
            started = time.perf_counter()
            for _ in range(args["count"]):
                sock.sendall(message)
                if not reader.readline():
                    raise RuntimeError("the twin closed the connection")
            return args["count"] / (time.perf_counter() - started)

        return {"qps": [batch() for _ in range(args["reps"])]}


def run(settings: Settings) -> CaseResult:
    from sim import start_bench
    from sim.bench import SimulatedClock

    result = CaseResult(NAME, TITLE)
    # Simulated bench time: the twin's readings integrate over their aperture (200 ms at the
    # 10 PLC that MEAS presets) in bench time, which this clock lets pass at once, so the case
    # measures the I/O path, not the aperture.
    with start_bench({"dmm": "keysight-34461a"}, clock=SimulatedClock()) as bench:
        server = bench.twins["dmm"].server
        resource, host, port = server.resource, "127.0.0.1", server.port
        common = {"count": settings.io_queries, "reps": settings.io_reps}
        for query in QUERIES:
            ours = ref = None
            ours_error = ref_error = None
            try:
                data = run_child(
                    "bench.cases.instrument_io:driver_client",
                    {**common, "query": query, "resource": resource, "profile": settings.profile},
                )
                ours = Stats.of(data["qps"])
                if "profile" in data:
                    result.profiles[f"driver {query}"] = data["profile"]
            except ChildError as exc:
                ours_error = f"failed: {exc}"
            try:
                data = run_child(
                    "bench.cases.instrument_io:raw_client",
                    {**common, "query": query, "host": host, "port": port},
                )
                ref = Stats.of(data["qps"])
            except ChildError as exc:
                ref_error = f"failed: {exc}"
            row = Row(
                NAME,
                f"{query} (ref: raw socket)",
                "q/s",
                ours=ours,
                reference=ref,
                reference_note=ref_error,
                higher_is_better=True,
                error=ours_error,
            )
            result.rows.append(row)
            text = f"{query}: raw socket q/s <= {MAX_RATIO:g}x driver q/s"
            if row.ratio is None:
                result.targets.append(Target(NAME, text, None, ours_error or ref_error or "-"))
            else:
                result.targets.append(
                    Target(
                        NAME,
                        text,
                        row.ratio <= MAX_RATIO,
                        f"driver {fmt(ours.median)} q/s ({fmt(1e6 / ours.median)} us/query) vs "
                        f"raw {fmt(ref.median)} q/s ({fmt(1e6 / ref.median)} us/query) "
                        f"= {fmt(row.ratio)}x",
                    )
                )
    result.notes.append(
        f"{settings.io_queries} queries per repetition, after {WARMUP_QUERIES} untimed; "
        "the twin's own parsing is on both sides"
    )
    return result
