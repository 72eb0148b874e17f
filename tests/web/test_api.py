"""The JSON API under the operator page, and its access rules, over real HTTP.

A station is served in this process (tests/web/support.py) on the simulated bench; requests go
through httpx to the real uvicorn server, events are read from the real event stream.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from station.web.hub import ApiError, safe_image
from station.web.security import is_loopback
from tests.web.support import PROMPTED_PATTERN, served_station, station_dir

CSRF = {"X-Station-CSRF": "1"}


def post(served, path: str, body: object = None, **headers: str) -> httpx.Response:
    return httpx.post(served.url + path, json=body, headers={**CSRF, **headers}, timeout=30)


class EventStream:
    """The event stream, connected at once: `state` is its first event (the whole state),
    iterating gives every event after it, as it comes."""

    def __init__(self, served, *, timeout_s: float = 30.0) -> None:
        self._events = _events(served, timeout_s)
        self.state = next(self._events)
        assert self.state["type"] == "state", self.state

    def __iter__(self) -> Iterator[dict]:
        return self._events

    def __next__(self) -> dict:
        return next(self._events)


def _events(served, timeout_s: float) -> Iterator[dict]:
    """The event stream's events, as they come."""
    with httpx.stream("GET", served.url + "api/events", timeout=timeout_s) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        data: list[str] = []
        for line in response.iter_lines():
            if line.startswith("data: "):
                data.append(line[6:])
            elif line == "" and data:
                yield json.loads("\n".join(data))
                data = []


def until(stream: Iterator[dict], test: Callable[[dict], bool], seen: list | None = None) -> dict:
    """The first event passing `test` (events before it go into `seen`); at most 60 s."""
    deadline = time.monotonic() + 60
    for event in stream:
        if seen is not None:
            seen.append(event)
        if test(event):
            return event
        assert time.monotonic() < deadline, "no such event within 60 s"
    raise AssertionError("the stream ended first")


def wait_idle(served) -> None:
    assert served.hub.wait_idle(60), "the unit never ended"


# -- commands ----------------------------------------------------------------------------------


def test_start_a_unit_and_follow_it_on_the_event_stream(served):
    stream = EventStream(served)
    first = stream.state
    assert first["type"] == "state" and first["unit"] is None and first["busy"] is False
    response = post(served, "api/runs", {"procedure": "FVT1", "serial": "SN-0001"})
    assert response.status_code == 202, response.text
    assert response.json() == {"started": True, "procedure": "FVT1", "serial": "SN-0001"}
    seen: list[dict] = []
    ended = until(stream, lambda e: e["type"] == "run_ended", seen)
    assert ended["outcome"] == "PASS"
    types = [e["type"] for e in seen]
    assert types.index("run_started") < types.index("phase_started") < types.index("run_ended")
    measured = [e["name"] for e in seen if e["type"] == "measurement"]
    assert measured == ["vin", "input_current", "rail_3v3", "rail_ripple"]
    # After the unit, the whole state again: idle, counted, listed.
    state = until(stream, lambda e: e["type"] == "state" and not e["busy"])
    assert state["unit"]["outcome"] == "PASS"
    assert state["counters"]["tested"] == 1
    assert state["recent"][0]["serial"] == "SN-0001"

    api_state = httpx.get(served.url + "api/state").json()
    assert api_state["unit"]["phases"][1]["measurements"][0]["display"] == "5.00 V" or (
        api_state["unit"]["phases"][1]["measurements"][0]["name"] == "vin"
    )
    recent = httpx.get(served.url + "api/runs/recent").json()["units"]
    assert [(u["serial"], u["outcome"]) for u in recent] == [("SN-0001", "PASS")]
    assert recent[0]["upload"] in ("queued", "pending")


def test_a_stream_opened_mid_unit_starts_with_the_unit_so_far(served):
    stream = EventStream(served)
    assert post(served, "api/runs", {"procedure": "SLOW", "serial": "SN-7"}).status_code == 202
    try:
        until(stream, lambda e: e["type"] == "log" and e["message"] == "supply on, soaking")
        state = EventStream(served).state  # a page opened (or reconnected) now
        assert state["type"] == "state" and state["busy"] is True
        (power_up,) = [p for p in state["unit"]["phases"] if p["name"] == "power_up"]
        assert power_up["running"] is True
        assert power_up["logs"][-1]["message"] == "supply on, soaking"
    finally:
        assert post(served, "api/abort").status_code == 202
    wait_idle(served)


