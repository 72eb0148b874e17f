"""Group commit: requests are coalesced, waits mean durable, errors reach the caller."""

from __future__ import annotations

import os
import threading

import pytest

from station.storage.syncer import Syncer


def test_wait_returns_once_every_request_is_synced(tmp_path, monkeypatch):
    synced_sizes = []
    real_fsync = os.fsync
    gate = threading.Event()

    def slow_fsync(fd):
        gate.wait(5)  # hold the first fsync so later requests pile up behind it
        synced_sizes.append(os.fstat(fd).st_size)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", slow_fsync)
    with open(tmp_path / "journal", "a") as handle:
        syncer = Syncer(handle.fileno())
        for i in range(50):
            handle.write(f"event {i}\n")
            handle.flush()
            syncer.request()
        gate.set()
        syncer.wait()
        size = os.fstat(handle.fileno()).st_size
        syncer.close()
    # Every byte written before the last request was covered by an fsync...
    assert synced_sizes[-1] == size
    # ...and 50 requests needed far fewer fsyncs.
    assert len(synced_sizes) < 50


def test_an_fsync_error_is_raised_to_the_next_caller(tmp_path):
    handle = open(tmp_path / "journal", "a")  # noqa: SIM115 - closed below to break fsync
    syncer = Syncer(handle.fileno())
    handle.close()  # the descriptor is gone: fsync fails with EBADF
    syncer.request()
    with pytest.raises(OSError):
        syncer.wait()
    syncer.close()
