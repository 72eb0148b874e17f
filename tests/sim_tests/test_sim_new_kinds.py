"""The load, SMU, scope and multiplexer drivers against their twins over loopback, through
real pyvisa-py (raw sockets, and VXI-11 for the scope's binary blocks), on the PCBA01 model:
each has something real to measure, and each fault mode shows where it should."""

from __future__ import annotations

import math
import struct
import time
import zlib

import pytest

import sim
from drivers import InstrumentError, create_driver
from drivers.errors import KIND_IO, KIND_NOT_APPLIED
from sim.boards.pcba01 import R_OUT, WEAK_R_OUT
from sim.vxi11_server import Vxi11Server

MODELS = {
    "psu": "rigol-dp832",
    "load": "rigol-dl3021",
    "scope": "rigol-ds1054z",
    "mux": "keysight-daq970a",
    "smu": "keithley-2450",
}
RIPPLE_VPP = 2 * math.sqrt(3) * 0.002  # a 2 mV RMS sawtooth


@pytest.fixture
def bench():
    with sim.start_bench(MODELS, seed=4) as running:
        yield running


@pytest.fixture
def bench_with(bench):
    """bench_with(fault) -> the bench with a board of that fault (None: a good one) inserted."""

    def insert(fault: str | None):
        bench.insert_dut(f"SN-1-F:{fault}" if fault else "SN-1")
        return bench

    return insert


@pytest.fixture
def inst(bench):
    opened = {}

    def make(name: str, resource: str | None = None):
        driver = create_driver(MODELS[name], resource or bench.resources[name], name=name,
                               lock=False)  # fmt: skip
        driver.connect()
        opened[len(opened)] = driver
        return driver

    yield make
    for driver in opened.values():
        driver.close()


def power(psu, limit: float = 1.0) -> None:
    psu.set_current_limit(1, limit)
    psu.set_voltage(1, 5.0)
    psu.enable(1)
    time.sleep(0.02)  # ten time constants of the rail


def test_each_twin_has_its_models_identity_and_refuses_the_wrong_driver(bench, inst):
    assert inst("load").identity.startswith("RIGOL TECHNOLOGIES,DL3021,")
    assert inst("scope").identity.startswith("RIGOL TECHNOLOGIES,DS1054Z,")
    assert inst("mux").identity.startswith("Keysight Technologies,DAQ970A,")
    assert inst("smu").identity.startswith("KEITHLEY INSTRUMENTS,MODEL 2450,")
    wrong = create_driver("rigol-dl3021", bench.resources["scope"], name="x", lock=False)
    try:
        with pytest.raises(InstrumentError, match="expected Rigol DL3021, got 'RIGOL"):
            wrong.connect()
    finally:
        wrong.close()


@pytest.mark.parametrize(("fault", "r_out"), [(None, R_OUT), ("weak_regulator", WEAK_R_OUT)])
def test_a_load_step_droops_the_rail_through_its_output_resistance_and_it_recovers(
    bench_with, inst, fault, r_out
):
    bench_with(fault)
    psu, load = inst("psu"), inst("load")
    power(psu)
    unloaded = load.measure_voltage()
    load.configure("cc", 0.5)
    load.enable_input()
    loaded = load.measure_voltage()
    assert load.measure_current() == pytest.approx(0.5, abs=0.002)
    assert load.measure_power() == pytest.approx(loaded * 0.5, rel=0.01)
    # the LDO passes it on: quiescent + the on-board 50 ohm + the load
    assert psu.measure_current(1) == pytest.approx(0.004 + loaded / 50 + 0.5, abs=0.002)
    load.disable_input()
    assert unloaded == pytest.approx(3.30, abs=0.002)
    assert unloaded - loaded == pytest.approx(0.5 * r_out, abs=0.003)
    assert load.measure_voltage() == pytest.approx(unloaded, abs=0.002)  # recovered


def test_cr_and_cv_modes_and_the_regulators_current_limit(bench_with, inst):
    bench_with(None)
    psu, load = inst("psu"), inst("load")
    power(psu)
    load.configure("cr", 6.6)  # 0.5 A at 3.3 V
    load.enable_input()
    assert load.measure_current() == pytest.approx(load.measure_voltage() / 6.6, abs=0.002)
    load.configure("cv", 3.0)  # holds the rail at 3 V: sinks (3.3 - 3.0) / R_out, capped at 1 A
    assert load.measure_voltage() == pytest.approx(3.0, abs=0.003)
    assert load.mode() == "cv"
    load.configure("cc", 1.5)  # beyond the LDO's 1 A limit: the rail collapses
    assert load.measure_voltage() < 1.0
    load.safe_state()
    assert not bench_with(None).bench.load.on