def test_one_unit_at_a_time_and_abort_only_what_runs(served):
    assert post(served, "api/abort").status_code == 409
    stream = EventStream(served)
    assert post(served, "api/runs", {"procedure": "SLOW", "serial": "SN-1"}).status_code == 202
    second = post(served, "api/runs", {"procedure": "FVT1", "serial": "SN-2"})
    assert second.status_code == 409
    until(stream, lambda e: e["type"] == "phase_started" and e["phase"] == "power_up")
    aborted = post(served, "api/abort")
    assert aborted.status_code == 202 and aborted.json() == {"aborting": True}
    ended = until(stream, lambda e: e["type"] == "run_ended")
    assert ended["outcome"] == "ABORTED"
    wait_idle(served)
    assert not served.bench.bench.channel(1).enabled
    assert post(served, "api/runs", {"procedure": "FVT1", "serial": "SN-2"}).status_code == 202
    wait_idle(served)


@pytest.mark.parametrize(
    ("body", "status", "says"),
    [
        ({"procedure": "FVT1"}, 400, "serial number is empty"),
        ({"procedure": "FVT1", "serial": "   "}, 400, "serial number is empty"),
        ({"serial": "SN-1"}, 400, "name the procedure"),
        ({"procedure": "FVT9", "serial": "SN-1"}, 404, "no procedure 'FVT9'"),
        ({"procedure": "PROMPTED", "serial": "PCB-D-1"}, 400, PROMPTED_PATTERN),
        ({"procedure": "FVT1", "serial": "SN\x07"}, 400, "printable"),
        (["FVT1", "SN-1"], 400, "JSON object"),
    ],
)
def test_bad_starts_are_refused_before_anything_runs(served, body, status, says):
    response = post(served, "api/runs", body)
    assert response.status_code == status, response.text
    assert says in response.json()["error"]
    assert served.run_dirs() == [] and served.line.counters.tested == 0
    assert httpx.get(served.url + "api/state").json()["busy"] is False


def test_a_refused_scan_reaches_every_page(served):
    stream = EventStream(served)
    assert post(served, "api/runs", {"procedure": "PROMPTED", "serial": "XYZ"}).status_code == 400
    refused = until(stream, lambda e: e["type"] == "unit_refused")
    assert refused["pattern"] == PROMPTED_PATTERN and refused["serial"] == "XYZ"
    assert httpx.get(served.url + "api/state").json()["refusal"]["serial"] == "XYZ"


def test_prompts_are_answered_over_the_api_and_bad_answers_say_why(served):
    stream = EventStream(served)
    assert post(served, "api/runs", {"procedure": "PROMPTED", "serial": "PCB-A-00001"}).is_success
    asked = until(stream, lambda e: e["type"] == "prompt")["prompt"]
    assert asked["kind"] == "confirm" and asked["image"] == "fixture.svg"
    state = httpx.get(served.url + "api/state").json()
    assert state["prompt"]["id"] == asked["id"]

    image = httpx.get(served.url + f"api/prompts/{asked['id']}/image")
    assert image.status_code == 200
    assert image.headers["content-type"].startswith("image/svg+xml")
    assert "sandbox" in image.headers["content-security-policy"]
    assert image.content == (served.root / "procedures" / "fixture.svg").read_bytes()
    assert httpx.get(served.url + "api/prompts/nope/image").status_code == 404

    assert post(served, "api/prompts/nope", {"answer": True}).status_code == 404
    missing = post(served, f"api/prompts/{asked['id']}", {"value": True})
    assert missing.status_code == 400 and "answer" in missing.json()["error"]
    ok = post(served, f"api/prompts/{asked['id']}", {"answer": "yes"})
    assert ok.status_code == 200 and ok.json() == {"id": asked["id"], "answer": True}
    assert post(served, f"api/prompts/{asked['id']}", {"answer": True}).status_code == 404

    choice = until(stream, lambda e: e["type"] == "prompt")["prompt"]
    bad = post(served, f"api/prompts/{choice['id']}", {"answer": "Z"})
    assert bad.status_code == 400 and "A" in bad.json()["error"], bad.text
    assert post(served, f"api/prompts/{choice['id']}", {"answer": "3"}).json()["answer"] == "C"
    number = until(stream, lambda e: e["type"] == "prompt")["prompt"]
    assert post(served, f"api/prompts/{number['id']}", {"answer": "seven"}).status_code == 400
    assert post(served, f"api/prompts/{number['id']}", {"answer": 2}).json()["answer"] == 2.0
    text = until(stream, lambda e: e["type"] == "prompt")["prompt"]
    assert post(served, f"api/prompts/{text['id']}", {"answer": ""}).json()["answer"] == "none"
    assert until(stream, lambda e: e["type"] == "run_ended")["outcome"] == "PASS"


