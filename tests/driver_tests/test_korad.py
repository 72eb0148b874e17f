"""KA3005P driver and SerialTransport against recorded exchanges, byte for byte.

A fake pyserial port replaces `serial_for_url`: each write must equal the next recorded bytes,
and the recorded reply (no terminator) is what the port then returns.
"""

from __future__ import annotations

import time

import pytest
import serial

from drivers import InstrumentError, create_driver
from drivers.errors import KIND_NOT_APPLIED, KIND_TIMEOUT
from drivers.models.korad import KoradKA3005P
from drivers.transport.serial_transport import SerialTransport

IDN = b"KORAD KA3005P V5.8 SN:03379314"


class RecordedPort:
    """A pyserial port playing back (sent, reply) pairs; records when each write happened."""

    def __init__(self, script: list[tuple[bytes, bytes]]) -> None:
        self.script = list(script)
        self.pending = b""
        self.timeout = 1.0
        self.write_timeout = 1.0
        self.write_times: list[float] = []
        self.closed = False

    def write(self, data: bytes) -> int:
        assert self.script, f"unexpected {data!r}"
        sent, reply = self.script.pop(0)
        assert data == sent, f"sent {data!r}, expected {sent!r}"
        self.write_times.append(time.monotonic())
        self.pending += reply
        return len(data)

    @property
    def in_waiting(self) -> int:
        return len(self.pending)

    def read(self, size: int = 1) -> bytes:
        data, self.pending = self.pending[:size], self.pending[size:]
        return data

    def read_until(self, expected: bytes = b"\n", size=None) -> bytes:
        index = self.pending.find(expected)
        end = len(self.pending) if index < 0 else index + len(expected)
        data, self.pending = self.pending[:end], self.pending[end:]
        return data

    def reset_input_buffer(self) -> None:
        self.pending = b""

    def cancel_read(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def korad(monkeypatch, tmp_path):
    """korad(script) -> a KA3005P driver (not connected) whose port plays `script`."""
    monkeypatch.setenv("STATION_LOCK_DIR", str(tmp_path))
    monkeypatch.setattr(KoradKA3005P, "COMMAND_GAP_S", 0.0)
    ports: list[RecordedPort] = []

    def make(script: list[tuple[bytes, bytes]]) -> KoradKA3005P:
        port = RecordedPort(script)
        ports.append(port)
        monkeypatch.setattr(serial, "serial_for_url", lambda url, **kw: port)
        return create_driver("korad-ka3005p", "/dev/ttyUSB7", name="psu", timeout_ms=200)

    yield make
    for port in ports:
        assert not port.script, f"never sent: {port.script}"


def test_options_and_transport():
    psu = create_driver("korad-ka3005p", "serial:///dev/ttyUSB7", name="psu")
    transport = psu.transport
    assert isinstance(transport, SerialTransport)
    assert transport.url == "/dev/ttyUSB7"
    assert (transport.baud_rate, transport.read_termination, transport.write_termination) == (
        9600,
        "",
        "",
    )


def test_connect_reads_an_unterminated_idn(korad):
    psu = korad([(b"*IDN?", IDN)])
    assert psu.connect() == IDN.decode()


def test_settings_are_read_back(korad):
    psu = korad(
        [
            (b"ISET1:0.250", b""),
            (b"ISET1?", b"0.250"),
            (b"OVP1", b""),
            (b"VSET1:5.00", b""),
            (b"VSET1?", b"05.00"),
            (b"OUT1", b""),
            (b"STATUS?", bytes([0x41])),
            (b"VOUT1?", b"05.00"),
            (b"IOUT1?", b"0.070"),
            (b"OUT0", b""),
            (b"STATUS?", bytes([0x01])),
            (b"STATUS?", bytes([0x01])),  # safe_state's read-back
        ]
    )
    psu.set_current_limit(1, 0.25)
    psu.set_ovp(1, 5.5)
    psu.set_voltage(1, 5.0)
    psu.enable(1)
    assert psu.measure_voltage(1) == 5.0
    assert psu.measure_current(1) == 0.070
    psu.safe_state()


def test_a_setting_the_supply_ignored_is_an_error(korad):
    psu = korad([(b"VSET1:5.00", b""), (b"VSET1?", b"00.00")])
    with pytest.raises(InstrumentError, match=r"VSET1:5 was not applied: VSET1\? reads 0 V") as e:
        psu.set_voltage(1, 5.0)
    assert e.value.kind == KIND_NOT_APPLIED


def test_output_that_stays_off_is_an_error(korad):
    psu = korad([(b"OUT1", b""), (b"STATUS?", bytes([0x01]))])
    with pytest.raises(InstrumentError, match="OUT1 was not applied"):
        psu.enable(1)


def test_short_reply_times_out_naming_what_came(korad):
    psu = korad([(b"VOUT1?", b"05.")])
    with pytest.raises(InstrumentError, match=r"incomplete reply to 'VOUT1\?'.*b'05\.'") as e:
        psu.measure_voltage(1)
    assert e.value.kind == KIND_TIMEOUT


def test_ranges_and_channels_are_checked_before_any_io(korad):
    psu = korad([])
    with pytest.raises(ValueError, match=r"0\.\.30 V"):
        psu.set_voltage(1, 31)
    with pytest.raises(ValueError, match=r"0\.\.5 A"):
        psu.set_current_limit(1, 6)
    with pytest.raises(ValueError, match="no channel 2"):
        psu.enable(2)


def test_commands_are_spaced_by_the_gap(korad, monkeypatch):
    psu = korad([(b"OUT0", b""), (b"STATUS?", b"\x00"), (b"OUT0", b""), (b"STATUS?", b"\x00")])
    monkeypatch.setattr(KoradKA3005P, "COMMAND_GAP_S", 0.05)
    psu.disable(1)
    psu.disable(1)
    port = serial.serial_for_url("")
    gaps = [b - a for a, b in zip(port.write_times, port.write_times[1:], strict=False)]
    assert min(gaps) >= 0.049


def test_a_visa_resource_is_refused_with_a_hint():
    psu = create_driver("korad-ka3005p", "ASRL/dev/ttyUSB7::INSTR", name="psu")
    with pytest.raises(InstrumentError, match="no line terminator"):
        psu.connect()
