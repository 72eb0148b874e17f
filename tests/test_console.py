"""The terminal console as an operator reads it: values with SI prefixes and a resolution that
fits the limits, the marginal band, log lines under their phase, the failing check restated, the
date and time, attachments named, and a framed verdict; colour only on a terminal."""

from __future__ import annotations

import io
import re

import pytest

from station.authoring.helpers import Dut
from station.cli.console import Console
from station.engine.runner import Runner
from station.line.display import failed_check, format_bound, format_value
from station.records.model import MeasurementRecord, ValidatorRecord


@pytest.mark.parametrize(
    ("value", "unit", "limits", "shown"),
    [
        (0.00194757, "V", (), "1.95 mV"),
        (3.10213, "V", (3.22, 3.38), "3.102 V"),
        (0.0701234, "A", (0.03, 0.12), "70.1 mA"),
        (12_345.6, "Hz", (), "12.3 kHz"),
        (0.9999996, "V", (), "1.00 V"),  # rounds up into the next prefix
        (-0.0312, "A", (), "-31.2 mA"),
        (0.0, "V", (), "0 V"),
        (25.3456, "°C", (), "25.3 °C"),  # not an SI unit: no prefix
        (0.000123, None, (), "0.000123"),
        (5, None, (), "5"),
        (float("nan"), "V", (), "NaN V"),
        ("OK", None, (), "'OK'"),
        (None, "V", (), "(not set)"),
    ],
)
def test_values_are_shown_with_si_prefixes_at_a_resolution_fitting_their_limits(
    value, unit, limits, shown
):
    assert format_value(value, unit, limits=limits) == shown


def test_bounds_are_shown_as_written():
    assert [format_bound(b, "V") for b in (3.22, 0.02, 4.9)] == ["3.22 V", "20 mV", "4.9 V"]


def measurement(value, outcome, validators, units="V"):
    return MeasurementRecord(
        name="rail_3v3",
        outcome=outcome,
        measured_value=value,
        units=units,
        validators=[
            ValidatorRecord(operator=o, expected_value=e, outcome=r) for o, e, r in validators
        ],
    )


def test_the_failing_check_is_restated():
    low = measurement(3.10213, "FAIL", [(">=", 3.22, "FAIL"), ("<=", 3.38, "PASS")])
    assert failed_check(low) == "rail_3v3 = 3.102 V < 3.22 V"
    high = measurement(3.5, "FAIL", [(">=", 3.22, "PASS"), ("<=", 3.38, "FAIL")])
    assert failed_check(high) == "rail_3v3 = 3.500 V > 3.38 V"
    text = measurement("1.0", "FAIL", [("==", "1.2", "FAIL")], units=None)
    assert failed_check(text) == "rail_3v3 = '1.0' != '1.2'"
    assert failed_check(measurement(None, "UNSET", [(">=", 3.22, "UNSET")])) == "rail_3v3 not set"


PROCEDURE = """
    from station import measure, phase

    @phase
    @measure("rail_3v3", unit="V", low=3.22, high=3.38, marginal=(3.25, 3.35))
    @measure("ripple", unit="V", high=0.02)
    def rails(measurements, log, run):
        log.info("rail measured")
        measurements.rail_3v3 = 3.2312345
        measurements.ripple = 0.00194757
        run.attach(__file__, "scope.png")

    @phase
    @measure("rail_5v0", unit="V", low=4.9, high=5.1)
    def five_volts(measurements, log):
        log.warning("five volts is low")
        measurements.rail_5v0 = 4.8512
"""


def run_on_console(bench, console: Console):
    bench.write(PROCEDURE, name="C1")
    procedure = bench.load("C1")
    runner = Runner(
        procedure,
        Dut("SN-42", "PCBA01", "B"),
        listeners=[console],
        operator="ana",
        station_name="Bench 7",
        handle_signals=False,
    )
    return runner.execute()


def test_a_run_as_the_operator_reads_it(bench):
    out = io.StringIO()
    record = run_on_console(bench, Console(out, color=False))
    text = out.getvalue()
    lines = text.splitlines()
    # The header: unit, station, operator, and the local date and time the run started.
    local = record.started_at.astimezone().strftime("%Y-%m-%d %H:%M:%S")
    assert lines[0].startswith("== C1  serial SN-42  PCBA01 rev B  station Bench 7  operator ana")
    assert local in lines[0]
    # Measurements: SI prefixes, the resolution of their limits; the marginal band when in it.
    assert re.search(r"rail_3v3\s+3\.231 V\s+\[3\.22, 3\.38\]\s+PASS marginal: outside the "
                     r"marginal band \[3\.25 V, 3\.35 V\]", text)  # fmt: skip
    assert re.search(r"ripple\s+1\.95 mV\s+<= 0\.02\s+PASS$", text, re.M)
    assert "0.00194757" not in text
    # Log lines under the phase they belong to, after its measurements; attachments named.
    rails = lines.index(next(line for line in lines if line.startswith("[PASS]    rails")))
    five = lines.index(next(line for line in lines if line.startswith("[FAIL]    five_volts")))
    assert rails < lines.index("          info    rail measured") < five
    assert any("attached scope.png" in line for line in lines[rails:five])
    assert lines.index("          warning five volts is low") > five
    # The verdict: framed, spaced out, then the summary line and the failing check restated.
    frame = "+" + "=" * 62 + "+"
    at = lines.index(frame)
    assert lines[at + 1].strip("| ") == "F A I L" and lines[at + 2] == frame
    assert lines[at + 3].startswith("== C1 FAIL  SN-42  2 phases")
    assert lines[at + 4] == "   rail_5v0 = 4.85 V < 4.9 V"
    assert "attachments: scope.png" in text
    assert record.phases[0].measurements[0].measured_value == 3.2312345  # full precision kept
    assert "\x1b[" not in text


def test_colour_only_on_a_terminal_and_never_with_no_color(bench, monkeypatch):
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.delenv("NO_COLOR", raising=False)
    tty = Tty()
    run_on_console(bench, Console(tty))
    assert "\x1b[1;7;31m" in tty.getvalue()  # the FAIL verdict in reverse video

    monkeypatch.setenv("NO_COLOR", "1")
    plain = Tty()
    run_on_console(bench, Console(plain))
    assert "\x1b[" not in plain.getvalue()

    piped = io.StringIO()
    monkeypatch.delenv("NO_COLOR")
    run_on_console(bench, Console(piped))
    assert "\x1b[" not in piped.getvalue()


def test_a_header_note_goes_on_the_next_header_only(bench):
    out = io.StringIO()
    console = Console(out, color=False)
    console.header_note("retest 2, last FAIL 2026-11-30 10:02")
    run_on_console(bench, console)
    run_on_console(bench, console)
    first, second = [line for line in out.getvalue().splitlines() if line.startswith("== C1  ")]
    assert first.endswith("retest 2, last FAIL 2026-11-30 10:02")
    assert "retest" not in second
