"""The official TofuPilot SDK as a test-time checker (never a runtime dependency).

1. Every run-create body our payload code builds, from representative records (every outcome,
   every limit kind, logs, sub-units, attachments, non-finite values, simulated, instruments,
   metadata), validates against the SDK's `RunCreateRequest` with unknown keys forbidden at
   every depth, and sends null only where the SDK's model is nullable.
2. The emulator's answers parse into the SDK's response models, through the SDK's own client
   over real HTTP (runs, procedures, stations/current, whoami, units, the upload flows).
3. `station` never imports the SDK.

The SDK's telemetry is switched off before it is imported (it is on by default).
"""

from __future__ import annotations

import os

os.environ["DISABLE_TELEMETRY"] = "true"  # read when tofupilot is imported: before that

import json
import subprocess
import sys
import typing
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import posthog
import pydantic
import pytest
from tofupilot.v2 import TofuPilot, errors, models

from station.records.model import InstrumentRecord, LogEntry, PhaseRecord, RunRecord
from station.tofupilot.payload import build_run_body

REPO = Path(__file__).resolve().parents[2]
PROCEDURE_UUID = "3f2b8c1e-5a47-4d0b-9c6e-7e1f0a2b3c4d"


# -- the strict check -----------------------------------------------------------------------------


def _models_in(annotation: Any) -> list[type[pydantic.BaseModel]]:
    found: list[type[pydantic.BaseModel]] = []

    def walk(t: Any) -> None:
        if isinstance(t, type) and issubclass(t, pydantic.BaseModel):
            found.append(t)
        for arg in typing.get_args(t):
            walk(arg)
        if hasattr(t, "__value__"):  # a TypeAliasType
            walk(t.__value__)

    walk(annotation)
    return found


def strict_problems(data: Any, instance: Any, path: str = "") -> list[str]:
    """What a model with `extra="forbid"` and the SDK's nullability would refuse in `data`,
    given `instance`, what the SDK's (lenient) model made of it: unknown keys, and nulls in
    fields the SDK does not mark Nullable (it omits those rather than send null)."""
    problems: list[str] = []
    if isinstance(instance, pydantic.BaseModel):
        fields = {(f.alias or n): (n, f) for n, f in type(instance).model_fields.items()}
        if not isinstance(data, dict):
            return [f"{path or '<body>'}: expected an object"]
        for key, value in data.items():
            where = f"{path}.{key}" if path else key
            if key not in fields:
                problems.append(
                    f"{where}: unknown key (the SDK's {type(instance).__name__} has no such field)"
                )
                continue
            name, field = fields[key]
            if value is None and "Nullable" not in repr(field.annotation):
                problems.append(f"{where}: null, but the SDK's field is not Nullable")
                continue
            problems += strict_problems(value, getattr(instance, name), where)
    elif isinstance(instance, list) and isinstance(data, list):
        for i, (d, v) in enumerate(zip(data, instance, strict=True)):
            problems += strict_problems(d, v, f"{path}[{i}]")
    elif isinstance(instance, dict) and isinstance(data, dict):
        for key in data:
            problems += strict_problems(data[key], instance.get(key), f"{path}.{key}")
    return problems


def check_with_sdk(body: dict[str, Any]) -> models.RunCreateRequest:
    """Validate `body` with the SDK's run-create model, unknown keys forbidden; as strict JSON."""
    wire = json.loads(json.dumps(body, allow_nan=False))
    request = models.RunCreateRequest.model_validate(wire)
    problems = strict_problems(wire, request)
    assert not problems, problems
    return request


def test_the_strict_check_catches_unknown_keys_and_nulls_at_every_depth():
    at = "2026-01-01T00:00:00Z"
    good = {
        "outcome": "PASS",
        "procedure_id": PROCEDURE_UUID,
        "started_at": at,
        "ended_at": at,
        "serial_number": "SN",
        "phases": [
            {
                "name": "p",
                "outcome": "PASS",
                "started_at": at,
                "ended_at": at,
                "measurements": [
                    {
                        "name": "m",
                        "outcome": "PASS",
                        "measured_value": None,
                        "validators": [{"operator": ">=", "expected_value": 1, "outcome": "PASS"}],
                    }
                ],
            }
        ],
    }
    check_with_sdk(good)
    bad_cases = {
        "revision": ("revision", "B"),  # v1's name for revision_number
        "phases[0].measurements[0].limit": ("phases.0.measurements.0.limit", 1),
        "phases[0].measurements[0].validators[0].value": (
            "phases.0.measurements.0.validators.0.value",
            1,
        ),
        "part_number": ("part_number", None),  # not Nullable: omit, never null
    }
    for expected, (dotted, value) in bad_cases.items():
        body = json.loads(json.dumps(good))
        *parents, last = dotted.split(".")
        node = body
        for part in parents:
            node = node[int(part)] if part.isdigit() else node[part]
        node[last] = value
        with pytest.raises(AssertionError) as caught:
            check_with_sdk(body)
        assert expected in str(caught.value), (expected, caught.value)


