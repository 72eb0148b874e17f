"""Hooks at the transport seam: the I/O trace of a run, and checks made by the far end.

Every call of every `SessionTransport` (write, query, read, query_bytes, read_bytes, and whatever
a subclass sends through `_call`) passes through the hook installed with `installed()`, if any.
So every driver is seen without a change to it: the built-in models, the generic ones, and a
user's `drivers.instrument.Instrument` subclass alike. With no hook installed a call costs one
attribute read more.

Two hooks live here:

- `IoTrace` records every call as a JSON line (`io-trace.jsonl` in a run directory): when it
  was sent (seconds since the trace began, and the UTC wall clock), how long it took, the
  instrument, its resource, and what went each way: `send` (the command, to the instrument) and
  `recv` (the reply, from it). Text is JSON-escaped as it is, a binary reply (a waveform block)
  is `recv_b64`, and a failed call carries its `kind` (timeout, lost...) and `error`. Each
  instrument's first line ("open") gives its transport settings (terminations, and the timeout
  of its first call). The calling thread only queues a tuple; a background thread formats and
  writes the lines at most `FLUSH_INTERVAL_S` after the call: a killed process keeps all but the
  last instant, and a call still waiting for its reply after `WAITING_S` gets a "waiting" line,
  so a hung call is on disk too.
- `PeerCheck` asks the far end, after each call, whether what was sent departs from what it
  expected: a twin replaying a recorded trace (`sim.replay`) knows the step where the procedure
  diverged, and this hook turns it into an `InstrumentError` of kind `KIND_DIVERGED` in the
  call that diverged, so the run ends ERROR with that message.

The trace format, one JSON object a line: `seq` (0, 1, ... in the order calls ended), `t`
(s since the trace began, monotonic, when the command went out), `at` (the same moment, UTC,
ISO 8601), `ms` (how long the call took), `instrument`, `resource`, `op` and the data:

- `open`: `transport`, `read_termination`, `write_termination`, `timeout_ms` (once per instrument);
- `query`: `send` and `recv` (or `recv_b64`); `write`: `send`; `read`: `recv` (or `recv_b64`);
- `error`: `send` if the command went out (a call refused before, by the stop guard or a closed
  transport, has none), `kind` and `error`;
- `waiting`: `send` of a call still without its reply (its own line follows when it ends).

Commands and replies are as the driver passed and got them: terminations are not included.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from json.encoder import encode_basestring_ascii as _json_string
from pathlib import Path
from typing import Any, Protocol, TypeVar

from drivers.errors import InstrumentError

__all__ = [
    "FLUSH_INTERVAL_S",
    "KIND_DIVERGED",
    "TRACE_FILE",
    "Endpoint",
    "IoHook",
    "IoTrace",
    "Peer",
    "PeerCheck",
    "current",
    "installed",
]

TRACE_FILE = "io-trace.jsonl"  # its name in a run directory
FLUSH_INTERVAL_S = 0.02  # lines reach the file at most this long after the call
WAITING_S = 0.25  # a call without its reply for this long gets a "waiting" line
KIND_DIVERGED = "diverged"  # InstrumentError.kind: the procedure departed from a recording
SETTLE_S = 2.0  # PeerCheck: how long the far end may take to judge a write

# What a trace line records (its "op").
OPEN, QUERY, WRITE, READ, ERROR, WAITING = "open", "query", "write", "read", "error", "waiting"

_T = TypeVar("_T")

# Bound once: the I/O path calls them on every instrument call.
_thread_id = threading.get_ident
_monotonic = time.monotonic
_wall_clock = time.time


class Endpoint(Protocol):
    """What a hook sees of a transport (a `SessionTransport` is one)."""

    name: str
    resource: str
    timeout_ms: int
    read_termination: str
    write_termination: str


class IoHook(Protocol):
    """Wraps every transport call: `run()` does the call; the hook returns its result (or raises).

    `on_wire` is called inside `run()` just before the command goes out (never for a call
    refused or failed before: the stop guard, a closed transport, a connection that would not
    open), with `command` None for a bare read.
    """

    def call(self, endpoint: Endpoint, command: str | None, run: Callable[[], _T]) -> _T: ...

    def on_wire(self, endpoint: Endpoint, command: str | None) -> None: ...


class _Chain:
    """Two hooks, `outer` around `inner`."""

    def __init__(self, outer: IoHook, inner: IoHook) -> None:
        self.outer, self.inner = outer, inner

    def call(self, endpoint: Endpoint, command: str | None, run: Callable[[], _T]) -> _T:
        inner = self.inner
        return self.outer.call(endpoint, command, lambda: inner.call(endpoint, command, run))

    def on_wire(self, endpoint: Endpoint, command: str | None) -> None:
        self.outer.on_wire(endpoint, command)
        self.inner.on_wire(endpoint, command)


hook: IoHook | None = None
"""The hook every transport call goes through (None: none). Set it with `installed()`."""

_install_lock = threading.Lock()


def current() -> IoHook | None:
    """The hook installed now, if any."""
    return hook


@contextlib.contextmanager
def installed(new: IoHook) -> Iterator[IoHook]:
    """Route every transport call of this process through `new` while the block runs.

    A hook installed while another is wraps it (the trace of a replayed run sees the divergence
    the replay reports). Blocks must nest; the previous hook is back afterwards.
    """
    global hook
    with _install_lock:
        previous = hook
        hook = new if previous is None else _Chain(new, previous)
    try:
        yield new
    finally:
        with _install_lock:
            hook = previous


# -- the trace --------------------------------------------------------------------------------


class IoTrace:
    """Records every transport call as JSON lines in a file (see the module docstring).

    The calling thread only queues what it did (a tuple: the least it can cost on the I/O
    path); a writer thread formats the lines and appends them every `FLUSH_INTERVAL_S` in one
    write. Lines wait in memory until `attach(path)` names the file (a run's directory exists
    only once the run starts, after its instruments were opened and identified).
    `attach` again to go on in another file; `close()` writes what is left and stops the
    thread. Writing never raises into an instrument call: a failure is kept in `errors`.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        flush_interval_s: float = FLUSH_INTERVAL_S,
    ) -> None:
        # Calls ended, not yet written: (sent, ended at, endpoint, result, failed), `sent` being
        # what `on_wire` noted (monotonic, wall clock, endpoint, command) or None.
        self._ended: deque[tuple[Any, float, Endpoint, Any, bool]] = deque()
        self._lines: list[str] = []  # formatted by the writer, not yet written
        self._inflight: dict[int, tuple[float, float, Endpoint, str | None]] = {}  # by thread
        self._announced: set[tuple[int, float]] = set()  # in-flight calls with a "waiting" line
        self._t0 = time.monotonic()
        self._wall0 = time.time()
        self._flush_interval_s = flush_interval_s
        self._fd: int | None = None
        self._file_lock = threading.Lock()  # one writer at a time (thread, attach, close)
        self._open_lock = threading.Lock()  # one "open" line per instrument
        self._count = itertools.count()  # line numbers
        # Each transport's JSON prefix (instrument, resource); held, so ids are never reused.
        self._prefixes: dict[Endpoint, str] = {}
        self._second = -1
        self._second_text = ""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.path: Path | None = None
        self.errors: list[str] = []
        self.lines = 0  # lines written so far (all files)
        if path is not None:
            self.attach(path)

    # -- the hook ---------------------------------------------------------------------------

    def call(self, endpoint: Endpoint, command: str | None, run: Callable[[], _T]) -> _T:
        try:
            result = run()
        except BaseException as exc:
            sent = self._inflight.pop(_thread_id(), None)
            self._ended.append((sent, _monotonic(), endpoint, exc, True))
            raise
        sent = self._inflight.pop(_thread_id(), None)
        self._ended.append((sent, _monotonic(), endpoint, result, False))
        return result

    def on_wire(self, endpoint: Endpoint, command: str | None) -> None:
        self._inflight[_thread_id()] = (_monotonic(), _wall_clock(), endpoint, command)

    def _format(
        self, sent: Any, mono_end: float, endpoint: Endpoint, data: Any, failed: bool
    ) -> str:
        """The line of one ended call (in the writer: the caller only queued its tuple)."""
        if sent is not None:
            mono, wall, _, command = sent
        else:  # refused or failed before the wire: no command went out
            mono, command = mono_end, None
            wall = self._wall0 + (mono_end - self._t0)
        prefix = self._prefixes.get(endpoint) or self._open_line(endpoint, mono, wall)
        second = int(wall)
        if second != self._second:
            self._second_text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = second
        head = (next(self._count), mono - self._t0, self._second_text, (wall - second) * 1e6)
        ms = (mono_end - mono) * 1e3
        if failed:
            kind = _json_string(str(getattr(data, "kind", None) or type(data).__name__))
            send = "" if command is None else '"send":' + _json_string(command) + ","
            return _ERROR_LINE % (*head, ms, prefix, send, kind, _json_string(str(data)))
        if data is None:
            return _WRITE_LINE % (*head, ms, prefix, _json_string(command or ""))
        if type(data) is str:
            key, value = "recv", _json_string(data)
        elif isinstance(data, bytes | bytearray | memoryview):
            key, value = "recv_b64", '"' + base64.b64encode(bytes(data)).decode("ascii") + '"'
        else:
            key, value = "recv", _json_string(str(data))
        if command is None:
            return _READ_LINE % (*head, ms, prefix, key, value)
        return _QUERY_LINE % (*head, ms, prefix, _json_string(command), key, value)

    # -- the file ---------------------------------------------------------------------------

    def attach(self, path: str | os.PathLike[str]) -> None:
        """Write into `path` (appended) from now on: lines still waiting go there first."""
        target = Path(path)
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        with self._file_lock:
            self._write_pending()
            old, self._fd, self.path = self._fd, fd, target
        if old is not None:
            os.close(old)
        if self._thread is None:
            self._thread = threading.Thread(target=self._writer, name="io-trace", daemon=True)
            self._thread.start()
        self.flush()

    def flush(self) -> None:
        """Write every line recorded so far (when a file is attached)."""
        with self._file_lock:
            self._write_pending()

    def close(self) -> None:
        """Write what is left and stop; later calls are no longer written (idempotent)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
        with self._file_lock:
            self._write_pending()
            fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    def __enter__(self) -> IoTrace:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- internals --------------------------------------------------------------------------

    def _writer(self) -> None:
        while not self._stop.wait(self._flush_interval_s):
            if self._ended or self._inflight:
                with self._file_lock:
                    self._write_pending()

    def _write_pending(self) -> None:
        """Format the ended calls and append their lines in one write (caller holds
        `_file_lock`)."""
        if self._fd is None:
            return
        lines = self._lines
        ended = self._ended
        pop, format_line, append = ended.popleft, self._format, lines.append
        for _ in range(len(ended)):
            append(format_line(*pop()))
        if self._inflight:
            self._queue_waiting()
        if not lines:
            return
        data = "".join(lines).encode("ascii")
        count = len(lines)
        lines.clear()
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(self._fd, view) :]
        except OSError as exc:
            if len(self.errors) < 10:
                self.errors.append(f"{self.path}: {exc.strerror or exc}: I/O trace lines lost")
            return
        self.lines += count

    def _queue_waiting(self) -> None:
        """A "waiting" line for each call in flight for longer than WAITING_S, once."""
        now = time.monotonic()
        inflight = list(self._inflight.items())
        self._announced &= {(ident, call[0]) for ident, call in inflight}
        for ident, (mono, wall, endpoint, command) in inflight:
            if now - mono < WAITING_S or (ident, mono) in self._announced or command is None:
                continue
            self._announced.add((ident, mono))
            prefix = self._prefixes.get(endpoint) or self._open_line(endpoint, mono, wall)
            second = int(wall)
            at = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            head = (next(self._count), mono - self._t0, at, (wall - second) * 1e6)
            ms = (now - mono) * 1e3
            self._lines.append(_WAITING_LINE % (*head, ms, prefix, _json_string(command)))

    def _open_line(self, endpoint: Endpoint, mono: float, wall: float) -> str:
        """Queue `endpoint`'s "open" line, once; its JSON prefix."""
        with self._open_lock:
            prefix = self._prefixes.get(endpoint)
            if prefix is not None:
                return prefix  # another thread was first
            prefix = (
                f'"instrument":{_json_string(str(endpoint.name))},'
                f'"resource":{_json_string(str(endpoint.resource))},'
            )
            read_termination = str(getattr(endpoint, "read_termination", ""))
            write_termination = str(getattr(endpoint, "write_termination", ""))
            settings = (
                f'"transport":{_json_string(type(endpoint).__name__)},'
                f'"read_termination":{_json_string(read_termination)},'
                f'"write_termination":{_json_string(write_termination)},'
                f'"timeout_ms":{int(getattr(endpoint, "timeout_ms", 0))}'
            )
            second = int(wall)
            at = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            head = (next(self._count), mono - self._t0, at, (wall - second) * 1e6)
            self._lines.append(_OPEN_LINE % (*head, prefix, settings))
            self._prefixes[endpoint] = prefix
            return prefix


