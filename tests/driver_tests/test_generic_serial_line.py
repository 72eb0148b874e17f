"""`driver: serial-line` (SerialLine): a DUT console over the real pyserial path, on a pty served
by the scripted console twin; lines, prompts without a line end, timeouts that say what came,
the transcript, interrupts."""

from __future__ import annotations

import re
import threading
import time

import pytest

from drivers import InstrumentError, SerialLine, create_driver
from drivers.generic import serial_port_of
from sim.pty_server import PtyServer
from sim.twins.generic import ScriptedConsole


@pytest.fixture
def console():
    twin = ScriptedConsole(
        replies={
            "version": "fw 1.2.3",
            r"echo (.*)": r"\1",
            "boot": "U-Boot 2024.01\r\nDRAM: 512 MiB\r\nHit any key to stop autoboot:  3",
            "quiet": "",
        },
        prompt="dut> ",
        banner="Welcome",
    )
    with PtyServer(twin) as server:
        line = create_driver("serial-line", server.resource, name="dut", timeout_ms=1000)
        assert isinstance(line, SerialLine)
        line.connect()
        try:
            yield line, twin
        finally:
            line.close()


def test_write_line_and_read_line(console):
    line, twin = console
    line.write_line("version")
    assert line.read_line() == "Welcome"
    assert line.read_line() == "fw 1.2.3"
    assert twin.received == ["version"]


def test_expect_matches_a_prompt_without_a_line_end_and_consumes_up_to_it(console):
    line, _ = console
    line.write_line("echo hello world")
    match = line.expect(r"hello (\w+)", timeout_s=2)
    assert match.group(1) == "world"
    assert line.expect("dut> $", timeout_s=2).group(0) == "dut> "  # no line end after it
    line.write_line("boot")
    assert line.expect(r"DRAM: (\d+) MiB").group(1) == "512"
    assert line.expect(re.compile(r"autoboot:\s+(\d)")).group(1) == "3"


def test_expect_timeout_names_the_pattern_and_quotes_what_came(console):
    line, _ = console
    line.write_line("quiet")
    began = time.monotonic()
    with pytest.raises(InstrumentError) as caught:
        line.expect(r"login:", timeout_s=0.3)
    assert 0.3 <= time.monotonic() - began < 2
    assert caught.value.kind == "timeout"
    assert str(caught.value).startswith("dut (/dev/pts/")
    assert "expected 'login:' within 0.3 s; last received 'Welcome\\r\\ndut> '" in str(caught.value)


def test_read_line_timeout_keeps_what_arrived_for_the_next_read(console):
    line, _ = console
    line.write_line("quiet")
    assert line.read_line(timeout_s=1) == "Welcome"
    with pytest.raises(InstrumentError, match=r"no line within 0\.2 s; received so far 'dut> '"):
        line.read_line(timeout_s=0.2)
    assert line.clear_input() == "dut> "


def test_the_transcript_has_both_directions_with_times_and_is_handed_over_once(console):
    line, _ = console
    line.write_line("version")
    line.expect("dut> ")
    attachments = line.run_attachments()
    (name,) = attachments
    assert name == "dut-console.txt"
    text = attachments[name]
    assert text.startswith("# console dut (/dev/pts/")
    entries = [entry for entry in text.splitlines() if not entry.startswith("#")]
    assert re.fullmatch(r"\[\s+\d+\.\d{3}\] > version", entries[0]), entries
    assert [entry.split("] ", 1)[1] for entry in entries] == [
        "> version",
        "< Welcome",
        "< fw 1.2.3",
        "< dut> ",
    ]
    assert line.run_attachments() == {}  # the next run starts a new transcript


def test_interrupt_aborts_an_expect_in_flight(console):
    line, _ = console
    failure: list[BaseException] = []

    def wait() -> None:
        try:
            line.expect("never", timeout_s=30)
        except InstrumentError as exc:
            failure.append(exc)

    thread = threading.Thread(target=wait)
    thread.start()
    time.sleep(0.3)
    line.transport.set_call_guard(lambda: "the phase was stopped")
    assert line.transport.interrupt() is True
    thread.join(5)
    assert not thread.is_alive()
    assert failure and failure[0].kind in ("interrupted", "stopped")


def test_a_console_needs_no_idn_and_identifies_as_configured():
    with PtyServer(ScriptedConsole()) as server:
        line = create_driver(
            "serial-line", server.resource, name="dut", config={"identity": "DUT UART J7"}
        )
        try:
            assert line.connect() == "DUT UART J7"
            assert line.transport.baud_rate == 115200
        finally:
            line.close()


@pytest.mark.parametrize(
    ("resource", "port"),
    [
        ("ASRL/dev/ttyUSB0::INSTR", "/dev/ttyUSB0"),
        ("ASRL3::INSTR", "COM3"),
        ("ASRLsocket://127.0.0.1:4001::INSTR", "socket://127.0.0.1:4001"),
        ("/dev/ttyUSB0", "/dev/ttyUSB0"),
        ("socket://10.0.0.5:4001", "socket://10.0.0.5:4001"),
    ],
)
def test_visa_serial_forms_are_opened_through_pyserial(resource, port):
    assert serial_port_of(resource) == port
