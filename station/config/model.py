"""station.yaml: the typed model of a bench, and a loader whose errors point at file:line.

`load_config(path)` reads the YAML with a loader that remembers where every key was written,
expands `${VAR}` from the environment, validates with pydantic, and turns every problem into one
`ConfigError` whose lines read like compiler errors::

    station.yaml:7: instruments.dmm.drivr: unknown key 'drivr' (did you mean 'driver'?)
    station.yaml:9: procedures.FVT1.timeout_s: must be greater than 0 (got -5)

The operator at the bench sees that message and nothing else, so it never contains pydantic
internals or links, and never echoes anything that looks like a secret.
"""

from __future__ import annotations

import ipaddress
import keyword
import os
import re
import uuid
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from station.authoring.limits import limit_problems
from station.authoring.procedure import HELPER_NAMES
from station.config.errors import (
    ConfigError,
    Loc,
    dotted_name,
    make_error,
    show_value,
    top_level_problem,
    translate_errors,
)
from station.config.resources import check_resource, check_visa_library, instrument_key
from station.config.yaml_source import ENV_NAME, YamlReader

__all__ = [
    "ConfigError",
    "InstrumentConfig",
    "LimitOverride",
    "ProcedureConfig",
    "SimConfig",
    "StationConfig",
    "StationInfo",
    "TofuPilotConfig",
    "find_config_path",
    "load_config",
]

CONFIG_ENV_VAR = "STATION_CONFIG"
DEFAULT_CONFIG_NAME = "station.yaml"
DEFAULT_KEY_ENV = "TOFUPILOT_API_KEY"
MAX_ENV_NAME_LENGTH = 64  # longer than any variable name a person types
MAX_CONFIG_BYTES = 1 << 20  # 1 MiB: a station config is a few kB; refused before it is parsed


# --------------------------------------------------------------------------------------------
# Field checks shared by the models. They raise ValueError with a message written for operators;
# the loader turns it into a located line.


def _no_bool(value: Any) -> Any:
    # pydantic's lax mode turns `true` into 1; `timeout_ms: yes` is a mistake, not 1 ms.
    if isinstance(value, bool):
        raise ValueError(f"must be a number, not {str(value).lower()}")
    return value


def _check_instrument_name(name: str) -> str:
    if name in HELPER_NAMES:  # phases receive these helpers by name: an instrument may not shadow
        raise ValueError(
            f"'{name}' is reserved: phases receive the helpers "
            f"{', '.join(sorted(HELPER_NAMES))} under those names, so an instrument called "
            f"'{name}' could never be injected; choose another name"
        )
    if not name.isidentifier() or keyword.iskeyword(name):
        better = re.sub(r"\W", "_", name)
        if not better.isidentifier() or keyword.iskeyword(better):
            better = f"{better}_1" if keyword.iskeyword(better) else f"i_{better}"
        raise ValueError(
            f"'{name}' is not a valid instrument name: phases receive instruments as parameters "
            f"by name, so it must be a Python identifier (letters, digits and '_', not starting "
            f"with a digit, not a keyword), e.g. '{better}'"
        )
    return name


def _check_procedure_name(name: str) -> str:
    if not name.strip():
        raise ValueError("procedure name must not be empty")
    if re.search(r"[\s/]", name):
        raise ValueError(
            f"procedure name {name!r} must not contain whitespace or '/' "
            f"(it is typed on the command line and used in run directory names)"
        )
    return name


def _check_limit_key(name: str) -> str:
    if not name.strip():
        raise ValueError("measurement name must not be empty")
    return name


def _no_nan(value: float) -> float:
    # NaN compares false with everything: a limit of .nan would fail every unit, silently.
    if value != value:
        raise ValueError("must be a number, not .nan")
    return value


def _check_scalar(value: Any) -> Any:
    if value is not None and not isinstance(value, (bool, int, float, str)):
        raise ValueError(f"must be a number, a string or true/false (got {show_value(value)})")
    return _no_nan(value) if isinstance(value, float) else value


