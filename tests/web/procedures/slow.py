"""SLOW: powers the board and then waits a minute, so that a test can abort it mid-phase.

Its teardown switches the supply off and says so in the log: the browser test sees the
teardown run and reads the supply's state from the simulated bench.
"""

from station import phase


@phase(timeout_s=120)
def power_up(psu, run, log):
    """Power the board, then soak (the Abort button lands here)."""
    psu.set_current_limit(1, 0.25)
    psu.set_voltage(1, 5.0)
    psu.enable(1)
    log.info("supply on, soaking")
    run.sleep(60)


@phase(teardown=True, timeout_s=10)
def power_down(psu, log):
    """Switch every output off, whatever happened before."""
    psu.disable_all()
    log.info("supply off")
