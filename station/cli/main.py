"""The `station` command: run, check, list, upload, runs, sim.

Exit codes (DESIGN.md §9): 0 PASS, 1 FAIL, 2 usage or config error, 3 ERROR, 4 TIMEOUT, 130 ABORTED.
Heavy modules (pydantic, pyvisa) are imported inside the commands so `station --help` stays fast.
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import os
import sys
from pathlib import Path
from typing import Any

EXIT_PASS, EXIT_FAIL, EXIT_USAGE, EXIT_ERROR, EXIT_TIMEOUT, EXIT_ABORTED = 0, 1, 2, 3, 4, 130
EXIT_CODES = {
    "PASS": EXIT_PASS,
    "FAIL": EXIT_FAIL,
    "ERROR": EXIT_ERROR,
    "TIMEOUT": EXIT_TIMEOUT,
    "ABORTED": EXIT_ABORTED,
}
MAX_SERIAL_LENGTH = 100


class UsageError(Exception):
    """The command line (or the lack of a terminal) does not allow the command to proceed."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="station", description="Run production test procedures on this bench."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.add_argument(
            "--config", help="station.yaml to use (default: $STATION_CONFIG, else ./station.yaml)"
        )
        return sub

    run = add("run", "run a procedure on one unit")
    run.add_argument("procedure", help="procedure name from station.yaml, e.g. FVT1")
    run.add_argument("--serial", help="unit serial number (prompted for when omitted)")
    run.add_argument("--operator", help="who runs the test (default: $STATION_OPERATOR or login)")
    run.add_argument(
        "--sim", action="store_true", help="use the simulated bench instead of instruments"
    )
    run.add_argument("--sim-fault", metavar="MODE", help="with --sim: board fault to simulate")
    run.add_argument("--json-out", metavar="FILE", help="also write the run record to FILE")
    run.add_argument(
        "--no-upload",
        action="store_true",
        help="record the run but do not upload it now ('station upload' sends it later)",
    )
    run.set_defaults(handler=cmd_run)

    check = add("check", "check the config, the procedures and that every instrument answers")
    check.add_argument("--sim", action="store_true", help="check against the simulated bench")
    check.add_argument(
        "--wire-fault",
        action="append",
        default=[],
        metavar="INSTRUMENT:KIND[:PATTERN]",
        help="with --sim: make a twin misbehave (see `station sim --help`); repeatable",
    )
    check.set_defaults(handler=cmd_check)

    listing = add("list", "list this station's procedures and instruments")
    listing.set_defaults(handler=cmd_list)

    upload = add("upload", "upload every recorded run not in TofuPilot yet")
    upload.add_argument(
        "--retry-parked",
        action="store_true",
        help="also retry runs parked by a server refusal (after fixing what the hint says)",
    )
    upload.set_defaults(handler=_reporting_command("cmd_upload"))

    runs = add("runs", "list recent runs and their upload state, newest first")
    runs.add_argument("--limit", type=int, default=20, metavar="N", help="how many (default 20)")
    runs.set_defaults(handler=_reporting_command("cmd_runs"))

    sim = add("sim", "serve the simulated bench of station.yaml until Ctrl-C")
    sim.add_argument("--fault", metavar="MODE", help="board fault to simulate")
    sim.add_argument(
        "--wire-fault",
        action="append",
        default=[],
        metavar="INSTRUMENT:KIND[:PATTERN]",
        help="make a twin misbehave on the wire; KIND is no-reply, slow, garbage, drop, refuse "
        "or error, PATTERN a regex of the commands affected (slow: seconds; error: "
        'CODE,"TEXT"), e.g. dmm:no-reply:READ, psu:drop:OUTP, dmm:slow:0.5; repeatable',
    )
    sim.set_defaults(handler=cmd_sim)
    return parser