# -- representative records -----------------------------------------------------------------------

EVERY_LIMIT_KIND = '''
    """Functional test of the PCBA."""
    import pathlib
    from station import phase, measure

    __version__ = "2.1.0"

    @phase
    @measure("vout", unit="V", low=4.9, high=5.1, marginal=(4.95, 5.05), description="5 V rail")
    @measure("leak", unit="A", high=0.001)
    @measure("temp", unit="C", low=10)
    @measure("mode", one_of=["A", "B"])
    @measure("fw", matches=r"1\\.\\d+")
    @measure("count", equals=3)
    @measure("label", equals="OK")
    @measure("trace", unit="V")
    @measure("free")
    @measure("never", low=0)
    def rails(measurements, log, dut, run):
        """Check the rails."""
        log.info("rails: %s", "start")
        log.warning("a warning with unicode: µA, ✓")
        measurements.vout = 5.07
        measurements.leak = 0.0002
        measurements.temp = 25
        measurements.mode = "B"
        measurements.fw = "1.7"
        measurements.count = 3
        measurements.label = "OK"
        measurements.trace = [1.0, 2.0, 3.5]
        measurements.free = "text"
        dut.sub_units.append("PSU-42")
        dut.sub_units.append("FAN-7")
        run.metadata["fixture"] = "F7"
        run.metadata["gain"] = 1.5
        run.metadata["calibrated"] = True
        scope = pathlib.Path(__file__).with_name("scope.csv")
        scope.write_text("t,v\\n0,5.0\\n")
        run.attach(scope)

    @phase
    @measure("current", unit="A", high=1)
    def load(measurements, log):
        log.error("over current")
        measurements.current = 2.5

    @phase
    @measure("nan", unit="V", low=0, high=1)
    @measure("inf", marginal=(0, 1))
    @measure("neg")
    @measure("mixed", unit="V")
    @measure("hot", low=0)
    def non_finite(measurements):
        measurements.nan = float("nan")
        measurements.inf = float("inf")
        measurements.neg = float("-inf")
        measurements.mixed = [1.0, float("nan"), 2, float("inf")]
        measurements.hot = float("inf")

    @phase
    def broken():
        raise RuntimeError("the fixture is open")
'''


