"""Case 4, reporting to TofuPilot: the v2 body of a large run, its upload, and draining an outbox.

- one run of 10 phases x 100 measurements (procedure "T1", linked to the emulator's station key):
  `build_run_body`, jsonschema validation against `sim/data/run-create.schema.json` (the check the
  emulator, like the service, also does on its side), and `TofuPilotClient.create_run`;
- an outbox of 200 recorded runs (run directories holding run.json) drained by `Outbox.drain()`.

The emulator (`TofuPilotEmulator(port=0)`) runs in this parent process, idle meanwhile; the client
side runs in a subprocess. Targets: body + upload under 50 ms; drain at least 200 runs/s.
"""

from __future__ import annotations

import json
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from bench.cases.workloads import Shape, load_station_procedure
from bench.child import ChildError, profile_text, run_child
from bench.report import CaseResult, Row, Stats, Target, fmt
from bench.settings import Settings

NAME = "reporting"
TITLE = "4. Reporting: v2 body of 10 phases x 100 meas, upload to the loopback emulator, outbox"
PROCEDURE_ID = "T1"  # linked to the emulator's first station key by default
RUN_SHAPE = Shape(10, 100)
TINY_SHAPE = Shape(2, 3)
UPLOAD_BUDGET_MS = 50.0
MIN_DRAIN_RATE = 200.0  # runs per second
WARMUP = 2


def _record(root: Path, shape: Shape) -> Any:
    """A finished RunRecord of the benchmark procedure (executed, not timed)."""
    from station.authoring.helpers import Dut
    from station.engine.runner import Runner

    procedure = load_station_procedure(root, shape, PROCEDURE_ID)
    return Runner(procedure, Dut("SN-BENCH"), handle_signals=False).execute()


def upload_child(args: dict[str, Any]) -> dict[str, Any]:
    """Child: per repetition, build the body, validate it, upload it; times of each step."""
    from jsonschema.exceptions import ValidationError

    from sim.tofupilot.schema import run_schema_validator
    from station.tofupilot.client import TofuPilotClient
    from station.tofupilot.payload import build_run_body

    validator = run_schema_validator()  # the emulator's: the vendored schema, $refs inlined

    def validate(body: dict[str, Any]) -> None:
        for error in validator.iter_errors(body):
            raise ValidationError(error.message)

    with tempfile.TemporaryDirectory(prefix="bench-report-") as tmp:
        record = _record(Path(tmp), Shape.from_args(args))
    steps: dict[str, list[float]] = {"build": [], "validate": [], "upload": []}
    with TofuPilotClient(args["url"], args["key"]) as client:
        # TofuPilot's id of the procedure, as the outbox resolves it (once) by name.
        procedure_id = next(
            p["id"]
            for p in client.current_station()["procedures"]
            if p["name"].casefold() == record.procedure_id.casefold()
        )

        def once() -> tuple[float, float, float]:
            t0 = time.perf_counter()
            body = build_run_body(
                record, client_run_ref=f"bench-{uuid.uuid4().hex}", procedure_id=procedure_id
            )
            t1 = time.perf_counter()
            validate(body)
            t2 = time.perf_counter()
            client.create_run(body)
            t3 = time.perf_counter()
            return t1 - t0, t2 - t1, t3 - t2

        first = once()
        for _ in range(WARMUP - 1):
            once()
        for _ in range(args["reps"]):
            for key, value in zip(steps, once(), strict=True):
                steps[key].append(value)
        result: dict[str, Any] = {
            "steps": steps,
            "first": first,
            "body_bytes": len(
                json.dumps(build_run_body(record, client_run_ref="x", procedure_id=procedure_id))
            ),
        }
        if args.get("profile"):
            result["profile"] = profile_text(once)
    return result


def drain_child(args: dict[str, Any]) -> dict[str, Any]:
    """Child: per repetition, queue `runs` recorded runs and time `Outbox(...).drain()`."""
    from station.storage.journal import RUN_JSON, run_dir_name
    from station.tofupilot.client import TofuPilotClient
    from station.tofupilot.outbox import Outbox

    rates: list[float] = []
    profile = None
    with tempfile.TemporaryDirectory(prefix="bench-outbox-") as tmp:
        template = _record(Path(tmp), Shape.from_args(args))
        for rep in range(args["reps"] + bool(args.get("profile"))):
            data_dir = Path(tmp) / f"runs{rep}"
            data_dir.mkdir()
            for _ in range(args["runs"]):
                record = template.replace(run_id=uuid.uuid4().hex)
                run_dir = data_dir / run_dir_name(record)
                run_dir.mkdir()
                (run_dir / RUN_JSON).write_bytes(record.to_json(indent=2).encode())
            outbox = Outbox(data_dir, lambda: TofuPilotClient(args["url"], args["key"]))
            statuses: list[Any] = []
            started = time.perf_counter()
            if rep == args["reps"]:  # the extra, profiled repetition
                profile = profile_text(lambda o=outbox, s=statuses: s.extend(o.drain()))
            else:
                statuses.extend(outbox.drain())
            elapsed = time.perf_counter() - started
            outbox.close()
            uploaded = [s for s in statuses if s.state == "uploaded"]
            if len(uploaded) != args["runs"]:
                others = [s for s in statuses if s.state != "uploaded"]
                detail = f"{others[0].state}: {others[0].message}" if others else "none listed"
                raise RuntimeError(f"{len(uploaded)}/{args['runs']} uploaded; {detail}")
            if rep < args["reps"]:
                rates.append(args["runs"] / elapsed)
    result: dict[str, Any] = {"rates": rates}
    if profile:
        result["profile"] = profile
    return result