def _reporting_command(name: str):
    """A handler from station.cli_upload, imported when the command runs (not for --help)."""

    def handler(args: argparse.Namespace) -> int:
        from station.cli import upload as cli_upload

        return getattr(cli_upload, name)(args)

    return handler


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from drivers import InstrumentError
    from station.config.model import ConfigError
    from station.config.procedure_loader import ProcedureError
    from station.storage.journal import JournalError

    try:
        return args.handler(args)
    except (ConfigError, ProcedureError, UsageError, JournalError) as exc:
        print(f"station: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except InstrumentError as exc:
        print(f"station: instrument error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("\nstation: interrupted", file=sys.stderr)
        return EXIT_ABORTED


def _load(args: argparse.Namespace) -> Any:
    from station.config.model import find_config_path, load_config

    return load_config(find_config_path(args.config))


@contextlib.contextmanager
def _bench_resources(config: Any, enabled: bool, fault: str | None = None):
    """With --sim, the simulated twins' resource strings; otherwise nothing is replaced.

    This is the one place the framework reaches into `sim`.
    """
    if not enabled:
        yield None, {}
        return
    import sim

    try:
        bench = sim.start_bench(
            {name: inst.driver for name, inst in config.instruments.items()},
            board=config.sim.board,
            fault=fault or config.sim.fault,
            seed=config.sim.seed,
        )
    except ValueError as exc:  # unknown board, fault or simulated model: the message says which
        raise UsageError(f"--sim: {exc}") from None
    try:
        yield bench, bench.resources
    finally:
        bench.close()


def cmd_run(args: argparse.Namespace) -> int:
    from station.bench.instruments import check_drivers
    from station.cli.console import Console
    from station.cli.upload import RUN_UPLOAD_BUDGET_S, outbox_for
    from station.config.procedure_loader import load_procedure
    from station.storage.journal import check_writable

    config = _load(args)
    procedure = load_procedure(args.procedure, config)
    check_drivers(config, procedure.instrument_names)
    serial = _valid_serial(args.serial) if args.serial is not None else None
    check_writable(config.data_path)
    console = Console()
    outbox = outbox_for(config, timeout_s=RUN_UPLOAD_BUDGET_S)
    with contextlib.closing(outbox):
        # A run still going on in another process holds its claim: only dead ones are recovered.
        for run_dir, recovered in outbox.recover_interrupted():
            console.say(
                f"recovered interrupted run {run_dir.name}: {recovered.outcome} "
                f"({recovered.outcome_reason})"
            )
        return _run_and_upload(args, config, procedure, serial, console, outbox)


def _run_and_upload(args, config, procedure, serial, console, outbox) -> int:
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
        _bench_resources(config, args.sim, args.sim_fault) as (bench, resources),
        InstrumentSet(config, names, resources) as instruments,
    ):
        if serial is None:
            serial = _ask_serial()
        if bench is not None:
            bench.insert_dut(serial)
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
                RunClaim(outbox, lambda: journal.run_dir),
                *after_claim,
                console,
            ],
            operator=_operator(args.operator),
            station_name=config.station.name,
            prompt=_terminal_prompt(),
        )
        record = runner.execute()

    for listener in (journal, console):
        for failure in listener.failures:
            print(f"station: warning: {type(listener).__name__} {failure}", file=sys.stderr)
    if journal.run_dir is not None:
        console.say(f"   record: {_display(journal.run_dir)}")
    if args.json_out:
        Path(args.json_out).write_text(record.to_json(indent=2), encoding="utf-8")
    if journal.run_dir is not None and not args.no_upload:
        from station.cli.upload import upload_after_run

        upload_after_run(outbox, journal.run_dir, config.tofupilot.api_key_env, console.say)
    if journal.failures:
        # The unit may have passed, but its record is incomplete: the line must not take this
        # for a clean PASS. What the journal holds is recovered by `station upload`.
        print(
            f"station: the run ended {record.outcome.value} but its record is incomplete: exit 3",
            file=sys.stderr,
        )
        return EXIT_ERROR
    return EXIT_CODES[record.outcome.value]  # never depends on the upload