def _check_scalar_list(value: Any) -> Any:
    if value is None:
        return value
    if not isinstance(value, list):
        raise ValueError(f"must be a list of allowed values (got {show_value(value)})")
    for item in value:
        if item is None or not isinstance(item, (bool, int, float, str)):
            raise ValueError(
                f"must be a list of numbers, strings or true/false (found {show_value(item)})"
            )
    return value


_NonBoolInt = Annotated[int, BeforeValidator(_no_bool)]
_NonBoolFloat = Annotated[float, BeforeValidator(_no_bool), AfterValidator(_no_nan)]
_Scalar = Annotated[float | int | str | bool | None, BeforeValidator(_check_scalar)]
InstrumentName = Annotated[str, AfterValidator(_check_instrument_name)]
ProcedureName = Annotated[str, AfterValidator(_check_procedure_name)]
MeasurementKey = Annotated[str, AfterValidator(_check_limit_key)]


# --------------------------------------------------------------------------------------------
# Models


MIN_TIMEOUT_MS = 100  # below this a normal reply (a DMM reading, a reconnect) times out


def _check_class_spec(value: str) -> str:
    """`package.module:ClassName` (or `path/to/file.py:ClassName`)."""
    value = value.strip()
    module, sep, name = value.rpartition(":")
    dotted = all(part.isidentifier() for part in module.split("."))
    if not sep or not name.isidentifier() or not (dotted or module.endswith(".py")):
        raise ValueError(
            f"{value!r} is not a class: write package.module:ClassName (a module beside "
            "station.yaml or installed, e.g. fixtures.relay:RelayBoard) or "
            "path/to/file.py:ClassName"
        )
    return value


def _check_driver(value: str) -> str:
    value = value.strip()
    if ":" in value:
        return _check_class_spec(value)
    if not re.fullmatch(r"[a-z0-9][a-z0-9\-]*", value):
        raise ValueError(
            f"{value!r} is neither a driver name (e.g. keysight-34461a, scpi, serial-line) nor "
            "a class (package.module:ClassName)"
        )
    return value


class InstrumentConfig(BaseModel):
    """One instrument: which driver talks to it and where it is connected.

    `driver` is a registry name (a model, or the generic `scpi` / `serial-line`) or a class of
    yours, `package.module:ClassName`, resolved beside station.yaml first, then in installed
    packages; `config` is passed to its constructor as keyword arguments. `resource` is
    required for registry drivers and checked for its form here (see `config.resources`).
    `sim` names what `--sim` uses instead (a class built the same way, or a twin served on
    loopback), with `sim_config` as its keyword arguments.
    """

    model_config = ConfigDict(extra="forbid")

    driver: Annotated[str, AfterValidator(_check_driver)] = Field(min_length=1)
    resource: str | None = Field(default=None, min_length=1)
    timeout_ms: _NonBoolInt = Field(default=3000, le=3_600_000)  # an hour at most
    baud_rate: _NonBoolInt | None = Field(default=None, gt=0)
    read_termination: str | None = None
    write_termination: str | None = None
    visa_library: str | None = None  # overrides the top-level one for this instrument
    config: dict[str, Any] = Field(default_factory=dict)
    sim: Annotated[str, AfterValidator(_check_class_spec)] | None = None
    sim_config: dict[str, Any] = Field(default_factory=dict)

    @field_validator("resource")
    @classmethod
    def _resource_form(cls, value: str | None) -> str | None:
        return None if value is None else check_resource(value)

    @field_validator("timeout_ms")
    @classmethod
    def _sane_timeout(cls, value: int) -> int:
        if value < MIN_TIMEOUT_MS:
            raise ValueError(
                f"must be at least {MIN_TIMEOUT_MS} ms (got {value}): timeout_ms is in "
                f"milliseconds, and below {MIN_TIMEOUT_MS} ms a normal reply times out"
                + (f"; for {value} s write {value * 1000}" if value > 0 else "")
            )
        return value

    @field_validator("visa_library")
    @classmethod
    def _library(cls, value: str | None) -> str | None:
        return None if value is None else check_visa_library(value)

    @model_validator(mode="before")
    @classmethod
    def _empty_mappings(cls, data: Any) -> Any:
        # `config:` with everything below it commented out means "no keys", not "invalid".
        if isinstance(data, dict):
            empty = [k for k in ("config", "sim_config") if k in data and data[k] is None]
            if empty:
                data = {**data, **{k: {} for k in empty}}
        return data

    @model_validator(mode="after")
    def _resource_given(self) -> InstrumentConfig:
        if self.resource is None and ":" not in self.driver:
            raise ValueError("missing required key 'resource'")  # as pydantic's own would read
        return self


