"""The emulator is as strict as TofuPilot: UUID procedure ids linked by id, the generic upload
flow, units, runs by serial number, the legacy v1 runs API, and its command line."""

from __future__ import annotations

import subprocess
import sys
import uuid

import httpx
import pytest

from sim.tofupilot.__main__ import parse_procedures, stable_id


def body(procedure_id, **overrides):
    return {
        "outcome": "PASS",
        "procedure_id": procedure_id,
        "started_at": "2026-01-01T12:00:00.000Z",
        "ended_at": "2026-01-01T12:00:05.000Z",
        "serial_number": "SN-1",
        **overrides,
    }


def client(emulator, key):
    return httpx.Client(
        base_url=emulator.url, headers={"Authorization": f"Bearer {key}"}, timeout=5
    )


@pytest.fixture
def station(emulator):
    with client(emulator, emulator.station_key) as c:
        yield c


@pytest.fixture
def user(emulator):
    with client(emulator, emulator.user_key) as c:
        yield c


# -- procedures: UUID ids, names, links ---------------------------------------------------------


def test_procedures_have_uuid_ids_and_names(emulator):
    fvt1 = emulator.procedure("FVT1")
    assert uuid.UUID(fvt1.id) and fvt1.name == "FVT1" and fvt1.identifier == "FVT1"
    assert emulator.procedure("fvt1") is fvt1 and emulator.procedure(fvt1.id.upper()) is fvt1
    assert [p.name for p in emulator.linked()] == ["FVT1", "T1"]
    with pytest.raises(KeyError):
        emulator.procedure("NOPE")
    emulator.create_procedure("FVT1")  # names need not be unique, as in TofuPilot
    with pytest.raises(ValueError, match="2 procedures are named 'FVT1'"):
        emulator.procedure("FVT1")
    with pytest.raises(ValueError, match="UUID"):
        emulator.create_procedure("X", "not-a-uuid")


def test_a_name_as_procedure_id_gets_the_services_invalid_uuid_400(emulator, station, user):
    for api in (station, user):
        response = api.post("/v2/runs", json=body("FVT1"))
        assert response.status_code == 400
        error = response.json()
        assert error["code"] == "BAD_REQUEST"
        assert {"message": "Invalid uuid", "path": ["procedure_id"]} in error["issues"]
    assert emulator.runs == {}


def test_station_key_403_unless_linked_user_key_404_for_unknown(emulator, station, user):
    fvt1, ict1 = emulator.procedure_id("FVT1"), emulator.procedure_id("ICT1")
    unknown = str(uuid.uuid4())
    assert station.post("/v2/runs", json=body(fvt1)).status_code == 200
    assert station.post("/v2/runs", json=body(ict1)).status_code == 403
    assert station.post("/v2/runs", json=body(unknown)).status_code == 403
    assert user.post("/v2/runs", json=body(ict1)).status_code == 200
    missing = user.post("/v2/runs", json=body(unknown))
    assert missing.status_code == 404 and missing.json()["code"] == "NOT_FOUND"
    assert emulator.runs[next(iter(emulator.runs))].body["procedure_id"] == fvt1


def test_parked_then_linked_then_uploaded(emulator, station):
    """What a station sees when a procedure is linked only after its runs were made."""
    new_id = emulator.create_procedure("EOL")
    assert station.post("/v2/runs", json=body(new_id)).status_code == 403
    assert "EOL" not in [
        p["name"] for p in station.get("/v2/stations/current").json()["procedures"]
    ]
    assert emulator.link("EOL") == new_id
    current = station.get("/v2/stations/current").json()["procedures"]
    assert {"id": new_id, "name": "EOL", "runs_count": 0, "deployment": None} in current
    assert station.post("/v2/runs", json=body(new_id)).status_code == 200
    emulator.unlink(new_id)
    assert station.post("/v2/runs", json=body(new_id, serial_number="SN-2")).status_code == 403


def test_link_by_a_new_name_creates_the_procedure(emulator, station):
    created = emulator.link("FVT9")
    assert uuid.UUID(created) and emulator.procedure("FVT9").id == created
    assert station.post("/v2/runs", json=body(created)).status_code == 200


