"""Instruments misbehave on the wire; the run says who, what and why, and the bench ends safe.

A real procedure (tests/chaos/instrument_fixtures.py) powers PSU channel 1, reads the rail with
the DMM, then talks to the PSU again. One twin misbehaves on one command: no reply, a late
reply, garbage, a dropped link, an error in its queue. For each, on the Rigol bench (every twin
on TCP, through pyvisa-py) and the Korad bench (the supply on a pty, through pyserial):

- the phase is ERROR (TIMEOUT when its own timeout is the shorter) and its message names the
  instrument, the command sent and what happened;
- teardown still turns the PSU off, read back from the twin, reconnecting if the link dropped;
- nothing takes longer than the configured timeouts (plus generous slack).

An instrument that never answers at open stops the station before the run, with an
InstrumentError, and every other instrument is left safe (PSU off) and closed.
"""

from __future__ import annotations

import time

import pytest
from instrument_fixtures import (
    INSTRUMENT_TIMEOUT_MS,
    INSTRUMENT_TIMEOUT_S,
    PHASE_TIMEOUT_S,
    SLACK_S,
    FaultyBench,
    faulty_bench_fixture,  # noqa: F401  (the `faulty_bench` fixture)
    open_fds_on,
    wait_until,
)

from drivers import InstrumentError
from drivers.errors import KIND_REFUSED, KIND_TIMEOUT

NO_REPLY = f"no reply within {INSTRUMENT_TIMEOUT_MS} ms"


def break_wire(bench: FaultyBench, name: str, fault: str) -> str:
    """Make `name`'s twin misbehave once on its target command; returns the command sent."""
    pattern, command = bench.target(name, "error" if fault == "error" else "query")
    faults = bench.faults(name)
    faults.count = 1
    if fault == "no-reply":
        faults.no_reply_to = pattern
    elif fault == "slow":  # later than the timeout, and the late reply must not be misread
        faults.delay_to, faults.delay_s = pattern, INSTRUMENT_TIMEOUT_S + 0.15
    elif fault == "garbage":
        faults.garbage_to = pattern
    elif fault == "drop":  # TCP: the twin closes the link; pty: it goes silent for a while
        faults.drop_on, faults.drop_s = pattern, INSTRUMENT_TIMEOUT_S * 0.6
    elif fault == "error":
        faults.error_on = pattern
    else:
        raise AssertionError(fault)
    return command


# fault -> what the phase's error message says happened, by how the instrument is reached
WHAT_HAPPENED = {
    "no-reply": {"tcp": NO_REPLY, "pty": NO_REPLY},
    "slow": {"tcp": NO_REPLY, "pty": NO_REPLY},
    "garbage": {"tcp": "is not ASCII text", "pty": "is not ASCII text"},
    "drop": {"tcp": "connection lost during", "pty": NO_REPLY},  # a silent serial line
    "error": {"tcp": '-222,"Data out of range"'},  # the KA3005P has no error queue
}
FAULTY = ["dmm", "psu"]


def assert_bench_left_safe(outcome) -> None:
    assert outcome.phase("power_down").outcome == "PASS", outcome.phase("power_down").error
    assert outcome.psu_on_after_teardown is False  # teardown did it, before the station closed
    assert outcome.psu_on_after_close is False


@pytest.mark.parametrize("name", FAULTY)
@pytest.mark.parametrize("fault", sorted(WHAT_HAPPENED))
def test_a_fault_mid_phase_is_an_error_naming_instrument_command_and_cause(
    faulty_bench, fault, name
):
    link = faulty_bench.link(name)
    if link not in WHAT_HAPPENED[fault]:
        pytest.skip(f"no {fault} fault over {link}")
    commands = []

    outcome = faulty_bench.run(lambda: commands.append(break_wire(faulty_bench, name, fault)))

    powered = outcome.phase("powered")
    assert powered.outcome == "ERROR"
    assert powered.error.type == "InstrumentError"
    message = powered.error.message
    assert message.startswith(f"{name} ("), message  # the instrument, with its resource
    assert repr(commands[0]) in message  # the command sent
    assert WHAT_HAPPENED[fault][link] in message  # what happened
    assert outcome.phase("later").outcome == "SKIP"
    assert outcome.record.outcome == "ERROR"
    assert_bench_left_safe(outcome)
    assert outcome.duration_s["powered"] < INSTRUMENT_TIMEOUT_S + SLACK_S
    assert outcome.elapsed_s < INSTRUMENT_TIMEOUT_S + SLACK_S + 1.0  # the Korad's pauses


@pytest.mark.parametrize("name", FAULTY)
def test_a_reply_slower_than_usual_but_within_the_timeout_passes(faulty_bench, name):
    pattern, _ = faulty_bench.target(name)
    faults = faulty_bench.faults(name)

    def slow_down():
        faults.delay_to, faults.delay_s = pattern, INSTRUMENT_TIMEOUT_S * 0.5

    outcome = faulty_bench.run(slow_down)

    assert outcome.phase("powered").outcome == "PASS", outcome.phase("powered").error
    assert outcome.record.outcome == "PASS"
    assert_bench_left_safe(outcome)
    assert outcome.elapsed_s < INSTRUMENT_TIMEOUT_S + SLACK_S + 1.0


