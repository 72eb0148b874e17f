"""The TofuPilot side of the `station` command: `upload`, `runs`, and the upload at the end of
`station run` (bounded, so a dead network never holds the operator).

`station upload` gives each run its own time budget (`UPLOAD_RUN_BUDGET_S`): one run the server
never takes in time is left queued and the next one is tried. A run directory whose files are
damaged is listed as parked with what is wrong, and the others go on.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from station.cli.common import EXIT_FAIL, EXIT_PASS, display_path, load_config

if TYPE_CHECKING:
    from station.config.model import StationConfig
    from station.tofupilot.outbox import Outbox, RunStatus

RUN_UPLOAD_BUDGET_S = 5.0  # the most `station run` waits for TofuPilot after the run
UPLOAD_TIMEOUT_S = 10.0  # per request in `station upload`
UPLOAD_RUN_BUDGET_S = 60.0  # per run in `station upload`: then the next run is tried


def outbox_for(config: StationConfig, *, timeout_s: float = UPLOAD_TIMEOUT_S) -> Outbox:
    """The outbox of this station's data_dir; without an API key it can only report."""
    from station.tofupilot.client import TofuPilotClient
    from station.tofupilot.outbox import Outbox

    settings = config.tofupilot
    key = os.environ.get(settings.api_key_env, "").strip()

    def client() -> TofuPilotClient:
        return TofuPilotClient(settings.url, key, timeout_s=timeout_s)

    return Outbox(config.data_path, client if key else None, api_key_env=settings.api_key_env)


def upload_after_run(
    outbox: Outbox, run_dir: Path, api_key_env: str, say: Callable[[str], None]
) -> None:
    """Upload the run just recorded, bounded by RUN_UPLOAD_BUDGET_S; never raises.

    The upload runs on a daemon thread joined with the budget, so even what request timeouts
    do not bound (a DNS lookup on a dead network) cannot hold the operator. Whatever happens,
    upload.json stays consistent and `station upload` finishes the job.
    """
    import threading
    import time

    from station.tofupilot.outbox import NOT_CONFIGURED, PARKED, UPLOADED

    outcome: dict[str, Any] = {}

    def work() -> None:
        try:
            outcome["status"] = outbox.upload(run_dir, deadline=time.time() + RUN_UPLOAD_BUDGET_S)
        except Exception as exc:  # a bug must not cost the operator the run's exit code
            outcome["error"] = f"{type(exc).__name__}: {exc}"

    worker = threading.Thread(target=work, name="station-upload", daemon=True)
    worker.start()
    try:
        worker.join(RUN_UPLOAD_BUDGET_S + 1.5)
    except KeyboardInterrupt:  # the run is recorded; its exit code stands
        outcome.setdefault("error", "interrupted")
    status: RunStatus | None = outcome.get("status")
    later = "send it with 'station upload'"
    if status is None:
        reason = outcome.get("error") or "no answer in time"
        say(f"   queued for upload ({reason}); {later}")
    elif status.state == UPLOADED:
        say(f"   uploaded: run {status.run_id}" + (f" {status.run_url}" if status.run_url else ""))
    elif status.state == NOT_CONFIGURED:
        say(f"   not uploaded: ${api_key_env} is not set; set it and run 'station upload'")
    elif status.state == PARKED:
        say(f"   not uploaded (parked): {status.hint}")
    else:
        say(f"   queued for upload ({status.message}); {later}")


def cmd_upload(args: argparse.Namespace) -> int:
    from station.tofupilot.outbox import BUSY, NOT_CONFIGURED, UPLOADED

    config = load_config(args)
    env = config.tofupilot.api_key_env
    with outbox_for(config) as outbox:
        for run_dir, record in outbox.recover_interrupted():
            outcome = record.outcome.value if record.outcome is not None else "ERROR"
            print(f"recovered interrupted run {run_dir.name}: {outcome}")
        # A directory that cannot be recovered is listed by drain() as parked, with why.
        results = outbox.drain(retry_parked=args.retry_parked, run_budget_s=UPLOAD_RUN_BUDGET_S)
    for status in results:
        print(_upload_line(status))
    if not results:
        print("nothing to upload")
    elif any(s.state == NOT_CONFIGURED for s in results):
        print(f"not uploaded: ${env} is not set; set it and run 'station upload'")
    left = [s for s in results if s.state not in (UPLOADED, BUSY)]
    return EXIT_FAIL if left else EXIT_PASS


def cmd_runs(args: argparse.Namespace) -> int:
    from station.tofupilot.outbox import Outbox

    config = load_config(args)
    outbox = Outbox(config.data_path, None, api_key_env=config.tofupilot.api_key_env)
    run_dirs = list(reversed(outbox.run_dirs()))[: max(args.limit, 0)]
    if not run_dirs:
        print(f"no runs in {display_path(config.data_path)}")
        return EXIT_PASS
    print(f"{'started':<21} {'procedure':<10} {'serial':<16} {'outcome':<8} upload")
    for run_dir in run_dirs:
        status = outbox.status(run_dir)
        started = (status.started_at or "?")[:19].replace("T", " ") + "Z"
        print(
            f"{started:<21} {status.procedure or '?':<10} {status.serial or '?':<16} "
            f"{status.outcome or '-':<8} {_state_text(status)}"
        )
    return EXIT_PASS


def _upload_line(status: RunStatus) -> str:
    return f"{status.state:<10} {status.run_dir.name}  {_state_text(status, long=True)}"


def _state_text(status: RunStatus, long: bool = False) -> str:
    """One run's upload state in a few words: run id, next retry, the hint."""
    state = status.state
    if state == "uploaded":
        return f"uploaded: run {status.run_id}" if not long else f"run {status.run_id}"
    if state == "queued":
        detail = status.message
        if status.next_retry_at:
            detail += f"; next retry {status.next_retry_at}"
        return f"queued ({detail})" if not long else detail
    if state == "parked":
        return f"parked: {status.hint}" if not long else str(status.hint)
    if state == "interrupted":
        return "interrupted (recovered and uploaded by 'station upload')"
    if state == "busy":
        return "in progress in another process"
    return f"{state}: {status.message}" if not long else status.message
