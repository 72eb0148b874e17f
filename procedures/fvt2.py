"""FVT2: the PCBA01 power board under load, on the scope, at its test points and its EN pin.

FVT1 checks the board unloaded; FVT2 finds what only shows beyond that. The fixture wires PSU
channel 1 to VIN, the electronic load across the 3.3 V rail, scope CH1 on the 3.3 V rail, the
multiplexer's channels 101-104 to the test points 1V8, 5V0, VREF and 3V3, and the SMU to the
EN pin of the board's load switch.

- power_up: the supply must stay in constant voltage (a short sends it to its current limit);
  the scope catches the rail's soft start (attached as power_up.csv) and its rise time.
- load_step: 0.5 A on the rail; it may droop by at most 50 mV and must recover when the load
  is removed (a weak regulator droops far more).
- ripple: the rail's ripple on the scope, AC coupled (attached as ripple.csv and ripple.png);
  a ripple too large for the screen is measured again zoomed out.
- test_points: every rail and the reference, through the multiplexer.
- enable_leakage: 3.3 V on EN from the SMU, at most 10 µA into the pin (it has a 1 MΩ
  pull-down); the SMU's 100 µA limit protects a damaged pin.
Teardown leaves every instrument safe: load input off, SMU output off, every relay open,
supply off (and the station then reads each of them back).
"""

import math
import tempfile
from pathlib import Path

from station import measure, phase

__version__ = "1.0.0"

VIN = 5.0  # V, nominal input of the board
CURRENT_LIMIT = 1.0  # A: room for the 0.5 A load step (~0.57 A in), far below a short's ~2 A
LOAD_STEP_A = 0.5
SETTLE_S = 0.02  # the rail settles in a few ms
TEST_POINTS = {101: "tp_1v8", 102: "tp_5v0", 103: "tp_vref", 104: "tp_3v3"}
RIPPLE_SCALES = (0.005, 0.05)  # V/div: a clipped trace cannot be measured, so zoom out once
EN_VOLTS = 3.3
EN_LIMIT_A = 100e-6


def _attach_waveform(run, waveform, name):
    """Write a captured waveform as CSV and attach it to the run."""
    with tempfile.TemporaryDirectory() as folder:
        run.attach(waveform.write_csv(Path(folder) / name))


@phase(timeout_s=5)
def identify(dut, run, log, psu, load, scope, mux, smu):
    """Record which instruments tested this unit."""
    for name, instrument in (("psu", psu), ("load", load), ("scope", scope), ("mux", mux),
                             ("smu", smu)):  # fmt: skip
        run.metadata[name] = instrument.identity
    log.info("testing %s (%s rev %s)", dut.serial_number, dut.part_number, dut.revision)


@phase(timeout_s=10)
@measure("vin", unit="V", low=4.90, high=5.10, description="VIN at the supply output")
@measure("input_current", unit="A", low=0.030, high=0.120, description="Board input at 5 V")
@measure("psu_mode", equals="CV", description="Supply regulation: CC means current-limited")
@measure("rail_rise_time", unit="s", low=0.002, high=0.008, description="3.3 V soft start, 10-90 %")
def power_up(psu, scope, run, log, measurements):
    """Power the board and catch the rail's soft start on the scope."""
    scope.configure_channel(1, volts_per_div=1.0, offset=-1.65, coupling="dc")
    scope.set_timebase(0.002)  # 24 ms on screen, the trigger in the middle
    scope.set_trigger(1, level=1.65, slope="rising")
    scope.arm_single()
    psu.set_current_limit(1, CURRENT_LIMIT)
    psu.set_ovp(1, VIN + 0.5)
    psu.set_voltage(1, VIN)
    psu.enable(1)
    triggered = scope.wait_for_trigger(timeout_s=1.0)
    run.sleep(SETTLE_S)
    measurements.vin = psu.measure_voltage(1)
    measurements.input_current = psu.measure_current(1)
    measurements.psu_mode = psu.regulation(1)
    if triggered:
        _attach_waveform(run, scope.waveform(1), "power_up.csv")
        measurements.rail_rise_time = scope.measure_rise_time(1)
    else:
        log.warning("the 3.3 V rail never crossed 1.65 V: no soft start to measure")
        measurements.rail_rise_time = math.inf


