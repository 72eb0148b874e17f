"""`station sim` as a separate process, for tests that drive `station run` against it."""

from __future__ import annotations

import contextlib
import re
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path


@contextlib.contextmanager
def station_sim(
    config: Path, write: Callable[[str, str], None], cwd: Path
) -> Iterator[dict[str, str]]:
    """`station sim` in its own process, serving the twins of `config` on loopback.

    `write(dmm, psu)` is called first with placeholder USB resources (so the config loads) and
    then with the twins' TCP resources; yields those resources by instrument name. The process
    is stopped with Ctrl-C, and killed if it does not stop, so no test leaves a server behind.
    """
    write("USB0::1::2::3::INSTR", "USB0::4::5::6::INSTR")
    server = subprocess.Popen(
        [sys.executable, "-m", "station", "sim", "--config", str(config)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=cwd,
    )
    try:
        resources = {}
        assert server.stdout is not None
        for line in server.stdout:
            match = re.match(r"\s+(dmm|psu)\s+(TCPIP::\S+)", line)
            if match:
                resources[match[1]] = match[2]
            if line.startswith("Ctrl-C"):
                break
        write(resources["dmm"], resources["psu"])
        yield resources
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=10)
            raise
