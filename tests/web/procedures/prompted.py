"""PROMPTED: FVT1's power-up with the operator in the loop: the fixture lid, the label, a remark.

Used by the operator page's browser tests and its screenshots. Every kind of prompt is asked:
confirm (with a picture of the fixture), choice, number and text. The phases' timeouts are
short on purpose: the time a question waits for the operator does not count against them.
"""

from station import measure, phase

VIN = 5.0


@phase(timeout_s=5)
def fixture_closed(run, log):
    """The operator closed the fixture's lid over the board."""
    closed = run.prompt(
        "Is the fixture lid closed over the board?",
        kind="confirm",
        image="fixture.svg",
        key="fixture_closed",
    )
    if not closed:
        raise RuntimeError("the fixture lid is open: close it and test the unit again")
    log.info("fixture closed")


@phase(timeout_s=10)
@measure("vin", unit="V", low=4.90, high=5.10)
@measure("rail_3v3", unit="V", low=3.20, high=3.40, marginal=(3.25, 3.35))
def power_up(psu, dmm, run, measurements):
    """Power the board and read its 3.3 V rail."""
    psu.set_current_limit(1, 0.25)
    psu.set_voltage(1, VIN)
    psu.enable(1)
    run.sleep(0.05)
    measurements.vin = psu.measure_voltage(1)
    measurements.rail_3v3 = dmm.measure_dc_voltage(range=10, nplc=1)


@phase(timeout_s=5)
@measure("label_revision", one_of=["A", "B", "C"])
@measure("panel_count", low=1, high=10)
def label(run, measurements):
    """What the operator reads on the unit's label and panel."""
    measurements.label_revision = run.prompt(
        "Which revision is printed on the label?",
        kind="choice",
        choices=["A", "B", "C"],
        key="label_revision",
    )
    measurements.panel_count = run.prompt(
        "How many boards are on the panel?", kind="number", key="panel_count"
    )
    run.metadata["remark"] = run.prompt("Any remark?", kind="text", default="none", key="remark")


@phase(teardown=True, timeout_s=10)
def power_down(psu):
    """Switch every output off, whatever happened before."""
    psu.disable_all()