class LimitOverride(BaseModel):
    """Replaces limits of one measurement declared by a procedure's `@measure`.

    Only the fields given replace the procedure's own; the rest keep their declared values.
    The limits are checked by the rules `@measure` uses (`station.authoring.limits.limit_problems`):
    a problem with one limit is reported at its key, a contradiction at the measurement's.
    """

    model_config = ConfigDict(extra="forbid")

    low: _NonBoolFloat | None = None
    high: _NonBoolFloat | None = None
    equals: _Scalar = None
    matches: str | None = None
    one_of: Annotated[
        list[float | int | str | bool] | None, BeforeValidator(_check_scalar_list)
    ] = None
    marginal: tuple[_NonBoolFloat, _NonBoolFloat] | None = None
    unit: str | None = None
    description: str | None = None

    @field_validator("low", "high", "matches", "one_of", "marginal")
    @classmethod
    def _limit_is_sound(cls, value: Any, info: ValidationInfo) -> Any:
        # One limit alone (e.g. a regular expression that does not compile), at its own key.
        problems = limit_problems(**{str(info.field_name): value})
        if problems:
            raise ValueError(problems[0][1])
        return value

    @model_validator(mode="after")
    def _limits_agree(self) -> LimitOverride:
        # The limits given, together (e.g. low above high), at the measurement's key.
        problems = limit_problems(**self.model_dump(exclude={"unit", "description"}))
        if problems:
            raise ValueError(problems[0][1])
        return self


