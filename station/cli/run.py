"""`station run PROCEDURE`: test one unit, record it, then upload it within a bounded time."""

from __future__ import annotations

import argparse
import contextlib
import getpass
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from station.cli.common import (
    EXIT_CODES,
    EXIT_ERROR,
    UsageError,
    bench_resources,
    display_path,
    load_config,
)

if TYPE_CHECKING:
    from station.authoring.helpers import PromptProvider
    from station.authoring.procedure import Procedure
    from station.cli.console import Console
    from station.config.model import StationConfig
    from station.line.events import EventBus, NdjsonWriter
    from station.tofupilot.outbox import Outbox

MAX_SERIAL_LENGTH = 100


def cmd_run(args: argparse.Namespace) -> int:
    from station.bench.instruments import check_drivers
    from station.cli.console import Console
    from station.cli.upload import RUN_UPLOAD_BUDGET_S, outbox_for
    from station.config.procedure_loader import load_procedure
    from station.line.prompts import check_prompts
    from station.storage.journal import check_writable

    json_out = JsonOut.check(args.json_out)  # before anything is touched: a bad path is a typo
    events_out = EventsOut.check(getattr(args, "events", None), json_out)
    config = load_config(args)
    procedure = load_procedure(args.procedure, config)
    check_drivers(config, procedure.instrument_names)
    serial = valid_serial(args.serial) if args.serial is not None else None
    if getattr(args, "loop", False):
        check_loop_options(args)
    elif serial is not None:
        checked_scan(config, args.procedure, serial)  # a bad scan: exit 2, nothing has run
    check_writable(config.data_path)
    # With `--json-out -` or `--events -` stdout carries the record or the events alone: the
    # run is shown on stderr.
    quiet_stdout = any(out is not None and out.path is None for out in (json_out, events_out))
    console = Console(sys.stderr if quiet_stdout else None)
    prompts, no_prompts_why = prompt_provider(args, console.stream)
    check_prompts(procedure, prompts, why_none=no_prompts_why)  # before any instrument opens
    bus = events_out.open() if events_out is not None else None
    outbox = outbox_for(config, timeout_s=RUN_UPLOAD_BUDGET_S)
    with contextlib.closing(outbox), contextlib.ExitStack() as closing:
        if events_out is not None:
            closing.callback(events_out.close)

        # A run still going on in another process holds its claim: only dead ones are recovered.
        def set_aside(run_dir: Path, why: str) -> None:  # reported; the other runs go on
            console.say(f"set aside run {run_dir.name}: {why}")

        for run_dir, recovered in outbox.recover_interrupted(on_damaged=set_aside):
            console.say(
                f"recovered interrupted run {run_dir.name}: {recovered.outcome} "
                f"({recovered.outcome_reason})"
            )
        if getattr(args, "loop", False):
            from station.cli.loop import run_loop

            operator = operator_name(args.operator)
            return run_loop(
                args, config, procedure, serial, console, outbox, prompts, bus, operator
            )
        return _run_and_upload(
            args, config, procedure, serial, console, outbox, json_out, prompts=prompts, bus=bus
        )


def _run_and_upload(
    args: argparse.Namespace,
    config: StationConfig,
    procedure: Procedure,
    serial: str | None,
    console: Console,
    outbox: Outbox,
    json_out: JsonOut | None,
    *,
    prompts: PromptProvider | None = None,
    bus: EventBus | None = None,
) -> int:
    """The run itself (cmd_run's second half), then its bounded upload."""
    from station.authoring.helpers import Dut
    from station.bench.instruments import InstrumentSet
    from station.bench.io_trace import TraceListener, tracing
    from station.engine.runner import Runner
    from station.line.events import EventListener
    from station.line.session import publish_prompts, unit_identity
    from station.storage.journal import Journal
    from station.testing import faultpoints

    names = procedure.instrument_names
    data_dir = config.data_path
    if serial is None and not getattr(args, "sim_replay", None):
        # Scanned before the bench opens: a unit its route refuses never gets powered.
        serial = ask_serial(lambda scanned: checked_scan(config, procedure.id, scanned))
    if serial is not None:  # requires_passed and the retest note, before any instrument opens
        from station.cli.history import check_route

        simulated, ask = bool(args.sim), not args.no_upload
        check_route(config, procedure.id, serial, console, simulated=simulated, ask=ask)
    with (
        bench_resources(config, args.sim, args.sim_fault, replay=replay_dir(args)) as (
            bench,
            resources,
        ),
        tracing(getattr(args, "trace_io", False)) as io_trace,  # after: it sees divergences
        InstrumentSet(config, names, resources) as instruments,
    ):
        if serial is None and getattr(args, "sim_replay", None):  # the unit it recorded
            serial = getattr(bench, "serial_number", None)
        if serial is None:
            serial = ask_serial(lambda scanned: checked_scan(config, procedure.id, scanned))
        if bench is not None:
            try:
                bench.insert_dut(serial)
            except ValueError as exc:  # `SN-F:mode` names a fault the board does not have
                raise UsageError(f"--sim: serial {serial!r}: {exc}") from None
        unit = unit_identity(config, procedure.id, serial)  # the scan's fields, else station.yaml's
        dut = Dut(serial, unit.part_number, unit.revision, unit.batch_number)
        events = (
            EventListener(
                bus,
                phases=[ph.name for ph in procedure.all_phases],
                run_dir=lambda: journal.run_dir,
            )
            if bus is not None
            else None
        )
        journal = Journal(data_dir, claim=outbox.claim)  # locked before its first write
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
                *([TraceListener(io_trace, lambda: journal.run_dir)] if io_trace else []),
                journal,
                *after_claim,
                *([events] if events is not None else []),
                console,
            ],
            operator=operator_name(args.operator),
            station_name=config.station.name,
            prompt=(
                publish_prompts(prompts, bus, lambda: events.run_id)
                if prompts is not None and bus is not None and events is not None
                else prompts
            ),
        )
        # Simulated runs are marked before the first event, and stay local unless allowed.
        simulated = bool(args.sim or getattr(args, "sim_replay", None))
        runner.record.simulated = simulated
        runner.record.upload_simulated = simulated and bool(getattr(args, "upload_sim", False))
        record = runner.execute()

    for listener in (journal, console):
        for failure in [*listener.failures, *listener.warnings]:
            print(f"station: warning: {type(listener).__name__} {failure}", file=sys.stderr)
    for failure in io_trace.errors if io_trace is not None else []:
        print(f"station: warning: --trace-io: {failure}", file=sys.stderr)
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


