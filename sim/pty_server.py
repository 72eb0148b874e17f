"""PtyServer: a serial twin on a real pseudo-terminal, reached as `/dev/pts/N` through pyserial.

The driver opens the slave side with the real `serialposix` code; a thread serves the master.
The slave is put in raw mode (no echo, no CR/LF mapping) and held open by the server, so the
device stays valid while clients come and go. Linux and macOS only.

Faults (`WireFaults`): no reply, late replies, garbage replies, and `drop` (a serial link
cannot be closed from the instrument's end: the twin goes silent for `faults.drop_s`, discarding
what it receives, then answers again, as after a power glitch). `refuse` makes it silent for as
long as it is set, like an instrument that is switched off. `error` does not apply: the
instruments served here have no error queue.
"""

from __future__ import annotations

import contextlib
import os
import select
import threading
import time
import tty
from collections.abc import Callable
from typing import Any, Self

from sim.server import WireFaults

_IDLE_S = 0.01  # a pause this long ends a command whose length is not fixed


class PtyEndpoint:
    """A new pty in raw mode, its slave held open, served by a thread running `_serve()`.

    The device (`resource`, e.g. /dev/pts/3) is what a serial driver opens. Subclasses speak
    the protocol: `PtyServer` a live twin, `sim.replay.ReplayPtyServer` a recording.
    """

    THREAD_PREFIX = "pty"

    def __init__(self) -> None:
        self.path = ""
        self._master = -1
        self._slave = -1
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def resource(self) -> str:
        """The device path a serial driver opens, e.g. /dev/pts/3."""
        return self.path

    def start(self) -> Self:
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)
        self.path = os.ttyname(self._slave)
        self._thread = threading.Thread(
            target=self._serve,
            name=f"{self.THREAD_PREFIX}-{os.path.basename(self.path)}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=1.0)
        for fd in (self._master, self._slave):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._master = self._slave = -1

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _serve(self) -> None:
        raise NotImplementedError  # each endpoint speaks its own protocol


class PtyServer(PtyEndpoint):
    """Serve a stream twin (`split()` + `handle()`) on a new pty."""

    THREAD_PREFIX = "twin"

    def __init__(self, twin: Any) -> None:
        super().__init__()
        self.twin = twin
        self.faults = WireFaults()
        self._silent_until = 0.0
        # Called with every command the twin receives (`station sim --trace`), in its thread.
        self.on_message: Callable[[str], None] | None = None

    def _serve(self) -> None:
        buffer = b""
        while not self._stopping.is_set():
            try:
                readable, _, _ = select.select([self._master], [], [], _IDLE_S)
                data = os.read(self._master, 4096) if readable else b""
            except OSError:  # EIO while no client has the slave open on some systems
                time.sleep(_IDLE_S)
                continue
            if self.faults.refuse or time.monotonic() < self._silent_until:
                if data and self.faults.refuse:
                    self.faults.fire("refuse")
                buffer = b""
                continue
            buffer += data
            commands, buffer = self.twin.split(buffer, idle=not readable)
            for command in commands:
                if not self._answer(command):
                    buffer = b""
                    break

    def _answer(self, command: str) -> bool:
        """Execute and answer one command; False when the link goes silent (drop)."""
        if self.on_message is not None:
            self.on_message(command)
        action = self.faults.action(command)
        if action == "no-reply":
            return True
        if action == "drop":
            self._silent_until = time.monotonic() + self.faults.drop_s
            return False
        reply = self.twin.handle(command)
        if reply is None:
            return True
        delay = self.faults.delay_of(action)
        if delay and self._stopping.wait(delay):
            return True
        payload = self.faults.garbage if action == "garbage" else reply
        with contextlib.suppress(OSError):
            os.write(self._master, payload)
        return True
