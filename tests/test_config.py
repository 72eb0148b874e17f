"""station.yaml loading: the valid example, and every error an operator can meet, located."""

from __future__ import annotations

import textwrap
import time
from pathlib import Path

import pytest

from station.config.model import (
    ConfigError,
    LimitOverride,
    StationConfig,
    find_config_path,
    load_config,
)

# The README's example station.yaml, with the DMM resource taken from the environment.
README_EXAMPLE = """\
station:
  name: Bench 3
tofupilot:
  url: https://www.tofupilot.app/api     # default; the v2 paths are appended
  api_key_env: TOFUPILOT_API_KEY         # default; the key itself never goes in this file
data_dir: runs                           # default, relative to this file
instruments:
  dmm:   {driver: keysight-34461a, resource: "${DMM_RESOURCE}", timeout_ms: 3000}
  psu:   {driver: rigol-dp832,     resource: "ASRL/dev/ttyUSB0::INSTR", baud_rate: 115200}
procedures:
  FVT1:
    module: procedures.fvt1
    part_number: PCBA01
    revision: B
    timeout_s: 120
    limits:
      rail_3v3: {low: 3.22, high: 3.38}
sim:
  board: pcba01                          # DUT model used by --sim
"""

# A small valid file to which error cases add or change lines. Line numbers matter:
#  1 station:
#  2   name: Bench 3
#  3 instruments:
#  4   dmm:
#  5     driver: keysight-34461a
#  6     resource: USB0::1::2::3::INSTR
#  7 procedures:
#  8   FVT1:
#  9     module: procedures.fvt1
MINIMAL = """\
station:
  name: Bench 3
instruments:
  dmm:
    driver: keysight-34461a
    resource: USB0::1::2::3::INSTR
procedures:
  FVT1:
    module: procedures.fvt1
"""