def test_current_station_counts_its_runs_per_procedure(emulator, station):
    fvt1 = emulator.procedure_id("FVT1")
    for i in range(3):
        station.post("/v2/runs", json=body(fvt1, serial_number=f"SN-{i}"))
    counts = {
        p["name"]: p["runs_count"] for p in station.get("/v2/stations/current").json()["procedures"]
    }
    assert counts == {"FVT1": 3, "T1": 0}


def test_procedures_list_is_paginated_and_searchable(emulator, user, station):
    for i in range(5):
        emulator.create_procedure(f"Board {i}")
    names, cursor = [], 0
    while True:
        page = user.get("/v2/procedures", params={"limit": 2, "cursor": cursor}).json()
        names += [p["name"] for p in page["data"]]
        if not page["meta"]["has_more"]:
            assert page["meta"]["next_cursor"] is None
            break
        cursor = page["meta"]["next_cursor"]
    assert sorted(names) == sorted(["FVT1", "T1", "ICT1", *(f"Board {i}" for i in range(5))])
    found = user.get("/v2/procedures", params={"search_query": "board 3"}).json()["data"]
    assert [p["name"] for p in found] == ["Board 3"]
    one = user.get(f"/v2/procedures/{emulator.procedure_id('T1')}").json()
    assert one["name"] == "T1" and one["identifier"] == "T1"
    assert user.get(f"/v2/procedures/{uuid.uuid4()}").status_code == 404
    assert station.get("/v2/procedures").status_code == 200


# -- runs by serial number ----------------------------------------------------------------------


def test_runs_filtered_by_exploded_serial_numbers_sorted_and_paginated(emulator, station):
    fvt1, t1 = emulator.procedure_id("FVT1"), emulator.procedure_id("T1")
    starts = ["2026-01-03", "2026-01-01", "2026-01-02"]
    for i, day in enumerate(starts):
        station.post(
            "/v2/runs",
            json=body(
                fvt1 if i % 2 else t1,
                serial_number="SN-A",
                started_at=f"{day}T10:00:00.000Z",
                ended_at=f"{day}T10:00:0{i + 1}.000Z",
                outcome=["PASS", "FAIL", "ERROR"][i],
            ),
        )
    station.post("/v2/runs", json=body(fvt1, serial_number="SN-B"))
    by_start = station.get(
        "/v2/runs", params={"serial_numbers": "sn-a", "sort_by": "started_at", "limit": 2}
    ).json()
    assert [r["started_at"][:10] for r in by_start["data"]] == ["2026-01-03", "2026-01-02"]
    assert by_start["meta"] == {"has_more": True, "next_cursor": 2}
    rest = station.get(
        "/v2/runs",
        params={"serial_numbers": "SN-A", "sort_by": "started_at", "limit": 2, "cursor": 2},
    ).json()
    assert [r["outcome"] for r in rest["data"]] == ["FAIL"] and rest["meta"]["has_more"] is False
    both = station.get("/v2/runs", params=[("serial_numbers", "SN-A"), ("serial_numbers", "SN-B")])
    assert len(both.json()["data"]) == 4
    run = by_start["data"][0]
    assert run["procedure"] == {"id": t1, "name": "T1", "version": None}
    assert run["duration"] == "PT1S" and run["created_by_station"]["name"] == "Demo bench"
    ascending = station.get(
        "/v2/runs", params={"serial_numbers": "SN-A", "sort_by": "started_at", "sort_order": "asc"}
    ).json()["data"]
    assert [r["started_at"][:10] for r in ascending] == sorted(starts)
    by_procedure = station.get("/v2/runs", params={"procedure_ids": fvt1}).json()["data"]
    assert {r["unit"]["serial_number"] for r in by_procedure} == {"SN-A", "SN-B"}
    assert station.get("/v2/runs", params={"sort_by": "colour"}).status_code == 400


