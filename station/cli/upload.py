"""The TofuPilot side of the `station` command: `upload` (and `upload --watch`), `runs`, `prune`,
the upload at the end of `station run`, and the background uploader of a production loop.

`station upload` gives each run its own time budget (`UPLOAD_RUN_BUDGET_S`): one run the server
never takes in time is left queued and the next one is tried. A run directory whose files are
damaged is listed as parked with what is wrong, and the others go on. It ends with one summary
line (`8 uploaded, 1 parked, 2 queued`) and an exit code a script can branch on: 0 every run is
in TofuPilot (or nothing was to do; a run still going on in another process does not count),
`EXIT_QUEUED` (5) some runs are still queued and will be retried (the server was down, rate
limiting, or slow): nothing for a person to do, `EXIT_PARKED` (6) some runs need a person: parked
(the line says what to fix), no API key, or a data directory upload.json cannot be written in;
6 wins over 5. Never 1, which means FAIL elsewhere.

After `station run` shows its verdict, the run is uploaded and then queued runs whose retry time
has come are sent too, all within `RUN_UPLOAD_BUDGET_S` (plus 1.5 s for a stuck DNS lookup): a
dead network never holds the operator longer.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import queue
import signal
import threading
import time
from collections.abc import Callable
from datetime import UTC, date, datetime
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from station.cli.common import EXIT_PASS, UsageError, display_path, load_config

if TYPE_CHECKING:
    from station.config.model import StationConfig
    from station.tofupilot.outbox import Outbox, RunStatus

__all__ = [
    "EXIT_PARKED",
    "EXIT_QUEUED",
    "RUN_UPLOAD_BUDGET_S",
    "BackgroundUploader",
    "cmd_prune",
    "cmd_runs",
    "cmd_upload",
    "outbox_for",
    "summary_line",
    "upload_after_run",
    "upload_exit_code",
    "watch",
]

RUN_UPLOAD_BUDGET_S = 5.0  # the most `station run` spends on TofuPilot after the verdict
UPLOAD_TIMEOUT_S = 10.0  # per request in `station upload`
UPLOAD_RUN_BUDGET_S = 60.0  # per run in `station upload`: then the next run is tried
BACKGROUND_RUN_BUDGET_S = 30.0  # per run in a production loop's background uploads
WATCH_POLL_S = 2.0  # how often `--watch` (and the background uploader) looks for new runs
MIN_UPLOAD_S = 0.5  # a background upload with less time than this left is not started
WATCH_STOP_GRACE_S = UPLOAD_TIMEOUT_S + 2.0  # after SIGTERM: the request in flight may finish
EXIT_QUEUED = 5  # `station upload`: some runs are still queued (retried later by themselves)
EXIT_PARKED = 6  # `station upload`: some runs need a person (parked, or no API key)


def outbox_for(config: StationConfig, *, timeout_s: float = UPLOAD_TIMEOUT_S) -> Outbox:
    """The outbox of this station's data_dir; without an API key it can only report."""
    from station.tofupilot.client import TofuPilotClient
    from station.tofupilot.outbox import Outbox
    from station.tofupilot.resolve import upload_target

    settings = config.tofupilot
    key = os.environ.get(settings.api_key_env, "").strip()

    def client() -> TofuPilotClient:
        return TofuPilotClient(settings.url, key, timeout_s=timeout_s)

    return Outbox(
        config.data_path,
        client if key else None,
        api_key_env=settings.api_key_env,
        # The API (v1/v2), the procedures' TofuPilot ids and names, where resolved ids are kept.
        target=upload_target(config),
    )


# -- after `station run` ---------------------------------------------------------------------


