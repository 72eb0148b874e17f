"""Shared pieces of the bad-input and disk-trouble chaos tests.

- `FUZZ` / `SOAK`: hypothesis settings. The default suite is derandomized (the same examples on
  every machine, every run); the soak (`-m soak`) draws many more, from a fixed seed.
- `soak_only`: a fixture that skips a test unless `-m soak` selected it.
- `station_cli`: runs `python -m station ...` as the operator does and returns what they saw.
- `journal_events` / `assert_record_round_trips`: what every chaos run must leave on disk.
- `tmpfs`: a small RAM disk mounted for one test (skipped, with the reason, where mounting is
  refused), always unmounted.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

from station.records.model import RunRecord
from station.storage.journal import JOURNAL, RUN_JSON, read_record

REPO = Path(__file__).resolve().parents[2]

_QUIET = [HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.data_too_large]

#: The default suite: the same examples every run, few enough to stay fast.
FUZZ = settings(derandomize=True, deadline=None, suppress_health_check=_QUIET, database=None)

#: The soak: many more examples (still reproducible: hypothesis prints the failing one).
SOAK = settings(
    max_examples=int(os.environ.get("STATION_FUZZ_EXAMPLES", "2000")),
    deadline=None,
    suppress_health_check=_QUIET,
    database=None,
)


@pytest.fixture
def soak_only(request: pytest.FixtureRequest) -> None:
    """Soak tests run only when asked for (`-m soak`): minutes of work, not for every commit."""
    if "soak" not in (request.config.option.markexpr or ""):
        pytest.skip("a soak: run it with -m soak")


@dataclass
class Seen:
    """What the operator saw from one `station` command."""

    code: int
    out: str
    err: str

    def assert_no_traceback(self) -> None:
        assert "Traceback (most recent call last)" not in self.err + self.out, self.err[-3000:]


def station_cli(
    cwd: Path,
    *args: str,
    timeout: float = 60,
    preexec: Callable[[], None] | None = None,
    env_extra: dict[str, str] | None = None,
) -> Seen:
    env = {**os.environ, "STATION_OPERATOR": "tester", "NO_COLOR": "1"}
    env["STATION_LOCK_DIR"] = str(cwd / ".locks")
    env.pop("STATION_CONFIG", None)
    env.pop("TOFUPILOT_API_KEY", None)
    env.update(env_extra or {})
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    done = subprocess.run(
        [sys.executable, "-m", "station", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        errors="replace",
        timeout=timeout,
        env=env,
        preexec_fn=preexec,
    )
    return Seen(done.returncode, done.stdout, done.stderr)


def journal_events(run_dir: Path) -> list[dict[str, Any]]:
    """Every line of the run's journal, parsed: a journal is valid JSON lines, always. Lines
    end at `\\n` only: JSON strings may hold U+0085, U+2028 and U+2029 raw."""
    lines = (run_dir / JOURNAL).read_bytes().decode("utf-8").split("\n")
    assert lines.pop() == "", "the journal ends with a whole line"
    return [json.loads(line) for line in lines]


def assert_record_round_trips(run_dir: Path, record: RunRecord | None = None) -> RunRecord:
    """run.json reads back as the record the runner returned (when given), and the journal
    parses line by line."""
    journal_events(run_dir)
    stored = read_record(run_dir)
    if record is not None:
        assert stored.run_id == record.run_id
        assert stored.outcome == record.outcome
        assert [(p.name, p.outcome) for p in stored.phases] == [
            (p.name, p.outcome) for p in record.phases
        ]
    again = RunRecord.from_json(stored.to_json())
    assert again == stored
    return stored


def only_run_dir(data_dir: Path) -> Path:
    (run_dir,) = [d for d in data_dir.iterdir() if d.is_dir() and d.name[0] != "."]
    return run_dir


def no_temp_files(run_dir: Path) -> list[str]:
    """Leftovers of an atomic write that did not complete (there must be none)."""
    return [p.name for p in run_dir.iterdir() if p.name.startswith(f".{RUN_JSON}.")]


@contextlib.contextmanager
def tmpfs(mount_point: Path, size: str, *, read_only: bool = False) -> Iterator[Path]:
    """A tmpfs of `size` at `mount_point` for the duration; skips the test if it cannot mount."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root (tests here run as root in CI)")
    mount_point.mkdir(parents=True, exist_ok=True)
    options = f"size={size}" + (",ro" if read_only else "")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"this machine refuses to mount a tmpfs: {done.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], capture_output=True, check=False)


def remount_read_only(mount_point: Path) -> None:
    """Make a mounted tmpfs read-only (skips the test if the machine refuses)."""
    done = subprocess.run(
        ["mount", "-o", "remount,ro", str(mount_point)], capture_output=True, text=True
    )
    if done.returncode != 0:
        pytest.skip(f"this machine refuses to remount a tmpfs read-only: {done.stderr.strip()}")


def fill(directory: Path, name: str = "filler") -> Path:
    """Write into `directory` until its file system is full; the file that holds it all."""
    path = directory / name
    chunk = b"\0" * 4096
    with open(path, "ab", buffering=0) as handle:
        with contextlib.suppress(OSError):
            while True:
                handle.write(chunk)
        with contextlib.suppress(OSError):  # the last partial page
            while True:
                handle.write(b"\0")
    return path