def write(tmp_path: Path, text: str, name: str = "station.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def load_error(path: Path) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert "pydantic" not in message
    assert "errors.pydantic.dev" not in message
    assert "Traceback" not in message
    return info.value


# ---------------------------------------------------------------------------------------------
# The valid example


def test_design_example_loads_with_env_expansion(tmp_path, monkeypatch):
    monkeypatch.setenv("DMM_RESOURCE", "USB0::0x2A8D::0x1301::MY60012345::INSTR")
    path = write(tmp_path, README_EXAMPLE)

    config = load_config(path)

    assert config.station.name == "Bench 3"
    assert config.tofupilot.url == "https://www.tofupilot.app/api"
    assert config.tofupilot.api_key_env == "TOFUPILOT_API_KEY"
    dmm = config.instruments["dmm"]
    assert dmm.driver == "keysight-34461a"
    assert dmm.resource == "USB0::0x2A8D::0x1301::MY60012345::INSTR"
    assert dmm.timeout_ms == 3000
    assert dmm.baud_rate is None
    psu = config.instruments["psu"]
    assert (psu.resource, psu.baud_rate, psu.timeout_ms) == (
        "ASRL/dev/ttyUSB0::INSTR",
        115200,
        3000,
    )
    fvt1 = config.procedures["FVT1"]
    assert fvt1.module == "procedures.fvt1"
    assert (fvt1.part_number, fvt1.revision, fvt1.batch_number) == ("PCBA01", "B", None)
    assert fvt1.timeout_s == 120.0
    assert fvt1.stop_on_fail is None
    assert fvt1.limits == {"rail_3v3": LimitOverride(low=3.22, high=3.38)}
    assert config.sim.board == "pcba01"
    assert config.sim.fault is None
    assert config.sim.seed == 0

    assert config.path == path.resolve()
    assert config.base_dir == tmp_path.resolve()
    assert config.data_dir == Path("runs")
    assert config.data_path == tmp_path.resolve() / "runs"

    assert config.line_of("station.name") == 2
    assert config.line_of("instruments.dmm") == 8
    assert config.line_of("instruments.dmm.driver") == 8
    assert config.line_of("procedures.FVT1") == 11
    assert config.line_of("procedures.FVT1.timeout_s") == 15
    assert config.line_of("procedures.FVT1.limits.rail_3v3") == 17
    assert config.line_of("procedures.FVT1.limits.rail_3v3.high") == 17
    assert config.line_of("sim.board") == 19
    assert config.line_of("sim.seed") is None  # not in the file: a default
    assert config.line_of("nothing.here") is None


def test_defaults_when_optional_sections_are_absent_or_empty(tmp_path):
    path = write(tmp_path, MINIMAL + "sim:\ntofupilot:\n")
    config = load_config(path)
    assert config.tofupilot.url == "https://www.tofupilot.app/api"
    assert config.tofupilot.api_key_env == "TOFUPILOT_API_KEY"
    assert config.sim.board == "pcba01"
    assert config.data_path == tmp_path.resolve() / "runs"
    assert config.procedures["FVT1"].limits == {}


def test_models_are_usable_without_a_file():
    config = StationConfig.model_validate(
        {"station": {"name": "x"}, "procedures": {"FVT1": {"module": "p.fvt1"}}}
    )
    assert config.path is None
    assert config.line_of("station.name") is None
    assert str(config.error("procedures.FVT1", "boom")) == "procedures.FVT1: boom"


# ---------------------------------------------------------------------------------------------
# Unknown keys and suggestions


def test_unknown_key_names_file_line_field_and_suggests(tmp_path):
    path = write(tmp_path, MINIMAL.replace("    driver:", "    drivr:"))
    error = load_error(path)
    # The typo is reported once: no separate "missing required key 'driver'" for the same slip.
    assert str(error) == (
        f"{path}:5: instruments.dmm.drivr: unknown key 'drivr' (did you mean 'driver'?)"
    )
    assert (error.path, error.line, error.field) == (path, 5, "instruments.dmm.drivr")


def test_relative_path_is_shown_as_given(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path, MINIMAL.replace("    driver:", "    drivr:"))
    error = load_error(Path("station.yaml"))
    assert str(error).startswith("station.yaml:5: instruments.dmm.drivr: unknown key 'drivr'")


def test_unknown_key_without_a_close_match_lists_valid_keys(tmp_path):
    path = write(tmp_path, MINIMAL + "colour: blue\n")
    assert str(load_error(path)) == (
        f"{path}:10: colour: unknown key 'colour' (valid keys: station, tofupilot, data_dir, "
        f"instruments, procedures, sim, visa_library)"
    )


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("sim:\n  seeds: 3\n", "11: sim.seeds: unknown key 'seeds' (did you mean 'seed'?)"),
        (
            "instrument: {}\n",
            "10: instrument: unknown key 'instrument' (did you mean 'instruments'?)",
        ),
        (
            "tofupilot:\n  URL: http://localhost\n",
            "11: tofupilot.URL: unknown key 'URL' (did you mean 'url'?)",
        ),
    ],
)
def test_unknown_key_suggestions_at_every_level(tmp_path, line, expected):
    path = write(tmp_path, MINIMAL + line)
    assert str(load_error(path)) == f"{path}:{expected}"


def test_unknown_key_in_a_limit_override_suggests(tmp_path):
    path = write(tmp_path, MINIMAL + "    limits:\n      rail_3v3: {lo: 3.2}\n")
    assert str(load_error(path)) == (
        f"{path}:11: procedures.FVT1.limits.rail_3v3.lo: unknown key 'lo' (did you mean 'low'?)"
    )


# ---------------------------------------------------------------------------------------------
# Values


def test_timeout_must_be_positive(tmp_path):
    path = write(tmp_path, MINIMAL + "    timeout_s: -5\n")
    error = load_error(path)
    assert str(error) == f"{path}:10: procedures.FVT1.timeout_s: must be greater than 0 (got -5)"
    assert (error.line, error.field) == (10, "procedures.FVT1.timeout_s")


def test_instrument_numbers_must_be_positive_and_not_booleans(tmp_path):
    text = MINIMAL.replace(
        "    resource: USB0::1::2::3::INSTR\n",
        "    resource: USB0::1::2::3::INSTR\n    timeout_ms: 0\n    baud_rate: yes\n",
    )
    message = str(load_error(write(tmp_path, text)))
    assert ":7: instruments.dmm.timeout_ms: must be at least 100 ms (got 0)" in message
    assert ":8: instruments.dmm.baud_rate: must be a number, not true" in message