@phase(timeout_s=10)
@measure("rail_unloaded", unit="V", low=3.20, high=3.40, description="3.3 V rail, no load")
@measure("load_current", unit="A", low=0.49, high=0.51, description="What the load sinks")
@measure("rail_loaded", unit="V", low=3.20, high=3.40, description="3.3 V rail at 0.5 A")
@measure("load_regulation", unit="V", high=0.050, description="Droop from 0 to 0.5 A")
@measure("psu_mode_loaded", equals="CV", description="Supply regulation at 0.5 A")
@measure("rail_recovered", unit="V", low=3.20, high=3.40, description="3.3 V rail after the load")
def load_step(load, psu, run, measurements):
    """Step the rail from no load to 0.5 A and back, read by the load's own voltmeter (one
    meter for all three readings: its offset cancels out of the droop)."""
    measurements.rail_unloaded = unloaded = load.measure_voltage()
    load.configure("cc", LOAD_STEP_A)
    try:
        load.enable_input()
        run.sleep(SETTLE_S)
        measurements.rail_loaded = loaded = load.measure_voltage()
        measurements.load_current = load.measure_current()
        measurements.psu_mode_loaded = psu.regulation(1)
    finally:
        load.disable_input()
    measurements.load_regulation = unloaded - loaded
    run.sleep(SETTLE_S)
    measurements.rail_recovered = load.measure_voltage()


@phase(timeout_s=10)
@measure("ripple_vpp", unit="V", high=0.020, description="3.3 V rail ripple, peak to peak")
@measure("ripple_frequency", unit="Hz", low=90e3, high=110e3, description="Charge pump ripple")
def ripple(scope, run, log, measurements):
    """The ripple on the rail, AC coupled, as the scope sees it."""
    scope.set_timebase(5e-6)  # 60 µs: six periods of the 100 kHz charge pump
    scope.set_trigger(1, level=0.0, slope="rising")
    for volts_per_div in RIPPLE_SCALES:
        scope.configure_channel(1, volts_per_div=volts_per_div, coupling="ac")
        scope.arm_single()
        if not scope.wait_for_trigger(timeout_s=1.0):
            log.warning("no ripple to trigger on: the 3.3 V rail is not up")
            measurements.ripple_vpp = measurements.ripple_frequency = math.inf
            return
        vpp = scope.measure_vpp(1)
        if math.isfinite(vpp):
            break
        log.info("the ripple is clipped at %g V/div: zooming out", volts_per_div)
    _attach_waveform(run, scope.waveform(1), "ripple.csv")
    with tempfile.TemporaryDirectory() as folder:
        image = Path(folder) / "ripple.png"
        image.write_bytes(scope.screenshot())
        run.attach(image)
    measurements.ripple_vpp = vpp
    measurements.ripple_frequency = scope.measure_frequency(1)


@phase(timeout_s=10)
@measure("tp_1v8", unit="V", low=1.746, high=1.854, description="1V8 rail (±3 %)")
@measure("tp_5v0", unit="V", low=4.85, high=5.10, description="VIN after the input filter")
@measure("tp_vref", unit="V", low=2.4875, high=2.5125, description="2.5 V reference (±0.5 %)")
@measure("tp_3v3", unit="V", low=3.20, high=3.40, description="3.3 V rail at its test point")
def test_points(mux, measurements):
    """Every test point through the multiplexer, in one scan."""
    readings = mux.scan(list(TEST_POINTS), nplc=1)
    for channel, name in TEST_POINTS.items():
        measurements[name] = readings[channel]


@phase(timeout_s=10)
@measure("en_current", unit="A", high=10e-6, description="Current into EN at 3.3 V")
@measure("en_in_compliance", equals=False, description="The SMU's 100 µA limit not reached")
def enable_leakage(smu, measurements):
    """Drive EN to 3.3 V and measure what flows into it."""
    smu.source_voltage(EN_VOLTS, current_limit=EN_LIMIT_A)
    smu.enable()
    try:
        measurements.en_current = smu.measure_current(nplc=1)
        measurements.en_in_compliance = smu.in_compliance()
    finally:
        smu.disable()


@phase(teardown=True, timeout_s=10)
def power_down(psu, load, smu, mux):
    """Everything off and open, whatever happened before: the load first, the supply last."""
    load.disable_input()
    smu.disable()
    mux.open_all()
    psu.disable_all()
