"""The TofuPilot v2 emulator, over real HTTP: endpoints, error codes, idempotency, faults."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from urllib.parse import quote

import httpx
import pytest

from sim.tofupilot import Faults, TofuPilotEmulator

# TofuPilot's procedure ids are UUIDs: the emulator below has FVT1 under this one.
FVT1 = "0b5d7a3e-4c1f-4e7a-9a51-2f6d8c9e1a01"


@pytest.fixture
def emulator():
    """The conftest emulator, with FVT1's id pinned (the demo station is linked to FVT1, T1)."""
    with TofuPilotEmulator(port=0, procedures={"FVT1": FVT1}) as tp:
        tp.faults.hang_s = 0.3
        tp.faults.retry_after_s = 0
        yield tp


def run_body(**overrides):
    body = {
        "outcome": "PASS",
        "procedure_id": FVT1,
        "started_at": "2025-01-01T12:00:00.000Z",
        "ended_at": "2025-01-01T12:00:05.000Z",
        "serial_number": "SN-1",
        "client_run_ref": "bench-1_0001",
    }
    return {**body, **overrides}


@pytest.fixture
def api(emulator):
    with httpx.Client(
        base_url=emulator.url,
        headers={"Authorization": f"Bearer {emulator.station_key}"},
        timeout=2,
    ) as client:
        yield client


# -- identity -----------------------------------------------------------------------------------


def test_whoami_and_current_station_for_a_station_key(emulator, api):
    who = api.get("/v2/whoami").json()
    assert who["type"] == "station" and who["user"] is None
    assert who["station"] == {"id": "stn-demo-bench", "name": "Demo bench"}
    assert set(who["organization"]) == {"id", "slug", "name"}
    current = api.get("/v2/stations/current").json()
    assert current["id"] == "stn-demo-bench"
    assert [p["name"] for p in current["procedures"]] == ["FVT1", "T1"]
    assert [p["id"] for p in current["procedures"]] == [FVT1, emulator.procedure_id("T1")]
    assert current["procedures"][0]["runs_count"] == 0


def test_user_key_is_a_user_and_has_no_current_station(emulator, api):
    headers = {"Authorization": f"Bearer {emulator.user_key}"}
    who = api.get("/v2/whoami", headers=headers).json()
    assert who["type"] == "user" and who["station"] is None and who["user"]["id"] == "usr-demo"
    response = api.get("/v2/stations/current", headers=headers)
    assert response.status_code == 403 and response.json()["code"] == "FORBIDDEN"


@pytest.mark.parametrize("header", [None, "Bearer", "Basic abc", "Bearer not-a-key"])
def test_missing_or_wrong_key_is_401(emulator, header):
    headers = {"Authorization": header} if header else {}
    response = httpx.get(f"{emulator.url}/v2/whoami", headers=headers)
    assert response.status_code == 401
    assert response.json()["code"] == "UNAUTHORIZED"


# -- runs ---------------------------------------------------------------------------------------


def test_create_get_and_list_runs(emulator, api):
    created = api.post("/v2/runs", json=run_body(docstring="hello", procedure_version="1.0"))
    assert created.status_code == 200
    run_id = created.json()["id"]
    assert emulator.runs[run_id].body["docstring"] == "hello"
    assert emulator.runs[run_id].created_by["station"]["name"] == "Demo bench"
    run = api.get(f"/v2/runs/{run_id}").json()
    assert run["id"] == run_id and run["outcome"] == "PASS"
    assert run["unit"]["serial_number"] == "SN-1" and run["procedure"]["version"]["tag"] == "1.0"

    for i in range(2, 6):
        api.post("/v2/runs", json=run_body(client_run_ref=f"r{i}", serial_number=f"SN-{i}"))
    page = api.get("/v2/runs", params={"limit": 2}).json()
    assert [r["unit"]["serial_number"] for r in page["data"]] == ["SN-5", "SN-4"]
    assert page["meta"] == {"has_more": True, "next_cursor": 2}
    last = api.get("/v2/runs", params={"limit": 2, "cursor": 4}).json()
    assert [r["id"] for r in last["data"]] == [run_id]
    assert last["meta"] == {"has_more": False, "next_cursor": None}
    found = api.get("/v2/runs", params=[("serial_numbers", "sn-2"), ("serial_numbers", "SN-3")])
    assert {r["unit"]["serial_number"] for r in found.json()["data"]} == {"SN-2", "SN-3"}
    assert api.get("/v2/runs", params={"limit": 0}).status_code == 400


