"""A stopped phase can never leave a supply on: staged stops, refused I/O, final close, a verified
safe state (issue 9 §2).

Real parts only: the simulated twins on loopback TCP, reached by the real drivers through
pyvisa-py; the PSU's output is read back from its twin.
"""

from __future__ import annotations

import socket
import time
import uuid
from typing import Any

import pytest
from pyvisa.constants import StatusCode
from pyvisa.errors import VisaIOError

import drivers.transport.visa_transport as visa_transport
import sim
from drivers import InstrumentError
from station.authoring.helpers import Dut
from station.bench.instruments import InstrumentSet
from station.engine.runner import Runner
from station.records.model import RunRecord

INSTRUMENTS = (
    "{dmm: {driver: keysight-34461a, resource: 'USB0::1::2::3::INSTR', timeout_ms: 30000}, "
    "psu: {driver: rigol-dp832, resource: 'USB0::4::5::6::INSTR', timeout_ms: 30000}}"
)
GRACE_S = 0.2


@pytest.fixture
def sim_bench():
    with sim.start_bench({"dmm": "keysight-34461a", "psu": "rigol-dp832"}, seed=3) as simulated:
        simulated.insert_dut("SN-1")
        yield simulated


def wait_until(condition: Any, timeout_s: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def run_on_sim(bench, simulated, source: str, before_run=None) -> tuple[RunRecord, dict[str, Any]]:
    """Run `source` on the simulated bench, close the instruments; returns the record and the
    procedure module's globals (where a phase and the test meet)."""
    bench.write(source, instruments=INSTRUMENTS)
    procedure = bench.load()
    module = procedure.phases[0].func.__globals__
    with InstrumentSet(bench.config(), procedure.instrument_names, simulated.resources) as opened:
        if before_run is not None:
            before_run(opened)
        runner = Runner(
            procedure,
            Dut("SN-1"),
            instruments=opened,
            handle_signals=False,
            cancel_grace_s=GRACE_S,
        )
        record = runner.execute()
    module["instruments"] = opened
    return record, module


# -- 1. a phase that swallows its stop cannot switch the supply back on -------------------------

SWALLOWS_ITS_STOP = """
    import threading
    from station import phase

    after_close = threading.Event()  # set by the test once the instruments are closed
    late = []  # what the phase's late enable(1) met

    @phase(timeout_s=0.3)
    def stubborn(psu):
        psu.set_voltage(1, 5.0)
        psu.enable(1)
        while True:
            try:  # a retry loop that swallows everything, the stop included
                while not after_close.wait(0.01):
                    pass
                break
            except BaseException:
                continue
        try:
            psu.enable(1)
            late.append("enabled")
        except BaseException as exc:
            late.append(exc)

    @phase(teardown=True, timeout_s=5)
    def power_down(psu):
        psu.disable_all()
"""


def test_phase_swallowing_its_stop_cannot_switch_the_psu_on_after_close(bench, sim_bench):
    record, module = run_on_sim(bench, sim_bench, SWALLOWS_ITS_STOP)
    psu_server = sim_bench.twins["psu"].server
    assert wait_until(lambda: psu_server.connection_count == 0)

    module["after_close"].set()  # the abandoned thread now calls psu.enable(1)
    assert wait_until(lambda: module["late"])
    (late,) = module["late"]
    assert isinstance(late, InstrumentError), late
    assert late.kind in ("stopped", "closed")
    time.sleep(0.1)
    assert sim_bench.bench.channel(1).enabled is False  # read back from the twin
    assert psu_server.connection_count == 0  # nothing reconnected

    stubborn = record.phases[0]
    assert stubborn.outcome == "TIMEOUT"
    assert "phase thread for 'stubborn' did not stop; abandoned" in stubborn.reason
    assert any("did not stop; abandoned" in entry.message for entry in record.logs)
    assert record.phases[1].outcome == "PASS"


def test_stopped_phase_io_is_refused_while_teardown_runs(bench, sim_bench):
    record, module = run_on_sim(
        bench,
        sim_bench,
        """
        import threading
        from station import phase

        refused = []
        teardown_done = threading.Event()

        @phase(timeout_s=0.3)
        def keeps_trying(psu):
            while not teardown_done.is_set():
                try:
                    psu.enable(1)
                except BaseException as exc:
                    if getattr(exc, "kind", None) == "stopped":
                        refused.append(exc)
                try:
                    teardown_done.wait(0.01)
                except BaseException:
                    pass

        @phase(teardown=True, timeout_s=5)
        def power_down(psu):
            psu.disable_all()
            assert not psu.is_enabled(1)
            teardown_done.set()
        """,
    )
    assert [p.outcome for p in record.phases] == ["TIMEOUT", "PASS"]
    assert module["refused"], "the stopped phase's I/O was not refused"
    assert "keeps_trying" in str(module["refused"][0])
    assert sim_bench.bench.channel(1).enabled is False


def test_closed_instruments_stay_closed_for_any_thread(bench, sim_bench):
    record, module = run_on_sim(
        bench,
        sim_bench,
        """
        import threading
        from station import phase

        after_close = threading.Event()
        late = []

        @phase
        def starts_a_poller(psu):
            def poll():  # not a phase thread: no guard applies, only the final close
                after_close.wait(30)
                try:
                    psu.enable(1)
                    late.append("enabled")
                except BaseException as exc:
                    late.append(exc)

            threading.Thread(target=poll, daemon=True).start()
        """,
    )
    assert record.outcome == "PASS"
    psu_server = sim_bench.twins["psu"].server
    assert wait_until(lambda: psu_server.connection_count == 0)
    module["after_close"].set()
    assert wait_until(lambda: module["late"])
    (late,) = module["late"]
    assert isinstance(late, InstrumentError) and late.kind == "closed", late
    assert sim_bench.bench.channel(1).enabled is False
    assert psu_server.connection_count == 0
    with pytest.raises(RuntimeError, match="closed for good"):
        module["instruments"].open()


# -- 2. staged stop: a cooperative phase exits without an asynchronous exception ----------------

COOPERATIVE = """
    from drivers import InstrumentError
    from station import phase
    from station.authoring.cancel import PhaseCancelled
    import time

    def clean_up(log):
        # Pure Python (no I/O: a stopped phase's I/O is refused); an asynchronous exception
        # injected now would cut it short.
        for _ in range(10):
            time.sleep(0.01)
        log.info("cleaned up")

    @phase(timeout_s=0.3)
    def waits(run, log):
        try:
            run.sleep(60)
        except PhaseCancelled as exc:  # from the token: it carries the reason (an async one not)
            log.info(f"stopped: {exc}")
            clean_up(log)
            raise

    @phase(teardown=True, timeout_s=5)
    def power_down(psu):
        psu.disable_all()
"""


def test_phase_stopped_in_run_sleep_exits_cooperatively(bench, sim_bench):
    record, _ = run_on_sim(bench, sim_bench, COOPERATIVE)
    waits = record.phases[0]
    assert waits.outcome == "TIMEOUT"
    assert waits.reason == "phase 'waits' timed out after 0.3 s"  # nothing abandoned
    assert [entry.message for entry in waits.logs] == [
        "stopped: phase 'waits' timed out after 0.3 s",
        "cleaned up",
    ]


def test_phase_stopped_in_instrument_io_exits_cooperatively(bench, sim_bench):
    def silence_the_dmm(_opened):
        sim_bench.twins["dmm"].server.faults.no_reply_to = r"MEAS|READ"

    source = COOPERATIVE.replace(
        "def waits(run, log):\n        try:\n            run.sleep(60)\n"
        "        except PhaseCancelled as exc:",
        "def waits(dmm, log):\n        try:\n            dmm.measure_dc_voltage()\n"
        "        except InstrumentError as exc:  # never answered: the interrupt aborts it",
    )
    assert source != COOPERATIVE
    record, _ = run_on_sim(bench, sim_bench, source, before_run=silence_the_dmm)
    waits = record.phases[0]
    assert waits.outcome == "TIMEOUT"
    assert "abandoned" not in waits.reason
    assert sim_bench.twins["dmm"].server.faults.swallowed >= 1
    (stopped, cleaned) = [entry.message for entry in waits.logs]
    assert stopped.startswith("stopped: ") and "interrupted" in stopped
    assert cleaned == "cleaned up"


# -- 5. a safe state that is not verified is a loud ERROR ---------------------------------------


def test_unverified_safe_state_makes_the_run_error_naming_the_instrument(bench, sim_bench):
    def lose_the_off_command(_opened):
        # The OFF is swallowed (never executed): only a read-back can tell the output is on.
        sim_bench.twins["psu"].server.faults.no_reply_to = r"OUTP CH\d,OFF"

    record, _ = run_on_sim(
        bench,
        sim_bench,
        """
        from station import phase

        @phase
        def powered(psu):
            psu.set_voltage(1, 5.0)
            psu.enable(1)
        """,
        before_run=lose_the_off_command,
    )
    assert sim_bench.bench.channel(1).enabled is True  # the fault kept it on: the test is real
    assert record.phases[0].outcome == "PASS"
    assert record.outcome == "ERROR"
    assert record.outcome_reason.startswith("safe state NOT verified")
    assert "psu" in record.outcome_reason
    assert any(e.level == "ERROR" and "NOT SAFE: psu" in e.message for e in record.logs)


# -- 6. where the transport cannot abort, the phase ends at the instrument timeout --------------


class UsbLikeResource:
    """A test double of a pyvisa-py USB/VXI-11 resource, carried to a twin over TCP: like the
    real ones, its read cannot be cancelled from another thread (there is no `cancel_read`),
    so a blocked read ends only at its timeout (VI_ERROR_TMO)."""

    def __init__(self, address: tuple[str, int], **options: Any) -> None:
        self.timeout = options.get("timeout", 2000)  # ms, as pyvisa
        self.read_termination = options.get("read_termination", "\n")
        self.write_termination = options.get("write_termination", "\n")
        self._sock = socket.create_connection(address, timeout=5)
        self._buffer = b""

    def write(self, message: str) -> None:
        self._sock.sendall((message + self.write_termination).encode("ascii"))

    def read(self) -> str:
        end = self.read_termination.encode("ascii")
        deadline = time.monotonic() + self.timeout / 1000
        while end not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise VisaIOError(StatusCode.error_timeout)
            self._sock.settimeout(remaining)
            try:
                data = self._sock.recv(4096)
            except TimeoutError:
                continue
            if not data:
                raise VisaIOError(StatusCode.error_connection_lost)
            self._buffer += data
        line, _, self._buffer = self._buffer.partition(end)
        return line.decode("ascii")

    def clear(self) -> None:  # a device clear: drop whatever is buffered
        self._buffer = b""

    def close(self) -> None:
        self._sock.close()


class UsbLikeResourceManager:
    def __init__(self, addresses: dict[str, tuple[str, int]]) -> None:
        self.addresses = addresses

    def open_resource(self, resource: str, **options: Any) -> UsbLikeResource:
        return UsbLikeResource(self.addresses[resource], **options)


def test_io_that_cannot_be_aborted_ends_the_phase_at_the_instrument_timeout(
    bench, sim_bench, monkeypatch
):
    # The dmm as a USB instrument (unique per test: the instrument lock is machine-wide).
    usb = f"USB0::0x2A8D::0x1301::{uuid.uuid4().hex[:12]}::INSTR"
    dmm_server = sim_bench.twins["dmm"].server
    host, port = dmm_server.resource.split("::")[1:3]
    manager = UsbLikeResourceManager({usb: (host, int(port))})
    monkeypatch.setattr(visa_transport, "get_resource_manager", lambda: manager)
    resources = {**sim_bench.resources, "dmm": usb}
    bench.write(
        """
        from station import phase

        seen = {}

        @phase(timeout_s=0.3)
        def stuck(dmm):
            dmm.measure_dc_voltage()  # never answered

        @phase(teardown=True, timeout_s=10)
        def after(dmm):
            seen["idn"] = dmm.query("*IDN?")
            seen["sessions"] = dmm_connections()
        """,
        instruments=(
            "{dmm: {driver: keysight-34461a, resource: 'USB0::1::2::3::INSTR', timeout_ms: 1500}}"
        ),
    )
    procedure = bench.load()
    module = procedure.phases[0].func.__globals__
    module["dmm_connections"] = lambda: dmm_server.connection_count
    with InstrumentSet(bench.config(), procedure.instrument_names, resources) as opened:
        dmm_server.faults.no_reply_to = r"MEAS|READ"
        record = Runner(
            procedure, Dut("SN-1"), instruments=opened, handle_signals=False, cancel_grace_s=0.2
        ).execute()

    stuck, after = record.phases
    assert stuck.outcome == "TIMEOUT"
    assert (
        f"dmm ({usb}) cannot abort I/O: the phase ended at the instrument timeout (1.5 s)"
        in stuck.reason
    )
    assert "abandoned" not in stuck.reason  # it did end, at the instrument timeout
    assert (stuck.ended_at - stuck.started_at).total_seconds() >= 1.5 - 0.1
    # Teardown reused the session once the stuck call had ended: no second one was opened.
    assert after.outcome == "PASS", after.error
    assert "34461A" in module["seen"]["idn"]
    assert module["seen"]["sessions"] == 1