# The lines, by op: seq, t, the wall clock's second and microseconds, ms, the instrument's JSON
# prefix, then the op's fields (values already JSON).
_HEAD = '{"seq":%d,"t":%.6f,"at":"%s.%06dZ",'
_OPEN_LINE = _HEAD + '%s"op":"open",%s}\n'
_QUERY_LINE = _HEAD + '"ms":%.3f,%s"op":"query","send":%s,"%s":%s}\n'
_WRITE_LINE = _HEAD + '"ms":%.3f,%s"op":"write","send":%s}\n'
_READ_LINE = _HEAD + '"ms":%.3f,%s"op":"read","%s":%s}\n'
_ERROR_LINE = _HEAD + '"ms":%.3f,%s"op":"error",%s"kind":%s,"error":%s}\n'
_WAITING_LINE = _HEAD + '"ms":%.3f,%s"op":"waiting","send":%s}\n'


# -- checks by the far end --------------------------------------------------------------------


class Peer(Protocol):
    """The far end of the transports, able to judge what it received (a replaying twin)."""

    def settle(self, instrument: str, sent: int, timeout_s: float) -> int:
        """Wait (at most `timeout_s`) until `instrument`'s far end has taken `sent` bytes in all;
        return how many it has taken."""
        ...

    def divergence(self, instrument: str, *, again: bool) -> str | None:
        """The departure from what was expected that `instrument`'s far end saw, if any: the
        first time it is asked for (it is then marked told), or every time with `again`."""
        ...