@pytest.mark.parametrize("name", FAULTY)
def test_a_phase_timeout_shorter_than_the_instrument_names_what_it_was_waiting_for(
    faulty_bench, name
):
    commands = []
    phase_timeout_s = 0.5

    outcome = faulty_bench.run(
        lambda: commands.append(break_wire(faulty_bench, name, "no-reply")),
        timeout_ms=10_000,
        phase_timeout_s=phase_timeout_s,
    )

    powered = outcome.phase("powered")
    assert powered.outcome == "TIMEOUT"
    assert_bench_left_safe(outcome)
    assert outcome.elapsed_s < phase_timeout_s + SLACK_S + 1.0  # not the 10 s of the instrument
    assert "timed out after 0.5 s" in powered.error.message
    assert name in powered.error.message and repr(commands[0]) in powered.error.message


@pytest.mark.parametrize("name", FAULTY)
def test_a_phase_timeout_shorter_than_the_instrument_stops_the_phase_and_teardown_runs(
    faulty_bench, name
):
    phase_timeout_s = 0.5

    outcome = faulty_bench.run(
        lambda: break_wire(faulty_bench, name, "no-reply"),
        timeout_ms=10_000,
        phase_timeout_s=phase_timeout_s,
    )

    assert outcome.phase("powered").outcome == "TIMEOUT"
    assert outcome.record.outcome == "TIMEOUT"
    assert_bench_left_safe(outcome)
    assert outcome.elapsed_s < phase_timeout_s + SLACK_S + 1.0  # not the 10 s of the instrument


# -- at open -----------------------------------------------------------------------------------


def silence(bench: FaultyBench, name: str, how: str) -> None:
    faults = bench.faults(name)
    if how == "silent":
        faults.no_reply_to = "."
    else:  # a TCP twin accepts and closes at once; a pty twin stays silent
        faults.refuse = True


def assert_closed(bench: FaultyBench, name: str) -> None:
    server = bench.sim.twins[name].server
    if hasattr(server, "connection_count"):
        assert wait_until(lambda: server.connection_count == 0), f"{name} left connected"
    else:  # the pty twin holds its own end open; the station's must be closed
        assert open_fds_on(server.resource) == 1, f"{name} left open"


@pytest.mark.parametrize("how", ["silent", "refuse"])
@pytest.mark.parametrize("name", FAULTY)
def test_an_instrument_that_never_answers_at_open_stops_the_station_and_leaves_the_rest_safe(
    faulty_bench, name, how
):
    faulty_bench.write(phase_timeout_s=PHASE_TIMEOUT_S)
    faulty_bench.sim.bench.configure(1, enabled=True)  # left on by a crashed run
    silence(faulty_bench, name, how)
    instruments = faulty_bench.instruments()
    refused_by_tcp = how == "refuse" and faulty_bench.sim.resources[name].startswith("TCPIP")

    with pytest.raises(InstrumentError) as caught:
        instruments.open()

    error = caught.value
    assert error.instrument == name
    if refused_by_tcp:
        assert error.kind == KIND_REFUSED and "refuses connections" in str(error)
    else:
        assert error.kind == KIND_TIMEOUT
        assert "no reply within 300 ms to '*IDN?'" in str(error)
    assert str(error).startswith(f"{name} (")
    assert len(instruments) == 0
    for other in faulty_bench.drivers:
        assert_closed(faulty_bench, other)
    if name != "psu":
        assert faulty_bench.psu_on is False  # made safe although the station did not start


# -- a late reply --------------------------------------------------------------------------------

# driver -> (query of the voltage setting, query of the current limit, how to send a query)
SETTINGS_QUERIES = {
    "rigol-dp832": (":SOUR1:VOLT?", ":SOUR1:CURR?", lambda psu, command: psu.query(command)),
    "korad-ka3005p": ("VSET1?", "ISET1?", lambda psu, command: psu.query(command, 5)),
}


def test_a_reply_that_comes_after_the_timeout_is_never_taken_for_the_next_reply(faulty_bench):
    volts_query, amps_query, query = SETTINGS_QUERIES[faulty_bench.drivers["psu"]]
    faults = faulty_bench.faults("psu")
    late_s = INSTRUMENT_TIMEOUT_S + 0.3  # well after the timeout and its drain
    faulty_bench.write(phase_timeout_s=PHASE_TIMEOUT_S)
    with faulty_bench.instruments() as opened:
        psu = opened["psu"]
        psu.set_voltage(1, 5.0)
        psu.set_current_limit(1, 0.25)
        faults.delay_to, faults.delay_s, faults.count = volts_query.replace("?", r"\?"), late_s, 1

        with pytest.raises(InstrumentError, match=NO_REPLY):
            query(psu, volts_query)
        time.sleep(late_s)  # the late reply has come by now

        assert float(query(psu, amps_query)) == pytest.approx(0.25)
        assert float(query(psu, volts_query)) == pytest.approx(5.0)