def upload_after_run(
    outbox: Outbox, run_dir: Path, api_key_env: str, say: Callable[[str], None]
) -> None:
    """Upload the run just recorded, then queued runs whose retry time has come, all within
    RUN_UPLOAD_BUDGET_S; never raises.

    The work runs on a daemon thread joined with the budget (plus 1.5 s), so even what request
    timeouts do not bound (a DNS lookup on a dead network) cannot hold the operator. The
    backlog is tried only if this run's upload did not find the server down or rate limiting,
    and only from the pending index (a data directory not indexed yet is left to `station
    upload`). Whatever happens, upload.json stays consistent and `station upload` (or `station
    upload --watch`) finishes the job.
    """
    from station.tofupilot.outbox import LOCAL_ONLY, NOT_CONFIGURED, PARKED, QUEUED, UPLOADED

    outcome: dict[str, Any] = {}
    deadline = time.time() + RUN_UPLOAD_BUDGET_S

    def work() -> None:
        try:
            status = outbox.upload(run_dir, deadline=deadline)
            outcome["status"] = status
            if not _server_trouble(status) and status.state != NOT_CONFIGURED:
                outcome["others"] = outbox.drain(
                    now=time.time(), deadline=deadline, skip=run_dir, rebuild_index=False
                )
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
    elif status.state == LOCAL_ONLY:
        say(f"   not uploaded: {status.hint}")
    else:
        say(f"   queued for upload ({status.message}); {later}")
    tried = [s for s in outcome.get("others", []) if s.tried]
    if tried:
        sent = sum(s.state == UPLOADED for s in tried)
        still = sum(s.state == QUEUED for s in tried)
        parked = sum(s.state == PARKED for s in tried)
        words = [f"{sent} uploaded"] + [f"{still} still queued"] * bool(still)
        words += [f"{parked} parked (see 'station runs')"] * bool(parked)
        say(f"   earlier runs due for upload: {', '.join(words)}")


def _server_trouble(status: RunStatus) -> bool:
    """This upload found the server unreachable or rate limiting: sending more now only adds
    load (and waits)."""
    error = status.last_error or {}
    return status.state != "uploaded" and (
        error.get("kind") in ("connect", "timeout") or error.get("status") == 429
    )


# -- a production loop's uploads --------------------------------------------------------------