class PeerCheck:
    """After every call, ask the far end whether it objects; if so raise its objection.

    Writes need no reply, so after one the hook waits (at most `settle_s`) until the far end has
    taken every byte sent so far, counted here as the command and its write termination: the
    objection is raised by the call that caused it, not by the next one. A call that fails on an
    instrument whose far end objected once raises that objection again (its own failure is the
    cause), so a retried phase ends with the reason, not with a consequence.
    """

    def __init__(self, peer: Peer, *, settle_s: float = SETTLE_S) -> None:
        self._peer = peer
        self._settle_s = settle_s
        self._sent: dict[str, int] = {}
        self._lock = threading.Lock()

    def call(self, endpoint: Endpoint, command: str | None, run: Callable[[], _T]) -> _T:
        name = endpoint.name
        try:
            result = run()
        except InstrumentError as exc:
            # Whatever was sent has been taken (a timeout) or was never sent (refused): count
            # from what the far end has, then ask it whether it caused this.
            taken = self._peer.settle(name, 0, 0.0)
            with self._lock:
                self._sent[name] = max(taken, 0)
            self._raise_divergence(endpoint, command, exc, again=True)
            raise
        if command is not None:
            size = len(command.encode("ascii", "replace")) + len(endpoint.write_termination)
            with self._lock:
                sent = self._sent[name] = self._sent.get(name, 0) + size
            self._peer.settle(name, sent, self._settle_s)
        self._raise_divergence(endpoint, command, None, again=False)
        return result

    def on_wire(self, endpoint: Endpoint, command: str | None) -> None:
        pass  # the far end judges what arrives

    def _raise_divergence(
        self, endpoint: Endpoint, command: str | None, cause: BaseException | None, *, again: bool
    ) -> None:
        message = self._peer.divergence(endpoint.name, again=again)
        if message is not None:
            raise InstrumentError(
                message,
                instrument=endpoint.name,
                resource=endpoint.resource,
                command=command,
                kind=KIND_DIVERGED,
            ) from cause
