"""Replay twins: a run's recorded I/O trace served back, so a procedure becomes a regression test.

A run recorded with `station run --trace-io` (on real instruments or on the simulated bench) has
`io-trace.jsonl` in its run directory: for every instrument, in order, each command the station
sent and each reply it read. `start_replay(run_dir)` serves one twin per instrument that plays
its part of that recording back: TCP on loopback (`TCPIP::127.0.0.1::<port>::SOCKET`) for an
instrument recorded through VISA, a pty for one recorded through pyserial (a raw serial port).

Matching, per instrument, strictly in recorded order:

- A command must arrive as the exact bytes recorded (the command and its write termination). A
  query repeated in the recording (`*IDN?`, `SYST:ERR?`, `READ?`) is consumed in order like any
  other command, so each occurrence gets the reply it had then.
- A reply goes out as soon as its command has arrived (no recorded delays): the replayed run is
  as fast as the procedure. A call that failed in the recording fails the same way: no reply, so
  the driver times out as it did.
- A read with no command before it (a DUT console's second line, a banner after power-up) goes
  out once every event recorded before it on the other instruments has been replayed (a banner
  comes after the supply's `OUTP ON`), or at once when the station sends its next command.
- A command that departs from the recording (other bytes, or one more than was recorded) is a
  divergence: the twin names the instrument, the command's number in the recording, the phase it
  was recorded in, what was expected and what was sent. `station run --sim-replay` raises it in
  the very call that diverged (`drivers.transport.trace.PeerCheck`), so the run ends ERROR with
  that message; `station sim --replay` prints it. The twin then drops the TCP connection (a pty
  stays silent), and answers later commands from the next identical command in the recording,
  so teardown and the safe state still run; the divergence is reported once.

Twins answer whatever process connects: `station sim --replay RUN_DIR` serves them to another
station or a script. Only what went through a transport is recorded: an instrument with no I/O
in the trace (a plain-class instrument) cannot be replayed.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import select
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sim.pty_server import PtyEndpoint
from sim.server import LoopbackServer

__all__ = [
    "Recording",
    "ReplayBench",
    "ReplayError",
    "ReplayTwin",
    "load_recording",
    "start_replay",
]

TRACE_FILE = "io-trace.jsonl"  # as drivers.transport.trace writes it into a run directory
IDLE_S = 0.02  # bytes that stop arriving this long before a whole command are judged as they are
_POLL_S = 0.005  # how often a twin holding a read for other instruments looks again

SEND, RECV = "send", "recv"  # the kinds of step
OPEN, ERROR, WAITING = "open", "error", "waiting"  # ops of trace lines, as trace.IoTrace writes
CALLS = ("query", "write", "read", ERROR)


class ReplayError(ValueError):
    """A run directory that cannot be replayed (no trace, a damaged one): the message says why."""


@dataclass(frozen=True)
class Step:
    """One recorded event of one instrument."""

    kind: str  # "send", "recv" or "error"
    seq: int  # its place in the whole trace (all instruments)
    data: bytes  # the bytes on the wire (terminations included); b"" for an error
    text: str  # as the trace shows it (for messages)
    at: datetime | None  # when it was recorded
    number: int  # sends: 1, 2, ... per instrument; others: that of the send before
    reply: bool  # a recv/error right after its command (goes out as soon as it arrived)


@dataclass
class Script:
    """One instrument's part of a recording."""

    name: str
    resource: str = ""
    transport: str = ""
    read_termination: str = "\n"
    write_termination: str = "\n"
    steps: list[Step] = field(default_factory=list)

    serial_port: bool | None = None  # replayed on a pty (None: as it was recorded)

    @property
    def serial(self) -> bool:
        """Whether it is replayed on a pty: as the station says, else as it was recorded
        (through pyserial: a device path, or a transport named like SerialTransport)."""
        if self.serial_port is not None:
            return self.serial_port
        return self.resource.startswith(("/dev/", "COM", "serial://")) or self.transport.endswith(
            "SerialTransport"
        )

    @property
    def commands(self) -> int:
        return sum(1 for step in self.steps if step.kind == SEND)


