"""Group commit: requests are coalesced, waits mean durable, errors reach the caller."""

from __future__ import annotations

import os
import threading
import time

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


def count_fsyncs(monkeypatch: pytest.MonkeyPatch, fd: int) -> list[int]:
    calls: list[int] = []
    real_fsync = os.fsync

    def fsync(target: int) -> None:
        if target == fd:
            calls.append(target)
        real_fsync(target)

    monkeypatch.setattr(os, "fsync", fsync)
    return calls


def test_the_first_fsync_waits_one_interval_and_close_syncs_what_was_requested(
    tmp_path, monkeypatch
):
    with open(tmp_path / "journal", "a") as handle:
        calls = count_fsyncs(monkeypatch, handle.fileno())
        syncer = Syncer(handle.fileno(), interval_s=60)
        syncer.request()
        time.sleep(0.05)  # room for a wrong fsync at once (the right one is 60 s away)
        assert calls == []  # a unit shorter than the interval costs its start no fsync
        syncer.close()
        assert len(calls) == 1


def test_close_without_sync_drops_the_requests(tmp_path, monkeypatch):
    with open(tmp_path / "journal", "a") as handle:
        calls = count_fsyncs(monkeypatch, handle.fileno())
        syncer = Syncer(handle.fileno(), interval_s=60)
        syncer.request()
        syncer.close(sync=False)
        assert calls == []


def test_close_without_sync_still_reports_an_earlier_fsync_error(tmp_path, monkeypatch):
    failed = threading.Event()

    def broken_fsync(fd: int) -> None:
        failed.set()
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with open(tmp_path / "journal", "a") as handle:
        syncer = Syncer(handle.fileno(), interval_s=0)
        syncer.request()
        assert failed.wait(5)
        with pytest.raises(OSError, match="Input/output"):
            syncer.close(sync=False)