def replay_dir(args: argparse.Namespace) -> str | None:
    """`--sim-replay RUN_DIR`, checked against the options it replaces (a usage error)."""
    run_dir: str | None = getattr(args, "sim_replay", None)
    if run_dir is None:
        return None
    if args.sim or args.sim_fault:
        option = "--sim" if args.sim else "--sim-fault"
        raise UsageError(f"--sim-replay replaces the simulated bench: drop {option}")
    return run_dir


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


def ask_serial(check: Callable[[str], object] | None = None) -> str:
    """Prompt the operator (a barcode scanner types into the same prompt) until a serial that
    `check` accepts (it raises UsageError saying why not, e.g. the serial pattern)."""
    if not sys.stdin.isatty():
        raise UsageError("no --serial given and no terminal to ask on: pass --serial SN")
    while True:
        try:
            serial = valid_serial(input("Scan or type the serial number: "))
            if check is not None:
                check(serial)
            return serial
        except UsageError as exc:
            print(f"  {exc}; try again")
        except EOFError:
            raise UsageError("no serial number given (input closed)") from None


def checked_scan(config: StationConfig, procedure: str, serial: str) -> str:
    """`serial` if the procedure's `serial_pattern` (if any) matches it whole; else UsageError
    showing the pattern (exit 2: nothing has run)."""
    from station.line.session import ScanRefused, unit_identity

    try:
        return unit_identity(config, procedure, serial).serial_number
    except ScanRefused as exc:
        raise UsageError(str(exc)) from None


def check_loop_options(args: argparse.Namespace) -> None:
    """What `--loop` cannot be combined with (a usage error, before anything runs)."""
    if args.json_out is not None:
        raise UsageError(
            "--json-out writes one record: with --loop use --events (every unit's events as "
            "NDJSON) or the run directories"
        )
    for option, given in (
        ("--sim-replay", getattr(args, "sim_replay", None)),
        ("--trace-io", getattr(args, "trace_io", False)),
    ):
        if given:
            raise UsageError(f"{option} records or replays one unit: run it without --loop")


def prompt_provider(args: argparse.Namespace, output: TextIO) -> tuple[PromptProvider | None, str]:
    """Who answers the phases' `run.prompt()`: `--answers FILE`, else the terminal (stdin a
    TTY), else nobody; and, for nobody, why (said in the load-time error)."""
    from station.line.prompts import AnswersFile, AnswersFileError, TerminalPrompts

    answers = getattr(args, "answers", None)
    if answers is not None:
        try:
            return AnswersFile(Path(answers).expanduser()), ""
        except AnswersFileError as exc:
            raise UsageError(str(exc)) from None
    if sys.stdin.isatty():
        return TerminalPrompts(output=output), ""
    return None, "standard input is not a terminal"


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


class EventsOut:
    """Where `--events` writes the run's events as NDJSON: a file (appended to), or stdout for
    `-` (then stdout carries the events alone: the console goes to stderr)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path  # None: stdout
        self._writer: NdjsonWriter | None = None

    @classmethod
    def check(cls, value: str | None, json_out: JsonOut | None) -> EventsOut | None:
        """The destination for `--events VALUE`, or UsageError saying why it cannot be."""
        if value is None:
            return None
        if value == "-":
            if json_out is not None and json_out.path is None:
                raise UsageError("--events - and --json-out - cannot both have stdout")
            return cls(None)
        if not value.strip():
            raise UsageError("--events: the file name is empty (use - for stdout)")
        path = Path(value).expanduser()
        shown = display_path(path)
        if path.is_dir():
            raise UsageError(f"--events {shown}: is a directory; name a file in it")
        if not path.parent.is_dir():
            raise UsageError(f"--events {shown}: the directory {display_path(path.parent)} "
                             "does not exist")  # fmt: skip
        if json_out is not None and json_out.path is not None and json_out.path == path:
            raise UsageError(f"--events {shown}: --json-out writes the same file")
        try:
            with path.open("a", encoding="utf-8"):
                pass
        except OSError as exc:
            raise UsageError(f"--events {shown}: cannot write: {exc.strerror or exc}") from None
        return cls(path)

    def open(self) -> EventBus:
        """A bus whose every event is written, one JSON line each, flushed at once."""
        from station.line.events import EventBus, NdjsonWriter

        self._writer = NdjsonWriter(self.path)
        bus = EventBus()
        bus.add_sink(self._writer)
        return bus

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
