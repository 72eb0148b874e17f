"""A bench made only of user classes, for the tests of instruments of your own.

Copied beside a test's station.yaml (so it is found the way a user's own modules are): a plain
relay board class (`relay`), a session-based SCPI fixture controller with its twin (`fixture`),
and a procedure using them with a `serial-line` DUT console (`ict`). Tests serve the "real"
instruments themselves (the twins on loopback TCP and on ptys) for runs without --sim.
"""
