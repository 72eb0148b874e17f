"""The 34465A, DMM6500 and E36312A drivers against their twins, through pyvisa-py over TCP."""

from __future__ import annotations

import time

import pytest

import sim
from drivers import InstrumentError, create_driver

MODELS = {"dmm": "keithley-dmm6500", "dmm2": "keysight-34465a", "psu": "keysight-e36312a"}


@pytest.fixture
def new_bench():
    with sim.start_bench(MODELS, seed=5) as bench:
        yield bench


@pytest.fixture
def open_driver(new_bench):
    """open_driver(name, driver=None, **options): a connected driver on that twin."""
    opened = []

    def make(name: str, driver: str | None = None, **options):
        instrument = create_driver(
            driver or MODELS[name], new_bench.resources[name], name=name, **options
        )
        opened.append(instrument)
        instrument.connect()
        return instrument

    yield make
    for instrument in opened:
        instrument.close()


def power_up(psu, limit: float = 0.25) -> None:
    psu.set_current_limit(1, limit)
    psu.set_ovp(1, 5.5)
    psu.set_voltage(1, 5.0)
    psu.enable(1)
    time.sleep(0.02)  # 10 time constants of the rail


def test_identity_checks_pass(open_driver):
    assert open_driver("dmm").identity.startswith("KEITHLEY INSTRUMENTS,MODEL DMM6500,")
    assert open_driver("dmm2").identity.startswith("Keysight Technologies,34465A,")
    assert open_driver("psu").identity.startswith("Keysight Technologies,E36312A,")


@pytest.mark.parametrize(
    ("driver", "twin", "message"),
    [
        ("keysight-34465a", "dmm", "expected Keysight 34465A, got 'KEITHLEY"),
        ("keithley-dmm6500", "psu", "expected Keithley DMM6500, got 'Keysight"),
        (
            "keysight-e36312a",
            "dmm2",
            "expected Keysight E36312A, got 'Keysight Technologies,34465A",
        ),
        ("keysight-34461a", "dmm2", "expected Keysight 34461A, got 'Keysight Technologies,34465A"),
    ],
)
def test_wrong_model_is_refused(new_bench, driver, twin, message):
    instrument = create_driver(driver, new_bench.resources[twin], name="x")
    try:
        with pytest.raises(InstrumentError, match=message):
            instrument.connect()
    finally:
        instrument.close()


def test_dmm6500_in_tsp_mode_is_refused(new_bench, open_driver):
    new_bench.twins["dmm"].personality.language = "TSP"
    with pytest.raises(InstrumentError, match=r"dmm .*command set is TSP, this driver needs SCPI"):
        open_driver("dmm")


def test_e36312a_round_trip(open_driver, new_bench):
    psu = open_driver("psu")
    power_up(psu)
    assert psu.is_enabled(1) and not psu.is_enabled(2)
    assert new_bench.bench.channel(1).current_limit == 0.25
    assert psu.measure_voltage(1) == pytest.approx(5.0, abs=0.005)
    assert psu.measure_current(1) == pytest.approx(0.070, abs=0.002)
    psu.safe_state()
    assert not any(psu.is_enabled(channel) for channel in psu.channels)
    assert psu.measure_current(1) == 0.0


def test_both_dmms_read_the_rail_the_e36312a_powers(open_driver):
    psu, dmm, dmm2 = open_driver("psu"), open_driver("dmm"), open_driver("dmm2")
    power_up(psu)
    assert dmm.measure_dc_voltage(range=10, nplc=1) == pytest.approx(3.30, abs=0.005)
    assert dmm.measure_ac_voltage(range=1) == pytest.approx(0.002, abs=0.001)
    assert dmm.measure_resistance() == float("inf")
    assert dmm2.measure_dc_voltage(range=10, nplc=0.001) == pytest.approx(3.30, abs=0.01)
    assert dmm2.measure_ac_voltage() == pytest.approx(0.002, abs=0.001)


def test_configure_once_then_read_many(open_driver):
    psu, dmm, dmm2 = open_driver("psu"), open_driver("dmm"), open_driver("dmm2")
    power_up(psu)
    for meter in (dmm, dmm2):
        meter.configure("dc_voltage", range=10, nplc=0.2)
        readings = [meter.read() for _ in range(20)]
        assert all(r == pytest.approx(3.30, abs=0.01) for r in readings)


def test_shorted_board_is_held_at_the_current_limit(open_driver, new_bench):
    new_bench.insert_dut("SN-9-F:shorted_rail")
    psu, dmm = open_driver("psu"), open_driver("dmm")
    power_up(psu)
    assert psu.measure_current(1) == pytest.approx(0.25, abs=0.002)
    assert abs(dmm.measure_dc_voltage()) < 0.01


def test_dmm6500_errors_with_extra_fields_are_raised(open_driver):
    dmm = open_driver("dmm")
    with pytest.raises(InstrumentError, match=r'dmm .*-222,"Data out of range;1;\d{4}/'):
        dmm.configure("dc_voltage", nplc=50)  # the DMM6500 integrates 15 PLC at most
    dmm.write(":SENS:VOLT:BOGUS 1")
    dmm.query("*OPC?")  # the write has been handled
    with pytest.raises(InstrumentError, match=r'-113,"Undefined header;1;'):
        dmm.check_errors()
    dmm.check_errors()  # empty again


def test_e36312a_reports_an_out_of_range_ovp(open_driver):
    psu = open_driver("psu")
    with pytest.raises(InstrumentError, match=r'psu .*-222,"Data out of range"'):
        psu.set_ovp(2, 30.0)  # CH2's OVP goes to 27.5 V at most


def test_e36312a_rating_is_checked_before_the_wire(open_driver, new_bench):
    psu = open_driver("psu")
    with pytest.raises(ValueError, match="CH1 is rated 6 V / 5 A"):
        psu.set_voltage(1, 12.0)
    assert new_bench.bench.channel(1).voltage == 0.0
