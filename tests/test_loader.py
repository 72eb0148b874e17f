"""Load-time validation: every mistake is one clear paragraph naming the file and line."""

from __future__ import annotations

import subprocess

import pytest

from station.config.model import ConfigError
from station.config.procedure_loader import ProcedureError

INSTRUMENTS = (
    "{dmm: {driver: keysight-34461a, resource: 'TCPIP::127.0.0.1::1::SOCKET'}, "
    "psu: {driver: rigol-dp832, resource: 'TCPIP::127.0.0.1::2::SOCKET'}}"
)


def load_error(bench, source, **kw):
    bench.write(source, instruments=INSTRUMENTS, **kw)
    with pytest.raises((ProcedureError, ConfigError)) as info:
        bench.load()
    message = str(info.value)
    assert "\n" not in message.strip() or isinstance(info.value, ConfigError)
    return message


def test_unknown_parameter_names_phase_file_line_and_what_exists(bench):
    message = load_error(
        bench,
        """
        from station import phase

        @phase
        def power_up(psu, dmn):
            pass
    """,
    )
    assert "proc_t.py:4:" in message
    assert "phase 'power_up' asks for 'dmn'" in message
    assert "(dmm, psu)" in message and "measurements, log, dut, run" in message
    assert "Did you mean 'dmm'?" in message


def test_unknown_parameter_in_run_if(bench):
    message = load_error(
        bench,
        """
        from station import phase

        @phase(run_if=lambda fixture: True)
        def p():
            pass
    """,
    )
    assert "run_if of phase 'p' asks for 'fixture'" in message


def test_measurement_set_but_never_declared(bench):
    message = load_error(
        bench,
        """
        from station import phase, measure

        @phase
        @measure("rail_3v3", unit="V", low=3.2, high=3.4)
        def p(dmm, measurements):
            value = dmm.measure_dc_voltage()
            measurements.rail_3v4 = value
    """,
    )
    assert "proc_t.py:8:" in message
    assert "sets measurement 'rail_3v4' but never declares it" in message
    assert "Did you mean 'rail_3v3'?" in message


def test_measurement_set_by_item_but_never_declared(bench):
    message = load_error(
        bench,
        """
        from station import phase

        @phase
        def p(measurements):
            measurements["ripple"] = 1
    """,
    )
    assert "proc_t.py:6:" in message and "'ripple'" in message and "declared: none" in message


def test_duplicate_phase_name(bench):
    message = load_error(
        bench,
        """
        from station import phase

        @phase
        def a():
            pass

        @phase(name="a")
        def b():
            pass
    """,
    )
    assert "proc_t.py:8:" in message and "phase name 'a' is used twice (first at" in message
    assert "proc_t.py:4)" in message


def test_module_that_fails_to_import(bench):
    message = load_error(
        bench,
        """
        from station import phase

        LIMIT = undefined_name + 1
    """,
    )
    assert "proc_t.py:4:" in message and "NameError" in message and "undefined_name" in message


def test_syntax_error(bench):
    message = load_error(
        bench,
        """
        from station import phase

        @phase
        def p(:
            pass
    """,
    )
    assert "proc_t.py:5:" in message and "syntax error" in message


def test_bad_limits_are_reported_at_the_decorator(bench):
    message = load_error(
        bench,
        """
        from station import phase, measure

        @phase
        @measure("v", low=3.4, high=3.2)
        def p(measurements):
            measurements.v = 1
    """,
    )
    assert "proc_t.py:5:" in message and "low (3.4) is greater than high (3.2)" in message


def test_marginal_outside_limits_is_rejected(bench):
    message = load_error(
        bench,
        """
        from station import phase, measure

        @phase
        @measure("v", low=3.2, high=3.4, marginal=(3.1, 3.3))
        def p(measurements):
            measurements.v = 1
    """,
    )
    assert "marginal band" in message


def test_no_phases(bench):
    message = load_error(
        bench,
        """
        def not_a_phase():
            pass
    """,
    )
    assert "defines no phases" in message


def test_unknown_procedure_lists_what_exists(bench):
    bench.write("from station import phase\n@phase\ndef p():\n    pass\n", name="FVT1")
    with pytest.raises(ProcedureError) as info:
        bench.load("fvt1")
    assert "unknown procedure 'fvt1'" in str(info.value) and "FVT1" in str(info.value)
    assert "Did you mean 'FVT1'?" in str(info.value)


