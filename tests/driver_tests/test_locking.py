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
    assert canonical_resource("socket://127.0.0.1:5025") == "TCPIP0::127.0.0.1::5025::SOCKET"
    assert canonical_resource("loop://") == "loop://"


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


def start_holder(resource: str, env: dict[str, str]) -> subprocess.Popen[str]:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, resource],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "holding"
    return holder


def stop_holder(holder: subprocess.Popen[str]) -> None:
    if holder.poll() is None:
        holder.kill()
        holder.wait(5)


def test_host_names_resolve_to_one_key():
    assert canonical_resource("TCPIP::localhost::5025::SOCKET") == (
        "TCPIP0::127.0.0.1::5025::SOCKET"
    )
    assert canonical_resource("TCPIP::localhost::INSTR") == "TCPIP0::127.0.0.1::inst0::INSTR"
    assert canonical_resource("TCPIP::localhost,4000::inst0::INSTR") == (
        "TCPIP0::127.0.0.1,4000::inst0::INSTR"
    )
    assert canonical_resource("socket://localhost:4001") == "TCPIP0::127.0.0.1::4001::SOCKET"
    assert lock_path("TCPIP::localhost::5025::SOCKET") == lock_path(
        "TCPIP::127.0.0.1::5025::SOCKET"
    )


def test_another_spelling_of_the_same_address_is_refused_with_the_holders_pid(lock_dir):
    with sim.start_bench({"dmm": "keysight-34461a"}) as bench:
        port = bench.twins["dmm"].server.port
        env = {**os.environ, LOCK_DIR_ENV: str(lock_dir)}
        holder = start_holder(f"TCPIP::127.0.0.1::{port}::SOCKET", env)
        try:
            for spelling in (f"TCPIP0::localhost::{port}::SOCKET", f"socket://localhost:{port}"):
                dmm = create_driver("keysight-34461a", spelling, name="dmm")
                with pytest.raises(InstrumentError, match=rf"in use by pid {holder.pid} "):
                    dmm.connect()
            socket_spelling = f"TCPIP0::localhost::{port}::SOCKET"
            assert lock_path(socket_spelling) == lock_path(f"TCPIP::127.0.0.1::{port}::SOCKET")
        finally:
            stop_holder(holder)


def test_one_machine_wide_directory_whatever_the_runtime_dir(tmp_path, monkeypatch):
    """ssh, cron and sudo shells have another (or no) $XDG_RUNTIME_DIR: same lock all the same."""
    monkeypatch.delenv(LOCK_DIR_ENV)
    mine, theirs = tmp_path / "run-user-1000", tmp_path / "run-user-0"
    mine.mkdir()
    theirs.mkdir()
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(mine))
    with sim.start_bench({"dmm": "keysight-34461a"}) as bench:
        resource = bench.resources["dmm"]
        env = {k: v for k, v in os.environ.items() if k != LOCK_DIR_ENV}
        holder = start_holder(resource, {**env, "XDG_RUNTIME_DIR": str(theirs)})
        try:
            dmm = create_driver("keysight-34461a", resource, name="dmm")
            with pytest.raises(InstrumentError, match=rf"in use by pid {holder.pid} ") as caught:
                dmm.connect()
            assert caught.value.kind == KIND_IN_USE
            assert not str(lock_path(resource)).startswith((str(mine), str(theirs)))
        finally:
            stop_holder(holder)


def test_the_shared_lock_directory_and_files_are_open_to_every_user(tmp_path, monkeypatch):
    import stat

    shared = tmp_path / "station-locks"
    monkeypatch.setenv(LOCK_DIR_ENV, str(shared))
    held = acquire("TCPIP::127.0.0.1::2::SOCKET")
    try:
        assert stat.S_IMODE(shared.stat().st_mode) == 0o1777
        assert stat.S_IMODE(lock_path("TCPIP::127.0.0.1::2::SOCKET").stat().st_mode) == 0o666
    finally:
        held.release()