def test_several_problems_are_reported_together_one_per_line_in_file_order(tmp_path):
    text = MINIMAL.replace("    driver:", "    drivr:") + (
        "    timeout_s: -5\n"  # line 10
        "    stop_on_fail: maybe\n"  # line 11
        "sim:\n"  # line 12
        "  seed: abc\n"  # line 13
    )
    path = write(tmp_path, text)
    error = load_error(path)
    assert str(error).splitlines() == [
        f"{path}:5: instruments.dmm.drivr: unknown key 'drivr' (did you mean 'driver'?)",
        f"{path}:10: procedures.FVT1.timeout_s: must be greater than 0 (got -5)",
        f"{path}:11: procedures.FVT1.stop_on_fail: must be true or false (got 'maybe')",
        f"{path}:13: sim.seed: must be a whole number (got 'abc')",
    ]
    assert (error.line, error.field) == (5, "instruments.dmm.drivr")


def test_missing_required_key_points_at_the_parent_mapping(tmp_path):
    path = write(tmp_path, MINIMAL.replace("    resource: USB0::1::2::3::INSTR\n", ""))
    error = load_error(path)
    assert str(error) == f"{path}:4: instruments.dmm: missing required key 'resource'"
    assert (error.line, error.field) == (4, "instruments.dmm")


def test_missing_top_level_key(tmp_path):
    path = write(tmp_path, "# bench\nstation:\n  name: Bench 3\n")
    assert str(load_error(path)) == f"{path}:2: missing required top-level key 'procedures'"


def test_number_where_text_is_expected_suggests_quotes(tmp_path):
    # YAML 1.1 reads 01234 as the octal number 668: never silently accept that as a part number.
    path = write(tmp_path, MINIMAL + "    part_number: 01234\n    revision: 2\n")
    assert str(load_error(path)).splitlines() == [
        f"{path}:10: procedures.FVT1.part_number: must be text (got 668); "
        f'write it in quotes: "01234"',
        f'{path}:11: procedures.FVT1.revision: must be text (got 2); write it in quotes: "2"',
    ]


def test_bad_module_name(tmp_path):
    path = write(tmp_path, MINIMAL.replace("procedures.fvt1", "procedures/fvt1"))
    assert str(load_error(path)) == (
        f"{path}:9: procedures.FVT1.module: 'procedures/fvt1' is neither a dotted module path "
        f"(e.g. procedures.fvt1) nor a path to a file ending in .py"
    )


def test_module_may_be_a_python_file(tmp_path):
    path = write(tmp_path, MINIMAL.replace("procedures.fvt1", "procedures/fvt1.py"))
    assert load_config(path).procedures["FVT1"].module == "procedures/fvt1.py"


def test_tofupilot_url_must_be_http(tmp_path):
    path = write(tmp_path, MINIMAL + "tofupilot:\n  url: www.tofupilot.app\n")
    assert str(load_error(path)) == (
        f"{path}:11: tofupilot.url: must be an http:// or https:// URL (got 'www.tofupilot.app')"
    )
    ok = write(tmp_path, MINIMAL + "tofupilot:\n  url: http://127.0.0.1:8123/api/\n", "ok.yaml")
    assert load_config(ok).tofupilot.url == "http://127.0.0.1:8123/api"


# ---------------------------------------------------------------------------------------------
# Names


@pytest.mark.parametrize(
    ("name", "why"),
    [
        (
            "my-dmm",
            "'my-dmm' is not a valid instrument name: phases receive instruments as "
            "parameters by name, so it must be a Python identifier",
        ),
        ("2dmm", "'2dmm' is not a valid instrument name"),
        ("class", "'class' is not a valid instrument name"),
    ],
)
def test_instrument_names_must_be_identifiers(tmp_path, name, why):
    path = write(tmp_path, MINIMAL.replace("  dmm:", f"  {name}:"))
    message = str(load_error(path))
    assert message.startswith(f"{path}:4: instruments.{name}: {why}")


def test_instrument_name_suggests_an_identifier(tmp_path):
    path = write(tmp_path, MINIMAL.replace("  dmm:", "  my-dmm:"))
    assert str(load_error(path)).endswith("e.g. 'my_dmm'")


@pytest.mark.parametrize("name", ["measurements", "log", "dut", "run"])
def test_instrument_names_must_not_shadow_helpers(tmp_path, name):
    path = write(tmp_path, MINIMAL.replace("  dmm:", f"  {name}:"))
    assert str(load_error(path)) == (
        f"{path}:4: instruments.{name}: '{name}' is reserved: phases receive the helpers "
        f"dut, log, measurements, run under those names, so an instrument called '{name}' "
        f"could never be injected; choose another name"
    )


