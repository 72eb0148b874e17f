"""station.testing: a phase, or a whole procedure, run through the real engine with fakes."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from station import SKIP, measure, phase
from station.authoring.helpers import Dut
from station.config.procedure_loader import ProcedureError
from station.testing import PhaseResult, run_phase, run_procedure
from station.testing.harness import DEFAULT_SERIAL_NUMBER, HarnessError, MissingInjectablesError

ROOT = Path(__file__).resolve().parents[1]


class FakeDmm:
    def __init__(self, volts: float) -> None:
        self.volts = volts
        self.calls = 0

    def measure_dc_voltage(self, range=None, nplc=None):
        self.calls += 1
        return self.volts


@phase(timeout_s=10, retries=1)
@measure("rail", unit="V", low=3.2, high=3.4, marginal=(3.25, 3.35))
def check_rail(dmm, measurements, log):
    """The 3.3 V rail is in limits."""
    volts = dmm.measure_dc_voltage()
    log.info("rail at %.3f V", volts)
    measurements.rail = volts


# -- run_phase ---------------------------------------------------------------------------------


def test_a_phase_in_limits_passes_with_its_validators_and_logs():
    result = run_phase(check_rail, dmm=FakeDmm(3.3))
    assert isinstance(result, PhaseResult)
    assert result.outcome == "PASS" and result.error is None
    assert result.values == {"rail": 3.3}
    rail = result.measurements["rail"]
    assert (rail.units, rail.outcome, rail.marginal) == ("V", "PASS", False)
    assert [(v.operator, v.expected_value, v.outcome, v.is_decisive) for v in rail.validators] == [
        (">=", 3.2, "PASS", True),
        ("<=", 3.4, "PASS", True),
        (">=", 3.25, "PASS", False),
        ("<=", 3.35, "PASS", False),
    ]
    (entry,) = result.logs
    assert (entry.level, entry.message) == ("INFO", "rail at 3.300 V")
    assert entry.source_file == "test_harness.py"  # relative to the phase's own file
    assert result.record.docstring == "The 3.3 V rail is in limits."
    assert result.run.serial_number == DEFAULT_SERIAL_NUMBER and result.run.outcome == "PASS"


def test_out_of_limits_fails_and_every_retry_is_recorded():
    dmm = FakeDmm(3.1)
    result = run_phase(check_rail, dmm=dmm)
    assert result.outcome == "FAIL" and result.run.outcome == "FAIL"
    assert [(a.attempt, a.outcome) for a in result.attempts] == [(0, "FAIL"), (1, "FAIL")]
    assert dmm.calls == 2
    assert [v.outcome for v in result.measurements["rail"].validators if v.is_decisive] == [
        "FAIL",
        "PASS",
    ]


def test_a_marginal_value_passes_and_says_so():
    result = run_phase(check_rail, dmm=FakeDmm(3.21))
    assert result.outcome == "PASS" and result.measurements["rail"].marginal
    assert result.run.marginal


def test_missing_instruments_are_named_all_at_once():
    @phase
    def needs_three(psu, dmm, scope, log):
        pass

    with pytest.raises(MissingInjectablesError) as caught:
        run_phase(needs_three, dmm=FakeDmm(1.0))
    assert caught.value.missing == ("psu", "scope")
    assert str(caught.value) == (
        "run_phase: phase 'needs_three' asks for 'psu', 'scope', which were not passed: "
        "pass a fake for each (psu=<fake>, scope=<fake>)."
    )


def test_a_misspelt_instrument_gets_a_did_you_mean():
    with pytest.raises(MissingInjectablesError, match=r"'dmn' was passed but is not used: "):
        run_phase(check_rail, dmn=FakeDmm(3.3))


def test_run_if_parameters_must_be_passed_too():
    @phase(run_if=lambda fixture: fixture.closed)
    def gated():
        pass

    with pytest.raises(MissingInjectablesError, match="'fixture'"):
        run_phase(gated)


@pytest.mark.parametrize("name", ["measurements", "log", "run", "dut"])
def test_helpers_cannot_be_passed_as_instruments(name):
    with pytest.raises(HarnessError, match="the runner makes"):
        run_phase(check_rail, instruments={name: object(), "dmm": FakeDmm(3.3)})


def test_an_instrument_named_like_an_option_goes_in_instruments():
    @phase
    def uses_state(state):
        state.touch()

    class Fake:
        touched = False

        def touch(self):
            self.touched = True

    fake = Fake()
    assert run_phase(uses_state, instruments={"state": fake}).outcome == "PASS"
    assert fake.touched
    with pytest.raises(HarnessError, match="both"):
        run_phase(check_rail, instruments={"dmm": 1}, dmm=2)


def test_an_exception_is_error_with_file_and_line():
    class BrokenDmm:
        def measure_dc_voltage(self, range=None, nplc=None):
            raise ConnectionError("no reply to READ?")

    result = run_phase(check_rail, dmm=BrokenDmm())
    assert result.outcome == "ERROR" and len(result.attempts) == 2
    assert result.error is not None
    assert (result.error.type, result.error.message) == ("ConnectionError", "no reply to READ?")
    assert result.error.source_file == "test_harness.py"
    assert result.measurements["rail"].outcome == "UNSET"
    assert result.values == {}


def test_the_phase_timeout_really_stops_a_stuck_phase():
    release = threading.Event()

    class HungDmm:
        def measure_dc_voltage(self, range=None, nplc=None):
            while not release.is_set():  # pure Python: only the engine's stop gets it out
                time.sleep(0.01)
            return 3.3

    @phase(timeout_s=0.2)
    @measure("rail", low=3.2, high=3.4)
    def stuck(dmm, measurements):
        measurements.rail = dmm.measure_dc_voltage()

    started = time.monotonic()
    try:
        result = run_phase(stuck, dmm=HungDmm())
    finally:
        release.set()
    assert result.outcome == "TIMEOUT"
    assert result.reason == "phase 'stuck' timed out after 0.2 s"
    assert time.monotonic() - started < 10  # generous: the stop takes the grace period at most


def test_dut_state_and_prompt_are_the_real_helpers():
    @phase(run_if=lambda dut: dut.revision == "B")
    @measure("answer", equals="yes")
    def rev_b_only(dut, run, measurements):
        dut.sub_units.append("SUB-1")
        run.metadata["seen"] = run.state["calibration"]
        run.state["done"] = True
        measurements.answer = run.prompt(f"Is {dut.serial_number} lit?")

    asked = []

    def operator(text):
        asked.append(text)
        return "yes"

    result = run_phase(
        rev_b_only,
        dut=Dut(serial_number="SN-9", revision="B"),
        state={"calibration": 1.02},
        prompt=operator,
    )
    assert result.outcome == "PASS"
    assert asked == ["Is SN-9 lit?"]
    assert result.state == {"calibration": 1.02, "done": True}
    assert result.run.metadata == {"seen": 1.02}
    assert result.run.sub_units == ["SUB-1"]
    assert result.run.serial_number == "SN-9"

    skipped = run_phase(rev_b_only, dut=Dut(serial_number="SN-10", revision="A"))
    assert skipped.outcome == "SKIP" and skipped.reason == "run_if returned false"


def test_a_phase_returning_skip_is_skip():
    @phase
    def maybe():
        return SKIP

    assert run_phase(maybe).outcome == "SKIP"


def test_a_plain_function_with_measure_runs_as_a_phase():
    @measure("v", high=1.0)
    def bare(measurements):
        measurements.v = 2.0

    result = run_phase(bare)
    assert result.outcome == "FAIL" and result.values == {"v": 2.0}


def test_a_teardown_phase_runs_as_teardown():
    @phase(teardown=True)
    def power_down(psu):
        psu.off = True

    class Psu:
        off = False

    psu = Psu()
    result = run_phase(power_down, psu=psu)
    assert result.outcome == "PASS" and result.record.teardown and psu.off


def test_nothing_is_written_and_no_signal_handler_is_touched(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    before = signal.getsignal(signal.SIGINT)
    source = tmp_path / "trace.csv"
    source.write_text("t,v\n0,3.3\n", encoding="utf-8")

    @phase
    def attach(run):
        run.attach(source)

    result = run_phase(attach)
    assert result.outcome == "PASS"
    assert [(a.name, a.path) for a in result.run.attachments] == [("trace.csv", str(source))]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["trace.csv"]
    assert signal.getsignal(signal.SIGINT) is before


def test_not_a_phase_is_refused():
    with pytest.raises(HarnessError, match="not a phase or a function"):
        run_phase(42)  # type: ignore[arg-type]


# -- run_procedure -----------------------------------------------------------------------------

PROCEDURE = """
    \"\"\"A small procedure.\"\"\"
    from station import measure, phase

    @phase
    @measure("rail", low=3.2, high=3.4)
    def rail(dmm, measurements):
        measurements.rail = dmm.measure_dc_voltage()

    @phase(teardown=True)
    def off(psu):
        psu.off = True
