"""ICT: clamp the board, switch it in with the relay board, check it over its console.

A serial number ending in -ERR raises once the fixture is clamped and the vacuum is on; -HANG
waits on the fixture's temperature (a test makes the fixture silent); -WAIT waits for Ctrl-C.
"""

from station import measure, phase


@phase
def clamp_board(fixture, relay):
    fixture.clamp()
    fixture.vacuum(True)
    relay.close_relay(1)
    relay.close_relay(2)


@phase(timeout_s=2)
@measure("firmware", matches=r"\d+\.\d+\.\d+")
@measure("selftest", equals="PASS")
@measure("fixture_temp", unit="°C", low=10, high=50)
def console_checks(dut_console, fixture, relay, run, dut, measurements):
    if dut.serial_number.endswith("-ERR"):
        raise RuntimeError("the board caught fire")
    if dut.serial_number.endswith("-WAIT"):
        run.sleep(60)
    measurements.fixture_temp = fixture.temperature()
    dut_console.write_line("version")
    measurements.firmware = dut_console.expect(r"fw (\S+)", 2).group(1)
    dut_console.write_line("selftest")
    measurements.selftest = dut_console.expect(r"SELFTEST (\w+)").group(1)
    assert relay.is_closed(1)


@phase(teardown=True)
def release_board(fixture, relay):
    relay.open_relay(1)
    relay.open_relay(2)
    fixture.vacuum(False)
    fixture.release()