class ProcedureConfig(BaseModel):
    """A procedure this station may run, with its product identity and limit overrides."""

    model_config = ConfigDict(extra="forbid")

    module: str
    part_number: str | None = None
    revision: str | None = None
    batch_number: str | None = None
    timeout_s: _NonBoolFloat | None = Field(default=None, gt=0)
    stop_on_fail: bool | None = None
    limits: dict[MeasurementKey, LimitOverride] = Field(default_factory=dict)
    # TofuPilot's own id of this procedure (a UUID); without it the id is resolved by name,
    # `tofupilot_name` or else the procedure key, when a run is uploaded.
    tofupilot_id: str | None = None
    tofupilot_name: str | None = None
    # Procedures the unit's latest run of which must have PASSed before this one may start.
    requires_passed: list[ProcedureName] = Field(default_factory=list)
    # A regular expression the whole scanned serial must match; named groups part_number,
    # revision and batch_number fill the unit's fields.
    serial_pattern: str | None = None

    @field_validator("tofupilot_id")
    @classmethod
    def _uuid(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = value.strip()
        try:
            return str(uuid.UUID(value))
        except ValueError:
            raise ValueError(
                f"must be TofuPilot's id of the procedure, a UUID such as "
                f"'3f2b8c1e-1d2a-4c5b-9e8f-0a1b2c3d4e5f' (got {show_value(value)}); "
                "`station check` prints the id of a procedure linked to this station"
            ) from None

    @field_validator("serial_pattern")
    @classmethod
    def _pattern_compiles(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"is not a valid regular expression: {exc}") from None
        return value

    @field_validator("module")
    @classmethod
    def _module_is_importable_name(cls, value: str) -> str:
        value = value.strip()
        if value.endswith(".py"):
            return value
        if not value or not all(part.isidentifier() for part in value.split(".")):
            raise ValueError(
                f"{value!r} is neither a dotted module path (e.g. procedures.fvt1) "
                f"nor a path to a file ending in .py"
            )
        return value

    @model_validator(mode="before")
    @classmethod
    def _empty_limits(cls, data: Any) -> Any:
        if isinstance(data, dict) and "limits" in data and data["limits"] is None:
            data = {**data, "limits": {}}
        return data


class TofuPilotConfig(BaseModel):
    """Where runs are reported, and which environment variable holds the station API key."""

    model_config = ConfigDict(extra="forbid")

    # Declared before `url`, whose check reads them (pydantic validates fields in this order).
    allow_insecure_http: bool = False
    # v2 (the default) or the legacy v1 API, for servers that lack v2.
    api: Literal["v2", "v1"] = "v2"
    # The API root (`https://www.tofupilot.app/api`): the forms users copy (the site, `/api`,
    # `/api/v2`) are normalised to it; see `api_root`.
    url: str = "https://www.tofupilot.app/api"
    api_key_env: str = DEFAULT_KEY_ENV

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str, info: ValidationInfo) -> str:
        value = value.strip()
        if not re.match(r"https?://[^/\s]+", value):
            raise ValueError(f"must be an http:// or https:// URL (got {value!r})")
        value = api_root(value, api=info.data.get("api", "v2"))
        host = _url_host(value)
        insecure = value.lower().startswith("http://") and not _is_loopback(host)
        if insecure and not info.data.get("allow_insecure_http", False):
            raise ValueError(
                f"http:// would send the API key to {host} in cleartext, readable by "
                "anyone on the network path; use https://, or, only for a server on a "
                "network you trust, set tofupilot.allow_insecure_http: true"
            )
        return value

    @field_validator("api_key_env")
    @classmethod
    def _env_name(cls, value: str) -> str:
        # Never echoed: the usual reason is a pasted API key, which would then be printed.
        if not ENV_NAME.fullmatch(value) or looks_like_key(value):
            raise ValueError(
                "must be the NAME of the environment variable that holds the API key "
                f"(e.g. {DEFAULT_KEY_ENV}), not the key itself; the key never goes in this "
                "file (this value looks like a key, so it is not shown)"
            )
        return value


def api_root(url: str, *, api: str = "v2") -> str:
    """The TofuPilot API root (`.../api`, no trailing slash) of a URL as users copy it.

    `https://www.tofupilot.app`, `.../api`, `.../api/v2` (the form TofuPilot's docs show) and
    trailing slashes all give `https://www.tofupilot.app/api`; a self-hosted server the same
    (`https://tp.example.com/tofupilot` gives `https://tp.example.com/tofupilot/api`). A v1 URL
    (`.../v1`) is refused unless `api` is "v1", as is an endpoint (`.../api/v2/runs`), a query
    or a fragment: the ValueError says what to write instead.
    """
    parts = urlsplit(url.strip())
    if parts.query or parts.fragment:
        raise ValueError(
            f"must be the server's address without a query or fragment (got {url!r}): "
            "e.g. https://www.tofupilot.app/api"
        )
    segments = [s for s in parts.path.split("/") if s]
    base = f"{parts.scheme}://{parts.netloc}"
    if segments and segments[-1].lower() == "v1":
        root = "/".join(segments[:-1])
        if api == "v1":
            segments = segments[:-1]
        else:
            v2 = f"{base}/{root or 'api'}" if root.lower().endswith("api") else f"{base}/api"
            raise ValueError(
                f"{url!r} is the legacy v1 API; station uploads through v2: use {v2} (the "
                "/v2 paths are appended). For a server that has no v2 API, keep the URL and "
                "set `api: v1` in the tofupilot section"
            )
    elif segments and segments[-1].lower() == "v2":
        segments = segments[:-1]
    lowered = [s.lower() for s in segments]
    if "v1" in lowered or "v2" in lowered:
        at = lowered.index("v1" if "v1" in lowered else "v2")
        root = "/".join([*segments[:at]] or ["api"])
        raise ValueError(
            f"{url!r} points at an endpoint, not the API root: use {base}/{root} (the "
            f"/{'v1' if api == 'v1' else 'v2'} paths are appended)"
        )
    if not lowered or lowered[-1] != "api":
        segments.append("api")
    return f"{base}/" + "/".join(segments)