def test_module_not_found(bench):
    (bench.root / "station.yaml").write_text(
        "station: {name: b}\nprocedures:\n  P:\n    module: procedures.nothing_here\n"
    )
    with pytest.raises(ProcedureError) as info:
        bench.load("P")
    assert "module 'procedures.nothing_here' not found" in str(info.value)


def test_phase_order_follows_phases_list(bench):
    bench.write("""
        from station import phase

        @phase
        def b():
            pass

        @phase(teardown=True)
        def td():
            pass

        def a():
            pass

        PHASES = [td, a, b]
    """)
    procedure = bench.load()
    assert [p.name for p in procedure.phases] == ["a", "b"]
    assert [p.name for p in procedure.teardown] == ["td"]


def test_source_order_without_phases_list(bench):
    bench.write("""
        from station import phase

        @phase
        def zeta():
            pass

        @phase
        def alpha():
            pass
    """)
    assert [p.name for p in bench.load().phases] == ["zeta", "alpha"]


def test_station_yaml_overrides_limits_without_touching_code(bench):
    bench.write(
        """
        from station import phase, measure

        @phase
        @measure("v", unit="V", low=3.2, high=3.4)
        def p(measurements):
            measurements.v = 3.21
    """,
        procedure_yaml="limits:\n  v: {low: 3.25}\n",
    )
    procedure = bench.load()
    spec = procedure.phases[0].measurements[0]
    assert (spec.low, spec.high, spec.unit) == (3.25, 3.4, "V")
    record = bench.run()
    assert record.outcome == "FAIL"


def test_limit_override_for_unknown_measurement_points_at_station_yaml(bench):
    bench.write(
        """
        from station import phase, measure

        @phase
        @measure("rail_3v3", low=3.2, high=3.4)
        def p(measurements):
            measurements.rail_3v3 = 3.3
    """,
        procedure_yaml="limits:\n  rail_3v4: {low: 3.25}\n",
    )
    with pytest.raises(ConfigError) as info:
        bench.load()
    message = str(info.value)
    assert "station.yaml:7" in message and "procedures.T1.limits.rail_3v4" in message
    assert "declares no measurement 'rail_3v4'" in message and "rail_3v3" in message


def test_contradicting_limit_override_is_a_config_error(bench):
    bench.write(
        """
        from station import phase, measure

        @phase
        @measure("v", low=3.2, high=3.4)
        def p(measurements):
            measurements.v = 3.3
    """,
        procedure_yaml="limits:\n  v: {low: 3.5}\n",
    )
    with pytest.raises(ConfigError, match=r"low \(3\.5\) is greater than high \(3\.4\)"):
        bench.load()


def test_ambiguous_override_asks_for_phase_qualified_name(bench):
    bench.write(
        """
        from station import phase, measure

        @phase
        @measure("v", low=1)
        def a(measurements):
            measurements.v = 2

        @phase
        @measure("v", low=1)
        def b(measurements):
            measurements.v = 2
    """,
        procedure_yaml="limits:\n  v: {low: 3}\n",
    )
    with pytest.raises(ConfigError, match=r"a\.v, b\.v"):
        bench.load()
    bench.write((bench.root / "proc_t.py").read_text(), procedure_yaml="limits:\n  b.v: {low: 3}\n")
    procedure = bench.load()
    assert [p.measurements[0].low for p in procedure.phases] == [1, 3]


def test_module_phase_objects_are_not_mutated_by_overrides(bench):
    bench.write(
        """
        from station import phase, measure

        @phase
        @measure("v", low=1)
        def a(measurements):
            measurements.v = 2
    """,
        procedure_yaml="limits:\n  v: {low: 3}\n",
    )
    procedure = bench.load()
    import sys

    module = sys.modules[procedure.module_name]
    assert module.a.measurements[0].low == 1 and procedure.phases[0].measurements[0].low == 3


def test_version_comes_from_dunder_version_else_git_describe(bench):
    bench.write("from station import phase\n__version__ = '2.1.0'\n@phase\ndef p():\n    pass\n")
    assert bench.load().version == "2.1.0"
    bench.write("from station import phase\n@phase\ndef p():\n    pass\n")
    assert bench.load().version is None  # not a git checkout
    git = ["git", "-C", str(bench.root), "-c", "user.email=t@t", "-c", "user.name=t"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "proc_t.py"], check=True)
    subprocess.run([*git, "commit", "-qm", "procedures"], check=True)
    subprocess.run([*git, "tag", "fvt-1.4"], check=True)
    assert bench.load().version == "fvt-1.4"
    with open(bench.root / "proc_t.py", "a") as handle:
        handle.write("# edited on the bench\n")
    assert bench.load().version == "fvt-1.4-dirty"
