"""RigolDS1054Z against recorded exchanges, binary blocks included: every byte it sends and
every reply it parses; and the Waveform's CSV."""

from __future__ import annotations

import csv
import math
from array import array

import pytest

from drivers import InstrumentError
from drivers.errors import KIND_GARBAGE, KIND_TIMEOUT, KIND_WRONG_MODEL
from drivers.models.scope import Oscilloscope, RigolDS1054Z, Waveform

IDN = "RIGOL TECHNOLOGIES,DS1054Z,DS1ZA164658712,00.04.04.SP4"
APPLIED = [("*OPC?", "1"), (":SYST:ERR?", '0,"No error"')]
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + bytes(17)


class BlockScript:
    """A scripted transport that also reads binary blocks: (command, bytes) for `query_block`."""

    def __init__(self, script: list[tuple[str, str | bytes | None]]) -> None:
        self.script = list(script)
        self.resource = "TCPIP::scope::5555::SOCKET"
        self.timeout_ms = 3000
        self.closed = False

    def _next(self, command: str, kind: type | None) -> str | bytes | None:
        assert self.script, f"unexpected {command!r}: the script is finished"
        expected, reply = self.script.pop(0)
        assert command == expected, f"sent {command!r}, expected {expected!r}"
        assert (reply is None) if kind is None else isinstance(reply, kind), command
        return reply

    def open(self) -> None:
        pass

    def write(self, command: str) -> None:
        self._next(command, None)

    def read(self) -> str:
        raise AssertionError("no bare reads")

    def query(self, command: str) -> str:
        return str(self._next(command, str))

    def query_block(self, command: str) -> bytes:
        reply = self._next(command, bytes)
        assert isinstance(reply, bytes)
        return reply

    def in_flight(self) -> None:
        return None

    def interrupt(self) -> bool:
        return True

    def set_call_guard(self, guard) -> None:
        pass

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def script():
    made: list[BlockScript] = []

    def make(exchanges):
        made.append(BlockScript(exchanges))
        return made[-1]

    yield make
    for transport in made:
        assert not transport.script, f"never sent: {transport.script}"


def test_connect_accepts_the_ds1000z_family_and_needs_a_block_transport(script, scripted):
    assert RigolDS1054Z(script([("*IDN?", IDN)]), "scope").connect() == IDN
    mso = "RIGOL TECHNOLOGIES,MSO1104Z,DS1ZC0000,00.04.04"
    assert RigolDS1054Z(script([("*IDN?", mso)]), "scope").connect() == mso
    with pytest.raises(InstrumentError, match="binary blocks, which this transport") as caught:
        RigolDS1054Z(scripted([]), "scope").connect()  # no query_block: refused before I/O
    assert caught.value.kind == KIND_WRONG_MODEL


def test_channel_timebase_and_trigger_settings(script):
    transport = script(
        [
            (":CHAN1:DISP ON", None), (":CHAN1:PROB 1", None), (":CHAN1:COUP AC", None),
            (":CHAN1:SCAL 0.005", None), (":CHAN1:OFFS 0", None), *APPLIED,
            (":TIM:MAIN:SCAL 5e-06", None), (":TIM:MAIN:OFFS 0", None), *APPLIED,
            (":TRIG:MODE EDGE", None), (":TRIG:EDG:SOUR CHAN1", None),
            (":TRIG:EDG:SLOP NEG", None), (":TRIG:EDG:LEV 1.65", None), *APPLIED,
        ]
    )  # fmt: skip
    scope = RigolDS1054Z(transport, "scope")
    scope.configure_channel(1, volts_per_div=0.005, coupling="ac")
    scope.set_timebase(5e-6)
    scope.set_trigger(1, level=1.65, slope="falling")


def test_measurements_and_the_invalid_value(script):
    transport = script(
        [
            (":MEAS:ITEM? VPP,CHAN1", "7.000000e-03"),
            (":MEAS:ITEM? FREQ,CHAN2", "1.001252e+05"),
            (":MEAS:ITEM? RTIM,CHAN1", "9.9E37"),
        ]
    )
    scope = RigolDS1054Z(transport, "scope")
    assert scope.measure_vpp(1) == 0.007
    assert scope.measure_frequency(2) == 100125.2
    assert scope.measure_rise_time(1) == math.inf  # cannot measure: a limit fails, never passes