class _TimedValidator:
    """Wraps the emulator's schema validator to time its server-side check of each body.

    Only to tell the emulator's share of an upload from ours; it changes nothing it does.
    """

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.seconds: list[float] = []

    def iter_errors(self, instance: Any) -> Any:
        started = time.perf_counter()
        errors = list(self.inner.iter_errors(instance))
        self.seconds.append(time.perf_counter() - started)
        return iter(errors)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def run(settings: Settings) -> CaseResult:
    from sim.tofupilot import TofuPilotEmulator

    result = CaseResult(NAME, TITLE)
    with TofuPilotEmulator(port=0) as emulator:
        timer = None
        if hasattr(emulator, "_validator"):  # a private detail: without it, no server figure
            timer = emulator._validator = _TimedValidator(emulator._validator)
        server = {"url": emulator.url, "key": emulator.station_key}
        _upload_rows(result, settings, server, timer)
        _drain_rows(result, settings, server, timer)
        result.extra["emulator_runs_stored"] = len(emulator.runs)
    return result


def _upload_rows(
    result: CaseResult, settings: Settings, server: dict[str, str], timer: _TimedValidator | None
) -> None:
    label = f"{RUN_SHAPE.phases} phases x {RUN_SHAPE.measurements} meas"
    if timer:
        timer.seconds.clear()
    try:
        data = run_child(
            "bench.cases.reporting:upload_child",
            {
                **server,
                **RUN_SHAPE.as_args(),
                "reps": settings.upload_reps,
                "profile": settings.profile,
            },
        )
    except ChildError as exc:
        result.rows.append(Row(NAME, f"body + upload ({label})", "ms", error=f"failed: {exc}"))
        result.targets.append(
            Target(NAME, f"body + upload < {UPLOAD_BUDGET_MS:g} ms", None, str(exc))
        )
        return
    steps = {k: Stats.of(v).scaled(1e3) for k, v in data["steps"].items()}
    totals = [b + u for b, u in zip(data["steps"]["build"], data["steps"]["upload"], strict=True)]
    total = Stats.of(totals).scaled(1e3)
    if "profile" in data:
        result.profiles["build + validate + upload"] = data["profile"]
    server_s = timer.seconds[WARMUP : WARMUP + settings.upload_reps] if timer else []
    result.rows += [
        Row(NAME, f"build_run_body ({label})", "ms", ours=steps["build"]),
        Row(NAME, "validate body (jsonschema, in the bench process)", "ms", ours=steps["validate"]),
        Row(NAME, "upload: create_run to the emulator", "ms", ours=steps["upload"]),
        Row(NAME, "body + upload (the target)", "ms", ours=total),
    ]
    net = None
    if len(server_s) == len(totals):
        server = Stats.of(server_s).scaled(1e3)
        net = Stats.of([t - s for t, s in zip(totals, server_s, strict=True)]).scaled(1e3)
        result.rows += [
            Row(NAME, "  of which: the emulator's schema check (its side)", "ms", ours=server),
            Row(NAME, "body + upload, less the emulator's schema check", "ms", ours=net),
        ]
    result.rows += [
        Row(
            NAME,
            "first body + upload of the process (connect, lazy imports)",
            "ms",
            ours=Stats.of([(data["first"][0] + data["first"][2]) * 1e3]),
        ),
    ]
    result.notes.append(
        f"body of {data['body_bytes'] / 1024:.0f} KiB; the upload time includes the emulator's "
        "own schema validation of the body (about the 'validate' figure) on its side"
    )
    result.targets.append(
        Target(
            NAME,
            f"body + upload of a {label} run < {UPLOAD_BUDGET_MS:g} ms",
            total.median < UPLOAD_BUDGET_MS,
            f"{fmt(total.median)} ms (build {fmt(steps['build'].median)} + upload "
            f"{fmt(steps['upload'].median)})"
            + (f"; without the emulator's own schema check: {fmt(net.median)} ms" if net else ""),
        )
    )


def _drain_rows(
    result: CaseResult, settings: Settings, server: dict[str, str], timer: _TimedValidator | None
) -> None:
    label = f"Outbox.drain() of {settings.drain_runs} queued runs"
    text = f"drain >= {MIN_DRAIN_RATE:g} runs/s"
    if timer:
        timer.seconds.clear()
    try:
        data = run_child(
            "bench.cases.reporting:drain_child",
            {
                **server,
                **TINY_SHAPE.as_args(),
                "runs": settings.drain_runs,
                "reps": settings.drain_reps,
                "profile": settings.profile,
            },
        )
    except ChildError as exc:
        result.rows.append(Row(NAME, label, "runs/s", error=f"failed: {exc}"))
        result.targets.append(Target(NAME, text, None, str(exc)))
        return
    rate = Stats.of(data["rates"])
    if "profile" in data:
        result.profiles[label] = data["profile"]
    result.rows.append(Row(NAME, label, "runs/s", ours=rate, higher_is_better=True))
    if timer and timer.seconds:
        per_run = Stats.of(timer.seconds).scaled(1e3)
        result.rows.append(
            Row(NAME, "  emulator's schema check per drained run (its side)", "ms", ours=per_run)
        )
    result.targets.append(
        Target(
            NAME,
            text,
            rate.median >= MIN_DRAIN_RATE,
            f"{fmt(rate.median)} runs/s ({fmt(1e3 / rate.median)} ms per run)",
        )
    )
