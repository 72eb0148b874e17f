"""Instrument classes of your own, in-process: how they are found, what is refused (at its
station.yaml line, with what to do), and what a plain class gets from the framework (its
optional members honoured, the stop guard and a lock on every call, a final close, its identity
in the record, its attachments collected)."""

from __future__ import annotations

import textwrap
import threading
import time
from pathlib import Path

import pytest

from drivers import InstrumentError
from station.authoring.helpers import Dut
from station.bench.instruments import InstrumentSet, check_drivers
from station.config.model import ConfigError, load_config
from station.config.procedure_loader import load_procedure
from station.engine.runner import Runner
from station.engine.worker import refuse_stopped_phase_io
from station.storage.journal import Journal

PLAIN = '''
import threading

EVENTS = []


class Board:
    """A plain class: no base, every member optional."""

    def __init__(self, channels: int = 4, name_plate: str = "B-1"):
        self.channels = channels
        self.name_plate = name_plate
        self.state = {}
        self.mode = "idle"
        EVENTS.append(("init", channels))

    def open(self):
        EVENTS.append(("open",))

    @property
    def identity(self):
        return f"ACME,BOARD-{self.channels},{self.name_plate},3.0"

    def set(self, channel, on):
        self.state[channel] = on
        return on

    def slow(self, seconds, started=None):
        if started is not None:
            started.set()
        threading.Event().wait(seconds)
        return threading.current_thread().name

    def safe_state(self):
        EVENTS.append(("safe_state", dict(self.state)))
        self.state.clear()

    def close(self):
        EVENTS.append(("close",))

    def run_attachments(self):
        return {"board log.txt": "relays: " + repr(self.state), "raw.bin": bytes([0, 1, 2])}


class Bare:
    """Nothing optional at all."""


class Broken:
    def open(self):
        raise OSError("no such device: /dev/ttyACM9")

    def safe_state(self):
        EVENTS.append(("broken safe_state",))

    def close(self):
        EVENTS.append(("broken close",))


class WithResource:
    def __init__(self, resource, speed=9600):
        self.resource = resource

    def identity(self):
        return f"Maker Model {self.resource}"
'''


def write(root: Path, instruments: str, procedure: str = "") -> Path:
    package = root / "fixtures_pkg"
    package.mkdir(exist_ok=True)
    (package / "__init__.py").write_text("", encoding="utf-8")
    (package / "boards.py").write_text(PLAIN, encoding="utf-8")
    (root / "proc.py").write_text(
        textwrap.dedent(procedure) or "from station import phase\n\n@phase\ndef p():\n    pass\n",
        encoding="utf-8",
    )
    path = root / "station.yaml"
    path.write_text(
        "station: {name: Bench}\ninstruments:\n"
        + textwrap.indent(textwrap.dedent(instruments), "  ")
        + "procedures:\n  T1: {module: proc.py}\n",
        encoding="utf-8",
    )
    return path


def config_of(root: Path, instruments: str, procedure: str = ""):
    return load_config(write(root, instruments, procedure))


def events(config) -> list:
    import sys

    return sys.modules["fixtures_pkg.boards"].EVENTS


def refused(config) -> str:
    with pytest.raises(ConfigError) as caught:
        check_drivers(config)
    return str(caught.value)


# -- found beside station.yaml, then installed; refused with a line and a suggestion ---------


def test_a_plain_class_beside_station_yaml_is_built_with_its_config_and_opened(tmp_path):
    config = config_of(
        tmp_path, "board: {driver: fixtures_pkg.boards:Board, config: {channels: 8}}\n"
    )
    with InstrumentSet(config, ["board"]) as instruments:
        board = instruments["board"]
        assert events(config)[:3] == [("init", 8), ("open",), ("safe_state", {})]
        assert board.set(3, True) is True and board.state == {3: True}
        assert board.channels == 8  # attributes read through
        board.mode = "armed"  # and written through
        assert board.mode == "armed"
        (opened,) = instruments.opened
        assert opened.identity == "ACME,BOARD-8,B-1,3.0"
        (record,) = instruments.records()
        assert (record.driver, record.resource, record.model, record.serial_number) == (
            "fixtures_pkg.boards:Board",
            None,
            "BOARD-8",
            "B-1",
        )
    assert events(config)[-2:] == [("safe_state", {3: True}), ("close",)]


def test_isinstance_holds_for_the_object_phases_receive(tmp_path):
    config = config_of(tmp_path, "board: {driver: fixtures_pkg.boards:Board}\n")
    import sys

    with InstrumentSet(config, ["board"]) as instruments:
        board_class = sys.modules["fixtures_pkg.boards"].Board
        assert isinstance(instruments["board"], board_class)


