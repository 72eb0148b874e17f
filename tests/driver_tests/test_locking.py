"""The OS lock per instrument: a second process cannot open an instrument the first holds."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

import sim
from drivers import InstrumentError, create_driver
from drivers.errors import KIND_IN_USE
from drivers.transport.locking import LOCK_DIR_ENV, acquire, canonical_resource, lock_path

HOLDER = textwrap.dedent(
    """
    import sys
    from drivers import create_driver
    dmm = create_driver("keysight-34461a", sys.argv[1], name="dmm")
    dmm.connect()
    print("holding", flush=True)
    sys.stdin.readline()
    dmm.close()
    """
)


@pytest.fixture(autouse=True)
def lock_dir(tmp_path, monkeypatch):
    monkeypatch.setenv(LOCK_DIR_ENV, str(tmp_path / "locks"))
    return tmp_path / "locks"


def test_canonical_names_make_one_lock_per_instrument(tmp_path):
    assert canonical_resource("TCPIP::10.0.0.5::5025::SOCKET") == ("TCPIP0::10.0.0.5::5025::SOCKET")
    assert lock_path("TCPIP::10.0.0.5::5025::SOCKET") == lock_path("TCPIP0::10.0.0.5::5025::SOCKET")
    device = tmp_path / "ttyUSB0"
    device.touch()
    alias = tmp_path / "usb-Korad-if00"
    alias.symlink_to(device)
    assert canonical_resource(f"serial://{alias}") == str(device)
    assert canonical_resource("socket://127.0.0.1:5025") == "socket://127.0.0.1:5025"


def test_one_process_may_open_a_resource_twice_and_releases_on_last_close():
    first = acquire("TCPIP::127.0.0.1::1::SOCKET")
    second = acquire("TCPIP0::127.0.0.1::1::SOCKET")
    first.release()
    first.release()  # idempotent
    second.release()
    acquire("TCPIP::127.0.0.1::1::SOCKET").release()


def test_second_process_is_refused_naming_the_first_pid(lock_dir):
    with sim.start_bench({"dmm": "keysight-34461a"}) as bench:
        resource = bench.resources["dmm"]
        env = {**os.environ, LOCK_DIR_ENV: str(lock_dir)}
        holder = subprocess.Popen(
            [sys.executable, "-c", HOLDER, resource],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        try:
            assert holder.stdout.readline().strip() == "holding"
            dmm = create_driver("keysight-34461a", resource, name="dmm")
            with pytest.raises(InstrumentError, match=rf"is in use by pid {holder.pid} ") as caught:
                dmm.connect()
            assert caught.value.kind == KIND_IN_USE and caught.value.pid == holder.pid
            assert "dmm (TCPIP::127.0.0.1::" in str(caught.value)
            holder.kill()  # process death releases the flock
            holder.wait(5)
            assert dmm.connect().startswith("Keysight")
            dmm.close()
        finally:
            if holder.poll() is None:
                holder.kill()
                holder.wait(5)