def test_a_unit_that_cannot_start_is_shown_as_its_own_error(tmp_path):
    """The supply does not answer when the line opens it: the start was accepted (202), the
    unit is then shown with the instrument's error, not the unit before it, and nothing ran."""
    with served_station(station_dir(tmp_path), wire_faults=("psu:refuse",)) as served:
        stream = EventStream(served)
        assert (
            post(served, "api/runs", {"procedure": "FVT1", "serial": "SN-0042"}).status_code == 202
        )
        done = until(stream, lambda e: e["type"] == "station" and not e["busy"])
        assert "psu" in done["error"], done
        state = until(stream, lambda e: e["type"] == "state")
        assert state["unit"]["serial"] == "SN-0042" and state["unit"]["run_id"] is None
        assert "psu" in state["unit"]["error"] and state["unit"]["outcome"] is None
        assert state["busy"] is False and state["counters"]["tested"] == 0
        assert served.run_dirs() == []


# -- pictures ----------------------------------------------------------------------------------


def test_a_prompt_picture_never_leaves_the_procedure_directory(tmp_path):
    procedures = tmp_path / "procedures"
    procedures.mkdir()
    (procedures / "fixture.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    (procedures / "notes.txt").write_text("not a picture")
    (tmp_path / "secret.png").write_bytes(b"\x89PNG secret")
    (procedures / "link.png").symlink_to(tmp_path / "secret.png")
    (procedures / "sub").mkdir()
    assert safe_image(procedures, "fixture.png") == ((procedures / "fixture.png"), "image/png")
    assert safe_image(procedures, "sub/../fixture.png")[0] == procedures / "fixture.png"
    for refused in (
        "../secret.png",
        str(tmp_path / "secret.png"),
        "link.png",  # a link that leads out
        "notes.txt",  # not a picture
        "missing.png",
        "sub",
        "",
        "fixture.png\x00.txt",
    ):
        with pytest.raises(ApiError) as caught:
            safe_image(procedures, refused)
        assert caught.value.status == 404, refused


# -- access rules ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "content", "says"),
    [
        (
            {"content-type": "application/json"},
            b'{"procedure":"FVT1","serial":"SN-1"}',
            "X-Station-CSRF",
        ),
        (
            {**CSRF, "content-type": "text/plain"},
            b'{"procedure":"FVT1","serial":"SN-1"}',
            "application/json",
        ),
        (
            {**CSRF, "content-type": "application/x-www-form-urlencoded"},
            b"procedure=FVT1&serial=SN-1",
            "application/json",
        ),
        (
            {**CSRF, "content-type": "application/json", "origin": "http://evil.example"},
            b'{"procedure":"FVT1","serial":"SN-1"}',
            "cross-site",
        ),
    ],
)
def test_state_changing_requests_are_csrf_safe(served, headers, content, says):
    response = httpx.post(served.url + "api/runs", content=content, headers=headers)
    assert response.status_code == 403, response.text
    assert says in response.json()["error"]
    assert served.run_dirs() == [] and httpx.get(served.url + "api/state").json()["busy"] is False


def test_a_same_origin_page_passes_the_csrf_check(served):
    origin = served.url.rstrip("/")
    response = post(served, "api/runs", {"procedure": "FVT1", "serial": "SN-1"}, origin=origin)
    assert response.status_code == 202
    wait_idle(served)


def test_loopback_refuses_other_host_names_against_dns_rebinding(served):
    port = served.url.rsplit(":", 1)[1].strip("/")
    for host in (f"evil.example:{port}", "evil.example", f"192.168.1.10:{port}"):
        response = httpx.get(served.url + "api/state", headers={"host": host})
        assert response.status_code == 400, host
        assert "loopback" in response.json()["error"]
    for host in (f"localhost:{port}", f"127.0.0.1:{port}", f"[::1]:{port}"):
        assert httpx.get(served.url + "api/state", headers={"host": host}).is_success, host


def test_responses_carry_a_strict_content_security_policy(served):
    page = httpx.get(served.url)
    assert page.status_code == 200
    policy = page.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "script-src 'self'" in policy
    assert page.headers["x-content-type-options"] == "nosniff"
    assert page.headers["referrer-policy"] == "no-referrer"
    assert httpx.get(served.url + "api/state").headers["cache-control"] == "no-store"
    assert httpx.get(served.url + "static/../station.yaml").status_code == 404
    assert httpx.get(served.url + "static/index.html").status_code == 404


def test_the_page_fetches_nothing_from_elsewhere(served):
    """Offline: no CDN, no external font, script, style or image in the page's own files."""
    texts = [httpx.get(served.url).text] + [
        httpx.get(served.url + f"static/{name}").text for name in ("station.js", "station.css")
    ]
    for text in texts:
        assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}", text, re.IGNORECASE), text[:200]
        assert "@import" not in text and "url(" not in text