def test_metadata_only_when_asked(emulator, station):
    station.post("/v2/runs", json=body(emulator.procedure_id("FVT1"), metadata={"simulated": True}))
    plain = station.get("/v2/runs").json()["data"][0]
    assert "metadata" not in plain
    full = station.get("/v2/runs", params={"include_metadata": "true"}).json()["data"][0]
    assert full["metadata"] == {"simulated": True}


# -- units and sub-units ------------------------------------------------------------------------


def test_units_create_list_get(emulator, user):
    created = user.post(
        "/v2/units", json={"serial_number": "PSU-1", "part_number": "PSU", "revision_number": "B"}
    )
    assert created.status_code == 200 and uuid.UUID(created.json()["id"])
    again = user.post(
        "/v2/units", json={"serial_number": "psu-1", "part_number": "PSU", "revision_number": "B"}
    )
    assert again.status_code == 409 and again.json()["code"] == "CONFLICT"
    missing = user.post("/v2/units", json={"serial_number": "X"})
    assert missing.status_code == 400
    assert {tuple(i["path"]) for i in missing.json()["issues"]} == {
        ("part_number",),
        ("revision_number",),
    }
    listed = user.get("/v2/units", params={"serial_numbers": "PSU-1"}).json()
    assert [u["part"]["number"] for u in listed["data"]] == ["PSU"]
    got = user.get("/v2/units/PSU-1").json()
    assert got["part"]["revision"]["number"] == "B" and got["parent"] is None
    assert user.get("/v2/units/NOPE").status_code == 404


def test_a_run_creates_its_unit_and_shows_the_last_run(emulator, user):
    fvt1 = emulator.procedure_id("FVT1")
    user.post("/v2/runs", json=body(fvt1, serial_number="B-7", part_number="PCBA01"))
    (unit,) = user.get("/v2/units").json()["data"]
    assert unit["serial_number"] == "B-7" and unit["part"]["number"] == "PCBA01"
    assert unit["last_run"]["procedure"] == {"id": fvt1, "name": "FVT1"}


def test_unknown_sub_units_are_an_error_when_switched_on(emulator, user):
    fvt1 = emulator.procedure_id("FVT1")
    with_sub = body(fvt1, sub_units=["PSU-9"])
    assert user.post("/v2/runs", json={**with_sub, "serial_number": "A"}).status_code == 200
    emulator.strict_sub_units = True
    refused = user.post("/v2/runs", json={**with_sub, "serial_number": "B"})
    assert refused.status_code == 400
    (issue,) = refused.json()["issues"]
    assert issue["path"] == ["sub_units", 0] and "'PSU-9'" in issue["message"]
    user.post(
        "/v2/units", json={"serial_number": "PSU-9", "part_number": "P", "revision_number": "A"}
    )
    accepted = user.post("/v2/runs", json={**with_sub, "serial_number": "B"})
    assert accepted.status_code == 200
    shown = user.get(f"/v2/runs/{accepted.json()['id']}").json()["sub_units"]
    assert [(s["serial_number"], s["part_number"]) for s in shown] == [("PSU-9", "P")]


def test_part_number_required_switch(emulator, user):
    emulator.part_number_required = True
    refused = user.post("/v2/runs", json=body(emulator.procedure_id("FVT1")))
    assert refused.status_code == 400 and refused.json()["issues"][0]["path"] == ["part_number"]
    ok = user.post("/v2/runs", json=body(emulator.procedure_id("FVT1"), part_number="PCBA01"))
    assert ok.status_code == 200


# -- attachments --------------------------------------------------------------------------------