@dataclass
class Recording:
    """What `load_recording` found in a run directory."""

    run_dir: Path
    scripts: dict[str, Script]
    serial_number: str | None = None
    procedure_id: str | None = None
    phases: list[tuple[str, datetime, datetime]] = field(default_factory=list)

    def phase_at(self, at: datetime | None) -> str | None:
        """The phase that was running at `at`, if known."""
        if at is None:
            return None
        for name, started, ended in self.phases:
            if started <= at <= ended:
                return name
        return None


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def load_recording(run_dir: str | os.PathLike[str]) -> Recording:
    """Read `run_dir/io-trace.jsonl` (and run.json, for the serial number and the phases).

    Raises ReplayError when there is no trace or a line of it cannot be read.
    """
    root = Path(run_dir)
    path = root / TRACE_FILE
    if not root.is_dir():
        raise ReplayError(f"{root}: no such run directory")
    if not path.is_file():
        raise ReplayError(
            f"{root} has no {TRACE_FILE}: record the run with `station run --trace-io` first"
        )
    scripts: dict[str, Script] = {}
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                event = json.loads(line)
                name, op = str(event["instrument"]), event["op"]
            except (ValueError, KeyError, TypeError):
                if not line.endswith("\n"):
                    break  # the last line of a killed run, cut short: the rest is whole
                raise ReplayError(f"{path} line {number} is not a trace event") from None
            script = scripts.setdefault(name, Script(name))
            if op == OPEN:
                if not script.transport:
                    script.resource = str(event.get("resource", ""))
                    script.transport = str(event.get("transport", ""))
                    script.read_termination = str(event.get("read_termination", "\n"))
                    script.write_termination = str(event.get("write_termination", "\n"))
            elif op in CALLS:
                _add_steps(script, event, op == ERROR)
            elif op != WAITING:
                raise ReplayError(f"{path} line {number}: unknown op {op!r}")
    recording = Recording(root, scripts)
    _read_run_record(recording)
    return recording


def _add_steps(script: Script, event: dict[str, Any], failed: bool) -> None:
    """The steps of one recorded call: its command, then its reply or its failure."""
    steps = script.steps
    number = steps[-1].number if steps else 0
    at = _parse_time(event.get("at"))
    seq = int(event.get("seq", 0))
    sent = "send" in event
    if sent:
        text = str(event["send"])
        data = (text + script.write_termination).encode("ascii", "replace")
        number += 1
        steps.append(Step(SEND, seq, data, text, at, number, False))
    if "recv_b64" in event:
        data = base64.b64decode(event["recv_b64"])
        steps.append(Step(RECV, seq, data, repr(data), at, number, sent))
    elif "recv" in event:
        text = str(event["recv"])
        data = (text + script.read_termination).encode("ascii", "replace")
        steps.append(Step(RECV, seq, data, text, at, number, sent))
    if failed:
        steps.append(Step(ERROR, seq, b"", str(event.get("error", "")), at, number, sent))


def _read_run_record(recording: Recording) -> None:
    """The serial number and phase times from run.json (or the journal of an interrupted run)."""
    record: Any = {}
    with contextlib.suppress(OSError, ValueError):
        record = json.loads((recording.run_dir / "run.json").read_text(encoding="utf-8"))
    if not record:
        with (
            contextlib.suppress(OSError, ValueError, StopIteration),
            (recording.run_dir / "journal.jsonl").open(encoding="utf-8") as journal,
        ):
            record = json.loads(next(journal)).get("run", {})
    if not isinstance(record, dict):
        return
    serial = record.get("serial_number")
    recording.serial_number = serial if isinstance(serial, str) else None
    procedure = record.get("procedure_id")
    recording.procedure_id = procedure if isinstance(procedure, str) else None
    for phase in record.get("phases") or []:
        if not isinstance(phase, dict):
            continue
        started, ended = _parse_time(phase.get("started_at")), _parse_time(phase.get("ended_at"))
        if started is not None and ended is not None:
            recording.phases.append((str(phase.get("name")), started, ended))


# -- the twins ---------------------------------------------------------------------------------


class _Conductor:
    """Where every twin is in the recording, for the reads that must wait for the others."""

    def __init__(self) -> None:
        self.changed = threading.Condition()
        self.twins: list[ReplayTwin] = []

    def may_send(self, twin: ReplayTwin, seq: int) -> bool:
        """Whether every event recorded before `seq` on the other instruments was replayed."""
        return all(other.next_seq > seq for other in self.twins if other is not twin)


