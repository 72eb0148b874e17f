"""Every supply model says whether a channel is current-limited, from its own status query,
byte for byte: Rigol `:OUTP:MODE?`, Keysight's questionable instrument summary register, and
the Korad's STATUS? byte."""

from __future__ import annotations

import pytest
import serial

from drivers import InstrumentError, create_driver
from drivers.errors import KIND_GARBAGE
from drivers.models.korad import KoradKA3005P
from drivers.models.psu import KeysightE36312A, PowerSupply, RigolDP832


def test_rigol_reads_the_output_mode(scripted):
    transport = scripted(
        [(":OUTP:MODE? CH1", "CV"), (":OUTP:MODE? CH2", "CC"), (":OUTP:MODE? CH3", "UR"),
         (":OUTP:MODE? CH1", "CC")]
    )  # fmt: skip
    psu = RigolDP832(transport, "psu")
    assert [psu.regulation(channel) for channel in (1, 2, 3)] == ["CV", "CC", "UR"]
    assert psu.is_current_limited(1) is True


def test_rigol_garbled_mode_is_an_error(scripted):
    with pytest.raises(InstrumentError, match="expected CV, CC or UR") as caught:
        RigolDP832(scripted([(":OUTP:MODE? CH1", "ON")]), "psu").regulation(1)
    assert caught.value.kind == KIND_GARBAGE


def test_keysight_reads_the_instrument_summary_condition(scripted):
    transport = scripted(
        [
            ("STAT:QUES:INST:ISUM1:COND?", "+1"),
            ("STAT:QUES:INST:ISUM2:COND?", "+2"),
            ("STAT:QUES:INST:ISUM3:COND?", "+0"),
            ("STAT:QUES:INST:ISUM1:COND?", "1"),
        ]
    )
    psu = KeysightE36312A(transport, "psu")
    assert [psu.regulation(channel) for channel in (1, 2, 3)] == ["CV", "CC", "UR"]
    assert psu.is_current_limited(1) is False
    with pytest.raises(ValueError, match="no channel 4"):
        psu.regulation(4)


def test_keysight_garbled_register_is_an_error(scripted):
    transport = scripted([("STAT:QUES:INST:ISUM1:COND?", "CV")])
    with pytest.raises(InstrumentError, match="expected a register value") as caught:
        KeysightE36312A(transport, "psu").regulation(1)
    assert caught.value.kind == KIND_GARBAGE


class _Port:
    """A pyserial port playing back (sent, reply) pairs, byte for byte."""

    def __init__(self, script: list[tuple[bytes, bytes]]) -> None:
        self.script, self.pending = list(script), b""
        self.timeout = self.write_timeout = 1.0

    def write(self, data: bytes) -> int:
        sent, reply = self.script.pop(0)
        assert data == sent, f"sent {data!r}, expected {sent!r}"
        self.pending += reply
        return len(data)

    @property
    def in_waiting(self) -> int:
        return len(self.pending)

    def read(self, size: int = 1) -> bytes:
        data, self.pending = self.pending[:size], self.pending[size:]
        return data

    def reset_input_buffer(self) -> None:
        self.pending = b""

    def cancel_read(self) -> None:
        pass

    def close(self) -> None:
        pass


def test_korad_reads_bit_0_of_its_status_byte(monkeypatch, tmp_path):
    monkeypatch.setenv("STATION_LOCK_DIR", str(tmp_path))
    monkeypatch.setattr(KoradKA3005P, "COMMAND_GAP_S", 0.0)
    port = _Port([(b"STATUS?", b"\x41"), (b"STATUS?", b"\x40"), (b"STATUS?", b"\x01")])
    monkeypatch.setattr(serial, "serial_for_url", lambda url, **kw: port)
    psu = create_driver("korad-ka3005p", "/dev/ttyUSB7", name="psu", timeout_ms=200)
    try:
        assert psu.regulation(1) == "CV"  # output on, constant voltage
        assert psu.is_current_limited(1) is True  # output on, constant current
        assert psu.regulation(1) == "CV"  # output off
        assert not port.script
    finally:
        psu.close()


def test_every_model_implements_it():
    for model in (RigolDP832, KeysightE36312A, KoradKA3005P):
        assert issubclass(model, PowerSupply)
        assert "regulation" not in getattr(model, "__abstractmethods__", ())
