"""Case 6, the outbox at scale: a data directory of 10,000 uploaded runs and 10 pending ones.

A busy line records 300,000 runs a year, nearly all uploaded. An upload pass must cost what is
pending: it reads the pending index (`data_dir/.pending/`), then only those runs. Measured in a
child process, each repetition with a fresh `Outbox` (as a new `station upload` process has):

- a pass with nothing due (the 10 pending runs wait for their retry time): the station's own
  work, no network; the target, under 100 ms;
- the same pass when the 10 runs are due and go to the loopback emulator (network and the
  emulator's schema check included);
- `station runs --limit 20` (the 20 newest runs and their state);
- for reference, what every pass cost before the index: the state of every run (each run.json
  read), once.

The uploaded runs are copies of one real uploaded run (its run.json, journal and upload.json);
the pending ones are real records with fresh run ids.
"""

from __future__ import annotations

import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from bench.cases.workloads import Shape, load_station_procedure
from bench.child import ChildError, run_child
from bench.report import CaseResult, Row, Stats, Target, fmt
from bench.settings import Settings

NAME = "outbox"
TITLE = "6. Outbox at scale: 10,000 uploaded runs + 10 pending, one upload pass"
PROCEDURE_ID = "T1"
UPLOADED = 10_000
PENDING = 10
PASS_BUDGET_MS = 100.0


def build(root: Path, url: str, key: str) -> tuple[Path, Any]:
    """The data directory: UPLOADED copies of one uploaded run, the index complete. Returns it
    and the template record for pending runs."""
    from station.authoring.helpers import Dut
    from station.engine.runner import Runner
    from station.storage.journal import Journal
    from station.tofupilot.client import TofuPilotClient
    from station.tofupilot.outbox import Outbox

    data_dir = root / "runs"
    procedure = load_station_procedure(root, Shape(2, 3), PROCEDURE_ID)
    journal = Journal(data_dir)
    record = Runner(procedure, Dut("SN-BENCH"), listeners=[journal], handle_signals=False).execute()
    model = journal.run_dir
    assert model is not None
    with Outbox(data_dir, lambda: TofuPilotClient(url, key)) as outbox:
        status = outbox.upload(model)
        if status.state != "uploaded":
            raise RuntimeError(f"the model run was not uploaded: {status.message}")
    files = {p.name: p.read_bytes() for p in model.iterdir() if p.is_file()}
    for n in range(UPLOADED):
        copy = (
            data_dir
            / f"2025{n // 28800 + 1:02}{n // 960 % 30 + 1:02}T{n % 960:06}Z_T1_SN-{n:06}_{n:08x}"
        )
        copy.mkdir()
        for name, data in files.items():
            (copy / name).write_bytes(data)
    return data_dir, record


def add_pending(data_dir: Path, template: Any, retry_at: str | None) -> list[Path]:
    """PENDING recorded runs not uploaded yet, newest of all (fresh run ids), each indexed."""
    from station.storage.journal import RUN_JSON, run_dir_name, write_atomic
    from station.storage.pending import PendingIndex
    from station.tofupilot.upload_state import UploadState, client_run_ref_for, save_state

    index = PendingIndex(data_dir)
    dirs = []
    for _ in range(PENDING):
        record = template.replace(run_id=uuid.uuid4().hex)
        run_dir = data_dir / run_dir_name(record).replace("_SN-BENCH_", "_SN-PENDING_")
        run_dir.mkdir()
        index.add(run_dir.name)
        write_atomic(run_dir / RUN_JSON, record.to_json().encode())
        if retry_at is not None:
            state = UploadState(
                client_run_ref=client_run_ref_for(record),
                attempts=1,
                failures=1,
                next_retry_at=retry_at,
                last_error={"kind": "connect", "status": None, "code": None, "message": "x"},
            )
            save_state(run_dir, state)
        dirs.append(run_dir)
    return dirs