class ReplayTwin:
    """One instrument's recording, played back against the bytes that arrive.

    `feed(data)` takes what the station sent and returns (bytes to send back, whether to drop
    the connection). Thread-safe: the server's thread feeds it, the station's `PeerCheck` asks
    `settle()` / `take_divergence()`.
    """

    def __init__(
        self,
        script: Script,
        recording: Recording,
        conductor: _Conductor,
        *,
        on_message: Callable[[str, str], None] | None = None,
        on_divergence: Callable[[str], None] | None = None,
    ) -> None:
        self.script = script
        self.name = script.name
        self._recording = recording
        self._conductor = conductor
        self._steps = script.steps
        self._pos = 0
        self._buffer = bytearray()
        self._since = 0.0  # when the bytes in the buffer started waiting
        self.taken = 0  # bytes of commands judged so far (matched or not)
        self.settled = 0  # `taken` once the server acted on it (replied, dropped)
        self._waiters = 0  # threads in settle() (changed only under the conductor's lock)
        self.divergence: str | None = None
        self._told = False
        self.on_message = on_message
        self.on_divergence = on_divergence
        self._lock = threading.Lock()
        self.next_seq = self._steps[0].seq if self._steps else _END
        self.can_drop = not script.serial  # a TCP link can be dropped; a pty cannot

    # -- what the servers call ------------------------------------------------------------------

    def waiting(self) -> bool:
        """Whether a read is held for the other instruments (the server looks again soon)."""
        with self._lock:
            return self._pos < len(self._steps) and self._steps[self._pos].kind != SEND

    def partial(self) -> bool:
        """Whether bytes wait for the rest of a command."""
        return bool(self._buffer)

    def feed(self, data: bytes, *, idle: bool = False) -> tuple[bytes, bool]:
        """Judge what arrived; (bytes to send back, drop the connection)."""
        out: list[bytes] = []
        drop = False
        with self._lock:
            if data:
                if not self._buffer:
                    self._since = time.monotonic()
                self._buffer += data
            elif self._buffer and time.monotonic() - self._since >= IDLE_S:
                idle = True
            while True:
                self._emit(out, force=bool(self._buffer))
                if not self._buffer:
                    break
                sent = self._next_command(idle)
                if sent is None:
                    break  # the rest of a command may still come
                drop |= self._judge(sent, out)
        return b"".join(out), drop

    def publish(self) -> None:
        """The server has acted on what `feed` returned: `settle()` callers may go on.

        `settled` is set before `waiters` is read, and `settle` counts itself a waiter before
        it reads `settled`: either it sees the new value or it is notified. With nobody waiting
        (another process is the client) this takes no lock.
        """
        if self.settled == self.taken:
            return
        self.settled = self.taken
        if self._waiters:
            with self._conductor.changed:
                self._conductor.changed.notify_all()

    def settle(self, sent: int, timeout_s: float) -> int:
        """Wait until `sent` bytes in all were judged (at most `timeout_s`); bytes judged."""
        changed = self._conductor.changed
        with changed:
            self._waiters += 1
            try:
                if timeout_s > 0:
                    changed.wait_for(lambda: self.settled >= sent, timeout_s)
                return self.settled
            finally:
                self._waiters -= 1

    def take_divergence(self, *, again: bool = False) -> str | None:
        """The divergence, the first time it is asked for (or every time with `again`)."""
        with self._lock:
            if self.divergence is None or (self._told and not again):
                return None
            self._told = True
            return self.divergence

    def unplayed(self) -> list[Step]:
        """Recorded commands never replayed."""
        with self._lock:
            return [step for step in self._steps[self._pos :] if step.kind == SEND]

    # -- internals (caller holds _lock) ----------------------------------------------------------

    def _emit(self, out: list[bytes], *, force: bool) -> None:
        """Send the recorded reads now due: replies at once, other reads when the other
        instruments have caught up (or at once when the station already sends again)."""
        steps = self._steps
        while self._pos < len(steps):
            step = steps[self._pos]
            if step.kind == SEND:
                return
            if not (step.reply or force or self._conductor.may_send(self, step.seq)):
                return
            if step.kind == RECV:
                out.append(step.data)
            self._pos += 1
            self.next_seq = steps[self._pos].seq if self._pos < len(steps) else _END

    def _next_command(self, idle: bool) -> bytes | None:
        """The bytes of the next command in the buffer, once it can be judged."""
        buffer = self._buffer
        step = self._steps[self._pos] if self._pos < len(self._steps) else None
        if step is not None and buffer.startswith(step.data):
            return step.data
        if step is not None and step.data.startswith(buffer) and not idle:
            return None  # so far so good: wait for the rest
        terminator = self.script.write_termination.encode("ascii", "replace")
        if terminator and terminator in buffer:
            return bytes(buffer[: buffer.index(terminator) + len(terminator)])
        return bytes(buffer) if idle else None

    def _judge(self, sent: bytes, out: list[bytes]) -> bool:
        """Consume one command; True to drop the connection (a divergence with no way on)."""
        del self._buffer[: len(sent)]
        self._since = time.monotonic()
        self.taken += len(sent)
        if self.on_message is not None:
            self.on_message(self.name, self._show(sent))
        steps = self._steps
        if self._pos < len(steps) and steps[self._pos].data == sent:
            self._advance(self._pos + 1, out)
            return False
        first = self.divergence is None
        if first:
            self.divergence = self._describe(sent)
        # Go on from the next identical command, so teardown and the safe state can still run.
        later = [i for i in range(self._pos, len(steps)) if steps[i].kind == SEND]
        earlier = [i for i in range(self._pos) if steps[i].kind == SEND]
        found = next((i for i in later + earlier if steps[i].data == sent), None)
        if found is not None:
            # The diverging command itself gets no reply where the link can be dropped: the
            # station's call fails at once rather than going on with a borrowed reply.
            self._advance(found + 1, [] if first and self.can_drop else out)
        if first and self.on_divergence is not None:
            self.on_divergence(self.divergence or "")
        return self.can_drop and (first or found is None)

    def _advance(self, pos: int, out: list[bytes]) -> None:
        steps = self._steps
        self._pos = pos
        self.next_seq = steps[pos].seq if pos < len(steps) else _END
        while self._pos < len(steps) and steps[self._pos].reply:
            if steps[self._pos].kind == RECV:
                out.append(steps[self._pos].data)
            self._pos += 1
            self.next_seq = steps[self._pos].seq if self._pos < len(steps) else _END

    def _show(self, data: bytes) -> str:
        terminator = self.script.write_termination.encode("ascii", "replace")
        if terminator and data.endswith(terminator):
            data = data[: -len(terminator)]
        return data.decode("ascii", "backslashreplace")

    def _describe(self, sent: bytes) -> str:
        """The divergence as the operator reads it."""
        where = f"replay of {self._recording.run_dir.name} diverged at {self.name}"
        shown = self._show(sent)
        steps = self._steps
        expected = next((s for s in steps[self._pos :] if s.kind == SEND), None)
        if not steps:
            return f"{where}: the recording has no I/O for {self.name!r}; sent {shown!r}"
        if expected is None:
            last = next((s for s in reversed(steps) if s.kind == SEND), None)
            after = f" (#{last.number}, {last.text!r})" if last is not None else ""
            return f"{where}: sent {shown!r} after the last recorded command{after}"
        phase = self._recording.phase_at(expected.at)
        in_phase = f" (recorded in phase {phase!r})" if phase else ""
        return (
            f"{where} command #{expected.number} of {self.script.commands}{in_phase}: "
            f"expected {expected.text!r}, sent {shown!r}"
        )