def test_is_loopback():
    assert all(map(is_loopback, ["127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost"]))
    assert not any(map(is_loopback, ["0.0.0.0", "::", "192.168.1.2", "example.com", ""]))


# -- secrets -----------------------------------------------------------------------------------


@pytest.mark.slow
def test_the_api_key_never_reaches_the_page_or_the_api(tmp_path):
    """`station serve` with a key in its environment and a TofuPilot that refuses connections:
    every endpoint, the page's files and the event stream (a unit run, its upload failing)
    are read, and the key is nowhere in them or in what the server printed."""
    marker = "tp_KEYMARKER_7f3a9c1e5b2d4f60"
    root = station_dir(tmp_path)
    env = {
        **{k: v for k, v in os.environ.items() if k != "STATION_SERVE_TOKEN"},
        "TOFUPILOT_API_KEY": marker,
        "NO_COLOR": "1",
    }
    server = subprocess.Popen(
        [sys.executable, "-m", "station", "serve", "--port", "0", "--sim"],
        cwd=root,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    bodies: list[str] = []
    try:
        assert server.stdout is not None
        banner = []
        for line in server.stdout:
            banner.append(line)
            if line.startswith("Ctrl-C"):
                break
        url = re.search(r"open (http://\S+/)", "".join(banner))
        assert url, "".join(banner)
        base = url[1]

        class Served:
            pass

        served = Served()
        served.url = base  # type: ignore[attr-defined]

        def keep(response: httpx.Response) -> httpx.Response:
            bodies.append(response.text)
            bodies.append(json.dumps(dict(response.headers)))
            return response

        stream = EventStream(served)
        bodies.append(json.dumps(stream.state))
        assert post(served, "api/runs", {"procedure": "FVT1", "serial": "SN-0002-F"}).is_success
        seen: list[dict] = []
        until(stream, lambda e: e["type"] == "upload", seen)
        bodies.extend(json.dumps(e) for e in seen)
        assert seen[-1]["state"] == "queued" and seen[-1]["message"], seen[-1]
        for path in ("", "static/station.js", "static/station.css", "api/state", "api/runs/recent"):
            keep(httpx.get(base + path, timeout=10))
        keep(post(served, "api/abort"))
        keep(post(served, "api/runs", {"procedure": "nope", "serial": "x"}))
        keep(post(served, "api/prompts/x", {"answer": 1}))
        keep(httpx.get(base + "api/prompts/x/image"))
        keep(httpx.get(base + "api/nothing"))
    finally:
        server.send_signal(signal.SIGINT)
        try:
            out, _ = server.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
            out, _ = server.communicate(timeout=30)
    bodies.append(out)
    assert server.returncode == 0, out
    everything = "\n".join(bodies)
    assert "SN-0002-F" in everything and "rail_3v3" in everything  # the crawl saw the unit
    assert marker not in everything
    assert marker[3:15] not in everything  # not even a part of it


def test_server_stops_on_sigterm_mid_unit_with_the_bench_safe(tmp_path):
    """SIGTERM while a unit soaks: the unit is aborted, its teardown runs, `stopped`, exit 0."""
    root = station_dir(tmp_path)
    server = subprocess.Popen(
        [sys.executable, "-m", "station", "serve", "--port", "0", "--sim"],
        cwd=root,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert server.stdout is not None
        banner = []
        for line in server.stdout:
            banner.append(line)
            if line.startswith("Ctrl-C"):
                break
        base = re.search(r"open (http://\S+/)", "".join(banner))[1]  # type: ignore[index]
        response = httpx.post(
            base + "api/runs", json={"procedure": "SLOW", "serial": "SN-9"}, headers=CSRF
        )
        assert response.status_code == 202
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            unit = httpx.get(base + "api/state").json()["unit"]
            if unit and any(p["running"] and p["name"] == "power_up" for p in unit["phases"]):
                break
            time.sleep(0.05)
        server.send_signal(signal.SIGTERM)
        out, _ = server.communicate(timeout=60)
    finally:
        if server.poll() is None:
            server.kill()
            server.communicate(timeout=30)
    assert server.returncode == 0, out
    assert "stopped" in out
    (run_json,) = Path(root / "runs").glob("*/run.json")
    record = json.loads(run_json.read_text(encoding="utf-8"))
    assert record["outcome"] == "ABORTED"
    assert [(p["name"], p["outcome"]) for p in record["phases"]][-1] == ("power_down", "PASS")
