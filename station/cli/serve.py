"""`station serve`: the operator page and its JSON API for this station, until Ctrl-C.

One process holds the line (`station.line.Line`: instruments opened once, safe-stated between
units, uploads in the background) and serves the page (`station.web`). Bound to loopback
(the default, 127.0.0.1) it needs no token; any other `--host` requires one: the environment's
`STATION_SERVE_TOKEN`, else a fresh one, printed in the page's address at start.

Ctrl-C or SIGTERM stops the server: a unit under test is aborted (its teardown and the safe
state still run, and its record is written), the event streams end, the bench is made safe and
closed, uploads still going get a few seconds (what is not sent stays queued for
`station upload`). The exit code is then 0.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import sys
import threading
from types import FrameType
from typing import TYPE_CHECKING, Any

from station.cli.common import (
    EXIT_ERROR,
    EXIT_PASS,
    UsageError,
    bench_resources,
    display_path,
    load_config,
)

if TYPE_CHECKING:
    from station.config.model import StationConfig
    from station.line.events import EventBus
    from station.line.prompts import PagePrompts
    from station.line.session import Line
    from station.tofupilot.outbox import Outbox
    from station.web.hub import StationHub

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def cmd_serve(args: argparse.Namespace) -> int:
    from station.cli.upload import outbox_for
    from station.line.events import EventBus
    from station.line.prompts import PagePrompts
    from station.storage.journal import check_writable
    from station.web.security import TOKEN_ENV, new_token

    host = args.host.strip()
    if not host:
        raise UsageError("--host is empty (use 127.0.0.1 for this machine only)")
    if not 0 <= args.port <= 65535:
        raise UsageError(f"--port {args.port}: not a port number (0-65535; 0: any free port)")
    token = _token(host, os.environ.get(TOKEN_ENV), new_token)
    config = load_config(args)
    check_writable(config.data_path)
    sock = listen_socket(host, args.port)  # before the bench: a busy port is a usage error at once
    bus = EventBus()
    prompts = PagePrompts()
    outbox = outbox_for(config)
    for run_dir, recovered in outbox.recover_interrupted(
        on_damaged=lambda run_dir, why: print(f"set aside run {run_dir.name}: {why}")
    ):
        print(f"recovered interrupted run {run_dir.name}: {recovered.outcome}")
    try:
        return _serve(args, config, host, token, sock, bus, prompts, outbox)
    finally:
        sock.close()


def _serve(
    args: argparse.Namespace,
    config: StationConfig,
    host: str,
    token: str | None,
    sock: socket.socket,
    bus: EventBus,
    prompts: PagePrompts,
    outbox: Outbox,
) -> int:
    """cmd_serve's second half: the line, the hub and the server, closed in that order's
    reverse whatever happens."""
    import uvicorn

    from station.cli.run import operator_name
    from station.line.session import Line
    from station.web.app import create_app
    from station.web.security import TOKEN_ENV, Guard

    line = Line(
        config,
        sim=args.sim,
        prompts=prompts,
        bus=bus,
        operator=operator_name(None),
        bench=bench_resources,
        outbox=outbox,
        handle_signals=False,  # units run on a worker thread; this module handles signals
    )
    try:
        hub = build_hub(line, config, bus, prompts)
    except BaseException:
        line.close()
        outbox.close()
        raise
    guard = Guard(bind_host=host, token=token)
    app = create_app(hub, guard)
    server = _Server(
        uvicorn.Config(
            app,
            log_level="warning",
            access_log=False,  # a request's address may carry ?token=: never logged
            lifespan="on",
            timeout_graceful_shutdown=5,
        ),
        hub,
    )
    port = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{port}/"
    print(
        f"station serve: {config.station.name}: {len(line.procedures)} procedure(s)"
        + (", simulated bench" if args.sim else "")
    )
    print(f"  data: {display_path(config.data_path)}")
    print(f"  open {url}" + (f"?token={token}" if token else ""))
    if token and not os.environ.get(TOKEN_ENV):
        print(f"  (a new token; set {TOKEN_ENV} to keep one across restarts)")
    print("Ctrl-C to stop.", flush=True)
    problems: list[str] = []
    try:
        server.run(sockets=[sock])
    finally:
        hub.close()
        problems = line.close()
        outbox.close()
    for problem in problems:
        print(f"station: closing the bench: {problem}", file=sys.stderr)
    print("stopped", flush=True)
    return EXIT_ERROR if problems else EXIT_PASS


def build_hub(line: Line, config: StationConfig, bus: Any, prompts: Any) -> StationHub:
    """The hub for `line`: every procedure loaded and checked first (a mistake is reported
    now, with its file and line, not when the first unit is scanned)."""
    from station.web.hub import ProcedureInfo, StationHub

    procedures = {}
    for name in line.procedures:
        loaded = line.load(name)
        settings = config.procedures[name]
        procedures[name] = ProcedureInfo(
            name=name,
            directory=line.procedure_dir(name),
            serial_pattern=settings.serial_pattern,
            part_number=settings.part_number,
            revision=settings.revision,
            phases=[phase.name for phase in loaded.all_phases],
        )
    return StationHub(
        line,
        bus,
        prompts,
        station_name=config.station.name,
        simulated=line.sim,
        procedures=procedures,
        counters=lambda: line.counters.to_dict(),
        recent=lambda: [unit.to_dict() for unit in reversed(line.recent)],
    )


def _token(host: str, from_env: str | None, generate: Any) -> str | None:
    """The token this bind requires: None on loopback, else the environment's or a new one."""
    from station.web.security import MIN_TOKEN_LENGTH, TOKEN_ENV, is_loopback

    if is_loopback(host):
        return None
    if from_env is not None and from_env.strip():
        token = from_env.strip()
        if len(token) < MIN_TOKEN_LENGTH or not token.isascii() or not token.isprintable():
            raise UsageError(
                f"${TOKEN_ENV} must be at least {MIN_TOKEN_LENGTH} printable ASCII characters "
                "(unset it to have a token generated)"
            )
        return token
    generated: str = generate()
    return generated