def test_invalid_body_is_400_with_issues_and_paths(emulator, api):
    body = run_body(outcome="RUNNING", revision="B")
    del body["serial_number"]
    response = api.post("/v2/runs", json=body)
    assert response.status_code == 400
    error = response.json()
    assert error["code"] == "BAD_REQUEST" and error["message"].startswith("invalid run: ")
    paths = [issue["path"] for issue in error["issues"]]
    assert ["outcome"] in paths and [] in paths  # enum, and missing/unknown keys at the top
    assert any("revision" in issue["message"] for issue in error["issues"])
    nested = api.post("/v2/runs", json=run_body(phases=[{"name": "p", "outcome": "TIMEOUT"}]))
    assert ["phases", 0, "outcome"] in [i["path"] for i in nested.json()["issues"]]
    garbage = api.post("/v2/runs", content=b"{not json", headers={"content-type": "x"})
    assert garbage.status_code == 400 and garbage.json()["code"] == "BAD_REQUEST"
    assert emulator.runs == {}


def test_station_key_writes_only_linked_procedures(emulator, api):
    ict1 = emulator.procedure_id("ICT1")  # linked to the other station only
    forbidden = api.post("/v2/runs", json=run_body(procedure_id=ict1))
    assert forbidden.status_code == 403
    assert forbidden.json()["code"] == "FORBIDDEN" and f"'{ict1}'" in forbidden.json()["message"]
    user = {"Authorization": f"Bearer {emulator.user_key}"}
    nope = "00000000-0000-4000-8000-000000000000"
    missing = api.post("/v2/runs", json=run_body(procedure_id=nope), headers=user)
    assert missing.status_code == 404 and missing.json()["code"] == "NOT_FOUND"
    assert f"'{nope}'" in missing.json()["message"]
    assert api.post("/v2/runs", json=run_body(procedure_id=ict1), headers=user).is_success
    emulator.unlink("FVT1")
    assert api.post("/v2/runs", json=run_body(client_run_ref="x")).status_code == 403
    emulator.link("FVT1")
    assert api.post("/v2/runs", json=run_body(client_run_ref="x")).status_code == 200


def test_client_run_ref_makes_create_idempotent(emulator, api):
    first = api.post("/v2/runs", json=run_body()).json()["id"]
    again = api.post("/v2/runs", json=run_body(outcome="FAIL"))
    assert again.status_code == 200 and again.json()["id"] == first
    assert len(emulator.runs) == 1 and emulator.runs[first].body["outcome"] == "PASS"
    other = api.post("/v2/runs", json=run_body(client_run_ref="bench-1_0002")).json()["id"]
    assert other != first and len(emulator.runs) == 2


def test_path_values_are_url_decoded(api):
    response = api.get(f"/v2/runs/{quote('a/b c', safe='')}")
    assert response.status_code == 404 and "'a/b c'" in response.json()["message"]
    assert api.get("/v2/nothing-here").json()["code"] == "NOT_FOUND"


# -- attachments --------------------------------------------------------------------------------


def test_attachment_create_put_finalize(emulator, api):
    run_id = api.post("/v2/runs", json=run_body()).json()["id"]
    created = api.post(f"/v2/runs/{run_id}/attachments", json={"name": "scope.csv"}).json()
    assert set(created) == {"id", "upload_url"}
    early = api.post(f"/v2/attachments/{created['id']}/finalize")
    assert early.status_code == 400
    put = httpx.put(
        created["upload_url"], content=b"t,v\n0,3.3\n", headers={"content-type": "text/csv"}
    )
    assert put.status_code == 200
    done = api.post(f"/v2/attachments/{created['id']}/finalize")
    assert done.status_code == 200 and httpx.get(done.json()["url"]).content == b"t,v\n0,3.3\n"
    (attachment,) = emulator.runs[run_id].attachments
    assert attachment.name == "scope.csv" and attachment.finalized
    assert attachment.content_type == "text/csv"
    shown = api.get(f"/v2/runs/{run_id}").json()["attachments"]
    assert [(a["name"], a["size"]) for a in shown] == [("scope.csv", 10)]


