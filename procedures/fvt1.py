"""FVT1: functional verification of the PCBA01 power board.

The board takes 5 V on VIN and makes a 3.3 V rail with an LDO regulator. The fixture wires
PSU channel 1 to VIN and the DMM across the 3.3 V rail. A shorted or dead board must never see
more than the current limit, and the supply is switched off at the end whatever happened.
"""

from station import measure, phase

__version__ = "1.0.0"

VIN = 5.0  # V, nominal input of the board
CURRENT_LIMIT = 0.25  # A: well above a good board (~70 mA), low enough that a short is harmless
SETTLE_S = 0.05  # the rail settles in a few ms; wait well past it before measuring


@phase(timeout_s=5)
def identify(dut, run, log, psu, dmm):
    """Record which instruments tested this unit."""
    run.metadata["psu"] = psu.identity
    run.metadata["dmm"] = dmm.identity
    log.info("testing %s (%s rev %s)", dut.serial_number, dut.part_number, dut.revision)


@phase(timeout_s=10)
@measure("vin", unit="V", low=4.90, high=5.10, description="VIN at the supply output")
@measure("input_current", unit="A", low=0.030, high=0.120, description="Board input current at 5 V")
def power_up(psu, run, measurements):
    """Power the board through a current limit and check what it draws."""
    psu.set_current_limit(1, CURRENT_LIMIT)
    psu.set_ovp(1, VIN + 0.5)
    psu.set_voltage(1, VIN)
    psu.enable(1)
    run.sleep(SETTLE_S)
    measurements.vin = psu.measure_voltage(1)
    measurements.input_current = psu.measure_current(1)


@phase(timeout_s=10, retries=1)
@measure(
    "rail_3v3",
    unit="V",
    low=3.20,
    high=3.40,
    marginal=(3.25, 3.35),
    description="3.3 V regulator output, DC",
)
def rail_3v3(dmm, measurements):
    """The regulator output is within 3.3 V +/- 3 %."""
    measurements.rail_3v3 = dmm.measure_dc_voltage(range=10, nplc=1)


@phase(timeout_s=10)
@measure("rail_ripple", unit="V", high=0.020, description="AC ripple on the 3.3 V rail, RMS")
def ripple(dmm, measurements):
    """The rail is clean: under 20 mV RMS of ripple."""
    measurements.rail_ripple = dmm.measure_ac_voltage(range=1)


@phase(teardown=True, timeout_s=10)
def power_down(psu):
    """Switch every output off, whatever happened before."""
    psu.disable_all()
