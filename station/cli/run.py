"""`station run PROCEDURE`: test one unit, record it, then upload it within a bounded time."""

from __future__ import annotations

import argparse
import contextlib
import getpass
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from station.cli.common import (
    EXIT_CODES,
    EXIT_ERROR,
    UsageError,
    bench_resources,
    display_path,
    load_config,
)

if TYPE_CHECKING:
    from station.authoring.procedure import Procedure
    from station.cli.console import Console
    from station.config.model import StationConfig
    from station.tofupilot.outbox import Outbox

MAX_SERIAL_LENGTH = 100


def cmd_run(args: argparse.Namespace) -> int:
    from station.bench.instruments import check_drivers
    from station.cli.console import Console
    from station.cli.upload import RUN_UPLOAD_BUDGET_S, outbox_for
    from station.config.procedure_loader import load_procedure
    from station.storage.journal import check_writable

    json_out = JsonOut.check(args.json_out)  # before anything is touched: a bad path is a typo
    config = load_config(args)
    procedure = load_procedure(args.procedure, config)
    check_drivers(config, procedure.instrument_names)
    serial = valid_serial(args.serial) if args.serial is not None else None
    check_writable(config.data_path)
    # With `--json-out -` stdout carries the record alone: the run is shown on stderr.
    console = Console(sys.stderr if json_out is not None and json_out.path is None else None)
    outbox = outbox_for(config, timeout_s=RUN_UPLOAD_BUDGET_S)
    with contextlib.closing(outbox):
        # A run still going on in another process holds its claim: only dead ones are recovered.
        def set_aside(run_dir: Path, why: str) -> None:  # reported; the other runs go on
            console.say(f"set aside run {run_dir.name}: {why}")

        for run_dir, recovered in outbox.recover_interrupted(on_damaged=set_aside):
            console.say(
                f"recovered interrupted run {run_dir.name}: {recovered.outcome} "
                f"({recovered.outcome_reason})"
            )
        return _run_and_upload(args, config, procedure, serial, console, outbox, json_out)


def _run_and_upload(
    args: argparse.Namespace,
    config: StationConfig,
    procedure: Procedure,
    serial: str | None,
    console: Console,
    outbox: Outbox,
    json_out: JsonOut | None,
) -> int:
    """The run itself (cmd_run's second half), then its bounded upload."""
    from station.authoring.helpers import Dut
    from station.bench.instruments import InstrumentSet
    from station.engine.runner import Runner
    from station.storage.journal import Journal
    from station.testing import faultpoints
    from station.tofupilot.outbox import RunClaim

    names = procedure.instrument_names
    data_dir = config.data_path
    with (
        bench_resources(config, args.sim, args.sim_fault) as (bench, resources),
        InstrumentSet(config, names, resources) as instruments,
    ):
        if serial is None:
            serial = ask_serial()
        if bench is not None:
            try:
                bench.insert_dut(serial)
            except ValueError as exc:  # `SN-F:mode` names a fault the board does not have
                raise UsageError(f"--sim: serial {serial!r}: {exc}") from None
        dut = Dut(serial, procedure.part_number, procedure.revision, procedure.batch_number)
        journal = Journal(data_dir)
        before_journal, after_claim = faultpoints.listeners()  # empty unless a test armed one
        runner = Runner(
            procedure,
            dut,
            instruments=instruments,
            interrupt_io=instruments.interrupt,
            describe_io=instruments.in_flight,
            # The claim keeps other processes' recovery and uploads away from this run.
            listeners=[
                *before_journal,
                journal,
                RunClaim(outbox.claim, lambda: journal.run_dir),
                *after_claim,
                console,
            ],
            operator=operator_name(args.operator),
            station_name=config.station.name,
            prompt=terminal_prompt(),
        )
        record = runner.execute()

    for listener in (journal, console):
        for failure in [*listener.failures, *listener.warnings]:
            print(f"station: warning: {type(listener).__name__} {failure}", file=sys.stderr)
    if journal.run_dir is not None:
        console.say(f"   record: {display_path(journal.run_dir)}")
    json_written = json_out is None or json_out.write(record.to_json(indent=2))
    if journal.run_dir is not None and not args.no_upload:
        from station.cli.upload import upload_after_run

        upload_after_run(outbox, journal.run_dir, config.tofupilot.api_key_env, console.say)
    outcome = record.outcome.value if record.outcome is not None else "ERROR"
    if journal.failures:
        # The unit may have passed, but its record is incomplete: the line must not take this
        # for a clean PASS. What the journal holds is recovered by `station upload`.
        print(
            f"station: the run ended {outcome} but its record is incomplete: exit 3",
            file=sys.stderr,
        )
        return EXIT_ERROR
    if not json_written:  # the record is kept, but what the caller asked for is missing
        return EXIT_ERROR
    return EXIT_CODES[outcome]  # never depends on the upload