def _url_host(url: str) -> str:
    try:
        return urlsplit(url).hostname or ""
    except ValueError:  # e.g. an unclosed IPv6 bracket
        return ""


def _is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 and `localhost`: http:// there never leaves this machine."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def looks_like_key(value: str) -> bool:
    """True if `value` looks like a pasted API key rather than an environment variable name.

    Variable names are words (`TOFUPILOT_API_KEY`, `BENCH3_TP_KEY`); keys carry a long random
    run. A run of at least 16 characters between underscores that mixes upper case, lower case
    and digits, or a value longer than any sane variable name, is taken for a key.
    """
    if len(value) > MAX_ENV_NAME_LENGTH:
        return True
    for run in re.split(r"[_\-]", value):
        if (
            len(run) >= 16
            and any(c.isupper() for c in run)
            and any(c.islower() for c in run)
            and any(c.isdigit() for c in run)
        ):
            return True
    return False


class StationInfo(BaseModel):
    """Identity of this bench."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)


class SimConfig(BaseModel):
    """What `--sim` simulates: the DUT model, an optional fault mode and the noise seed."""

    model_config = ConfigDict(extra="forbid")

    board: str = "pcba01"
    fault: str | None = None
    seed: _NonBoolInt = 0


class StationConfig(BaseModel):
    """The whole station.yaml.

    `load_config` also records where the file is (`path`, `base_dir`, `data_path`) and where each
    key was written (`line_of`), so checks made later by the framework can report problems with
    the same `file:line: field:` precision (`error`).
    """

    model_config = ConfigDict(extra="forbid")

    station: StationInfo
    tofupilot: TofuPilotConfig = Field(default_factory=TofuPilotConfig)
    data_dir: Path = Path("runs")
    instruments: dict[InstrumentName, InstrumentConfig] = Field(default_factory=dict)
    procedures: dict[ProcedureName, ProcedureConfig]
    sim: SimConfig = Field(default_factory=SimConfig)
    # The VISA implementation of every VISA instrument (each may override it): "@py"
    # (pyvisa-py, the default), "@ivi" (NI-VISA, Keysight IO Libraries) or a library's path.
    visa_library: str | None = None

    @field_validator("visa_library")
    @classmethod
    def _visa_library(cls, value: str | None) -> str | None:
        return None if value is None else check_visa_library(value)

    _path: Path | None = PrivateAttr(default=None)
    _display: str | None = PrivateAttr(default=None)
    _lines: dict[Loc, int] = PrivateAttr(default_factory=dict)
    _dotted: dict[str, Loc] = PrivateAttr(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _empty_sections(cls, data: Any) -> Any:
        # `sim:` with everything below it commented out means "defaults", not "invalid".
        if isinstance(data, dict):
            empty = [
                k for k in ("tofupilot", "instruments", "sim") if k in data and data[k] is None
            ]
            if empty:
                data = {**data, **{k: {} for k in empty}}
        return data

    @field_validator("procedures")
    @classmethod
    def _at_least_one(cls, value: dict[str, ProcedureConfig]) -> dict[str, ProcedureConfig]:
        if not value:
            raise ValueError("at least one procedure is required (e.g. FVT1: {module: ...})")
        return value

    @property
    def path(self) -> Path | None:
        """Absolute path of the file this was loaded from (None if built in code)."""
        return self._path

    @property
    def base_dir(self) -> Path:
        """Directory holding station.yaml: relative paths and procedure modules resolve here."""
        return self._path.parent if self._path is not None else Path.cwd()

    @property
    def data_path(self) -> Path:
        """`data_dir` as an absolute path, relative to `base_dir` unless already absolute."""
        data_dir = self.data_dir.expanduser()
        return data_dir if data_dir.is_absolute() else self.base_dir / data_dir

    def line_of(self, dotted: str | Loc) -> int | None:
        """1-based line where a key was written, e.g. `line_of("instruments.dmm.driver")`.

        Keys that contain dots (limit names like `power_up.rail_3v3`) are found too; pass a tuple
        of keys to be unambiguous. None if the key is not in the file (a default was used).
        """
        loc = self._resolve(dotted)
        return None if loc is None else self._lines.get(loc)

    def error(self, dotted: str | Loc, message: str) -> ConfigError:
        """A ConfigError located at a key, for checks the framework makes after loading.

        For example `config.error("instruments.dmm.driver", "unknown driver 'x'")`. If the key
        is not in the file, the nearest enclosing key that is gives the line.
        """
        loc = self._resolve(dotted)
        field = dotted if isinstance(dotted, str) else dotted_name(dotted)
        line = None
        if loc is not None:
            for depth in range(len(loc), -1, -1):
                line = self._lines.get(loc[:depth])
                if line is not None:
                    break
        file = Path(self._display) if self._display is not None else None
        return make_error(self._display, file, [(line, field, message)])

    def _resolve(self, dotted: str | Loc) -> Loc | None:
        if isinstance(dotted, tuple):
            return dotted
        if dotted in self._dotted:
            return self._dotted[dotted]
        return tuple(dotted.split(".")) if dotted else ()


def shared_resource_issues(config: StationConfig, lines: dict[Loc, int]) -> list[Any]:
    """One issue per instrument whose resource another instrument already uses (however each
    is spelt: `localhost` and `127.0.0.1`, `COM3` and `ASRL3::INSTR` are one): two drivers
    on one connection would interleave their commands. Reported at the second one's line."""
    issues: list[Any] = []
    first: dict[tuple[str, ...], str] = {}
    for name, settings in config.instruments.items():
        if settings.resource is None:
            continue
        key = instrument_key(settings.resource)
        if key in first:
            loc: Loc = ("instruments", name, "resource")
            issues.append(
                (
                    lines.get(loc),
                    loc,
                    f"{settings.resource!r} is already the resource of instrument "
                    f"{first[key]!r}: two instruments on one connection would interleave their "
                    "commands; give each its own resource",
                )
            )
        else:
            first[key] = name
    return issues


