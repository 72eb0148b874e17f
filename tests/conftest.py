"""Shared fixtures: write a procedure and a station.yaml into a temp dir and run it for real."""

from __future__ import annotations

import os
import signal
import tempfile
import textwrap
from pathlib import Path
from typing import Any

import pytest

from station.authoring.helpers import Dut
from station.config.model import load_config
from station.config.procedure_loader import load_procedure
from station.engine.runner import Runner
from station.records.model import RunRecord
from station.storage.journal import Journal


def _deliverable_stop_signals() -> None:
    """Undo an inherited 'ignore' on SIGINT and SIGQUIT.

    A shell starts background jobs (`cmd &`, a CI runner's job) with SIGINT and SIGQUIT ignored,
    and an ignored signal stays ignored across exec: every `station` process a test starts would
    then ignore the Ctrl-C the test sends it. Tests must not depend on how pytest was launched,
    so the test processes (and so their children) get the default dispositions back.
    """
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if signal.getsignal(signal.SIGQUIT) == signal.SIG_IGN:
        signal.signal(signal.SIGQUIT, signal.SIG_DFL)


_deliverable_stop_signals()


def _private_lock_dir() -> None:
    """Give this test process (each xdist worker) its own instrument lock directory.

    Twins listen on ports the OS picks, so a port one worker's test used is soon another's; a
    lock still held in one worker (a test's session closed late) must not make another worker's
    unrelated test find its instrument "in use". Processes a test starts inherit the directory,
    so locking between a test and its `station` processes is still real.
    """
    if "STATION_LOCK_DIR" not in os.environ:
        os.environ["STATION_LOCK_DIR"] = tempfile.mkdtemp(prefix="station-test-locks-")


_private_lock_dir()


class Bench:
    """A temp station directory: one procedure module (proc_t.py) and its station.yaml."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def write(
        self, source: str, *, instruments: str = "{}", procedure_yaml: str = "", name: str = "T1"
    ) -> Path:
        (self.root / "proc_t.py").write_text(textwrap.dedent(source), encoding="utf-8")
        extra = textwrap.indent(textwrap.dedent(procedure_yaml), "    ")
        (self.root / "station.yaml").write_text(
            "station: {name: Test bench}\n"
            f"instruments: {instruments}\n"
            "procedures:\n"
            f"  {name}:\n"
            "    module: proc_t.py\n"
            f"{extra}",
            encoding="utf-8",
        )
        return self.root / "station.yaml"

    def config(self):
        return load_config(self.root / "station.yaml")

    def load(self, name: str = "T1", instrument_names=None):
        return load_procedure(name, self.config(), instrument_names)

    def run(
        self,
        source: str | None = None,
        *,
        instruments: dict[str, Any] | None = None,
        journal: bool = False,
        serial: str = "SN-1",
        runner_hook=None,
        **write_kw,
    ) -> RunRecord:
        if source is not None:
            write_kw.setdefault(
                "instruments",
                "{"
                + ", ".join(
                    f"{n}: {{driver: keysight-34461a, resource: 'TCPIP::127.0.0.1::1::SOCKET'}}"
                    for n in (instruments or {})
                )
                + "}",
            )
            self.write(source, **write_kw)
        procedure = self.load()
        self.last_journal = Journal(self.root / "runs") if journal else None
        listeners = [self.last_journal] if self.last_journal is not None else []
        runner = Runner(
            procedure,
            Dut(serial, procedure.part_number, procedure.revision),
            instruments=instruments or {},
            listeners=listeners,
            handle_signals=False,
            cancel_grace_s=0.5,
        )
        if runner_hook:
            runner_hook(runner)
        self.last_runner = runner
        return runner.execute()


@pytest.fixture(autouse=True)
def _no_real_station_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never reach the real TofuPilot, even on a machine where a key is exported, and
    never pick up a developer's station.yaml. Subprocesses inherit this environment."""
    monkeypatch.delenv("TOFUPILOT_API_KEY", raising=False)
    monkeypatch.delenv("STATION_CONFIG", raising=False)


@pytest.fixture
def bench(tmp_path: Path) -> Bench:
    return Bench(tmp_path)