@pytest.mark.parametrize("model", ["rigol-dp832", "keysight-e36312a", "korad-ka3005p"])
def test_every_psu_says_when_its_current_limit_holds_the_output(model):
    with sim.start_bench({"psu": model, "load": "rigol-dl3021"}, seed=2) as running:
        psu = create_driver(model, running.resources["psu"], name="psu", lock=False)
        load = create_driver("rigol-dl3021", running.resources["load"], name="load", lock=False)
        psu.connect()
        load.connect()
        try:
            power(psu, limit=0.3)
            assert psu.regulation(1) == "CV" and not psu.is_current_limited(1)
            load.configure("cc", 0.5)  # 0.57 A wanted at VIN, 0.3 A allowed
            load.enable_input()
            assert psu.regulation(1) == "CC" and psu.is_current_limited(1)
            load.disable_input()
            assert psu.regulation(1) == "CV"
            running.insert_dut("SN-2-F:shorted_rail")
            assert psu.is_current_limited(1)
            assert psu.measure_current(1) == pytest.approx(0.3, abs=0.01)
        finally:
            psu.close()
            load.close()


def test_scope_sees_the_ripple_and_its_measurements_agree_with_the_waveform(bench_with, inst):
    bench_with(None)
    psu, scope = inst("psu"), inst("scope")
    power(psu)
    scope.configure_channel(1, volts_per_div=0.002, coupling="ac")
    scope.set_timebase(5e-6)
    scope.set_trigger(1, level=0.0)
    wave = scope.capture(1, timeout_s=1.0)
    assert len(wave) == 1200 and wave.sample_interval == pytest.approx(60e-6 / 1200)
    assert wave.time[0] == pytest.approx(-30e-6) and wave.time[600] == pytest.approx(0.0)
    assert wave.vpp == pytest.approx(RIPPLE_VPP, abs=0.0005)
    assert scope.measure_vpp(1) == pytest.approx(wave.vpp)
    assert scope.measure_frequency(1) == pytest.approx(100e3, rel=0.01)
    assert scope.measure_rise_time(1) == pytest.approx(0.8 * 0.3 * 10e-6, rel=0.1)
    # the trigger point is a rising crossing of the level
    assert wave.volts[590] < wave.volts[610]


def test_a_noisy_board_clips_at_a_fine_scale_and_measures_when_zoomed_out(bench_with, inst):
    bench_with("noisy")
    psu, scope = inst("psu"), inst("scope")
    power(psu)
    scope.set_timebase(5e-6)
    scope.set_trigger(1, level=0.0)
    scope.configure_channel(1, volts_per_div=0.005, coupling="ac")
    scope.capture(1)
    assert scope.measure_vpp(1) == math.inf  # clipped: never a number that could pass
    scope.configure_channel(1, volts_per_div=0.05, coupling="ac")
    scope.capture(1)
    assert scope.measure_vpp(1) == pytest.approx(2 * math.sqrt(3) * 0.060, rel=0.03)


def test_a_single_shot_catches_the_soft_start(bench_with, inst):
    bench_with(None)
    psu, scope = inst("psu"), inst("scope")
    scope.configure_channel(1, volts_per_div=1.0, offset=-1.65)
    scope.set_timebase(0.002)
    scope.set_trigger(1, level=1.65)
    scope.arm_single()
    assert scope.wait_for_trigger(timeout_s=0.05) is False  # nothing powered yet
    power(psu)
    assert scope.wait_for_trigger(timeout_s=2.0) is True
    wave = scope.waveform(1)
    assert wave.volts[0] == pytest.approx(0.0, abs=0.1)  # before the trigger: off
    assert wave.volts[-1] == pytest.approx(3.3, abs=0.1)  # 12 ms after: settled
    assert scope.measure_rise_time(1) == pytest.approx(0.002 * math.log(9), rel=0.05)


def test_a_dead_regulator_never_triggers(bench_with, inst):
    bench_with("dead_regulator")
    psu, scope = inst("psu"), inst("scope")
    scope.configure_channel(1, volts_per_div=1.0, offset=-1.65)
    scope.set_timebase(0.002)
    scope.set_trigger(1, level=1.65)
    scope.arm_single()
    power(psu)
    assert scope.wait_for_trigger(timeout_s=0.2) is False
    assert scope.trigger_status() == "WAIT"


def _png_size_and_pixels(image: bytes) -> tuple[int, int, bytes]:
    assert image[:8] == b"\x89PNG\r\n\x1a\n"
    position, chunks = 8, {}
    while position < len(image):
        (length,) = struct.unpack(">I", image[position : position + 4])
        kind = image[position + 4 : position + 8]
        data = image[position + 8 : position + 8 + length]
        (crc,) = struct.unpack(">I", image[position + 8 + length : position + 12 + length])
        assert crc == zlib.crc32(kind + data), kind
        chunks[kind] = chunks.get(kind, b"") + data
        position += 12 + length
    width, height = struct.unpack(">II", chunks[b"IHDR"][:8])
    return width, height, zlib.decompress(chunks[b"IDAT"])