def listen_socket(host: str, port: int) -> socket.socket:
    """A listening socket on host:port (port 0: one the OS chooses), or UsageError."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise UsageError(f"--host {host}: cannot resolve it: {exc.strerror}") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.set_inheritable(True)
    return sock


class _Server:
    """uvicorn's server, whose stop also aborts the unit under test and ends the streams.

    Built lazily on uvicorn's `Server`: a signal aborts the unit at once (so its teardown is
    under way while the server winds down) and ends every event stream (an open stream would
    otherwise hold the server for its whole graceful-shutdown time). The signal is not raised
    again afterwards (uvicorn's default): the command returns and closes the bench itself.
    """

    def __init__(self, config: Any, hub: StationHub) -> None:
        import uvicorn

        hub_ref = hub

        class Server(uvicorn.Server):
            @contextlib.contextmanager
            def capture_signals(self) -> Any:
                if threading.current_thread() is not threading.main_thread():
                    yield
                    return
                previous = {sig: signal.signal(sig, self.handle_exit) for sig in SIGNALS}
                try:
                    yield
                finally:
                    for sig, handler in previous.items():
                        signal.signal(sig, handler)

            def handle_exit(self, sig: int, frame: FrameType | None) -> None:
                if self.should_exit and sig == signal.SIGINT:
                    self.force_exit = True
                self.should_exit = True
                # Never take a lock in a signal handler (the main thread may hold it): the
                # streams are ended and the unit aborted from a thread of their own.
                threading.Thread(
                    target=hub_ref.shutdown_requested, name="station-serve-stop", daemon=True
                ).start()

        self._server = Server(config)

    def run(self, sockets: list[socket.socket]) -> None:
        self._server.run(sockets=sockets)
