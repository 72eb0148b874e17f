"""The `station` command: its parser, and the dispatch of each command to its module.

Exit codes (`station.cli.common`): 0 PASS, 1 FAIL, 2 usage or config error, 3 ERROR,
4 TIMEOUT, 130 ABORTED (`station upload` adds 5 and 6). Each command lives in its own module
(`run`, `check`, `listing`, `upload`, `history`, `sim`, `serve`), imported only when that
command runs, so `station --help` never pays for pydantic, httpx or pyvisa.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import logging
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable
from typing import TextIO, cast

from station import __version__
from station.cli.common import EXIT_ABORTED, EXIT_ERROR, EXIT_USAGE, UsageError

DEBUG_ENV_VAR = "STATION_DEBUG"  # set to 1 to see the traceback of an unexpected error
MAX_ERROR_LINE = 500  # characters of an unexpected exception's message shown
STRAY_THREAD_WAIT_S = 5.0  # how long a finished command waits for threads a phase left running

Handler = Callable[[argparse.Namespace], int]


def _command(target: str) -> Handler:
    """A handler given as "module:function" in station.cli, imported when the command runs."""
    module_name, function_name = target.split(":")

    def handler(args: argparse.Namespace) -> int:
        module = importlib.import_module(f"station.cli.{module_name}")
        function: Handler = getattr(module, function_name)
        return function(args)

    return handler


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="station", description="Run production test procedures on this bench."
    )
    parser.add_argument("--version", action="version", version=f"station {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    def add(name: str, help_text: str, target: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.add_argument(
            "--config", help="station.yaml to use (default: $STATION_CONFIG, else ./station.yaml)"
        )
        sub.set_defaults(handler=_command(target))
        return sub

    run = add("run", "run a procedure on one unit", "run:cmd_run")
    run.add_argument("procedure", help="procedure name from station.yaml, e.g. FVT1")
    run.add_argument("--serial", help="unit serial number (prompted for when omitted)")
    run.add_argument("--operator", help="who runs the test (default: $STATION_OPERATOR or login)")
    run.add_argument(
        "--sim", action="store_true", help="use the simulated bench instead of instruments"
    )
    run.add_argument("--sim-fault", metavar="MODE", help="with --sim: board fault to simulate")
    run.add_argument(
        "--json-out", metavar="FILE", help="also write the run record to FILE ('-': stdout)"
    )
    run.add_argument(
        "--no-upload",
        action="store_true",
        help="record the run but do not upload it now ('station upload' sends it later)",
    )
    run.add_argument(
        "--upload-sim",
        action="store_true",
        help="with --sim: upload the simulated run even to a TofuPilot that is not on loopback",
    )
    run.add_argument(
        "--loop",
        action="store_true",
        help="test unit after unit in one process, serials read until end of input or 'q'",
    )
    run.add_argument(
        "--answers",
        metavar="FILE",
        help="answer run.prompt() from this JSON file (keyed by prompt key or text)",
    )
    run.add_argument(
        "--events",
        metavar="FILE",
        help="write the run's events as NDJSON to FILE ('-': stdout)",
    )
    run.add_argument(
        "--trace-io",
        action="store_true",
        help="record every instrument command and reply into the run directory and attach it",
    )
    run.add_argument(
        "--sim-replay",
        metavar="RUN_DIR",
        help="simulate the bench by replaying the I/O trace recorded in RUN_DIR (--trace-io)",
    )

    check = add(
        "check",
        "check the config, the procedures and that every instrument answers",
        "check:cmd_check",
    )
    check.add_argument("--sim", action="store_true", help="check against the simulated bench")
    check.add_argument(
        "--wire-fault",
        action="append",
        default=[],
        metavar="INSTRUMENT:KIND[:PATTERN]",
        help="with --sim: make a twin misbehave (see `station sim --help`); repeatable",
    )

    add("list", "list this station's procedures and instruments", "listing:cmd_list")

    upload = add("upload", "upload every recorded run not in TofuPilot yet", "upload:cmd_upload")
    upload.add_argument(
        "--retry-parked",
        action="store_true",
        help="also retry runs parked by a server refusal (after fixing what the hint says)",
    )
    upload.add_argument(
        "--watch",
        action="store_true",
        help="keep running: upload runs as they come due, until SIGTERM or Ctrl-C",
    )

    prune = add(
        "prune",
        "delete run directories already uploaded (a dry run unless --delete)",
        "upload:cmd_prune",
    )
    prune.add_argument(
        "--uploaded-before",
        required=True,
        metavar="DATE",
        help="runs uploaded before this date (YYYY-MM-DD, UTC) are pruned",
    )
    prune.add_argument(
        "--delete", action="store_true", help="delete them (without it, only list them)"
    )

    history = add(
        "history",
        "list a unit's runs, from TofuPilot and this station, newest first",
        "history:cmd_history",
    )
    history.add_argument("serial", help="the unit's serial number")
    history.add_argument("--limit", type=int, default=50, metavar="N", help="at most N runs")

    runs = add("runs", "list recent runs and their upload state, newest first", "upload:cmd_runs")
    runs.add_argument("--limit", type=int, default=20, metavar="N", help="how many (default 20)")

    sim = add("sim", "serve the simulated bench of station.yaml until Ctrl-C", "sim:cmd_sim")
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
    sim.add_argument(
        "--port",
        type=int,
        metavar="BASE",
        help="serve the twins on ports BASE, BASE+1, ... (stable across restarts)",
    )
    sim.add_argument("--trace", action="store_true", help="print what each twin receives")
    sim.add_argument(
        "--replay",
        metavar="RUN_DIR",
        help="serve twins that answer from the I/O trace recorded in RUN_DIR (--trace-io)",
    )

    serve = add(
        "serve",
        "serve the operator page and its JSON API for this station",
        "serve:cmd_serve",
    )
    serve.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1; any other requires a token)",
    )
    serve.add_argument("--port", type=int, default=8080, help="port (default 8080)")
    serve.add_argument("--sim", action="store_true", help="run units on the simulated bench")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line `argv` (default: the process's own) and return its exit code.

    Called as the process's entry point (`argv` None), it also makes sure the process ends:
    a thread a procedure started and never stopped cannot hold it past `STRAY_THREAD_WAIT_S`.
    """
    stdout = sys.stdout
    sys.stdout = cast(TextIO, QuietPipe(stdout))  # `station runs | head` must not traceback
    try:
        code = _dispatch(argv)
        if argv is None:
            end_stray_threads(code)
    except KeyboardInterrupt:  # between the command's own handling and the end
        print("\nstation: interrupted", file=sys.stderr)
        code = EXIT_ABORTED
        if argv is None:
            end_stray_threads(code)
    finally:
        sys.stdout = stdout
    return code