@pytest.mark.parametrize("transport", ["socket", "vxi11"])
def test_waveform_and_screenshot_blocks_through_pyvisa_py(bench_with, bench, inst, transport):
    """Binary blocks over the raw socket and over VXI-11 (pyvisa-py's own read_binary_values)."""
    bench_with(None)
    power(inst("psu"))
    server = Vxi11Server(bench.twins["scope"].personality).start()
    try:
        scope = inst("scope", server.resource if transport == "vxi11" else None)
        scope.configure_channel(1, volts_per_div=0.002, coupling="ac")
        scope.set_timebase(5e-6)
        scope.set_trigger(1, level=0.0)
        wave = scope.capture(1, timeout_s=1.0)
        assert len(wave) == 1200 and wave.vpp == pytest.approx(RIPPLE_VPP, abs=0.0005)
        width, height, pixels = _png_size_and_pixels(scope.screenshot())
        assert (width, height) == (600, 400)
        assert len(pixels) == height * (width + 1)
        assert len(set(pixels)) >= 3  # background, graticule and the trace
    finally:
        server.stop()


def test_a_malformed_block_raises_and_the_next_call_reconnects(bench_with, bench, inst):
    bench_with(None)
    scope = inst("scope")
    bench.twins["scope"].server.faults.garbage_to = r"WAV:DATA"
    bench.twins["scope"].server.faults.count = 1
    with pytest.raises(InstrumentError, match=r"expected an IEEE 488\.2 block") as caught:
        scope.waveform(1)
    assert caught.value.kind == KIND_IO
    assert len(scope.waveform(1)) == 1200


def test_mux_scans_the_test_points(bench_with, inst):
    bench_with(None)
    psu, mux = inst("psu"), inst("mux")
    power(psu)
    readings = mux.scan([101, 102, 103, 104, 110], nplc=1)
    assert readings[101] == pytest.approx(1.80, abs=0.001)
    assert readings[102] == pytest.approx(5.0 - 0.1 * 0.070, abs=0.003)
    assert readings[103] == pytest.approx(2.500, abs=0.001)
    assert readings[104] == pytest.approx(3.30, abs=0.002)
    assert readings[110] == pytest.approx(0.0, abs=0.001)  # not wired
    assert mux.measure_dc_voltage(103) == pytest.approx(2.5, abs=0.001)


def test_mux_bad_1v8(bench_with, inst):
    bench_with("bad_1v8")
    power(inst("psu"))
    assert inst("mux").scan([101])[101] == pytest.approx(1.65, abs=0.001)


def test_mux_relays_and_verified_safe_state(bench, inst):
    mux = inst("mux")
    mux.close_channels(101, 104)
    assert mux.closed_channels() == [101, 104]
    assert bench.twins["mux"].personality.closed_channels == [101, 104]
    mux.safe_state()
    assert bench.twins["mux"].personality.closed_channels == []
    mux.close_channels(102)
    bench.twins["mux"].server.faults.no_reply_to = "ROUT:OPEN"  # the relay command is lost
    with pytest.raises(InstrumentError, match="channels 102 still read closed") as caught:
        mux.safe_state()
    assert caught.value.kind == KIND_NOT_APPLIED


def test_smu_on_the_enable_pin(bench_with, inst):
    bench_with(None)
    smu = inst("smu")
    smu.source_voltage(3.3, current_limit=100e-6)
    smu.enable()
    assert smu.measure_current(nplc=1) == pytest.approx(3.3e-6, rel=0.01)
    assert smu.measure_voltage() == pytest.approx(3.3, abs=0.001)
    assert smu.in_compliance() is False
    smu.source_current(2e-6, voltage_limit=5.0)
    assert smu.measure_voltage() == pytest.approx(2.0, abs=0.001)
    smu.safe_state()
    assert not smu.is_enabled()


def test_smu_limits_a_leaky_enable_pin(bench_with, inst):
    bench_with("leaky_enable")
    smu = inst("smu")
    smu.source_voltage(3.3, current_limit=100e-6)
    smu.enable()
    assert smu.measure_current() == pytest.approx(100e-6, rel=0.01)
    assert smu.in_compliance() is True
    assert smu.measure_voltage() < 3.3  # the limit holds the pin below the level
    smu.disable()


def test_smu_safe_state_names_an_output_that_stays_on(bench, inst):
    smu = inst("smu")
    smu.enable()
    bench.twins["smu"].server.faults.no_reply_to = ":OUTP OFF"
    with pytest.raises(InstrumentError, match="the output still reads ON") as caught:
        smu.safe_state()
    assert caught.value.kind == KIND_NOT_APPLIED