def test_a_class_with_no_optional_member_works(tmp_path):
    config = config_of(tmp_path, "bare: {driver: fixtures_pkg.boards:Bare}\n")
    with InstrumentSet(config, ["bare"]) as instruments:
        assert instruments.opened[0].identity == ""
        assert instruments.safe_state() == []
    assert instruments.records() == []  # closed: nothing open any more


def test_an_installed_class_is_found_when_nothing_is_beside_station_yaml(tmp_path):
    config = config_of(
        tmp_path,
        """\
        console:
          driver: drivers.generic:ScpiDevice
          resource: "TCPIP::127.0.0.1::1::SOCKET"
        """,
    )
    check_drivers(config)  # drivers.generic is installed: found there


@pytest.mark.parametrize(
    ("instruments", "line", "advice"),
    [
        (
            "b: {driver: fixtures_pkg.nope:Board}\n",
            "instruments.b.driver",
            "module 'fixtures_pkg.nope' not found: looked for",
        ),
        (
            "b: {driver: fixtures_pkg.boards:board}\n",
            "instruments.b.driver",
            "has no class 'board'; did you mean 'Board'?",
        ),
        (
            "b: {driver: fixtures_pkg.boards:Nothing}\n",
            "instruments.b.driver",
            "it defines Bare, Board, Broken, WithResource",
        ),
        (
            "b: {driver: fixtures_pkg.boards:EVENTS}\n",
            "instruments.b.driver",
            "is a list, not a class",
        ),
        (
            "b: {driver: fixtures_pkg.boards:Board, config: {chanels: 4}}\n",
            "instruments.b.config",
            "no config key 'chanels' (did you mean 'channels'?); it takes channels, name_plate",
        ),
        (
            "b: {driver: fixtures_pkg.boards:Board, resource: COM3}\n",
            "instruments.b.resource",
            "Board() takes no resource",
        ),
        (
            "b: {driver: fixtures_pkg.boards:WithResource}\n",
            "instruments.b.driver",
            "missing a required argument: 'resource'",
        ),
        (
            "b: {driver: fixtures_pkg.boards:Board, sim: fixtures_pkg.boards:Gone}\n",
            "instruments.b.sim",
            "has no class 'Gone'",
        ),
        (
            "b: {driver: drivers.generic:ScpiDevice}\n",
            "instruments.b",
            "talks through a session: give its resource",
        ),
    ],
)
def test_a_class_that_cannot_be_used_is_refused_at_its_line(tmp_path, instruments, line, advice):
    message = refused(config_of(tmp_path, instruments))
    assert f"station.yaml:3: {line}:" in message, message
    assert advice in message, message


def test_a_module_that_fails_to_import_names_its_own_line(tmp_path):
    config = config_of(tmp_path, "b: {driver: fixtures_pkg.boards:Board}\n")
    (tmp_path / "fixtures_pkg" / "boards.py").write_text("x = 1\nraise ImportError('no pyusb')\n")
    message = refused(config)
    assert "station.yaml:3: instruments.b.driver:" in message
    assert "boards.py:2: cannot import" in message and "ImportError: no pyusb" in message


def test_a_file_path_names_a_class_too(tmp_path):
    config = config_of(
        tmp_path, "b: {driver: fixtures_pkg/boards.py:Board, config: {channels: 2}}\n"
    )
    with InstrumentSet(config, ["b"]) as instruments:
        assert instruments.opened[0].identity == "ACME,BOARD-2,B-1,3.0"


def test_a_plain_class_taking_a_resource_gets_it_and_its_os_lock(tmp_path, monkeypatch):
    monkeypatch.setenv("STATION_LOCK_DIR", str(tmp_path / "locks"))
    config = config_of(
        tmp_path, "b: {driver: fixtures_pkg.boards:WithResource, resource: /dev/ttyS7}\n"
    )
    with InstrumentSet(config, ["b"]) as instruments:
        assert instruments["b"].resource == "/dev/ttyS7"
        assert instruments.records()[0].manufacturer == "Maker"
        # A second station (here: a second set) cannot take the same resource meanwhile.
        from drivers.transport import locking

        held = list((tmp_path / "locks").glob("*.lock"))
        assert held and locking.lock_path("/dev/ttyS7") in held


