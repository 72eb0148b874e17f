"""TofuPilotClient over real HTTP against the emulator: endpoints, typed errors, timeouts, and the
API key never leaking into anything an operator or a log could see."""

from __future__ import annotations

import time
import traceback
from datetime import UTC, datetime

import httpx
import pytest

from station.tofupilot.client import (
    ApiError,
    TofuPilotClient,
    TofuPilotError,
    TransportError,
)

ANY_ID = "3f2b8c1e-1d2a-4c5b-9e8f-0a1b2c3d4e5f"  # a UUID, for requests that never get that far


def body(procedure: str = ANY_ID, ref: str = "ref-1", **extra) -> dict:
    """A run-create body for `procedure`: TofuPilot's id of it (`emulator.procedure_id(name)`)."""
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "outcome": "PASS",
        "procedure_id": procedure,
        "started_at": now,
        "ended_at": now,
        "serial_number": "SN-1",
        "client_run_ref": ref,
        **extra,
    }


def wait_for(condition, timeout: float = 2.0):
    """The emulator logs a request just after answering it."""
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.01)
    return condition()


@pytest.fixture
def client(emulator):
    with TofuPilotClient(emulator.url, emulator.station_key, timeout_s=2.0) as c:
        yield c


def test_create_run_returns_the_id_and_is_idempotent_on_client_run_ref(emulator, client):
    fvt1 = emulator.procedure_id("FVT1")
    run_id = client.create_run(body(fvt1, ref="station-abc"))
    assert run_id in emulator.runs
    assert client.create_run(body(fvt1, ref="station-abc")) == run_id
    assert len(emulator.runs) == 1


def test_attachment_flow_create_put_finalize(emulator, client):
    run_id = client.create_run(body(emulator.procedure_id("FVT1")))
    attachment_id, upload_url = client.create_attachment(run_id, "scope trace.csv")
    client.upload_attachment_bytes(upload_url, b"t,v\n0,1\n", "text/csv")
    client.finalize_attachment(attachment_id)
    stored = emulator.attachments[attachment_id]
    assert (stored.name, stored.data, stored.content_type) == (
        "scope trace.csv",
        b"t,v\n0,1\n",
        "text/csv",
    )
    assert stored.finalized


def test_whoami_and_current_station(emulator, client):
    assert client.whoami()["type"] == "station"
    linked = {p["id"]: p["name"] for p in client.current_station()["procedures"]}
    assert linked[emulator.procedure_id("FVT1")] == "FVT1"


def test_path_values_are_percent_encoded(emulator, client):
    with pytest.raises(ApiError) as info:
        client.create_attachment("a/b c?d", "x.txt")
    assert info.value.status == 404
    assert "'a/b c?d'" in info.value.message  # one segment, decoded by the server as sent
    wait_for(lambda: emulator.requests)
    assert [r.path for r in emulator.requests] == ["/api/v2/runs/a%2Fb%20c%3Fd/attachments"]


def test_the_key_goes_to_the_api_only_never_to_upload_urls():
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"id": "r1", "upload_url": "https://s3.example/x?sig=1"})

    client = TofuPilotClient("https://tp.example/api", "tp_station_secret_key")
    client._http = httpx.Client(transport=httpx.MockTransport(handler))
    run_id = client.create_run(body())
    _, url = client.create_attachment(run_id, "a.txt")
    client.upload_attachment_bytes(url, b"x", "text/plain")
    api, _, put = seen
    assert api.headers["authorization"] == "Bearer tp_station_secret_key"
    assert str(api.url) == "https://tp.example/api/v2/runs"
    assert "authorization" not in put.headers
    assert put.headers["content-type"] == "text/plain"


@pytest.mark.parametrize(
    ("status", "retryable"),
    [(400, False), (401, False), (403, False), (404, False), (409, False), (422, False),
     (429, True), (500, True), (502, True), (503, True)],
)  # fmt: skip
def test_error_statuses_are_typed_and_classified(emulator, client, status, retryable):
    emulator.faults.plan([str(status)])
    with pytest.raises(ApiError) as info:
        client.create_run(body(emulator.procedure_id("FVT1")))
    error = info.value
    assert (error.status, error.retryable) == (status, retryable)
    assert error.code  # the documented code, e.g. UNAUTHORIZED
    assert f"injected fault: {status}" in error.message