def cmd_check(args: argparse.Namespace) -> int:
    from drivers import InstrumentError
    from station.bench.instruments import (
        InstrumentSet,
        check_drivers,
        failure_hint,
        measure_round_trip,
    )
    from station.config.procedure_loader import load_procedure

    config = _load(args)
    print(f"config: {_display(config.path)} is valid")
    check_drivers(config)
    for procedure_id in config.procedures:
        procedure = load_procedure(procedure_id, config)
        print(
            f"procedure {procedure_id}: {len(procedure.phases)} phases, "
            f"{len(procedure.teardown)} teardown ({_display(procedure.source_file)})"
        )
    if args.wire_fault and not args.sim:
        raise UsageError("--wire-fault needs --sim")
    failures = 0
    with _bench_resources(config, args.sim) as (bench, resources):
        _apply_wire_faults(bench, args.wire_fault)
        for name, settings in config.instruments.items():
            resource = resources.get(name, settings.resource)
            instruments = InstrumentSet(config, [name], resources)
            try:
                instruments.open()
                item = instruments.opened[0]
                round_trip = measure_round_trip(item.driver)
                print(
                    f"instrument {name}: {settings.driver} at {resource}: {item.identity} "
                    f"(model {item.driver.MODEL} OK; open {item.round_trip_ms:.1f} ms, "
                    f"round trip {round_trip:.2f} ms)"
                )
            except InstrumentError as exc:
                failures += 1
                print(f"instrument {name}: FAILED: {exc}")
                print(f"  hint: {failure_hint(config, name, exc, _display(config.path))}")
            finally:
                instruments.close()
    failures += _check_reporting(config)
    return EXIT_ERROR if failures else EXIT_PASS


def _check_reporting(config: Any) -> int:
    """Print the TofuPilot part of `check`; 1 if a configured key does not work, else 0.

    No key at all is reported but is not a failure: runs are still recorded and queued.
    """
    from station.tofupilot.check import check_tofupilot

    ok, lines = check_tofupilot(config)
    for line in lines:
        print(line)
    key_given = bool(os.environ.get(config.tofupilot.api_key_env, "").strip())
    return 0 if ok or not key_given else 1


def _apply_wire_faults(bench: Any, specs: list[str]) -> None:
    """Inject `--wire-fault` specs into the simulated bench (a bad spec is a usage error)."""
    for spec in specs:
        try:
            bench.set_wire_fault(spec)
        except ValueError as exc:
            raise UsageError(str(exc)) from None


def cmd_list(args: argparse.Namespace) -> int:
    config = _load(args)
    print(f"station {config.station.name} ({_display(config.path)})")
    print("procedures:")
    for name, proc in config.procedures.items():
        unit = " ".join(
            x for x in (proc.part_number, proc.revision and f"rev {proc.revision}") if x
        )
        print(f"  {name:<12} {proc.module}" + (f"  ({unit})" if unit else ""))
    print("instruments:")
    for name, inst in config.instruments.items():
        print(f"  {name:<12} {inst.driver:<18} {inst.resource}")
    return EXIT_PASS


def cmd_sim(args: argparse.Namespace) -> int:
    import threading

    config = _load(args)
    with _bench_resources(config, True, args.fault) as (bench, resources):
        _apply_wire_faults(bench, args.wire_fault)
        print("simulated bench running; point station.yaml (or your script) at:")
        for name, resource in resources.items():
            print(f"  {name:<12} {resource}")
        print("Ctrl-C to stop.", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()
    return EXIT_PASS


def _valid_serial(serial: str) -> str:
    serial = serial.strip()
    if not serial:
        raise UsageError("the serial number is empty")
    if len(serial) > MAX_SERIAL_LENGTH or not serial.isprintable():
        raise UsageError(
            f"serial number {serial[:40]!r} is not valid: use at most "
            f"{MAX_SERIAL_LENGTH} printable characters"
        )
    return serial


def _ask_serial() -> str:
    """Prompt the operator (a barcode scanner types into the same prompt)."""
    if not sys.stdin.isatty():
        raise UsageError("no --serial given and no terminal to ask on: pass --serial SN")
    while True:
        try:
            return _valid_serial(input("Scan or type the serial number: "))
        except UsageError as exc:
            print(f"  {exc}; try again")
        except EOFError:
            raise UsageError("no serial number given (input closed)") from None


def _terminal_prompt():
    if not sys.stdin.isatty():
        return None
    return lambda text: input(f"{text} ")


def _operator(explicit: str | None) -> str | None:
    if explicit:
        return explicit
    if os.environ.get("STATION_OPERATOR"):
        return os.environ["STATION_OPERATOR"]
    try:
        return getpass.getuser()
    except Exception:  # no login name in some containers
        return None


def _display(path: str | os.PathLike[str]) -> str:
    try:
        relative = os.path.relpath(path)
    except ValueError:
        return str(path)
    return relative if not relative.startswith("..") else str(path)


# -- TofuPilot upload: `station run`'s bounded upload, `station upload`, `station runs` ----------