def test_a_failing_open_is_an_instrument_error_naming_it_and_the_object_is_still_made_safe(
    tmp_path,
):
    config = config_of(tmp_path, "b: {driver: fixtures_pkg.boards:Broken}\n")
    instruments = InstrumentSet(config, ["b"])
    with pytest.raises(InstrumentError) as caught:
        instruments.open()
    assert str(caught.value) == "b: open() failed: OSError: no such device: /dev/ttyACM9"
    assert events(config)[-2:] == [("broken safe_state",), ("broken close",)]


# -- the guard, the lock, the final close ------------------------------------------------------


def test_calls_are_refused_by_the_stop_guard_and_after_close(tmp_path):
    config = config_of(tmp_path, "board: {driver: fixtures_pkg.boards:Board}\n")
    instruments = InstrumentSet(config, ["board"]).open()
    board = instruments["board"]
    instruments.set_call_guard(lambda: "the phase was stopped")
    with pytest.raises(InstrumentError) as caught:
        board.set(1, True)
    assert (caught.value.kind, caught.value.command) == ("stopped", "set")
    assert str(caught.value) == "board: set() refused: the phase was stopped"
    instruments.set_call_guard(None)
    assert board.set(1, True)
    instruments.close()
    with pytest.raises(InstrumentError) as caught:
        board.set(1, False)
    assert caught.value.kind == "closed"


def test_two_threads_never_interleave_calls_and_in_flight_says_what_runs(tmp_path):
    config = config_of(tmp_path, "board: {driver: fixtures_pkg.boards:Board, timeout_ms: 200}\n")
    with InstrumentSet(config, ["board"]) as instruments:
        board = instruments["board"]
        started = threading.Event()
        worker = threading.Thread(target=board.slow, args=(3.0, started))
        worker.start()
        started.wait(5)
        (busy,) = instruments.in_flight()
        assert busy.startswith("board: slow() in progress for ")
        began = time.monotonic()
        with pytest.raises(InstrumentError) as caught:
            board.set(2, True)  # waits the timeout (0.2 s) + 2 s for the other call, then gives up
        assert caught.value.kind == "timeout" and "still busy with slow()" in str(caught.value)
        assert 2.0 <= time.monotonic() - began < 2.9
        worker.join()


def test_a_phase_stopped_by_its_timeout_cannot_reach_a_plain_instrument(tmp_path):
    config = config_of(
        tmp_path,
        "board: {driver: fixtures_pkg.boards:Board}\n",
        """\
        from station import phase

        @phase(timeout_s=0.3)
        def stuck(board, run):
            board.slow(1.0)
            run.state["after"] = "reached"
            board.set(9, True)  # after the stop: must be refused
        """,
    )
    procedure = load_procedure("T1", config)
    with InstrumentSet(config, procedure.instrument_names) as instruments:
        runner = Runner(
            procedure,
            Dut("SN-1"),
            instruments=instruments,
            handle_signals=False,
            cancel_grace_s=2.0,
        )
        record = runner.execute()
        time.sleep(1.0)  # the stuck call ends meanwhile; the next one is refused
        assert record.outcome.value == "TIMEOUT"
        assert "'slow()' in progress" not in record.outcome_reason
        assert "board: slow() in progress" in record.outcome_reason, record.outcome_reason
        assert 9 not in instruments["board"].state
    assert refuse_stopped_phase_io() is None  # the main thread is never refused


def test_the_run_records_identities_and_attaches_what_instruments_offer(tmp_path):
    config = config_of(
        tmp_path,
        "board: {driver: fixtures_pkg.boards:Board, config: {name_plate: SN-77}}\n",
        """\
        from station import phase

        @phase
        def switch(board):
            board.set(2, True)
        """,
    )
    procedure = load_procedure("T1", config)
    journal = Journal(tmp_path / "runs")
    with InstrumentSet(config, procedure.instrument_names) as instruments:
        record = Runner(
            procedure,
            Dut("SN-1"),
            instruments=instruments,
            listeners=[journal],
            handle_signals=False,
        ).execute()
    assert record.outcome.value == "PASS"
    (instrument,) = record.instruments
    assert (instrument.name, instrument.identity, instrument.serial_number) == (
        "board",
        "ACME,BOARD-4,SN-77,3.0",
        "SN-77",
    )
    names = sorted(a.name for a in record.attachments)
    assert names == ["board_log.txt", "raw.bin"]
    log = next(a for a in record.attachments if a.name == "board_log.txt")
    # Offered after safe state (the relays were switched off by then).
    assert (journal.run_dir / log.path).read_text() == "relays: {}"