@pytest.mark.parametrize(
    ("key", "shown", "why"),
    [
        ('"FVT 1"', "FVT 1", "procedure name 'FVT 1' must not contain whitespace or '/'"),
        ("FVT/1", "FVT/1", "procedure name 'FVT/1' must not contain whitespace or '/'"),
        ('""', "", "procedure name must not be empty"),
    ],
)
def test_procedure_names(tmp_path, key, shown, why):
    path = write(tmp_path, MINIMAL.replace("  FVT1:", f"  {key}:"))
    assert str(load_error(path)).startswith(f"{path}:8: procedures.{shown}: {why}")


@pytest.mark.parametrize("empty", ["procedures: {}", "procedures:"])
def test_at_least_one_procedure(tmp_path, empty):
    path = write(tmp_path, MINIMAL.split("procedures:")[0] + empty + "\n")
    message = str(load_error(path))
    assert message.startswith(f"{path}:7: procedures: ")
    if empty == "procedures: {}":
        assert message.endswith("at least one procedure is required (e.g. FVT1: {module: ...})")
    else:
        assert message.endswith("must be a mapping of key: value (got nothing)")


# ---------------------------------------------------------------------------------------------
# Limits


def test_limit_overrides_validate_and_keep_types(tmp_path):
    text = MINIMAL + (
        "    limits:\n"  # 10
        "      rail_3v3: {low: 3, high: 3.4, marginal: [3.25, 3.35], unit: V}\n"  # 11
        "      power_up.mode: {equals: 3}\n"  # 12
        "      fw: {matches: '^v\\d+', one_of: [a, 2, true]}\n"  # 13
        "      flag: {equals: true}\n"  # 14
    )
    config = load_config(write(tmp_path, text))
    limits = config.procedures["FVT1"].limits
    assert limits["rail_3v3"].low == 3.0
    assert limits["rail_3v3"].marginal == (3.25, 3.35)
    assert limits["power_up.mode"].equals == 3 and type(limits["power_up.mode"].equals) is int
    assert limits["flag"].equals is True
    assert limits["fw"].matches == "^v\\d+"
    assert limits["fw"].one_of == ["a", 2, True]
    # A limit name that contains a dot is still found by its dotted path, and by a tuple.
    assert config.line_of("procedures.FVT1.limits.power_up.mode") == 12
    assert config.line_of(("procedures", "FVT1", "limits", "power_up.mode", "equals")) == 12
    assert config.line_of("procedures.FVT1.limits.fw.one_of[1]") == 13


def test_limit_override_errors(tmp_path):
    text = MINIMAL + (
        "    limits:\n"  # 10
        "      a: {matches: '[a-'}\n"  # 11
        "      b: {marginal: [3.4, 3.2]}\n"  # 12
        "      c: {low: 3.4, high: 3.2}\n"  # 13
        "      d: {marginal: [1]}\n"  # 14
        "      g: {marginal: [1, 2, 3]}\n"  # 15
        "      phase.e: {equals: [1, 2]}\n"  # 16
        "      f: {one_of: [1, {x: 2}]}\n"  # 17
    )
    path = write(tmp_path, text)
    lim = "procedures.FVT1.limits"
    two = "must be a list of exactly 2 numbers [low, high]"
    assert str(load_error(path)).splitlines() == [
        f"{path}:11: {lim}.a.matches: is not a valid regular expression: "
        f"unterminated character set at position 0",
        f"{path}:12: {lim}.b.marginal: must be [low, high] with low <= high (got [3.4, 3.2])",
        f"{path}:13: {lim}.c: low (3.4) is greater than high (3.2)",
        f"{path}:14: {lim}.d.marginal: {two} (got 1 value)",
        f"{path}:15: {lim}.g.marginal: {two} (got 3 values)",
        f"{path}:16: {lim}.phase.e.equals: must be a number, a string or true/false (got a list)",
        f"{path}:17: {lim}.f.one_of: must be a list of numbers, strings or true/false "
        f"(found a mapping)",
    ]


# ---------------------------------------------------------------------------------------------
# YAML itself