class BackgroundUploader:
    """Uploads runs on a thread of its own, so a production loop never waits for TofuPilot.

    For `station run --loop` and `station serve`: record each unit with `Journal(data_dir)`
    (the journal holds the run directory's lock until run.json is written), then `submit()` the
    run directory. The thread uploads submitted runs in order (each within `run_budget_s`),
    then queued runs whose retry time has come; between submissions it wakes when the next
    queued run is due, or every `poll_s` to see runs other processes recorded. A server found
    down or rate limiting is left alone until the time it asked for (with jitter). `on_status`
    is called on the uploader thread with every run it tried (keep it short; exceptions are
    ignored).

    `close(timeout_s)` stops taking work, gives runs submitted and not sent yet until the
    timeout, and returns True once the thread has ended; False if an upload in flight had to
    be abandoned (a daemon thread: upload.json is consistent at every step, and `station
    upload` finishes the job). The uploader owns `outbox` from construction on (no other
    thread may use it) and closes it.
    """

    def __init__(
        self,
        outbox: Outbox,
        *,
        on_status: Callable[[RunStatus], None] | None = None,
        run_budget_s: float = BACKGROUND_RUN_BUDGET_S,
        poll_s: float = WATCH_POLL_S,
    ) -> None:
        self._outbox = outbox
        self._on_status = on_status
        self._run_budget_s = run_budget_s
        self._poll_s = poll_s
        self._queue: queue.Queue[Path | None] = queue.Queue()
        self._stop = threading.Event()
        self._close_by: float | None = None  # time.monotonic() deadline once closing
        self._thread = threading.Thread(target=self._loop, name="station-uploader", daemon=True)
        self._thread.start()

    def submit(self, run_dir: Path) -> None:
        """Queue a recorded run for upload (returns at once). Ignored once closing."""
        if not self._stop.is_set():
            self._queue.put(Path(run_dir))

    def close(self, timeout_s: float) -> bool:
        """Stop; runs submitted and not sent yet are tried until `timeout_s` has passed."""
        if self._close_by is None:
            self._close_by = time.monotonic() + timeout_s
            self._stop.set()
            self._queue.put(None)
        self._thread.join(max(0.0, self._close_by - time.monotonic()) + 0.5)
        ended = not self._thread.is_alive()
        if ended:
            self._outbox.close()
        return ended

    def _loop(self) -> None:
        next_drain = 0.0  # time.time() of the next look at the backlog
        while True:
            try:
                item = self._queue.get(timeout=max(0.0, next_drain - time.time()))
            except queue.Empty:
                item = None
            if item is not None:
                if self._time_left() > MIN_UPLOAD_S:
                    self._upload(item)
                continue  # submitted runs first, the backlog once they are sent
            if self._stop.is_set():
                if self._queue.empty():
                    return
                continue  # runs submitted before close() still get their chance
            self._drain_due()
            next_drain = _next_look(self._due(), time.time(), self._poll_s)

    def _time_left(self) -> float:
        if self._close_by is None:
            return self._run_budget_s
        return min(self._run_budget_s, self._close_by - time.monotonic())

    def _upload(self, run_dir: Path) -> None:
        try:
            status = self._outbox.upload(run_dir, deadline=time.time() + self._time_left())
        except Exception:  # a bug in one upload must not end the loop's uploads
            return
        self._report(status)

    def _drain_due(self) -> None:
        held = self._outbox.server_retry_at
        if held is not None and time.time() < held:
            return
        try:
            results = self._outbox.drain(
                now=time.time(),
                run_budget_s=self._run_budget_s,
                stop=self._stop,
                rebuild_index=False,
            )
        except Exception:
            return
        for status in results:
            if status.tried:
                self._report(status)

    def _due(self) -> float | None:
        """When the backlog next needs a look: the next queued run due, not before a server
        that was down or rate limiting asked."""
        try:
            due = self._outbox.next_due()
        except Exception:
            return None
        held = self._outbox.server_retry_at
        if due is not None and held is not None:
            due = max(due, held)
        return due

    def _report(self, status: RunStatus) -> None:
        if self._on_status is not None:
            with contextlib.suppress(Exception):
                self._on_status(status)


# -- station upload [--watch] ------------------------------------------------------------------


def cmd_upload(args: argparse.Namespace) -> int:
    config = load_config(args)
    if getattr(args, "watch", False):
        return _cmd_watch(config, retry_parked=args.retry_parked)
    env = config.tofupilot.api_key_env
    with outbox_for(config) as outbox:
        if not outbox.index.complete() and outbox.run_dirs():
            # Once per data directory of an earlier version: every run is read this time.
            print("indexing the runs not uploaded yet (once)", flush=True)
            outbox.pending_dirs(rebuild=True)
        for run_dir, record in outbox.recover_interrupted():
            outcome = record.outcome.value if record.outcome is not None else "ERROR"
            print(f"recovered interrupted run {run_dir.name}: {outcome}")
        # A directory that cannot be recovered is listed by drain() as parked, with why.
        results = outbox.drain(retry_parked=args.retry_parked, run_budget_s=UPLOAD_RUN_BUDGET_S)
    for status in results:
        print(_upload_line(status))
    if any(s.state == "not-configured" for s in results):
        print(f"not uploaded: ${env} is not set; set it and run 'station upload'")
    print(summary_line(results))
    return upload_exit_code(results)


def summary_line(results: list[RunStatus]) -> str:
    """`8 uploaded, 1 parked, 2 queued` (then runs in progress elsewhere and any other state),
    or `nothing to upload`."""
    counts: dict[str, int] = {}
    for status in results:
        state = {"not-configured": "queued", "busy": "in progress"}.get(status.state, status.state)
        counts[state] = counts.get(state, 0) + 1
    order = ["uploaded", "parked", "queued"]
    words = [f"{counts.pop(state)} {state}" for state in order if state in counts]
    words += [f"{n} {state.replace('-', ' ')}" for state, n in sorted(counts.items())]
    return ", ".join(words) if words else "nothing to upload"