# --------------------------------------------------------------------------------------------
# Finding and loading


def find_config_path(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The config file to use: `explicit` (--config), else $STATION_CONFIG, else ./station.yaml.

    Raises ConfigError saying where it looked and how to point at a file if it does not exist.
    """
    if explicit is not None and str(explicit) != "":
        path, source = Path(explicit), "--config"
    elif os.environ.get(CONFIG_ENV_VAR):
        path, source = Path(os.environ[CONFIG_ENV_VAR]), f"${CONFIG_ENV_VAR}"
    else:
        path, source = Path(DEFAULT_CONFIG_NAME), None
    if path.is_file():
        return path
    if source is None:
        raise ConfigError(
            f"no {DEFAULT_CONFIG_NAME} in the current directory ({Path.cwd()}); "
            f"pass --config PATH or set {CONFIG_ENV_VAR}=PATH to point at a station config",
            path=path,
        )
    what = "is a directory, not a file" if path.is_dir() else "does not exist"
    raise ConfigError(
        f"config file {path} (from {source}) {what}; "
        f"pass --config PATH or set {CONFIG_ENV_VAR}=PATH to point at a station config",
        path=path,
    )


def _read_text(file: Path, display: str) -> str:
    """The file's text, refused at once when it is larger than MAX_CONFIG_BYTES.

    Checked before parsing (a 50 MB file took minutes and gigabytes to be refused) and
    enforced while reading, in case the size changes or is not known (a pipe).
    """
    with file.open("rb") as stream:
        size = os.fstat(stream.fileno()).st_size
        content = stream.read(MAX_CONFIG_BYTES + 1) if size <= MAX_CONFIG_BYTES else b""
    if size > MAX_CONFIG_BYTES or len(content) > MAX_CONFIG_BYTES:
        shown = f"{size:,} bytes" if size > MAX_CONFIG_BYTES else "more than that"
        raise ConfigError(
            f"{display}: the file is {shown}; a station config is at most "
            f"{MAX_CONFIG_BYTES:,} bytes (1 MiB), and a real one a few kB: is it the right file?",
            path=file,
        )
    # As read_text() would: universal newlines.
    return content.decode("utf-8").replace("\r\n", "\n").replace("\r", "\n")


def _refuse_key_expansion(
    reader: YamlReader, data: dict[str, Any], display: str, file: Path
) -> None:
    """Refuse `${...}` of the API key's variable anywhere in the file.

    Expanded, the key would sit in a field that is printed, recorded and uploaded (a station
    name, a resource string). Checked before validation, so no message quotes the value.
    The configured variable and the default one are both protected.
    """
    section = data.get("tofupilot")
    configured = section.get("api_key_env") if isinstance(section, dict) else None
    protected = {DEFAULT_KEY_ENV}
    if isinstance(configured, str) and ENV_NAME.fullmatch(configured):
        protected.add(configured)
    rows = [
        (
            line,
            dotted_name(loc),
            f"${{{name}}} is the TofuPilot API key's variable: expanded here, the key would be "
            "printed, recorded and uploaded with this field; the key is read from the "
            "environment by the uploader only, so remove this reference",
        )
        for line, loc, name in reader.expansions
        if name in protected
    ]
    if rows:
        raise make_error(display, file, rows)


def load_config(path: str | os.PathLike[str]) -> StationConfig:
    """Read, expand and validate a station.yaml; raise ConfigError listing every problem."""
    display = os.fspath(path)
    file = Path(path)
    try:
        text = _read_text(file, display)
    except FileNotFoundError:
        raise ConfigError(f"{display}: config file does not exist", path=file) from None
    except IsADirectoryError:
        raise ConfigError(f"{display}: is a directory, not a config file", path=file) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{display}: not a UTF-8 text file ({exc.reason} at byte {exc.start})", path=file
        ) from None
    except OSError as exc:
        raise ConfigError(f"{display}: cannot read: {exc.strerror}", path=file) from None

    reader = YamlReader(text, display, file)
    data = reader.read()
    issues = list(reader.issues)
    if not isinstance(data, dict):
        line = None if data is None else reader.root_line
        raise ConfigError(top_level_problem(display, data, reader.root_line), path=file, line=line)
    _refuse_key_expansion(reader, data, display, file)

    try:
        config = StationConfig.model_validate(data)
    except ValidationError as exc:
        config = None
        taken = [loc for _, loc, _ in issues]
        key_env = TofuPilotConfig.model_fields["api_key_env"].default
        found = translate_errors(exc, data, reader.lines, reader.raw, StationConfig, key_env)
        for issue in found:
            # A key already reported while reading (unset ${VAR}, duplicate) would only repeat.
            if not any(issue[1][: len(t)] == t for t in taken):
                issues.append(issue)
    if config is not None:
        issues += shared_resource_issues(config, reader.lines)
    if issues or config is None:
        rows = [(line, dotted_name(loc), msg) for line, loc, msg in issues]
        raise make_error(display, file, rows)

    config._path = file.resolve()
    config._display = display
    config._lines = reader.lines
    config._dotted = {dotted_name(loc): loc for loc in reversed(list(reader.lines))}
    return config