def test_forbidden_run_attachments_and_the_generic_flow(emulator, station, user):
    emulator.forbid_run_attachments = True
    run_id = station.post("/v2/runs", json=body(emulator.procedure_id("FVT1"))).json()["id"]
    refused = station.post(f"/v2/runs/{run_id}/attachments", json={"name": "log.txt"})
    assert refused.status_code == 403 and refused.json()["code"] == "FORBIDDEN"
    assert user.post(f"/v2/runs/{run_id}/attachments", json={"name": "u.txt"}).status_code == 200
    assert [a.name for a in emulator.runs[run_id].attachments] == ["u.txt"]

    upload = station.post("/v2/attachments", json={"name": "log.txt"}).json()
    assert set(upload) == {"id", "upload_url"}
    assert emulator.attachments[upload["id"]].run_id is None
    put = httpx.put(upload["upload_url"], content=b"hello", headers={"Content-Type": "text/plain"})
    assert put.status_code == 200
    assert station.post(f"/v2/attachments/{upload['id']}/finalize").status_code == 200
    linked = station.patch(f"/v2/runs/{run_id}", json={"attachments": [upload["id"]]})
    assert linked.status_code == 200 and linked.json() == {"id": run_id}
    shown = station.get(f"/v2/runs/{run_id}").json()["attachments"]
    assert [(a["name"], a["size"], a["content_type"]) for a in shown] == [
        ("u.txt", None, None),
        ("log.txt", 5, "text/plain"),
    ]
    again = station.patch(f"/v2/runs/{run_id}", json={"attachments": [upload["id"]]})
    assert again.status_code == 200 and len(emulator.runs[run_id].attachments) == 2
    other = station.post("/v2/runs", json=body(emulator.procedure_id("FVT1"), serial_number="Z"))
    taken = station.patch(f"/v2/runs/{other.json()['id']}", json={"attachments": [upload["id"]]})
    assert taken.status_code == 409
    assert station.patch(f"/v2/runs/{run_id}", json={"attachments": ["nope"]}).status_code == 404
    assert station.patch(f"/v2/runs/{run_id}", json={"outcome": "FAIL"}).status_code == 400


def test_an_upload_never_put_is_not_on_the_run_until_linked(emulator, station):
    run_id = station.post("/v2/runs", json=body(emulator.procedure_id("FVT1"))).json()["id"]
    upload = station.post("/v2/attachments", json={"name": "never.bin"}).json()
    assert station.post(f"/v2/attachments/{upload['id']}/finalize").status_code == 400
    assert station.get(f"/v2/runs/{run_id}").json()["attachments"] == []


# -- legacy v1 ----------------------------------------------------------------------------------


def v1_body(**overrides):
    return {
        "unit_under_test": {"serial_number": "SN-V1", "part_number": "PCBA01", "revision": "B"},
        "run_passed": False,
        "procedure_id": "FVT1",
        "procedure_version": "1.2",
        "started_at": "2026-02-01T08:00:00Z",
        "duration": "PT1M2.5S",
        "steps": [
            {
                "name": "vout",
                "started_at": "2026-02-01T08:00:01Z",
                "duration": "PT0.5S",
                "step_passed": False,
                "measurement_value": 5.4,
                "measurement_unit": "V",
                "limit_low": 4.9,
                "limit_high": 5.1,
            }
        ],
        "sub_units": [{"serial_number": "PSU-1"}],
        "report_variables": {"operator": "ana"},
        "client": "station",
        "client_version": "1.0",
        **overrides,
    }