def upload_exit_code(results: list[RunStatus]) -> int:
    """0, EXIT_QUEUED or EXIT_PARKED (see the module docstring)."""
    states = {status.state for status in results}
    disk = any((s.last_error or {}).get("kind") == "disk" for s in results if s.state == "queued")
    if disk or states & {"parked", "not-configured"}:
        return EXIT_PARKED
    if states & {"queued", "interrupted"}:
        return EXIT_QUEUED
    return EXIT_PASS


def _cmd_watch(config: StationConfig, *, retry_parked: bool) -> int:
    """`station upload --watch`: `watch()` on a thread; SIGTERM/SIGINT stop it."""
    if retry_parked:
        raise UsageError("--watch never retries parked runs: run 'station upload --retry-parked'")
    env = config.tofupilot.api_key_env
    if not os.environ.get(env, "").strip():
        raise UsageError(f"--watch needs an API key: ${env} is not set")
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    outbox = outbox_for(config)
    say = _stamped_printer()
    say(f"watching {display_path(config.data_path)} (stop with SIGTERM or Ctrl-C)")
    worker = threading.Thread(
        target=watch, args=(outbox,), kwargs={"stop": stop, "say": say}, daemon=True
    )
    worker.name = "station-watch"
    try:
        worker.start()
        while worker.is_alive() and not stop.is_set():
            worker.join(0.5)  # signal handlers run on this thread between the waits
        worker.join(WATCH_STOP_GRACE_S)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if worker.is_alive():
        say(
            f"stopped; an upload still in flight after {WATCH_STOP_GRACE_S:g} s was abandoned "
            "(its run stays queued, never duplicated)"
        )
    else:
        outbox.close()
        say("stopped")
    return EXIT_PASS


def _stamped_printer() -> Callable[[str], None]:
    def say(text: str) -> None:
        stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        print(f"{stamp} {text}", flush=True)

    return say


def watch(
    outbox: Outbox,
    *,
    stop: threading.Event,
    say: Callable[[str], None],
    poll_s: float = WATCH_POLL_S,
    run_budget_s: float = UPLOAD_RUN_BUDGET_S,
    clock: Callable[[], float] = time.time,
    wait: Callable[[float], object] | None = None,
) -> None:
    """The service loop of `station upload --watch`, until `stop` is set.

    Drains the runs that are due (one line per upload tried), then sleeps until the next
    queued run is due, and no sooner than a server that was down or rate limiting asked
    (Retry-After, with jitter), waking every `poll_s` to look at the pending index: a run
    that appears or changes (recorded, finished, or uploaded by another process) is looked at
    at once. `clock` and `wait` (default: `stop.wait`) are injectable to run it in simulated
    time; between two runs nothing is in flight, so `stop` ends it at once.
    """
    pause = wait or stop.wait
    while not stop.is_set():
        results = outbox.drain(now=clock(), run_budget_s=run_budget_s, stop=stop)
        for status in results:
            if status.tried:
                say(_upload_line(status))
        held = outbox.server_retry_at
        due = outbox.next_due()
        if due is not None and held is not None:
            due = max(due, held)
        if due is not None and due <= clock():  # tried and still due (a disk problem): not
            due = clock() + poll_s  # again before the next look
        seen = _signature(outbox)
        while not stop.is_set():
            now = clock()
            if due is not None and now >= due:
                break
            pause(poll_s if due is None else min(poll_s, due - now))
            if (held is None or clock() >= held) and _signature(outbox) != seen:
                break


def _next_look(due: float | None, now: float, poll_s: float) -> float:
    """When to look at the backlog again: when the next run is due, at the latest in `poll_s`;
    a run still due right after a pass (a disk problem) waits `poll_s` too."""
    if due is None or due <= now:
        return now + poll_s
    return min(due, now + poll_s)


