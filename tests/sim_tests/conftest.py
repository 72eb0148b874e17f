"""A simulated bench on loopback with both drivers, connected through real pyvisa-py."""

from __future__ import annotations

import time

import pytest

import sim
from drivers import create_driver


@pytest.fixture
def sim_bench():
    with sim.start_bench({"dmm": "keysight-34461a", "psu": "rigol-dp832"}, seed=3) as bench:
        yield bench


@pytest.fixture
def connect(sim_bench):
    """connect(name, driver=None, **options): a connected driver on that twin; closed after."""
    opened = []

    def make(name: str, driver: str | None = None, **options):
        default = {"dmm": "keysight-34461a", "psu": "rigol-dp832"}[name]
        instrument = create_driver(driver or default, sim_bench.resources[name], name=name,
                                   **options)  # fmt: skip
        opened.append(instrument)
        instrument.connect()
        return instrument

    yield make
    for instrument in opened:
        instrument.close()


@pytest.fixture
def wait_for():
    """wait_for(condition): poll until true; fails the test after `timeout_s`."""

    def wait(condition, timeout_s: float = 2.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not condition():
            assert time.monotonic() < deadline, "condition never became true"
            time.sleep(0.002)

    return wait