"""


class FakePsu:
    off = False


def test_run_procedure_runs_every_phase_from_a_path(tmp_path):
    path = tmp_path / "small_proc.py"
    path.write_text(textwrap.dedent(PROCEDURE), encoding="utf-8")
    psu = FakePsu()
    record = run_procedure(path, instruments={"dmm": FakeDmm(3.3), "psu": psu})
    assert record.outcome == "PASS" and record.procedure_id == "small_proc"
    assert [(p.name, p.outcome, p.teardown) for p in record.phases] == [
        ("rail", "PASS", False),
        ("off", "PASS", True),
    ]
    assert psu.off and record.docstring == "A small procedure."


def test_run_procedure_names_every_missing_instrument(tmp_path):
    path = tmp_path / "small_proc.py"
    path.write_text(textwrap.dedent(PROCEDURE), encoding="utf-8")
    with pytest.raises(MissingInjectablesError) as caught:
        run_procedure(str(path), instruments={})
    assert caught.value.missing == ("dmm", "psu")
    assert str(caught.value).startswith("run_procedure: procedure small_proc asks for 'dmm', 'psu'")


def test_run_procedure_makes_the_load_time_checks_of_station_run(tmp_path):
    path = tmp_path / "bad_proc.py"
    path.write_text(
        textwrap.dedent("""
            from station import measure, phase

            @phase
            @measure("rail", low=3.2, high=3.4)
            def rail(dmm, measurements):
                measurements.rial = dmm.measure_dc_voltage()
        """),
        encoding="utf-8",
    )
    with pytest.raises(
        ProcedureError, match=r"bad_proc.py:7: phase 'rail' sets measurement 'rial'"
    ):
        run_procedure(path, instruments={"dmm": FakeDmm(3.3)})


def test_run_procedure_takes_a_module_or_a_dotted_name():
    import procedures.fvt1 as fvt1

    class Psu:
        identity = "FAKE,PSU"

        def __getattr__(self, name):
            readings = {"measure_voltage": 5.0, "measure_current": 0.07}
            return lambda *args, **kwargs: readings.get(name)

    class Dmm(FakeDmm):
        identity = "FAKE,DMM"

        def measure_ac_voltage(self, range=None):
            return 0.002

    for module in (fvt1, "procedures.fvt1"):
        record = run_procedure(module, instruments={"psu": Psu(), "dmm": Dmm(3.3)})
        assert record.outcome == "PASS", record.outcome_reason
        assert record.procedure_id == "fvt1"
        assert [p.name for p in record.phases][-1] == "power_down"


# -- packaging ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_the_fault_points_do_not_pull_in_the_engine():
    """station.storage imports station.testing.faultpoints: the package must stay light."""
    code = (
        "import sys, station.testing, station.testing.faultpoints\n"
        "assert 'station.engine.runner' not in sys.modules, 'engine imported'\n"
        "from station.testing import run_phase\n"
        "assert 'station.engine.runner' in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=60)


def test_an_unknown_name_is_an_attribute_error():
    import station.testing

    with pytest.raises(AttributeError, match="no attribute 'run_phases'"):
        station.testing.run_phases  # noqa: B018


# -- the README example ------------------------------------------------------------------------


def _readme_example() -> str:
    """The README's python block that uses the harness, exactly as printed there."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", readme, re.DOTALL)
    shown = [block for block in blocks if "from station.testing import" in block]
    assert len(shown) == 1, "README.md: expected one python block using station.testing"
    return shown[0]


def test_the_readme_example_runs_as_printed():
    namespace: dict[str, object] = {"__name__": "readme_example"}
    exec(compile(_readme_example(), "README.md", "exec"), namespace)
    tests = [f for name, f in namespace.items() if name.startswith("test_") and callable(f)]
    assert len(tests) >= 3
    for test in tests:
        test()


def test_the_module_docstring_example_runs():
    import station.testing.harness as harness

    doc = harness.__doc__ or ""
    example = textwrap.dedent(
        "\n".join(
            line
            for line in doc.split("\n\n`run_procedure")[0].splitlines()
            if line[:4] == "    " or not line.strip()
        )
    )
    assert "run_phase(rail_3v3" in example
    exec(compile(example, "station/testing/harness.py", "exec"), {"__name__": "doc_example"})