def _dispatch(argv: list[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        # Like a missing required argument: the commands on stderr, the usage exit code.
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    from drivers import InstrumentError
    from station.config.errors import ConfigError
    from station.config.procedure_loader import ProcedureError
    from station.storage.journal import JournalError

    handler: Handler = args.handler
    try:
        return handler(args)
    except (ConfigError, ProcedureError, UsageError, JournalError) as exc:
        print(f"station: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except InstrumentError as exc:
        print(f"station: instrument error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("\nstation: interrupted", file=sys.stderr)
        return EXIT_ABORTED
    except Exception as exc:
        # A bug (ours or a library's): never exit 1, which says the unit FAILED.
        return internal_error(exc)


def internal_error(exc: BaseException) -> int:
    """Report an unexpected exception in one line (the traceback with STATION_DEBUG=1)."""
    if os.environ.get(DEBUG_ENV_VAR, "") not in ("", "0"):
        traceback.print_exception(exc, file=sys.stderr)
    text = " ".join(str(exc).split())
    if len(text) > MAX_ERROR_LINE:
        text = text[: MAX_ERROR_LINE - 3] + "..."
    print(
        f"station: internal error: {type(exc).__name__}"
        + (f": {text}" if text else "")
        + f" (exit {EXIT_ERROR}; set {DEBUG_ENV_VAR}=1 for the traceback)",
        file=sys.stderr,
    )
    return EXIT_ERROR


class QuietPipe(io.TextIOBase):
    """stdout that goes quiet when its reader goes away (`station runs | head`).

    The first BrokenPipeError points file descriptor 1 at the null device and drops everything
    written after it, so the command carries on (a run still records and uploads its unit) and
    exits with its own code, without a traceback and without the interpreter's complaint at
    exit.
    """

    def __init__(self, stream: TextIO) -> None:
        super().__init__()
        self._stream = stream
        self._broken = False

    @property
    def encoding(self) -> str:  # type: ignore[override]  # TextIOBase types it as a field
        return self._stream.encoding

    def write(self, text: str) -> int:
        if not self._broken:
            try:
                return self._stream.write(text)
            except BrokenPipeError:
                self._go_quiet()
        return len(text)

    def flush(self) -> None:
        if not self._broken:
            try:
                self._stream.flush()
            except BrokenPipeError:
                self._go_quiet()

    def isatty(self) -> bool:
        return not self._broken and self._stream.isatty()

    def fileno(self) -> int:
        return self._stream.fileno()

    def _go_quiet(self) -> None:
        self._broken = True
        with contextlib.suppress(OSError, ValueError):
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, self._stream.fileno())  # what is still buffered goes nowhere, quietly
            os.close(null)


def end_stray_threads(code: int, wait_s: float | None = None) -> None:
    """Return once every non-daemon thread has ended, waiting at most `wait_s` in all.

    Python waits for such threads at exit, for ever: a phase that started one (and a timed-out
    phase cannot be made to stop it) would hang `station run` after the unit's verdict is
    known. After the wait, name the threads still running and end the process with `code`
    (everything written is flushed first; the instruments were closed when the run ended).
    Ctrl-C ends the wait at once; it never interrupts this function half-way (an exception
    escaping here would leave the process to Python's unbounded wait).
    """
    wait_s = STRAY_THREAD_WAIT_S if wait_s is None else wait_s
    stray = _stray_threads()
    if not stray:
        return
    interrupted = threading.Event()
    with contextlib.suppress(ValueError):  # only the main thread may set a signal handler
        signal.signal(signal.SIGINT, lambda signum, frame: interrupted.set())
    with contextlib.suppress(OSError):
        sys.stdout.flush()  # what the command printed comes before the wait
    print(
        f"station: waiting up to {wait_s:g} s for {_names(stray)} started during the command",
        file=sys.stderr,
        flush=True,
    )
    deadline = time.monotonic() + wait_s
    while not interrupted.is_set() and time.monotonic() < deadline:
        left = _stray_threads()
        if not left:
            return
        left[0].join(min(0.1, max(0.0, deadline - time.monotonic())))
    left = _stray_threads()
    if not left:
        return
    print(
        f"station: {_names(left)} still running: exiting without "
        + ("it" if len(left) == 1 else "them")
        + f" (exit {code})",
        file=sys.stderr,
    )
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


def _names(threads: list[threading.Thread]) -> str:
    names = ", ".join(repr(thread.name) for thread in threads)
    return f"thread {names}" if len(threads) == 1 else f"threads {names}"


def _stray_threads() -> list[threading.Thread]:
    current = threading.current_thread()
    return [
        thread
        for thread in threading.enumerate()
        if thread is not current and not thread.daemon and thread.is_alive()
    ]