def valid_serial(serial: str) -> str:
    """`serial` stripped, or UsageError if it is empty, too long or not printable."""
    serial = serial.strip()
    if not serial:
        raise UsageError("the serial number is empty")
    if len(serial) > MAX_SERIAL_LENGTH or not serial.isprintable():
        raise UsageError(
            f"serial number {serial[:40]!r} is not valid: use at most "
            f"{MAX_SERIAL_LENGTH} printable characters"
        )
    return serial


def ask_serial() -> str:
    """Prompt the operator (a barcode scanner types into the same prompt)."""
    if not sys.stdin.isatty():
        raise UsageError("no --serial given and no terminal to ask on: pass --serial SN")
    while True:
        try:
            return valid_serial(input("Scan or type the serial number: "))
        except UsageError as exc:
            print(f"  {exc}; try again")
        except EOFError:
            raise UsageError("no serial number given (input closed)") from None


def terminal_prompt() -> Callable[[str], str] | None:
    """How a phase asks the operator something: the terminal's input(), if there is one."""
    if not sys.stdin.isatty():
        return None
    return lambda text: input(f"{text} ")


def operator_name(explicit: str | None) -> str | None:
    """`--operator`, else $STATION_OPERATOR, else the login name (None if there is none)."""
    if explicit:
        return explicit
    if os.environ.get("STATION_OPERATOR"):
        return os.environ["STATION_OPERATOR"]
    try:
        return getpass.getuser()
    except Exception:  # no login name in some containers
        return None


class JsonOut:
    """Where `--json-out` writes the run record: a file, or stdout for `-`.

    `check` runs before the config is even read, so a typo in the path is a usage error
    (exit 2) before any instrument is opened, not a traceback after the unit was tested.
    """

    def __init__(self, path: Path | None) -> None:
        self.path = path  # None: stdout

    @classmethod
    def check(cls, value: str | None) -> JsonOut | None:
        """The destination for `--json-out VALUE`, or UsageError saying why it cannot be."""
        if value is None:
            return None
        if value == "-":
            return cls(None)
        if not value.strip():
            raise UsageError("--json-out: the file name is empty (use - for stdout)")
        path = Path(value).expanduser()
        shown = display_path(path)
        if path.is_dir():
            raise UsageError(f"--json-out {shown}: is a directory; name a file in it")
        parent = path.parent
        if not parent.is_dir():
            what = "is not a directory" if parent.exists() else "does not exist"
            raise UsageError(f"--json-out {shown}: the directory {display_path(parent)} {what}")
        existed = path.exists()
        try:
            with path.open("a", encoding="utf-8"):  # proves it can be written; keeps content
                pass
        except OSError as exc:
            raise UsageError(f"--json-out {shown}: cannot write: {exc.strerror or exc}") from None
        if not existed:
            with contextlib.suppress(OSError):
                path.unlink()  # written after the run; never leave an empty record behind
        return cls(path)

    def write(self, text: str) -> bool:
        """Write the record; on failure say so on stderr and return False (never raises)."""
        if self.path is None:
            sys.stdout.write(text + "\n")
            sys.stdout.flush()
            return True
        try:
            self.path.write_text(text + "\n", encoding="utf-8")
        except OSError as exc:
            print(
                f"station: --json-out {display_path(self.path)}: cannot write the record: "
                f"{exc.strerror or exc} (the run is recorded in its run directory)",
                file=sys.stderr,
            )
            return False
        return True
