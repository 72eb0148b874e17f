"""Case: what `--trace-io` costs on the driver I/O path, and how fast a replay twin answers.

1. Trace overhead: the driver I/O benchmark of `instrument_io` (a Keysight 34461A driver querying
   its twin over loopback TCP through pyvisa-py), in one client process, in batches alternating
   without and with the I/O trace installed (`drivers.transport.trace.IoTrace`, writing its
   JSON lines to a file). Target: traced time per query <= 1.10x untraced (median of the
   per-pair ratios, so drift on a busy machine cancels out).
2. Replay twin: the same client, in batches alternating between the live twin (`TwinServer`, the
   simulated 34461A) and a replay twin (`sim.replay`) serving a recording of exactly those
   queries. Target: replay time per query <= 1.1x live.
Servers run in this (parent) process, idle while they wait; the client runs in a subprocess, so
client and servers do not share a GIL, as with a real instrument.
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.child import ChildError, run_child
from bench.report import CaseResult, Row, Stats, Target, fmt
from bench.settings import Settings

NAME = "io_trace"
TITLE = "I/O trace and replay: --trace-io overhead on driver queries; replay twin vs live twin"
QUERIES = ("*IDN?", "MEAS:VOLT:DC?")
MAX_TRACE_RATIO = 1.10  # traced us/query / untraced us/query
MAX_REPLAY_RATIO = 1.10  # replay twin us/query / live twin us/query
WARMUP_QUERIES = 50
IDN = "Keysight Technologies,34461A,MY60012345,A.02.14-02.40-02.14-00.49-01-01"
READING = "+3.30000000E+00"


def _batch(driver: Any, query: str, count: int, cpu: list[float] | None = None) -> float:
    """Microseconds per query over `count` queries; with `cpu`, also appends the CPU time of
    this process (every thread: the trace's writer too) per query."""
    started, cpu_started = time.perf_counter(), time.process_time()
    for _ in range(count):
        driver.query(query)
    if cpu is not None:
        cpu.append((time.process_time() - cpu_started) / count * 1e6)
    return (time.perf_counter() - started) / count * 1e6


def trace_client(args: dict[str, Any]) -> dict[str, Any]:
    """Child: us/query without and with the I/O trace, in alternating batches."""
    from drivers.registry import create_driver
    from drivers.transport import trace

    driver = create_driver("keysight-34461a", args["resource"], name="dmm")
    driver.connect()
    result: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-trace-") as tmp:
        io = trace.IoTrace(Path(tmp) / trace.TRACE_FILE)
        try:
            for query in args["queries"]:
                for _ in range(WARMUP_QUERIES):
                    driver.query(query)
                plain: list[float] = []
                traced: list[float] = []
                plain_cpu: list[float] = []
                traced_cpu: list[float] = []
                for rep in range(args["reps"]):
                    for with_trace in (False, True) if rep % 2 == 0 else (True, False):
                        if with_trace:
                            with trace.installed(io):
                                traced.append(_batch(driver, query, args["count"], traced_cpu))
                        else:
                            plain.append(_batch(driver, query, args["count"], plain_cpu))
                result[query] = {
                    "plain": plain,
                    "traced": traced,
                    "plain_cpu": plain_cpu,
                    "traced_cpu": traced_cpu,
                }
        finally:
            io.close()
            driver.close()
        result["lines"] = io.lines
    return result


def replay_client(args: dict[str, Any]) -> dict[str, Any]:
    """Child: us/query against the live twin and the replay twin, in alternating batches."""
    from drivers.registry import create_driver

    live = create_driver("keysight-34461a", args["live"], name="dmm", lock=False)
    replay = create_driver("keysight-34461a", args["replay"], name="dmm", lock=False)
    result: dict[str, Any] = {}
    try:
        live.connect()
        replay.connect()
        for query in args["queries"]:
            for _ in range(WARMUP_QUERIES):
                live.query(query)
                replay.query(query)
            times: dict[str, list[float]] = {"live": [], "replay": []}
            for rep in range(args["reps"]):
                order = (("live", live), ("replay", replay))
                for label, driver in order if rep % 2 == 0 else order[::-1]:
                    times[label].append(_batch(driver, query, args["count"]))
            result[query] = times
    finally:
        live.close()
        replay.close()
    return result


def write_recording(run_dir: Path, count: int, reps: int) -> None:
    """The trace `replay_client` replays: *IDN? at connect, then per query its warmup and
    batches, each with the reply the live twin gives (a fixed reading for MEAS)."""
    exchanges = [("*IDN?", IDN)]
    for query in QUERIES:
        reply = IDN if query == "*IDN?" else READING
        exchanges += [(query, reply)] * (WARMUP_QUERIES + count * reps)
    lines = [
        {"seq": 0, "t": 0.0, "instrument": "dmm", "resource": "r", "op": "open",
         "transport": "VisaTransport", "read_termination": "\n", "write_termination": "\n"},
    ]  # fmt: skip
    for command, reply in exchanges:
        lines.append(
            {"seq": len(lines), "instrument": "dmm", "op": "query", "send": command, "recv": reply}
        )
    (run_dir / "io-trace.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))


def _ratios(ours: list[float], reference: list[float]) -> float:
    """Median of the per-pair ratios ours/reference."""
    return statistics.median(a / b for a, b in zip(ours, reference, strict=False))


def run(settings: Settings) -> CaseResult:
    from sim import start_bench
    from sim.bench import SimulatedClock
    from sim.replay import start_replay

    result = CaseResult(NAME, TITLE)
    count, reps = settings.io_queries, settings.io_reps + 2
    with (
        start_bench({"dmm": "keysight-34461a"}, clock=SimulatedClock()) as bench,
        tempfile.TemporaryDirectory(prefix="bench-replay-") as tmp,
    ):
        resource = bench.resources["dmm"]
        write_recording(Path(tmp), count, reps)
        common = {"queries": list(QUERIES), "count": count, "reps": reps}
        try:
            traced = run_child(
                "bench.cases.io_trace:trace_client", {**common, "resource": resource}
            )
        except ChildError as exc:
            traced = {"error": f"failed: {exc}"}
        with start_replay(tmp) as replay:
            try:
                replayed = run_child(
                    "bench.cases.io_trace:replay_client",
                    {**common, "live": resource, "replay": replay.resources["dmm"]},
                )
            except ChildError as exc:
                replayed = {"error": f"failed: {exc}"}
            divergences = replay.divergences()
    for query in QUERIES:
        _trace_row(result, query, traced)
        _replay_row(result, query, replayed)
    if divergences:
        result.notes.append(f"replay diverged (the figures are not valid): {divergences[0]}")
    if "lines" in traced:
        result.notes.append(f"{traced['lines']} trace lines written")
    result.notes.append(
        f"{count} queries per batch, {reps} batches each way, alternating, after "
        f"{WARMUP_QUERIES} untimed; ratios are medians of per-pair ratios"
    )
    return result


def _trace_row(result: CaseResult, query: str, data: dict[str, Any]) -> None:
    label = f"{query} with --trace-io (ref: without)"
    text = f"{query}: traced us/query <= {MAX_TRACE_RATIO:g}x untraced"
    if "error" in data:
        result.rows.append(Row(NAME, label, "us/query", error=data["error"]))
        result.targets.append(Target(NAME, text, None, data["error"]))
        return
    plain, traced = data[query]["plain"], data[query]["traced"]
    ratio = _ratios(traced, plain)
    cpu_ratio = _ratios(data[query]["traced_cpu"], data[query]["plain_cpu"])
    result.rows.append(
        Row(NAME, label, "us/query", ours=Stats.of(traced), reference=Stats.of(plain))
    )
    result.rows.append(
        Row(
            NAME,
            f"{query} client CPU with --trace-io (ref: without)",
            "us/query",
            ours=Stats.of(data[query]["traced_cpu"]),
            reference=Stats.of(data[query]["plain_cpu"]),
        )
    )
    result.targets.append(
        Target(
            NAME,
            text,
            ratio <= MAX_TRACE_RATIO,
            f"traced {fmt(statistics.median(traced))} us vs untraced "
            f"{fmt(statistics.median(plain))} us = {ratio:.3f}x (client CPU: {cpu_ratio:.3f}x)",
        )
    )


def _replay_row(result: CaseResult, query: str, data: dict[str, Any]) -> None:
    label = f"{query} from a replay twin (ref: live twin)"
    text = f"{query}: replay twin us/query <= {MAX_REPLAY_RATIO:g}x live twin"
    if "error" in data:
        result.rows.append(Row(NAME, label, "us/query", error=data["error"]))
        result.targets.append(Target(NAME, text, None, data["error"]))
        return
    live, replay = data[query]["live"], data[query]["replay"]
    ratio = _ratios(replay, live)
    result.rows.append(
        Row(NAME, label, "us/query", ours=Stats.of(replay), reference=Stats.of(live))
    )
    result.targets.append(
        Target(
            NAME,
            text,
            ratio <= MAX_REPLAY_RATIO,
            f"replay {fmt(statistics.median(replay))} us vs live "
            f"{fmt(statistics.median(live))} us = {ratio:.3f}x",
        )
    )