_END = 1 << 62  # next_seq of a twin with nothing left


class ReplayServer(LoopbackServer):
    """A replay twin on a loopback TCP port, like a LAN instrument's raw socket."""

    @property
    def resource(self) -> str:
        return f"TCPIP::{self._host}::{self.port}::SOCKET"

    def _serve(self, client: socket.socket) -> None:
        twin: ReplayTwin = self.twin
        timeout: float | None = None
        try:
            while not self._stopping.is_set():
                wanted = _POLL_S if twin.waiting() else (IDLE_S if twin.partial() else None)
                if wanted != timeout:
                    client.settimeout(wanted)
                    timeout = wanted
                try:
                    data = client.recv(4096)
                except TimeoutError:
                    data = None
                if data == b"":
                    return
                reply, drop = twin.feed(data or b"")
                if reply:
                    client.sendall(reply)
                if drop:
                    with contextlib.suppress(OSError):
                        client.shutdown(socket.SHUT_RDWR)
                    twin.publish()
                    return
                twin.publish()
        except OSError:
            return
        finally:
            with self._lock:
                self._clients.discard(client)
            client.close()


class ReplayPtyServer(PtyEndpoint):
    """A replay twin on a new pty (raw mode), reached as `/dev/pts/N` through pyserial."""

    THREAD_PREFIX = "replay"

    def __init__(self, twin: ReplayTwin) -> None:
        super().__init__()
        self.twin = twin

    def _serve(self) -> None:
        twin = self.twin
        while not self._stopping.is_set():
            wait = _POLL_S if twin.waiting() or twin.partial() else IDLE_S
            try:
                readable, _, _ = select.select([self._master], [], [], wait)
                data = os.read(self._master, 4096) if readable else b""
            except OSError:  # EIO while no client has the slave open on some systems
                time.sleep(IDLE_S)
                continue
            reply, _ = twin.feed(data)  # a pty cannot be dropped: a divergence goes silent
            if reply:
                with contextlib.suppress(OSError):
                    os.write(self._master, reply)
            twin.publish()