def _variants(record: RunRecord) -> dict[str, RunRecord]:
    """The record as every run outcome, with phases in every phase outcome, simulated, with
    instruments, as it reads back from run.json."""
    start = record.started_at
    extra = [
        PhaseRecord(
            name=f"as_{o.lower()}",
            outcome=o,
            started_at=start,
            ended_at=start,
            reason=f"{o.lower()} on purpose" if o != "PASS" else None,
        )
        for o in ("PASS", "FAIL", "SKIP", "ERROR", "TIMEOUT", "ABORTED")
    ]
    instruments = [
        InstrumentRecord(
            name="dmm",
            driver="keysight-34461a",
            resource="TCPIP::127.0.0.1::5025::SOCKET",
            identity="Keysight Technologies,34461A,MY60012345,A.03.01",
            manufacturer="Keysight Technologies",
            model="34461A",
            serial_number="MY60012345",
            firmware="A.03.01",
        ),
        InstrumentRecord(name="psu", driver="scpi"),
    ]
    found = {
        f"outcome {o}": record.replace(outcome=o, phases=[*record.phases, *extra])
        for o in ("PASS", "FAIL", "ERROR", "TIMEOUT", "ABORTED")
    }
    found["simulated, instruments, operator, batch"] = record.replace(
        simulated=True,
        instruments=instruments,
        operator="alice@example.com",
        batch_number="B-7",
        part_number="PCBA01",
        revision="C",
    )
    found["as read back from run.json"] = RunRecord.from_json(record.to_json())
    found["no phases, no end (interrupted)"] = record.replace(phases=[], ended_at=None)
    many = {f"k{i}": i for i in range(80)}  # beyond TofuPilot's 50 keys
    found["80 metadata keys"] = record.replace(metadata=many, instruments=instruments)
    run_logs = [
        LogEntry(
            level=level,
            timestamp=start + timedelta(milliseconds=i),
            message=f"line {i}",
            source_file="proc_t.py",
            line_number=i + 1,
        )
        for i, level in enumerate(["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] * 10)
    ]
    found["run-level logs of every level"] = record.replace(logs=run_logs)
    return found


@pytest.fixture
def representative(bench) -> dict[str, RunRecord]:
    record = bench.run(EVERY_LIMIT_KIND, procedure_yaml="part_number: PCBA01\nrevision: B\n")
    assert record.outcome == "ERROR" and record.attachments and record.sub_units
    kinds = {v.operator for p in record.phases for m in p.measurements for v in m.validators}
    assert kinds >= {">=", "<=", "==", "matches", "in"}
    return _variants(record)


def test_every_body_we_build_validates_against_the_sdk_model_with_extras_forbidden(
    representative, run_validator
):
    checked = 0
    for name, record in representative.items():
        body = build_run_body(
            record, client_run_ref=f"bench-1_{checked}", procedure_id=PROCEDURE_UUID
        )
        errors = [f"{list(e.absolute_path)}: {e.message}" for e in run_validator.iter_errors(body)]
        assert not errors, (name, errors)
        request = check_with_sdk(body)
        assert request.procedure_id == PROCEDURE_UUID and request.outcome == body["outcome"]
        checked += 1
    assert checked == len(representative) >= 9


def test_the_checked_bodies_carry_what_the_records_hold(representative):
    record = representative["simulated, instruments, operator, batch"]
    body = build_run_body(record, client_run_ref="bench-1_1", procedure_id=PROCEDURE_UUID)
    request = check_with_sdk(body)
    assert request.sub_units == ["PSU-42", "FAN-7"] and request.operated_by == "alice@example.com"
    assert request.metadata and request.metadata["simulated"] is True
    assert any(k.startswith("instrument.dmm") for k in request.metadata)
    phases = {p.name: p for p in request.phases or []}
    non_finite = {m.name: m for m in phases["non_finite"].measurements or []}
    assert non_finite["nan"].measured_value is None and non_finite["nan"].outcome == "FAIL"
    assert request.logs and {log.level for log in request.logs} >= {"INFO", "WARNING", "ERROR"}
    every = build_run_body(
        representative["outcome PASS"], client_run_ref="bench-1_3", procedure_id=PROCEDURE_UUID
    )
    phase_outcomes = {p.name: p.outcome for p in check_with_sdk(every).phases or []}
    assert {o for n, o in phase_outcomes.items() if n.startswith("as_")} == {
        "PASS",
        "FAIL",
        "SKIP",
        "ERROR",  # TIMEOUT and ABORTED phases go out as ERROR
    }
    many = build_run_body(
        representative["80 metadata keys"], client_run_ref="bench-1_2", procedure_id=PROCEDURE_UUID
    )
    assert len(check_with_sdk(many).metadata or {}) <= 50


# -- the emulator's answers, through the SDK's own client ----------------------------------------


@pytest.fixture
def sdk(emulator):
    """The SDK's v2 client on the emulator, with a station key (and a user-key twin)."""

    def make(key: str) -> TofuPilot:
        return TofuPilot(api_key=key, server_url=emulator.url, timeout_ms=5000)

    return make


def test_sdk_parses_the_emulators_runs_procedures_stations_and_identity(emulator, sdk, bench):
    station, user = sdk(emulator.station_key), sdk(emulator.user_key)
    fvt1 = emulator.procedure_id("FVT1")
    record = bench.run(EVERY_LIMIT_KIND, procedure_yaml="part_number: PCBA01\nrevision: B\n")
    body = build_run_body(record, client_run_ref="sdk-1", procedure_id=fvt1)
    httpx.post(
        f"{emulator.url}/v2/units",
        json={"serial_number": "PSU-42", "part_number": "PSU", "revision_number": "A"},
        headers={"Authorization": f"Bearer {emulator.user_key}"},
    )
    created = station.runs.create(**body)
    assert isinstance(created, models.RunCreateResponse)

    got = station.runs.get(id=created.id)
    assert got.procedure.id == fvt1 and got.procedure.name == "FVT1"
    assert got.unit.serial_number == "SN-1" and got.outcome == body["outcome"]
    assert {m.name for p in got.phases or [] for m in p.measurements} >= {"vout", "trace"}
    assert [s.serial_number for s in got.sub_units or []] == ["PSU-42", "FAN-7"]

    listed = station.runs.list(serial_numbers=["SN-1"], limit=10, sort_by="started_at")
    assert isinstance(listed, models.RunListResponse)
    assert [r.id for r in listed.data] == [created.id] and listed.meta.has_more is False
    with_metadata = station.runs.list(serial_numbers=["SN-1"], include_metadata=True)
    assert with_metadata.data[0].metadata == body.get("metadata", {})

    current = station.stations.get_current()
    assert [(p.name, p.id, p.runs_count) for p in current.procedures] == [
        ("FVT1", fvt1, 1),
        ("T1", emulator.procedure_id("T1"), 0),
    ]
    who = station.identity.whoami()
    assert who.type == "station" and who.station and who.station.name == "Demo bench"
    assert user.identity.whoami().user is not None

    procedures = user.procedures.list(limit=2)
    assert isinstance(procedures, models.ProcedureListResponse) and procedures.meta.has_more
    rest = user.procedures.list(limit=2, cursor=procedures.meta.next_cursor)
    assert {p.name for p in [*procedures.data, *rest.data]} == {"FVT1", "T1", "ICT1"}


def test_sdk_parses_units_and_both_attachment_flows(emulator, sdk):
    user, station = sdk(emulator.user_key), sdk(emulator.station_key)
    unit = user.units.create(serial_number="U-1", part_number="PCBA01", revision_number="B")
    assert isinstance(unit, models.UnitCreateResponse)
    units = user.units.list(serial_numbers=["U-1"])
    assert isinstance(units, models.UnitListResponse) and units.data[0].part.number == "PCBA01"
    assert user.units.get(serial_number="U-1").part.revision.number == "B"

    at = datetime(2026, 1, 1, tzinfo=UTC)
    run = station.runs.create(
        outcome="PASS",
        procedure_id=emulator.procedure_id("FVT1"),
        started_at=at,
        ended_at=at + timedelta(seconds=3),
        serial_number="U-1",
    )
    scoped = station.runs.create_attachment(id=run.id, name="scoped.txt")
    assert isinstance(scoped, models.RunCreateAttachmentResponse)
    emulator.forbid_run_attachments = True
    generic = station.attachments.initialize(name="generic.txt")
    assert isinstance(generic, models.AttachmentInitializeResponse)
    assert httpx.put(generic.upload_url, content=b"data").status_code == 200
    finalized = station.attachments.finalize(id=generic.id)
    assert isinstance(finalized, models.AttachmentFinalizeResponse)
    updated = station.runs.update(id=run.id, attachments=[generic.id])
    assert isinstance(updated, models.RunUpdateResponse) and updated.id == run.id
    names = [a.name for a in station.runs.get(id=run.id).attachments or []]
    assert names == ["scoped.txt", "generic.txt"]


def test_sdk_sees_the_services_invalid_uuid_answer(emulator, sdk):
    at = datetime(2026, 1, 1, tzinfo=UTC)
    client = sdk(emulator.station_key)  # kept: the SDK closes its HTTP client when collected
    with pytest.raises(errors.ErrorBADREQUEST) as caught:
        client.runs.create(
            outcome="PASS", procedure_id="FVT1", started_at=at, ended_at=at, serial_number="X"
        )
    issues = caught.value.data.issues
    assert issues and "uuid" in issues[0].message.lower()  # what the SDK's own test expects


# -- never at run time --------------------------------------------------------------------------


def test_telemetry_is_off_in_these_tests():
    assert posthog.disabled is True


def test_station_never_imports_the_sdk():
    script = (
        "import importlib, pkgutil, sys\n"
        "import station, drivers\n"
        "for package in (station, drivers):\n"
        "    for info in pkgutil.walk_packages(package.__path__, package.__name__ + '.'):\n"
        "        if info.name.endswith('__main__'):\n"
        "            continue\n"
        "        importlib.import_module(info.name)\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] == 'tofupilot')\n"
        "print(len([m for m in sys.modules if m.startswith('station.')]), loaded)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    count, loaded = result.stdout.split(" ", 1)
    assert int(count) > 30 and loaded.strip() == "[]", result.stdout
    sources = [p for d in ("station", "drivers") for p in (REPO / d).rglob("*.py")]
    importing = [
        str(p.relative_to(REPO))
        for p in sources
        for line in p.read_text(encoding="utf-8").splitlines()
        if line.strip().startswith(("import tofupilot", "from tofupilot"))
    ]
    assert importing == []