def test_broken_yaml_names_line_and_column_in_plain_words(tmp_path):
    path = write(tmp_path, "station:\n  name: Bench: 3\n")
    error = load_error(path)
    assert str(error) == (
        f"{path}:2:14: invalid YAML: unexpected ':'; a value that contains ': ' must be quoted, "
        f"or the indentation is off"
    )
    assert error.line == 2


def test_tab_indentation(tmp_path):
    path = write(tmp_path, "station:\n\tname: Bench 3\n")
    assert str(load_error(path)) == (
        f"{path}:2:1: invalid YAML: a tab character; YAML indentation must use spaces"
    )


def test_unclosed_quote_names_where_it_started(tmp_path):
    path = write(tmp_path, 'station:\n  name: "Bench 3\nprocedures: {}\n')
    assert str(load_error(path)) == (
        f"{path}:4:1: invalid YAML: the file ends inside a quoted string or a [..]/{{..}}; "
        f"close the quote or bracket (in the quoted string that starts at line 2)"
    )


def test_unquoted_variable_inside_flow_mapping_gets_a_hint(tmp_path):
    path = write(tmp_path, "instruments:\n  dmm: {driver: x, resource: ${DMM}}\n")
    message = str(load_error(path))
    assert message.startswith(f"{path}:2:31: invalid YAML: inside {{...}}")
    assert "quote values that contain {, }, [, ], ',' or ${VAR}" in message


def test_yaml_tags_are_rejected(tmp_path):
    path = write(tmp_path, "station:\n  name: !env NAME\n")
    assert str(load_error(path)) == (
        f"{path}:2:9: invalid YAML: YAML tags (!name) are not supported; use plain values "
        f"and ${{VAR}} for the environment"
    )


def test_duplicate_key_names_both_lines(tmp_path):
    path = write(
        tmp_path,
        MINIMAL.replace(
            "    resource: USB0::1::2::3::INSTR\n",
            "    resource: USB0::1::2::3::INSTR\n    driver: rigol-dp832\n",
        ),
    )
    error = load_error(path)
    assert str(error) == (
        f"{path}:7: instruments.dmm.driver: duplicate key 'driver' (also at line 5); YAML would "
        f"silently keep only the last one, so remove or rename one of them"
    )
    assert (error.line, error.field) == (7, "instruments.dmm.driver")


def test_duplicate_instrument(tmp_path):
    path = write(
        tmp_path, MINIMAL.replace("procedures:", "  dmm: {driver: a, resource: b}\nprocedures:")
    )
    assert str(load_error(path)).startswith(
        f"{path}:7: instruments.dmm: duplicate key 'dmm' (also at line 4)"
    )