class ReplayBench:
    """Running replay twins (the shape of `sim.SimBench`); close it (or `with`) to stop them.

    It is also the `drivers.transport.trace.Peer` of `PeerCheck`: `settle` and `divergence`.
    """

    def __init__(self, recording: Recording, twins: dict[str, ReplayTwin],
                 servers: dict[str, ReplayServer | ReplayPtyServer]) -> None:  # fmt: skip
        self.recording = recording
        self.replay_twins = twins
        self.servers = servers
        self.resources = {name: server.resource for name, server in servers.items()}
        self.serial_number = recording.serial_number

    def insert_dut(self, serial_number: str) -> None:
        """Nothing to insert: the recording is the unit."""

    def set_wire_fault(self, spec: str) -> None:
        raise ValueError(f"wire fault {spec!r}: not with a replay (the recording is the wire)")

    def unfired_faults(self) -> list[str]:
        return []

    def settle(self, instrument: str, sent: int, timeout_s: float) -> int:
        twin = self.replay_twins.get(instrument)
        return twin.settle(sent, timeout_s) if twin is not None else sent

    def divergence(self, instrument: str, *, again: bool) -> str | None:
        twin = self.replay_twins.get(instrument)
        return twin.take_divergence(again=again) if twin is not None else None

    def divergences(self) -> list[str]:
        """Every divergence seen, reported or not."""
        return [t.divergence for t in self.replay_twins.values() if t.divergence is not None]

    def unplayed(self) -> dict[str, list[Step]]:
        """Per instrument, the recorded commands never replayed (none when the run matched)."""
        return {name: left for name, t in self.replay_twins.items() if (left := t.unplayed())}

    def close(self) -> None:
        for server in self.servers.values():
            server.stop()

    def __enter__(self) -> ReplayBench:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def start_replay(
    run_dir: str | os.PathLike[str],
    instruments: Mapping[str, bool] | None = None,
    *,
    port_base: int | None = None,
    on_message: Callable[[str, str], None] | None = None,
    on_divergence: Callable[[str], None] | None = None,
) -> ReplayBench:
    """Serve the recording of `run_dir`: a twin per recorded instrument.

    `instruments` (name -> whether the station reaches it as a raw serial port, so its twin is a
    pty) are those the station has: each gets a twin, an unrecorded one a twin whose recording is
    empty (its first command is a divergence that says so), so no instrument is ever reached for
    real. Without it, every recorded instrument, served as it was recorded. `port_base` serves the
    TCP twins on BASE, BASE+1, ... in that order; `on_message(name, command)` sees every command
    a twin receives, `on_divergence(message)` each divergence as it happens.
    """
    recording = load_recording(run_dir)
    scripts = dict(recording.scripts)
    names = list(instruments) if instruments is not None else sorted(scripts)
    conductor = _Conductor()
    twins: dict[str, ReplayTwin] = {}
    servers: dict[str, ReplayServer | ReplayPtyServer] = {}
    try:
        for offset, name in enumerate(names):
            script = scripts.get(name) or Script(name, transport="")
            if instruments is not None:
                script.serial_port = bool(instruments.get(name))
            twin = ReplayTwin(
                script, recording, conductor, on_message=on_message, on_divergence=on_divergence
            )
            twins[name] = twin
            server: ReplayServer | ReplayPtyServer
            if script.serial:
                server = ReplayPtyServer(twin).start()
            else:
                port = port_base + offset if port_base is not None else 0
                server = ReplayServer(twin, port=port).start()
            servers[name] = server
        conductor.twins = list(twins.values())
    except BaseException:
        for server in servers.values():
            server.stop()
        raise
    return ReplayBench(recording, twins, servers)