def test_429_carries_retry_after(emulator, client):
    emulator.faults.plan(["429:7"])
    with pytest.raises(ApiError) as info:
        client.create_run(body(emulator.procedure_id("FVT1")))
    assert info.value.retry_after_s == 7.0
    assert info.value.retryable


def test_validation_errors_carry_the_servers_issues(client):
    with pytest.raises(ApiError) as info:
        client.create_run({"procedure_id": ANY_ID})
    error = info.value
    assert error.status == 400 and error.code == "BAD_REQUEST" and not error.retryable
    assert any("outcome" in issue for issue in error.issues), error.issues


def test_unknown_procedure_unlinked_procedure_and_bad_key(emulator, client):
    nope = "00000000-0000-4000-8000-000000000000"
    with pytest.raises(ApiError) as info:
        client.create_run(body(nope))  # a station key sees only its linked procedures
    assert info.value.status == 403
    with TofuPilotClient(emulator.url, emulator.user_key, timeout_s=2.0) as user:
        with pytest.raises(ApiError) as info:
            user.create_run(body(nope))
        assert info.value.status == 404
    with pytest.raises(ApiError) as info:
        client.create_run(body(emulator.procedure_id("ICT1")))  # linked to the other station
    assert info.value.status == 403
    with pytest.raises(ApiError) as info:
        client.create_run(body("FVT1"))  # a name, where TofuPilot wants its id
    assert info.value.status == 400 and "procedure_id: Invalid uuid" in info.value.issues
    with (
        TofuPilotClient(emulator.url, "tp_station_wrong") as bad,
        pytest.raises(ApiError) as info,
    ):
        bad.whoami()
    assert info.value.status == 401 and info.value.code == "UNAUTHORIZED"


def test_a_hung_server_is_a_timeout_within_the_requested_time(emulator, client):
    emulator.faults.plan(["hang:5"])
    started = time.monotonic()
    with pytest.raises(TransportError) as info:
        client.create_run(body(), timeout_s=0.3)
    assert time.monotonic() - started < 1.5
    assert info.value.kind == "timeout" and info.value.retryable


def test_refused_and_dropped_connections_are_transport_errors(emulator, client):
    emulator.faults.plan(["drop"])
    with pytest.raises(TransportError) as info:
        client.create_run(body())
    assert info.value.kind == "connection" and info.value.retryable
    emulator.stop()
    with pytest.raises(TransportError) as info:
        client.whoami()
    assert info.value.kind == "connect"


def test_non_json_error_bodies_are_tolerated_and_truncated():
    page = b"<html>" + b"x" * 10_000 + b"</html>"
    client = TofuPilotClient("https://tp.example/api", "tp_station_test_key_01")
    client._http = httpx.Client(
        transport=httpx.MockTransport(lambda request: httpx.Response(502, content=page))
    )
    with pytest.raises(ApiError) as info:
        client.whoami()
    assert info.value.status == 502 and info.value.retryable
    assert info.value.message.startswith("<html>") and len(info.value.message) <= 4096


def test_an_unusable_success_body_is_a_retryable_api_error():
    client = TofuPilotClient("https://tp.example/api", "tp_station_test_key_01")
    client._http = httpx.Client(
        transport=httpx.MockTransport(lambda request: httpx.Response(200, content=b"oops"))
    )
    with pytest.raises(ApiError) as info:
        client.create_run(body())
    assert info.value.code == "INVALID_RESPONSE" and info.value.retryable