def test_capture_arms_polls_the_trigger_then_reads_the_waveform(script, monkeypatch):
    monkeypatch.setattr(RigolDS1054Z, "POLL_S", 0.0)
    preamble = "0,0,4,1,1.000000e-06,-2.000000e-06,0,4.000000e-02,-41,127"
    transport = script(
        [
            (":SING", None), *APPLIED,
            (":TRIG:STAT?", "WAIT"), (":TRIG:STAT?", "TD"), (":TRIG:STAT?", "STOP"),
            (":WAV:SOUR CHAN1", None), (":WAV:MODE NORM", None), (":WAV:FORM BYTE", None),
            *APPLIED,
            (":WAV:PRE?", preamble),
            (":WAV:DATA?", bytes([86, 127, 168, 255])),
        ]
    )  # fmt: skip
    wave = RigolDS1054Z(transport, "scope").capture(1)
    assert wave.channel == 1 and len(wave) == 4
    # volts = (code - y_origin - y_reference) * y_increment; time = index * dx + x_origin
    assert list(wave.volts) == pytest.approx([0.0, 1.64, 3.28, 6.76])
    assert list(wave.time) == pytest.approx([-2e-6, -1e-6, 0.0, 1e-6])
    assert wave.sample_interval == pytest.approx(1e-6)
    assert wave.vpp == pytest.approx(6.76)


def test_wait_for_trigger_says_false_when_nothing_triggers(script, monkeypatch):
    monkeypatch.setattr(RigolDS1054Z, "POLL_S", 0.0)
    transport = script([(":TRIG:STAT?", "WAIT")] * 3)
    ticks = iter([0.0, 0.0, 0.5, 1.5])
    monkeypatch.setattr("drivers.models.scope.time.monotonic", lambda: next(ticks))
    assert RigolDS1054Z(transport, "scope").wait_for_trigger(timeout_s=1.0) is False


def test_capture_without_a_trigger_is_a_timeout(script, monkeypatch):
    monkeypatch.setattr(RigolDS1054Z, "wait_for_trigger", lambda self, timeout_s: False)
    transport = script([(":SING", None), *APPLIED])
    with pytest.raises(InstrumentError, match=r"no trigger within 0\.5 s") as caught:
        RigolDS1054Z(transport, "scope").capture(1, timeout_s=0.5)
    assert caught.value.kind == KIND_TIMEOUT


def test_a_waveform_shorter_than_its_preamble_is_garbage(script):
    transport = script(
        [
            (":WAV:SOUR CHAN2", None), (":WAV:MODE NORM", None), (":WAV:FORM BYTE", None),
            *APPLIED,
            (":WAV:PRE?", "0,0,1200,1,1e-08,-6e-06,0,4e-04,0,127"),
            (":WAV:DATA?", bytes(1199)),
        ]
    )  # fmt: skip
    with pytest.raises(InstrumentError, match="sent 1199 points, the preamble says 1200") as caught:
        RigolDS1054Z(transport, "scope").waveform(2)
    assert caught.value.kind == KIND_GARBAGE
    bad = script([(":WAV:PRE?", "0,0,1200")])
    with pytest.raises(InstrumentError, match="expected 10 numbers from ':WAV:PRE\\?'"):
        RigolDS1054Z(bad, "scope").preamble()


def test_screenshot_is_checked_to_be_a_png(script):
    transport = script([(":DISP:DATA? ON,OFF,PNG", PNG), (":DISP:DATA? ON,OFF,PNG", b"BM\x00\x00")])
    scope = RigolDS1054Z(transport, "scope")
    assert scope.screenshot() == PNG
    with pytest.raises(InstrumentError, match="did not send a PNG"):
        scope.screenshot()


def test_bad_settings_are_refused_before_any_io(script):
    scope = RigolDS1054Z(script([]), "scope")
    with pytest.raises(ValueError, match="no channel 5 on this scope"):
        scope.measure_vpp(5)
    with pytest.raises(ValueError, match=r"volts_per_div must be within 0\.001\.\.10"):
        scope.configure_channel(1, volts_per_div=20)
    with pytest.raises(ValueError, match="unknown coupling 'hf'"):
        scope.configure_channel(1, volts_per_div=1, coupling="hf")
    with pytest.raises(ValueError, match="unknown slope 'up'"):
        scope.set_trigger(1, 0.0, slope="up")


def test_waveform_csv_keeps_every_sample_at_full_precision(tmp_path):
    wave = Waveform(3, array("d", [-1e-6, 0.0, 1e-6]), array("d", [0.1, 3.3000000000000003, -2.5]))
    path = wave.write_csv(tmp_path / "w.csv")
    rows = list(csv.reader(path.open()))
    assert rows[0] == ["time_s", "ch3_volts"]
    expected = list(zip(wave.time, wave.volts, strict=True))
    assert [(float(t), float(v)) for t, v in rows[1:]] == expected
    with pytest.raises(ValueError, match="2 times for 1 voltages"):
        Waveform(1, array("d", [0.0, 1.0]), array("d", [0.0]))


def test_is_an_oscilloscope():
    assert issubclass(RigolDS1054Z, Oscilloscope)
