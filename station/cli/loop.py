"""`station run PROCEDURE --loop`: test unit after unit in one process, the bench kept open.

Serials are read line by line from standard input, a terminal (a barcode scanner types into
it) or a pipe (a launcher or a test feeds them), until end of input or `q`. A scan the
procedure's `serial_pattern` refuses is said, with the pattern, and asked again; nothing runs
for it. After each unit: its verdict, where its record is, and the running counters. Uploads go
on in the background (`station.line.session.Line`).

Exit codes of the loop (whatever the units' verdicts: each unit's is in its record):
- 0: the loop ended normally (`q` or end of input);
- 130: Ctrl-C or a stop signal (SIGTERM, SIGHUP, SIGQUIT): between units the loop just ends;
  during a unit that unit is aborted (teardown and a verified safe state still run, and it is
  recorded ABORTED), then the loop ends;
- 3: the loop could not go on: an instrument was lost and could not be reopened (named), or a
  unit's record is incomplete (its journal could not be written);
- 2: before the first unit, as for a single run: station.yaml, the procedure or the command line.
At every exit the bench is put in its safe state (verified) and closed.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from station.cli.common import EXIT_ABORTED, EXIT_ERROR, EXIT_PASS, bench_resources

if TYPE_CHECKING:
    from station.authoring.helpers import PromptProvider
    from station.authoring.procedure import Procedure
    from station.cli.console import Console
    from station.config.model import StationConfig
    from station.line.events import EventBus
    from station.tofupilot.outbox import Outbox, RunStatus

QUIT_WORDS = frozenset({"q", "quit", "exit"})


def run_loop(
    args: argparse.Namespace,
    config: StationConfig,
    procedure: Procedure,
    serial: str | None,
    console: Console,
    outbox: Outbox,
    prompts: PromptProvider | None,
    bus: EventBus | None,
    operator: str | None,
) -> int:
    """The loop; `serial` (from --serial), if given, is the first unit. Returns the exit code."""
    from station.cli.upload import BackgroundUploader, outbox_for
    from station.line.prompts import LineReader, TerminalPrompts
    from station.line.session import Line, LineStopped, ScanRefused

    def uploader(on_status: Callable[[RunStatus], None]) -> BackgroundUploader:
        # Its own outbox: the uploader's thread is the only one that uses it.
        return BackgroundUploader(outbox_for(config), on_status=on_status)

    reader = prompts.reader if isinstance(prompts, TerminalPrompts) else LineReader()
    line = Line(
        config,
        sim=args.sim,
        sim_fault=args.sim_fault,
        prompts=prompts,
        bus=bus,
        upload=not args.no_upload,
        operator=operator,
        bench=bench_resources,
        outbox=outbox,
        uploader=uploader,
        listeners=[console],
        why_no_prompts="standard input is not a terminal",
        upload_sim=bool(getattr(args, "upload_sim", False)),
    )
    code = EXIT_PASS
    with _signals_end_the_loop():
        try:
            try:
                line.prepare(procedure.id)
            except LineStopped as exc:
                print(f"station: {exc}", file=sys.stderr)
                return EXIT_ERROR
            console.say(
                f"{procedure.id}: one unit after another; scan each serial number "
                "('q' or end of input ends the loop)"
            )
            first = serial
            while True:
                if first is not None:
                    scanned, first = first, None
                else:
                    console.ask("Scan or type the serial number: ")
                    read = reader.readline()
                    if read is None:
                        console.say()
                        break
                    if not reader.isatty():  # a pipe: show what was read, as a terminal would
                        console.say(read)
                    scanned = read
                if scanned.strip().lower() in QUIT_WORDS:
                    break
                if not scanned.strip():
                    continue
                try:
                    record = line.run_unit(procedure.id, scanned)
                except ScanRefused as exc:
                    console.say(console.paint(f"  refused: {exc}", "FAIL") + "; scan again")
                    continue
                except LineStopped as exc:
                    print(f"station: the loop stopped: {exc}", file=sys.stderr)
                    code = EXIT_ERROR
                    break
                result = line.recent[-1]
                for problem in [*result.problems, *result.warnings]:
                    print(f"station: warning: {problem}", file=sys.stderr)
                console.unit_done(result, line.counters)
                if result.incomplete:
                    print(
                        f"station: the record of {result.serial} is incomplete (see the "
                        "warnings above): the loop stops; 'station upload' recovers what the "
                        "journal holds",
                        file=sys.stderr,
                    )
                    code = EXIT_ERROR
                    break
                if record.outcome is not None and record.outcome.value == "ABORTED":
                    code = EXIT_ABORTED
                    break
        except KeyboardInterrupt:
            console.say()
            console.say("station: interrupted: the loop ends")
            code = EXIT_ABORTED
        finally:
            problems = line.close()
            for problem in problems:
                print(f"station: warning: closing the instruments: {problem}", file=sys.stderr)
            console.loop_ended(line.counters, line.recent)
    return code


class _StopSignal(KeyboardInterrupt):
    """SIGTERM, SIGHUP or SIGQUIT between units: ends the loop like Ctrl-C."""


@contextlib.contextmanager
def _signals_end_the_loop() -> Iterator[None]:
    """Between units, SIGTERM/SIGHUP/SIGQUIT end the loop cleanly (safe state, close) as Ctrl-C
    does; during a unit the runner's own handlers abort the unit instead."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, _frame: object) -> None:
        raise _StopSignal(signal.Signals(signum).name)

    names = ("SIGTERM", "SIGHUP", "SIGQUIT")
    previous = {
        number: signal.signal(number, stop)
        for name in names
        if (number := getattr(signal, name, None)) is not None
    }
    try:
        yield
    finally:
        for number, handler in previous.items():
            if handler is not None:
                signal.signal(number, handler)