def outbox_child(args: dict[str, Any]) -> dict[str, Any]:
    """Child: build the data directory, then time each kind of pass."""
    import shutil

    from station.tofupilot.client import TofuPilotClient
    from station.tofupilot.outbox import Outbox
    from station.tofupilot.upload_state import iso

    times: dict[str, list[float]] = {"idle": [], "due": [], "runs": [], "scan": []}
    with tempfile.TemporaryDirectory(prefix="bench-outbox-scale-") as tmp:
        started = time.perf_counter()
        data_dir, template = build(Path(tmp), args["url"], args["key"])
        build_s = time.perf_counter() - started

        def outbox() -> Outbox:
            return Outbox(data_dir, lambda: TofuPilotClient(args["url"], args["key"]))

        later = add_pending(data_dir, template, iso(time.time() + 86_400))
        for _ in range(args["reps"]):
            box = outbox()
            t0 = time.perf_counter()
            results = box.drain(now=time.time())
            times["idle"].append(time.perf_counter() - t0)
            box.close()
            if len(results) != PENDING or any(r.tried for r in results):
                raise RuntimeError(f"idle pass: {len(results)} runs listed")
        for _ in range(args["reps"]):
            box = outbox()
            t0 = time.perf_counter()
            shown = [box.status(d) for d in box.newest_run_dirs(20)]
            times["runs"].append(time.perf_counter() - t0)
            if len(shown) != 20:
                raise RuntimeError(f"runs: {len(shown)} shown")
        for run_dir in later:
            shutil.rmtree(run_dir)
            (data_dir / ".pending" / run_dir.name).unlink()
        for _ in range(args["due_reps"]):
            add_pending(data_dir, template, None)
            box = outbox()
            t0 = time.perf_counter()
            results = box.drain(now=time.time())
            times["due"].append(time.perf_counter() - t0)
            box.close()
            if [r.state for r in results] != ["uploaded"] * PENDING:
                raise RuntimeError(f"due pass: {[r.state for r in results]}")
        box = outbox()
        t0 = time.perf_counter()
        every = [box.status(d) for d in box.run_dirs()]
        times["scan"].append(time.perf_counter() - t0)
        runs = len(every)
    return {"times": times, "build_s": build_s, "runs": runs}


def run(settings: Settings) -> CaseResult:
    from sim.tofupilot import TofuPilotEmulator

    result = CaseResult(NAME, TITLE)
    label = f"upload pass, {PENDING} pending (not due) beside {UPLOADED:,} uploaded"
    with TofuPilotEmulator(port=0) as emulator:
        try:
            data = run_child(
                "bench.cases.outbox:outbox_child",
                {
                    "url": emulator.url,
                    "key": emulator.station_key,
                    "reps": 5 if settings.quick else 15,
                    "due_reps": 2 if settings.quick else 5,
                },
                timeout_s=600,
            )
        except ChildError as exc:
            result.rows.append(Row(NAME, label, "ms", error=f"failed: {exc}"))
            result.targets.append(Target(NAME, f"{label} < {PASS_BUDGET_MS:g} ms", None, str(exc)))
            return result
    stats = {k: Stats.of(v).scaled(1e3) for k, v in data["times"].items()}
    result.rows += [
        Row(NAME, label, "ms", ours=stats["idle"]),
        Row(
            NAME,
            f"upload pass, {PENDING} due, uploaded to the loopback emulator",
            "ms",
            ours=stats["due"],
        ),
        Row(
            NAME,
            "station runs --limit 20 (the newest 20 and their state)",
            "ms",
            ours=stats["runs"],
        ),
        Row(
            NAME,
            f"before the index: the state of all {data['runs']:,} runs (each read)",
            "ms",
            ours=stats["scan"],
        ),
    ]
    result.notes.append(
        f"data directory of {data['runs']:,} runs built in {data['build_s']:.1f} s (not timed)"
    )
    result.targets.append(
        Target(
            NAME,
            f"{label} < {PASS_BUDGET_MS:g} ms",
            stats["idle"].median < PASS_BUDGET_MS,
            f"{fmt(stats['idle'].median)} ms (a full scan: {fmt(stats['scan'].median)} ms)",
        )
    )
    return result