@pytest.mark.parametrize("megabytes", [2, 50])
def test_an_oversized_file_is_refused_at_once_with_its_size(tmp_path, megabytes):
    """A 50 MB station.yaml took 83 s and 2.9 GB before a message about merge keys."""
    path = tmp_path / "station.yaml"
    line = b"# " + b"x" * 77 + b"\n"
    with path.open("wb") as f:
        f.write(b"station: {name: x}\nprocedures: {T1: {module: t.py}}\n")
        f.write(line * (megabytes * (1 << 20) // len(line)))
    size = path.stat().st_size
    started = time.monotonic()
    error = load_error(path)
    assert time.monotonic() - started < 2.0  # nothing was parsed (generous for a busy machine)
    assert str(error) == (
        f"{path}: the file is {size:,} bytes; a station config is at most 1,048,576 bytes "
        "(1 MiB), and a real one a few kB: is it the right file?"
    )


def test_a_file_just_under_the_size_cap_still_loads(tmp_path):
    path = tmp_path / "station.yaml"
    head = "station: {name: x}\nprocedures: {T1: {module: t.py}}\n"
    path.write_text(head + "#" * ((1 << 20) - len(head) - 1) + "\n")
    assert path.stat().st_size == 1 << 20
    assert load_config(path).station.name == "x"


def test_empty_file(tmp_path):
    path = write(tmp_path, "# just a comment\n")
    error = load_error(path)
    assert (error.path, error.line) == (path, None)
    assert str(error) == (
        f"{path}: the file is empty; it must be a mapping with at least 'station:' and "
        f"'procedures:' (see 'station.yaml' in the README)"
    )


def test_top_level_must_be_a_mapping(tmp_path):
    path = write(tmp_path, "# bench\n- station\n- procedures\n")
    error = load_error(path)
    assert (error.path, error.line) == (path, 2)
    assert str(error) == (
        f"{path}:2: the top level is a list, not a mapping of keys; it must be a mapping with "
        f"at least 'station:' and 'procedures:' (see 'station.yaml' in the README)"
    )


def test_merge_keys_work(tmp_path):
    text = (
        "station: {name: Bench 3}\n"
        "instruments:\n"
        "  dmm: &keysight {driver: keysight-34461a, resource: 'USB0::1::2::3::INSTR', "
        "timeout_ms: 5000}\n"
        "  dmm2:\n"
        "    <<: *keysight\n"
        "    resource: 'USB0::1::2::4::INSTR'\n"
        "procedures: {FVT1: {module: procedures.fvt1}}\n"
    )
    config = load_config(write(tmp_path, text))
    assert config.instruments["dmm2"].driver == "keysight-34461a"
    assert config.instruments["dmm2"].timeout_ms == 5000
    assert config.instruments["dmm2"].resource == "USB0::1::2::4::INSTR"
    assert config.line_of("instruments.dmm2.resource") == 6


def test_missing_and_unreadable_files(tmp_path):
    missing = tmp_path / "nope.yaml"
    assert str(load_error(missing)) == f"{missing}: config file does not exist"
    assert str(load_error(tmp_path)) == f"{tmp_path}: is a directory, not a config file"
    binary = tmp_path / "bin.yaml"
    binary.write_bytes(b"station: \xff\xfe\n")
    assert str(load_error(binary)).startswith(f"{binary}: not a UTF-8 text file")


# ---------------------------------------------------------------------------------------------
# Environment variables


def test_env_expansion_default_and_escape(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH", "Bench 7")
    monkeypatch.setenv("EMPTY", "")
    monkeypatch.delenv("UNSET_PART", raising=False)
    text = MINIMAL.replace("name: Bench 3", "name: ${BENCH} (${EMPTY:-line A})") + (
        "    part_number: ${UNSET_PART:-PCBA01}\n"
        "    batch_number: 'literal $${BENCH} and $$ and $5'\n"
        "    timeout_s: ${UNSET_TIMEOUT:-30}\n"
    )
    config = load_config(write(tmp_path, text))
    assert config.station.name == "Bench 7 (line A)"
    assert config.procedures["FVT1"].part_number == "PCBA01"
    assert config.procedures["FVT1"].batch_number == "literal ${BENCH} and $$ and $5"
    assert config.procedures["FVT1"].timeout_s == 30.0


def test_unset_variable_is_an_error_naming_it_and_its_line(tmp_path, monkeypatch):
    monkeypatch.delenv("DMM_RESOURCE", raising=False)
    path = write(tmp_path, MINIMAL.replace("USB0::1::2::3::INSTR", "${DMM_RESOURCE}"))
    error = load_error(path)
    assert str(error) == (
        f"{path}:6: instruments.dmm.resource: environment variable DMM_RESOURCE is not set "
        f"(set it, or give a default: ${{DMM_RESOURCE:-value}})"
    )
    assert (error.line, error.field) == (6, "instruments.dmm.resource")


def test_malformed_variable_references(tmp_path):
    path = write(tmp_path, MINIMAL + "    part_number: ${1X}\n    revision: ${OOPS\n")
    assert str(load_error(path)).splitlines() == [
        f"{path}:10: procedures.FVT1.part_number: '${{1X}}' is not a valid variable reference "
        f"(use ${{NAME}} or ${{NAME:-default}}; $${{ for a literal ${{)",
        f"{path}:11: procedures.FVT1.revision: '${{' is not closed with '}}' "
        f"(write $${{ for a literal ${{)",
    ]


# ---------------------------------------------------------------------------------------------
# Secrets


def test_api_key_in_the_file_is_refused_without_echoing_it(tmp_path):
    path = write(tmp_path, MINIMAL + "tofupilot:\n  api_key: tp_live_SECRET123\n")
    message = str(load_error(path))
    assert message == (
        f"{path}:11: tofupilot.api_key: never put the API key in station.yaml: delete 'api_key' "
        f"and set the environment variable TOFUPILOT_API_KEY (named by tofupilot.api_key_env) "
        f"to the key on this station instead"
    )
    assert "SECRET123" not in message


def test_api_key_message_uses_the_configured_variable(tmp_path):
    text = MINIMAL + "tofupilot:\n  api_key_env: BENCH3_KEY\n  token: tp_live_SECRET123\n"
    message = str(load_error(write(tmp_path, text)))
    assert ":12: tofupilot.token: never put the API key in station.yaml: delete 'token'" in message
    assert "set the environment variable BENCH3_KEY" in message
    assert "SECRET123" not in message


def test_api_key_pasted_into_api_key_env_is_not_echoed(tmp_path):
    path = write(tmp_path, MINIMAL + "tofupilot:\n  api_key_env: tp-live-SECRET123\n")
    message = str(load_error(path))
    assert message.startswith(
        f"{path}:11: tofupilot.api_key_env: must be the NAME of the environment variable"
    )
    assert "SECRET123" not in message


# ---------------------------------------------------------------------------------------------
# data_dir


def test_relative_data_dir_resolves_against_the_config_directory(tmp_path, monkeypatch):
    bench = tmp_path / "bench"
    bench.mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    config = load_config(write(bench, MINIMAL + "data_dir: data/runs\n"))
    assert config.data_path == bench.resolve() / "data" / "runs"


def test_absolute_data_dir_is_kept(tmp_path):
    target = tmp_path / "abs"
    config = load_config(write(tmp_path, MINIMAL + f"data_dir: {target}\n"))
    assert config.data_path == target


# ---------------------------------------------------------------------------------------------
# line_of and error() for checks made after loading


def test_error_is_located_like_load_errors(tmp_path):
    path = write(tmp_path, MINIMAL + "    limits:\n      power_up.rail_3v3: {high: 3.4}\n")
    config = load_config(path)

    error = config.error("instruments.dmm.driver", "unknown driver 'keysight-34461a'")
    assert isinstance(error, ConfigError)
    assert str(error) == f"{path}:5: instruments.dmm.driver: unknown driver 'keysight-34461a'"
    assert (error.path, error.line, error.field) == (path, 5, "instruments.dmm.driver")

    error = config.error(
        "procedures.FVT1.limits.power_up.rail_3v3", "FVT1 declares no measurement 'rail_3v3'"
    )
    assert str(error) == (
        f"{path}:11: procedures.FVT1.limits.power_up.rail_3v3: "
        f"FVT1 declares no measurement 'rail_3v3'"
    )

    # A key that is not in the file (a default) is located at the nearest enclosing key.
    error = config.error("instruments.dmm.timeout_ms", "too short for this instrument")
    assert str(error) == f"{path}:4: instruments.dmm.timeout_ms: too short for this instrument"
    error = config.error("sim.board", "no such board")
    assert str(error) == f"{path}:1: sim.board: no such board"


# ---------------------------------------------------------------------------------------------
# find_config_path


def test_find_config_path_precedence(tmp_path, monkeypatch):
    cwd_file = write(tmp_path, MINIMAL)
    env_file = write(tmp_path, MINIMAL, "from_env.yaml")
    explicit = write(tmp_path, MINIMAL, "explicit.yaml")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("STATION_CONFIG", str(env_file))

    assert find_config_path(explicit) == explicit
    assert find_config_path(str(explicit)) == explicit
    assert find_config_path() == env_file
    monkeypatch.delenv("STATION_CONFIG")
    assert find_config_path() == Path("station.yaml")
    assert find_config_path().resolve() == cwd_file.resolve()


def test_find_config_path_not_found_messages(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("STATION_CONFIG", raising=False)
    hint = "pass --config PATH or set STATION_CONFIG=PATH to point at a station config"

    with pytest.raises(ConfigError) as info:
        find_config_path()
    assert str(info.value) == f"no station.yaml in the current directory ({tmp_path}); {hint}"

    with pytest.raises(ConfigError) as info:
        find_config_path("bench/missing.yaml")
    assert str(info.value) == (
        f"config file bench/missing.yaml (from --config) does not exist; {hint}"
    )

    monkeypatch.setenv("STATION_CONFIG", "/nowhere/station.yaml")
    with pytest.raises(ConfigError) as info:
        find_config_path()
    assert str(info.value) == (
        f"config file /nowhere/station.yaml (from $STATION_CONFIG) does not exist; {hint}"
    )

    with pytest.raises(ConfigError) as info:
        find_config_path(tmp_path)
    assert (
        str(info.value)
        == f"config file {tmp_path} (from --config) is a directory, not a file; {hint}"
    )
