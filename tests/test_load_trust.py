"""Load-time trust: nothing a procedure file gets wrong turns into a silent PASS.

Every mistake here used to load (and often PASS); now each is refused before an instrument opens,
with the file and line, or runs where it stands in the module.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from station.config.model import ConfigError
from station.config.procedure_loader import ProcedureError

INSTRUMENTS = (
    "{dmm: {driver: keysight-34461a, resource: 'TCPIP::127.0.0.1::1::SOCKET'}, "
    "psu: {driver: rigol-dp832, resource: 'TCPIP::127.0.0.1::2::SOCKET'}}"
)


def load_error(bench, source: str, **kw) -> str:
    bench.write(source, instruments=INSTRUMENTS, **kw)
    with pytest.raises((ProcedureError, ConfigError)) as info:
        bench.load()
    return str(info.value)


@pytest.fixture
def sibling(bench, monkeypatch):
    """Write a module beside the procedure that the procedure imports; forgotten afterwards."""

    def write(name: str, source: str) -> None:
        (bench.root / f"{name}.py").write_text(textwrap.dedent(source), encoding="utf-8")
        monkeypatch.delitem(sys.modules, name, raising=False)

    yield write


# ------------------------------------------------------------------------------------------------
# 1. @measure without @phase


def test_measure_without_phase_is_refused_naming_function_file_and_line(bench):
    message = load_error(
        bench,
        """
        from station import measure, phase

        @phase
        def power_up():
            pass

        @measure("rail_3v3", unit="V", low=3.2, high=3.4)
        def check_rail(measurements):
            measurements.rail_3v3 = 3.3
    """,
    )
    assert "proc_t.py:8:" in message  # where the decorated function starts
    assert "'check_rail'" in message and "@measure" in message and "@phase" in message


def test_measure_without_phase_is_fine_when_phases_lists_it(bench):
    bench.write("""
        from station import measure

        @measure("v", low=1)
        def check(measurements):
            measurements.v = 2

        PHASES = [check]
    """)
    assert [p.name for p in bench.load().phases] == ["check"]


def test_the_raw_function_behind_a_phase_is_not_an_orphan(bench):
    bench.write("""
        from station import measure, phase

        @measure("v", low=1)
        def raw(measurements):
            measurements.v = 2

        check = phase(raw, name="check")
    """)
    assert [p.name for p in bench.load().phases] == ["check"]


# ------------------------------------------------------------------------------------------------
# 2./3. Imported and factory-built phases run where they stand in the module's namespace


def test_imported_phase_runs_where_it_stands_in_the_namespace(bench, sibling):
    sibling(
        "trust_common_phases",
        """
        from station import phase

        @phase
        def check_input(run):
            run.state.setdefault("order", []).append("check_input")
    """,
    )
    bench.write("""
        from station import phase

        @phase
        def first(run):
            run.state.setdefault("order", []).append("first")

        from trust_common_phases import check_input

        @phase
        def last(run):
            run.state.setdefault("order", []).append("last")
    """)
    assert [p.name for p in bench.load().phases] == ["first", "check_input", "last"]
    record = bench.run()
    assert record.outcome == "PASS"
    assert [p.name for p in record.phases] == ["first", "check_input", "last"]
    assert bench.last_runner.run.state["order"] == ["first", "check_input", "last"]


def test_factory_phases_follow_assignment_order_not_the_factory_source_line(bench, sibling):
    bench.write("""
        from station import measure, phase

        def rail_check(rail, nominal):
            @phase(name=f"check_{rail}")
            @measure(rail, low=nominal * 0.95, high=nominal * 1.05)
            def check(measurements):
                measurements[rail] = nominal
            return check

        @phase
        def power_up():
            pass

        check_3v3 = rail_check("3v3", 3.3)

        @phase
        def between():
            pass

        check_5v = rail_check("5v", 5.0)
        also_3v3 = check_3v3  # an alias of the same phase runs once, at its first name
    """)
    names = [p.name for p in bench.load().phases]
    assert names == ["power_up", "check_3v3", "between", "check_5v"]
    assert bench.run().outcome == "PASS"


def test_factory_from_another_module_orders_by_assignment(bench, sibling):
    sibling(
        "trust_factories",
        """
        from station import phase

        def make(name):
            @phase(name=name)
            def step():
                pass
            return step
    """,
    )
    bench.write("""
        from station import phase
        from trust_factories import make

        @phase
        def a():
            pass

        b = make("b")

        @phase
        def c():
            pass
    """)
    assert [p.name for p in bench.load().phases] == ["a", "b", "c"]


# ------------------------------------------------------------------------------------------------
# 4. Defaults that hide an injectable; async phases


@pytest.mark.parametrize("param", ["dmm=None", "log=None", "run=None", "measurements=None"])
def test_default_on_an_injectable_parameter_is_refused(bench, param):
    name = param.split("=")[0]
    message = load_error(
        bench,
        f"""
        from station import phase

        @phase
        def p(psu, {param}):
            pass
    """,
    )
    assert "proc_t.py:4:" in message and f"{name!r}" in message
    assert "default" in message and "never injected" in message


def test_default_on_an_injectable_in_run_if_is_refused(bench):
    message = load_error(
        bench,
        """
        from station import phase

        @phase(run_if=lambda dut=None: True)
        def p():
            pass
    """,
    )
    assert "run_if of phase 'p'" in message and "'dut'" in message and "never injected" in message


def test_default_on_a_plain_parameter_is_still_fine(bench):
    bench.write(
        "from station import phase\n@phase\ndef p(psu, volts=3.3):\n    pass\n",
        instruments=INSTRUMENTS,
    )
    assert bench.load().phases[0].params == ("psu",)


@pytest.mark.parametrize(
    "source",
    [
        "async def p():\n    pass",
        "async def p():\n    yield 1",
        "def p():\n    yield 1",
    ],
    ids=["async def", "async generator", "generator"],
)
def test_async_and_generator_phases_are_refused_at_load(bench, source):
    message = load_error(bench, "from station import phase\n@phase\n" + source + "\n")
    assert "proc_t.py:2" in message and "'p'" in message
    assert "plain function" in message


def test_async_phase_listed_in_phases_is_refused(bench):
    message = load_error(bench, "async def p():\n    pass\nPHASES = [p]\n")
    assert "proc_t.py:1" in message and "'p'" in message and "plain function" in message


# ------------------------------------------------------------------------------------------------
# 5. Decorator keyword typos


@pytest.mark.parametrize(
    ("decorator", "suggestion"),
    [
        ("@phase(timeout=5)", "timeout_s"),
        ("@phase(retry=2)", "retries"),
        ("@phase(run_iff=None)", "run_if"),
        ('@measure("v", units="V")', "unit"),
        ('@measure("v", hi=3)', "high"),
        ('@measure("v", marginals=(1, 2))', "marginal"),
    ],
)
def test_decorator_keyword_typo_gets_a_did_you_mean(bench, decorator, suggestion):
    decorators = decorator if decorator.startswith("@phase") else f"@phase\n{decorator}"
    source = f"from station import measure, phase\n{decorators}\ndef p(measurements):\n    pass\n"
    message = load_error(bench, source)
    assert f"proc_t.py:{decorators.count(chr(10)) + 2}:" in message  # the typo's line
    assert f"Did you mean {suggestion!r}?" in message


def test_decorator_typo_raises_at_decoration_for_direct_use():
    from station import measure, phase

    with pytest.raises(
        TypeError, match=r"@phase has no option 'timeout'.*Did you mean 'timeout_s'"
    ):
        phase(timeout=5)
    with pytest.raises(TypeError, match=r"@measure has no option 'units'.*Did you mean 'unit'"):
        measure("v", units="V")


def test_loader_and_decorators_share_one_did_you_mean():
    import station.authoring.procedure as procedure
    import station.config.procedure_loader as loader
    from station.records import text

    assert not hasattr(loader, "_did_you_mean")
    assert loader.did_you_mean is text.did_you_mean is procedure.did_you_mean


# ------------------------------------------------------------------------------------------------
# 6. A non-number against numeric limits is a procedure bug: ERROR, validators UNSET


@pytest.mark.parametrize(
    ("expression", "type_name"),
    [
        ("'3.3 V'", "str"),
        ("None", "NoneType"),
        ("True", "bool"),
        ("b'3.3'", "bytes"),
        ("1j", "complex"),
    ],
)
def test_non_number_against_numeric_limits_is_error_with_unset_validators(
    bench, expression, type_name
):
    record = bench.run(f"""
        from station import measure, phase

        @phase
        @measure("v", unit="V", low=3.2, high=3.4, marginal=(3.25, 3.35))
        def p(measurements):
            measurements.v = {expression}
    """)
    (ph,) = record.phases
    assert record.outcome == "ERROR" and ph.outcome == "ERROR"
    assert f"value of type {type_name} for numeric limits" in ph.error.message
    assert f"value of type {type_name} for numeric limits" in record.outcome_reason
    assert ph.error.source_file == "proc_t.py" and ph.error.line_number == 7
    (m,) = ph.measurements
    assert m.outcome == "UNSET"
    assert [v.outcome for v in m.validators] == ["UNSET"] * 4
    if expression != "None":
        assert m.measured_value is not None  # what was set is recorded


def test_caught_type_error_still_cannot_pass(bench):
    record = bench.run("""
        from station import measure, phase

        @phase
        @measure("v", low=1)
        def p(measurements):
            try:
                measurements.v = "2"
            except TypeError:
                pass
    """)
    assert record.outcome == "FAIL"
    (m,) = record.phases[0].measurements
    assert m.outcome == "UNSET" and [v.outcome for v in m.validators] == ["UNSET"]


def test_numbers_of_any_real_type_still_pass_and_text_limits_still_take_text(bench):
    record = bench.run("""
        from fractions import Fraction
        from station import measure, phase

        @phase
        @measure("v", low=1, high=2)
        @measure("w", equals=3)
        @measure("fw", matches=r"v\\d+")
        @measure("mode", one_of=["a", "b"])
        def p(measurements):
            measurements.v = Fraction(3, 2)
            measurements.w = 3.0
            measurements.fw = "v12"
            measurements.mode = "a"
    """)
    assert record.outcome == "PASS", record.outcome_reason
    assert record.phases[0].measurements[0].measured_value == 1.5


def test_check_never_judges_a_non_number_against_numeric_limits():
    from station.authoring.limits import MeasurementSpec, check

    spec = MeasurementSpec(name="v", low=1, high=2)
    result = check(spec, "1.5", True)
    assert result.outcome == "UNSET" and [o for _, o in result.validator_outcomes] == ["UNSET"] * 2


# ------------------------------------------------------------------------------------------------
# 10. Helper names once


def test_helper_names_are_one_constant_owned_by_authoring():
    import station.config.model as config_model
    from station.authoring.procedure import HELPER_NAMES

    assert not hasattr(config_model, "RESERVED_NAMES")
    assert config_model.HELPER_NAMES is HELPER_NAMES


def test_instrument_named_like_a_helper_is_refused(bench):
    bench.write(
        "from station import phase\n@phase\ndef p():\n    pass\n",
        instruments="{log: {driver: keysight-34461a, resource: 'TCPIP::127.0.0.1::1::SOCKET'}}",
    )
    with pytest.raises(ConfigError, match=r"'log' is reserved: phases receive the helpers"):
        bench.config()


# ------------------------------------------------------------------------------------------------
# 11. Limit validation lives once


@pytest.mark.parametrize(
    ("fields", "spec_fields"),
    [
        ({"low": 3.4, "high": 3.2}, {"low": 3.4, "high": 3.2}),
        ({"one_of": []}, {"one_of": ()}),
        ({"low": 1.0, "equals": 2}, {"low": 1.0, "equals": 2}),
        ({"marginal": (3.4, 3.2)}, {"marginal": (3.4, 3.2)}),
        ({"matches": "[a-"}, {"matches": "[a-"}),
        ({"low": 3.0, "marginal": (2.0, 3.5)}, {"low": 3.0, "marginal": (2.0, 3.5)}),
    ],
)
def test_limit_override_refuses_what_measure_refuses_with_the_same_words(fields, spec_fields):
    from pydantic import ValidationError

    from station.authoring.limits import LimitError, MeasurementSpec
    from station.config.model import LimitOverride

    with pytest.raises(LimitError) as spec_error:
        MeasurementSpec(name="v", **spec_fields)
    with pytest.raises(ValidationError) as override_error:
        LimitOverride(**fields)
    (problem,) = override_error.value.errors()
    words = problem["msg"].removeprefix("Value error, ")
    assert words in str(spec_error.value)


def test_empty_one_of_override_is_refused_at_its_yaml_line(bench):
    path = bench.write(
        "from station import phase\n@phase\ndef p():\n    pass\n",
        procedure_yaml="limits:\n  v: {one_of: []}\n",
    )
    with pytest.raises(ConfigError) as info:
        bench.config()
    assert f"{path}:7: procedures.T1.limits.v.one_of: must list at least one value" in str(
        info.value
    )


# ------------------------------------------------------------------------------------------------
# 13. Public helper types, and `import station` stays cheap


def test_public_helper_types_are_importable_from_station():
    import station
    from drivers.errors import InstrumentError
    from station.authoring.helpers import Dut, Measurements, RunContext

    assert station.Dut is Dut and station.RunContext is RunContext
    assert station.Measurements is Measurements and station.InstrumentError is InstrumentError
    assert {"Dut", "RunContext", "Measurements", "InstrumentError"} <= set(station.__all__)
    with pytest.raises(AttributeError):
        station.no_such_name  # noqa: B018


def test_import_station_does_not_import_pydantic_or_drivers():
    code = (
        "import sys, station\n"
        "heavy = [m for m in sys.modules if m.split('.')[0] in ('pydantic', 'httpx', 'drivers')]\n"
        "assert not heavy, heavy\n"
        "from station import Dut, InstrumentError\n"
        "assert 'drivers.errors' in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