def _signature(outbox: Outbox) -> tuple[tuple[str, bool, int], ...]:
    """What the pending runs look like on disk, cheaply: a new run, a run that ended, an
    upload.json rewritten by another process all change it."""
    found = []
    for run_dir in outbox.pending_dirs():
        try:
            stamp = (run_dir / "upload.json").stat().st_mtime_ns
        except OSError:
            stamp = 0
        found.append((run_dir.name, (run_dir / "run.json").exists(), stamp))
    return tuple(found)


# -- station runs ----------------------------------------------------------------------------


def cmd_runs(args: argparse.Namespace) -> int:
    """The newest runs and their upload state: reads only the runs it shows, writes nothing."""
    from station.tofupilot.outbox import Outbox

    config = load_config(args)
    outbox = Outbox(config.data_path, None, api_key_env=config.tofupilot.api_key_env)
    run_dirs = outbox.newest_run_dirs(max(args.limit, 0))
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


# -- station prune -----------------------------------------------------------------------------


def cmd_prune(args: argparse.Namespace) -> int:
    """`station prune --uploaded-before DATE [--delete]`: runs TofuPilot has, uploaded before
    DATE (UTC), listed (a dry run) or deleted. Never a run not uploaded, parked, kept local, or
    in use by another process."""
    from station.tofupilot.outbox import Outbox

    cutoff, shown = _cutoff(args.uploaded_before)
    config = load_config(args)
    outbox = Outbox(config.data_path, None, api_key_env=config.tofupilot.api_key_env)
    candidates = outbox.uploaded_before(cutoff)
    done, freed, left = 0, 0, 0
    for run_dir, state in candidates:
        size = _disk_usage(run_dir)
        when = (state.uploaded_at or "?")[:10]
        if not args.delete:
            print(
                f"would delete {run_dir.name}  (uploaded {when}, run {state.run_id}, {_size(size)})"
            )
            done, freed = done + 1, freed + size
            continue
        try:
            removed = outbox.remove_uploaded(run_dir, cutoff)
        except OSError as exc:
            print(f"not deleted {run_dir.name}: {exc.strerror or exc}")
            left += 1
            continue
        if removed:
            print(f"deleted {run_dir.name}  (uploaded {when}, run {state.run_id}, {_size(size)})")
            done, freed = done + 1, freed + size
        else:
            print(f"kept {run_dir.name}: in use by another process or no longer uploaded")
            left += 1
    outbox.close()
    runs = f"{done} run{'s' * (done != 1)} uploaded before {shown}"
    if not args.delete:
        print(f"{runs} would be deleted, freeing {_size(freed)} (dry run: add --delete)")
    else:
        print(f"deleted {runs}, freed {_size(freed)}" + (f"; {left} kept" if left else ""))
    return EXIT_PASS


def _cutoff(text: str) -> tuple[float, str]:
    """The epoch seconds of `YYYY-MM-DD` (UTC midnight) or an ISO date-time (UTC if naive)."""
    try:
        if len(text.strip()) == 10:
            day = date.fromisoformat(text.strip())
            moment = datetime(day.year, day.month, day.day, tzinfo=UTC)
        else:
            moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
            moment = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    except ValueError:
        raise UsageError(
            f"--uploaded-before {text!r}: not a date; use YYYY-MM-DD (UTC), e.g. 2026-01-01"
        ) from None
    return moment.timestamp(), text.strip()


def _disk_usage(run_dir: Path) -> int:
    """Bytes the run's files take on disk (what deleting them frees)."""
    total = 0
    for folder, _, files in os.walk(run_dir):
        for name in files:
            with contextlib.suppress(OSError):
                stat = os.lstat(os.path.join(folder, name))
                blocks = getattr(stat, "st_blocks", None)
                total += blocks * 512 if blocks is not None else stat.st_size
    return total


def _size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


# -- lines -------------------------------------------------------------------------------------


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
    if state == "local-only":  # a simulated run: the hint starts "local only: simulated run"
        return str(status.hint)
    return f"{state}: {status.message}" if not long else status.message