def test_the_key_never_appears_in_errors_or_reprs(emulator):
    """Force every error path; the key must not be in any message, repr or traceback."""
    key = emulator.station_key
    echoing = TofuPilotClient("https://tp.example/api", key)
    echoing._http = httpx.Client(
        transport=httpx.MockTransport(
            lambda request: httpx.Response(
                401,
                json={
                    "code": "UNAUTHORIZED",
                    "message": f"bad key {request.headers['authorization']}",
                    "issues": [{"message": f"key {key}"}],
                },
            )
        )
    )
    texts = [repr(echoing)]
    errors: list[TofuPilotError] = []
    with pytest.raises(ApiError) as info:
        echoing.whoami()
    errors.append(info.value)

    client = TofuPilotClient(emulator.url, key, timeout_s=0.3)
    texts.append(repr(client))
    for fault in ("401", "403", "404", "422", "429", "500", "drop", "drop_after_store", "hang:2"):
        emulator.faults.plan([fault])
        with pytest.raises(TofuPilotError) as info:
            client.create_run(body())
        errors.append(info.value)
    with pytest.raises(TofuPilotError) as info:
        client.upload_attachment_bytes(f"{emulator.base}/uploads/nope?token=x", b"", "a/b")
    errors.append(info.value)
    emulator.stop()
    with pytest.raises(TransportError) as info:
        client.create_run(body())
    errors.append(info.value)
    bad_url = TofuPilotClient("http://[::1", key)
    with pytest.raises(TofuPilotError) as info:
        bad_url.whoami()
    errors.append(info.value)

    assert len(errors) == 13
    for error in errors:
        texts += [str(error), repr(error), *map(str, error.args)]
        texts += traceback.format_exception(error)
        texts += [str(v) for v in vars(error).values()]
    leaked = [t for t in texts if key in t]
    assert not leaked, leaked
    assert "***" in str(errors[0])


# -- check_tofupilot (station check) ---------------------------------------------------------------


@pytest.fixture
def tp_config(tmp_path, emulator):
    from station.config.model import load_config

    (tmp_path / "station.yaml").write_text(
        "station: {name: Demo bench}\n"
        f"tofupilot: {{url: '{emulator.url}', api_key_env: TP_CHECK_KEY}}\n"
        "procedures:\n  FVT1: {module: p.py}\n  T1: {module: p.py}\n"
    )
    return load_config(tmp_path / "station.yaml")


def test_check_reports_a_station_key_with_every_procedure_linked(tp_config, emulator, monkeypatch):
    from station.tofupilot.check import check_tofupilot

    monkeypatch.setenv("TP_CHECK_KEY", emulator.station_key)
    ok, lines = check_tofupilot(tp_config)
    assert ok, lines
    assert "station key for 'Demo bench'" in lines[0]
    t1 = emulator.procedure_id("T1")
    assert (
        f"tofupilot: procedure T1: 'T1' is linked to station 'Demo bench' with id {t1}; pin it "
        f"in station.yaml under procedures.T1:\n    tofupilot_id: {t1}"
    ) in lines

    emulator.unlink("T1")
    ok, lines = check_tofupilot(tp_config)
    assert not ok
    (line,) = [x for x in lines if "procedure T1:" in x]
    assert line.startswith(
        "tofupilot: procedure T1: NOT usable: procedure 'T1' is not linked to station 'Demo "
        f"bench' in TofuPilot (available: FVT1 ({emulator.procedure_id('FVT1')}))"
    )
    assert "link it to station 'Demo bench' in TofuPilot" in line


def test_check_reports_user_keys_missing_keys_refused_keys_and_no_server(
    tp_config, emulator, monkeypatch
):
    from station.tofupilot.check import check_tofupilot

    monkeypatch.setenv("TP_CHECK_KEY", emulator.user_key)
    ok, lines = check_tofupilot(tp_config)
    assert ok and "a user key (demo@example.com" in lines[0]
    monkeypatch.delenv("TP_CHECK_KEY")
    ok, lines = check_tofupilot(tp_config)
    assert not ok and "$TP_CHECK_KEY is not set" in lines[0]
    monkeypatch.setenv("TP_CHECK_KEY", "tp_station_wrong")
    ok, lines = check_tofupilot(tp_config)
    assert not ok and "the API key in $TP_CHECK_KEY was refused" in lines[0]
    monkeypatch.setenv("TP_CHECK_KEY", emulator.station_key)
    emulator.stop()
    ok, lines = check_tofupilot(tp_config)
    assert not ok and "cannot reach" in lines[0]
    assert all(emulator.station_key not in line for line in lines)