def test_v1_run_create_and_list_by_serial_number(emulator, station):
    created = station.post("/v1/runs", json=v1_body())
    assert created.status_code == 200 and created.json()["success"] is True
    run = emulator.runs[created.json()["id"]]
    assert run.api == "v1" and run.v1_body["steps"][0]["limit_high"] == 5.1
    assert run.body["procedure_id"] == emulator.procedure_id("FVT1")
    assert run.body["outcome"] == "FAIL" and run.body["ended_at"] == "2026-02-01T08:01:02.500Z"
    by_uuid = v1_body(
        procedure_id=emulator.procedure_id("FVT1"),
        run_passed=True,
        started_at="2026-02-02T08:00:00Z",
    )
    assert station.post("/v1/runs", json=by_uuid).status_code == 200
    listed = station.get("/v1/runs", params={"serial_number": "sn-v1"}).json()
    assert [r["outcome"] for r in listed] == ["PASS", "FAIL"]  # newest first
    assert listed[1]["procedure"]["name"] == "FVT1" and listed[1]["duration"] == "PT62.5S"
    assert listed[1]["unit"]["revision"]["component"]["part_number"] == "PCBA01"
    assert station.get("/v1/runs", params={"serial_number": "nobody"}).json() == []
    # a v1 run is one of the unit's runs for v2 as well
    v2 = station.get("/v2/runs", params={"serial_numbers": "SN-V1"}).json()["data"]
    assert len(v2) == 2


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"run_passed": "yes"}, "run_passed: expected bool"),
        ({"unit_under_test": {"part_number": "X"}}, "unit_under_test.serial_number: required"),
        ({"duration": "90 s"}, "duration: expected an ISO 8601 duration"),
        ({"procedure_id": None}, "procedure_id or procedure_name is required"),
        ({"revision": "B"}, "revision: unknown key"),
        ({"phases": [{"name": "p", "outcome": "TIMEOUT"}]}, "phases[0].outcome"),
    ],
)
def test_v1_body_errors_answer_in_the_v1_error_shape(station, change, needle):
    response = station.post("/v1/runs", json=v1_body(**change))
    assert response.status_code == 400
    answer = response.json()
    assert answer["success"] is False and needle in answer["error"]["message"]


def test_v1_procedures_and_keys(emulator, station, user):
    assert station.post("/v1/runs", json=v1_body(procedure_id="ICT1")).status_code == 403
    assert station.post("/v1/runs", json=v1_body(procedure_id="NOPE")).status_code == 404
    named = v1_body(procedure_id=None, procedure_name="Burn-in")
    assert station.post("/v1/runs", json=named).status_code == 403  # may not create procedures
    assert user.post("/v1/runs", json=named).status_code == 200  # v1 creates it by name
    assert emulator.procedure("Burn-in").name == "Burn-in"
    bad = httpx.post(f"{emulator.url}/v1/runs", json=v1_body(), headers={"Authorization": "x"})
    assert bad.status_code == 401 and bad.json()["success"] is False


# -- command line -------------------------------------------------------------------------------


def test_procedure_options_parse():
    fixed = "6f1c2a4e-0d4b-4c55-8e2a-3b9b2f0c7d11"
    assert parse_procedures([f"FVT1={fixed.upper()}", "T1,EOL"]) == {
        "FVT1": fixed,
        "T1": stable_id("T1"),
        "EOL": stable_id("EOL"),
    }
    assert stable_id("EOL") == stable_id("eol") != stable_id("FVT1")
    with pytest.raises(ValueError, match="not a UUID"):
        parse_procedures(["FVT1=abc"])


def serve(*args):
    process = subprocess.Popen(
        [sys.executable, "-m", "sim.tofupilot", "--port", "0", *args],
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    lines = [process.stdout.readline()]
    while "Ctrl-C" not in lines[-1] and lines[-1]:
        lines.append(process.stdout.readline())
    return process, lines


@pytest.mark.slow
def test_command_line_keeps_the_key_links_procedures_and_prints_what_it_stored():
    fixed = "6f1c2a4e-0d4b-4c55-8e2a-3b9b2f0c7d11"
    key = "tp_station_kept"
    for _ in range(2):  # a restart: the same key and ids work again
        process, lines = serve(
            "--key", key, "--procedure", f"EOL={fixed}", "--procedure", "ICT", "-v"
        )
        try:
            url = lines[0].split()[-1]
            banner = "".join(lines)
            assert f"export TOFUPILOT_API_KEY={key}\n" in banner
            assert f"EOL: {fixed}" in banner and f"ICT: {stable_id('ICT')}" in banner
            response = httpx.post(
                f"{url}/v2/runs",
                json=body(fixed, serial_number="CLI-1", outcome="FAIL"),
                headers={"Authorization": f"Bearer {key}"},
            )
            assert response.status_code == 200
            printed = [process.stdout.readline() for _ in range(2)]
            assert any(
                f"procedure EOL ({fixed}), serial CLI-1, FAIL" in line for line in printed
            ), printed
            assert any("POST /api/v2/runs -> 200" in line for line in printed), printed
        finally:
            process.terminate()
            process.wait(timeout=5)