def test_attachment_errors(emulator, api):
    assert api.post("/v2/runs/nope/attachments", json={"name": "a"}).status_code == 404
    run_id = api.post("/v2/runs", json=run_body()).json()["id"]
    too_long = api.post(f"/v2/runs/{run_id}/attachments", json={"name": "x" * 256})
    assert too_long.status_code == 400 and too_long.json()["issues"][0]["path"] == ["name"]
    created = api.post(f"/v2/runs/{run_id}/attachments", json={"name": "a"}).json()
    forged = created["upload_url"].split("?")[0] + "?token=forged"
    assert httpx.put(forged, content=b"x").status_code == 403
    assert api.post("/v2/attachments/nope/finalize").status_code == 404


# -- faults -------------------------------------------------------------------------------------


def test_429_carries_retry_after_and_other_statuses_their_code(emulator, api):
    emulator.faults.plan(["429", "429:3", "500", "422", "ok"])
    first = api.get("/v2/whoami")
    assert first.status_code == 429 and first.headers["Retry-After"] == "0"
    assert first.json()["code"] == "TOO_MANY_REQUESTS"
    assert api.get("/v2/whoami").headers["Retry-After"] == "3"
    server_error = api.post("/v2/runs", json=run_body())
    assert server_error.status_code == 500
    assert server_error.json()["code"] == "INTERNAL_SERVER_ERROR"
    assert api.get("/v2/whoami").json()["code"] == "UNPROCESSABLE_CONTENT"
    assert api.get("/v2/whoami").status_code == 200
    assert emulator.runs == {} and emulator.faults.pending == []
    assert [(r.status, r.fault) for r in emulator.requests] == [
        (429, "429"),
        (429, "429:3"),
        (500, "500"),
        (422, "422"),
        (200, "ok"),
    ]


def test_drop_after_store_loses_the_response_but_keeps_the_run(emulator, api):
    emulator.faults.plan(["drop_after_store"])
    with pytest.raises(httpx.RemoteProtocolError):
        api.post("/v2/runs", json=run_body())
    (stored,) = emulator.runs
    retry = api.post("/v2/runs", json=run_body())  # the outbox resends with the same ref
    assert retry.json()["id"] == stored and len(emulator.runs) == 1
    assert [(r.path, r.status, r.fault) for r in emulator.requests] == [
        ("/api/v2/runs", None, "drop_after_store"),
        ("/api/v2/runs", 200, "ok"),
    ]


def test_drop_closes_without_storing(emulator, api):
    emulator.faults.plan(["drop"])
    with pytest.raises(httpx.RemoteProtocolError):
        api.post("/v2/runs", json=run_body())
    assert emulator.runs == {}


def test_hang_holds_the_request_then_closes_without_storing(emulator, api):
    emulator.faults.plan(["hang", "hang:0.05"])
    started = time.monotonic()
    with pytest.raises(httpx.ReadTimeout):
        api.post("/v2/runs", json=run_body(), timeout=0.1)
    assert time.monotonic() - started < 0.3
    with pytest.raises(httpx.RemoteProtocolError):  # held 0.05 s, then closed
        api.post("/v2/runs", json=run_body())
    deadline = time.monotonic() + 2
    while len(emulator.requests) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)  # wait for the first hang (0.3 s) to end too
    assert emulator.runs == {}
    assert [r.fault for r in emulator.requests] == ["hang:0.05", "hang"]


def test_stop_releases_a_hung_request_and_really_stops(emulator, api):
    emulator.faults.plan(["hang:30"])
    threading.Timer(0.1, emulator.stop).start()
    started = time.monotonic()
    with pytest.raises(httpx.TransportError):
        api.get("/v2/whoami")
    assert time.monotonic() - started < 2
    with pytest.raises(httpx.ConnectError):
        api.get("/v2/whoami")  # the kept-alive connection was closed with the server


def test_restart_on_the_same_port_keeps_state(emulator, api):
    run_id = api.post("/v2/runs", json=run_body()).json()["id"]
    url = emulator.url
    emulator.stop()
    with pytest.raises(httpx.ConnectError):
        api.get("/v2/whoami")
    emulator.start()
    assert emulator.url == url
    assert api.get(f"/v2/runs/{run_id}").status_code == 200


def test_slow_answers_late_but_answers(emulator, api):
    emulator.faults.plan(["slow:0.1"])
    started = time.monotonic()
    assert api.post("/v2/runs", json=run_body()).status_code == 200
    assert time.monotonic() - started >= 0.1 and len(emulator.runs) == 1


def test_match_limits_faults_to_some_requests(emulator, api):
    emulator.faults.plan(["500"], match=r"^POST /api/v2/runs$")
    assert api.get("/v2/whoami").status_code == 200
    assert api.post("/v2/runs", json=run_body()).status_code == 500
    assert api.post("/v2/runs", json=run_body()).status_code == 200


def test_random_mix_is_seeded_and_follows_the_plan():
    def draws(seed):
        faults = Faults()
        faults.plan(["drop"])
        faults.random_mix(seed, {"ok": 2, "429": 1, "500": 1, "drop_after_store": 1})
        return [faults.next_action("GET /api/v2/whoami") for _ in range(40)]

    first = draws(7)
    assert first == draws(7) and first != draws(8)
    assert first[0] == "drop" and set(first[1:]) == {"ok", "429", "500", "drop_after_store"}


def test_random_mix_applies_over_http(emulator, api):
    emulator.faults.random_mix(1, {"500": 1})
    assert api.get("/v2/whoami").status_code == 500
    emulator.faults.clear()
    assert api.get("/v2/whoami").status_code == 200


def test_unknown_fault_is_rejected():
    with pytest.raises(ValueError, match="unknown fault"):
        Faults().plan(["explode"])
    with pytest.raises(ValueError):
        Faults().random_mix(1, {"ok": 0})


def test_the_key_is_never_logged(emulator, api, capfd):
    api.get("/v2/whoami")
    api.get("/v2/whoami", headers={"Authorization": "Bearer wrong-key"})
    emulator.faults.plan(["drop"])
    with pytest.raises(httpx.RemoteProtocolError):
        api.get("/v2/whoami")
    out, err = capfd.readouterr()
    assert emulator.station_key not in out + err and "wrong-key" not in out + err
    assert all(emulator.station_key not in repr(r) for r in emulator.requests)


def test_custom_keys():
    keys = {
        "k-station": {
            "type": "station",
            "station": {"id": "s1", "name": "Line 3"},
            "procedures": ["EOL"],
        },
        "k-user": {"type": "user"},
    }
    with TofuPilotEmulator(keys=keys) as tp:
        assert (tp.station_key, tp.user_key) == ("k-station", "k-user")
        assert [p.name for p in tp.procedures.values()] == ["EOL"]
        response = httpx.post(
            f"{tp.url}/v2/runs",
            json=run_body(procedure_id=tp.procedure_id("EOL")),
            headers={"Authorization": "Bearer k-station"},
        )
        assert response.status_code == 200
    with pytest.raises(ValueError):
        TofuPilotEmulator(keys={"k": {"type": "robot"}})


@pytest.mark.slow
def test_command_line_prints_url_and_key_until_interrupted():
    process = subprocess.Popen(
        [sys.executable, "-m", "sim.tofupilot", "--port", "0", "--procedure", "FVT1,EOL"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        lines = [process.stdout.readline()]
        while "Ctrl-C" not in lines[-1] and lines[-1]:
            lines.append(process.stdout.readline())
        url = lines[0].split()[-1]
        key = next(line.split("=", 1)[1].strip() for line in lines if "export" in line)
        assert f"tofupilot: {{url: {url}}}" in "".join(lines)
        who = httpx.get(f"{url}/v2/whoami", headers={"Authorization": f"Bearer {key}"})
        assert who.json()["station"]["name"] == "Demo bench"
    finally:
        process.terminate()
        process.wait(timeout=5)
