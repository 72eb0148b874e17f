"""The operator page as an operator uses it, in headless Chromium, on the simulated bench.

Each test starts `station serve --sim` in this process (tests/web/support.py) and drives the
page through Playwright: scan, Start, answer the dialogs, read the verdict and the
measurements, Abort. What the page shows is checked against what the station recorded
(run.json) and, for Abort, against the simulated supply itself.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.web.support import PROMPTED_PATTERN, chromium_missing, station_dir

pytestmark = pytest.mark.slow  # a browser process per test session


def start_unit(page, procedure: str, serial: str) -> None:
    page.select_option("#procedure", procedure)
    page.fill("#serial", serial)
    page.click("#start")


def wait_verdict(page, verdict: str, timeout_ms: int = 30_000) -> None:
    page.wait_for_selector(f'#verdict[data-verdict="{verdict}"]', timeout=timeout_ms)


def record_of(served, serial: str) -> dict:
    for run_dir in served.run_dirs():
        path = run_dir / "run.json"
        if path.is_file():
            record = json.loads(path.read_text(encoding="utf-8"))
            if record["serial_number"] == serial:
                return record
    raise AssertionError(f"no run.json for {serial} under {served.root / 'runs'}")


def measurement_row(page, name: str):
    return page.locator(f'tr[data-measurement="{name}"]').last


def test_idle_page_offers_the_procedures_and_the_instruments(served, page):
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    page.goto(served.url)
    page.wait_for_selector("#connection.online")
    # Offline: the page, its script and style sheet and its event stream, all from the station.
    assert requested and all(url.startswith(served.url) for url in requested), requested
    assert {url[len(served.url) :] for url in requested} >= {
        "",
        "static/station.js",
        "static/station.css",
        "api/events",
    }
    assert page.locator("#verdict").inner_text() == "READY"
    assert page.locator("#station-name").inner_text() == "Bench 7"
    assert page.locator("#sim-badge").is_visible()
    options = page.locator("#procedure option").all_inner_texts()
    assert options == ["FVT1", "PROMPTED", "SLOW"]
    assert page.locator('[data-instrument="psu"]').inner_text() == "psu: not opened"
    # The serial field has the focus: a scanner types into it at once.
    assert page.evaluate("document.activeElement.id") == "serial"


def test_a_good_unit_passes_with_its_measurements_shown_live(served, page):
    page.goto(served.url)
    page.wait_for_selector("#connection.online")
    start_unit(page, "FVT1", "SN-0001")
    wait_verdict(page, "PASS")

    record = record_of(served, "SN-0001")
    assert record["outcome"] == "PASS"
    shown = {
        row.get_attribute("data-measurement"): row.locator("td").all_inner_texts()
        for row in page.locator("tr[data-measurement]").all()
    }
    for phase in record["phases"]:
        for m in phase["measurements"]:
            name, value, limits, outcome = shown[m["name"]]
            assert name == m["name"]
            assert limits == m["limits"]
            assert outcome in ("PASS", "MARGINAL")
            unit = m["units"]
            # Shown with an SI prefix, at the precision its limits need (never the raw float).
            number = re.fullmatch(r"(-?[\d.]+) (m|µ|k)?" + re.escape(unit), value)
            assert number, value
            scale = {"m": 1e-3, "µ": 1e-6, "k": 1e3}.get(number[2] or "", 1.0)
            assert float(number[1]) * scale == pytest.approx(m["measured_value"], rel=5e-3)
    assert shown["rail_ripple"][1].endswith(" mV")  # 0.00196 V reads as 1.96 mV
    phases = page.locator("tr.phase").all()
    assert [p.get_attribute("data-phase") for p in phases] == [
        "identify",
        "power_up",
        "rail_3v3",
        "ripple",
        "power_down",
    ]
    assert page.locator('[data-counter="tested"] dd').inner_text() == "1"
    assert page.locator('[data-counter="passed"] dd').inner_text() == "1"
    assert page.locator('[data-counter="first-pass yield"] dd').inner_text() == "100.0%"
    assert page.locator('[data-instrument="psu"]').inner_text() == "psu: ok"
    recent = page.locator(f'#recent tr[data-run="{record["run_id"]}"] td').all_inner_texts()
    assert recent[:3] == ["SN-0001", "FVT1", "PASS"]


def test_a_failing_unit_shows_fail_and_the_check_it_failed(served, page):
    page.goto(served.url)
    page.wait_for_selector("#connection.online")
    start_unit(page, "FVT1", "SN-0002-F")
    wait_verdict(page, "FAIL")
    assert "fail" in page.locator("#verdict").get_attribute("class")
    record = record_of(served, "SN-0002-F")
    assert record["outcome"] == "FAIL"
    # The failing check restated under the verdict: `rail_3v3 = 3.099 V < 3.220 V`.
    reason = page.locator("#unit-reason").inner_text()
    assert re.search(r"rail_3v3 = 3\.\d+ V < 3\.22\d* V", reason), reason
    cells = measurement_row(page, "rail_3v3").locator("td").all_inner_texts()
    assert cells[3] == "FAIL"
    # The retry is shown as its own attempt.
    assert page.locator('tr.phase[data-phase="rail_3v3"]').count() == 2


def test_prompts_are_dialogs_and_their_answers_are_recorded(served, page):
    page.goto(served.url)
    page.wait_for_selector("#connection.online")
    start_unit(page, "PROMPTED", "PCB-B-00042")

    dialog = page.locator("dialog#prompt")
    dialog.wait_for(state="visible")
    assert page.locator("#prompt-text").inner_text() == "Is the fixture lid closed over the board?"
    # The fixture's picture, served from the procedure's directory, loaded.
    image = page.locator("#prompt-image")
    image.wait_for(state="visible")
    page.wait_for_function("() => document.getElementById('prompt-image').naturalWidth > 0")
    # While the question is open the verdict says the unit runs, in its first phase.
    assert page.locator("#verdict").inner_text() == "RUNNING: fixture_closed"
    dialog.get_by_role("button", name="Yes").click()

    page.wait_for_selector("#prompt-text >> text=Which revision is printed on the label?")
    dialog.get_by_role("button", name="B", exact=True).click()

    page.wait_for_selector("#prompt-text >> text=How many boards are on the panel?")
    page.fill("#prompt-answer", "")
    page.click("dialog#prompt button[type=submit]")  # empty, no default: refused, stays open
    page.wait_for_selector("#prompt-error:not([hidden])")
    assert page.locator("#prompt-error").inner_text() == "an answer is required"
    page.fill("#prompt-answer", "4")
    page.keyboard.press("Enter")

    page.wait_for_selector("#prompt-text >> text=Any remark?")
    assert page.locator("#prompt-answer").input_value() == "none"  # the default, offered
    page.fill("#prompt-answer", "lid hinge worn")
    page.click("dialog#prompt button[type=submit]")

    wait_verdict(page, "PASS")
    assert not dialog.is_visible()
    record = record_of(served, "PCB-B-00042")
    assert record["outcome"] == "PASS"
    assert record["revision"] == "B"  # from the scan's named group
    asked = [
        (p["key"], p["answer"], p["answered_by"]) for ph in record["phases"] for p in ph["prompts"]
    ]
    assert asked == [
        ("fixture_closed", True, "page"),
        ("label_revision", "B", "page"),
        ("panel_count", 4.0, "page"),
        ("remark", "lid hinge worn", "page"),
    ]
    assert record["metadata"]["remark"] == "lid hinge worn"
    cells = measurement_row(page, "panel_count").locator("td").all_inner_texts()
    assert cells[1:] == ["4", "[1, 10]", "PASS"], cells


def test_abort_runs_teardown_and_leaves_the_supply_off(served, page):
    page.goto(served.url)
    page.wait_for_selector("#connection.online")
    start_unit(page, "SLOW", "SN-0100")
    page.wait_for_selector("#verdict >> text=RUNNING: power_up")
    page.wait_for_selector("text=supply on, soaking")
    psu = served.bench.bench
    assert psu.channel(1).enabled, "the phase switched the supply on"
    assert page.locator("#start").is_disabled()

    page.click("#abort")
    wait_verdict(page, "ABORTED")
    assert not psu.channel(1).enabled, "the supply is still on after Abort"
    teardown = page.locator('tr.phase[data-phase="power_down"] td').all_inner_texts()
    assert teardown[3] == "PASS", teardown
    page.wait_for_selector("text=supply off")  # the teardown's own log line, shown live
    record = record_of(served, "SN-0100")
    assert record["outcome"] == "ABORTED"
    assert [(p["name"], p["outcome"]) for p in record["phases"]][-1] == ("power_down", "PASS")
    # Ready for the next unit once the unit's thread has let go of the line (the verdict is
    # shown as soon as the record is final, a moment before).
    page.wait_for_selector("#start:enabled")


def test_a_bad_scan_is_refused_with_the_pattern_and_nothing_runs(served, page):
    page.goto(served.url)
    page.wait_for_selector("#connection.online")
    page.select_option("#procedure", "PROMPTED")
    assert PROMPTED_PATTERN in page.locator("#pattern-hint").inner_text()
    start_unit(page, "PROMPTED", "PCB-X-1")
    refusal = page.locator("#refusal")
    refusal.wait_for(state="visible")
    assert "PCB-X-1" in refusal.inner_text()
    assert PROMPTED_PATTERN in refusal.inner_text()
    assert page.locator("#verdict").inner_text() == "READY"
    assert served.run_dirs() == []  # nothing ran, nothing recorded
    assert page.locator("#serial").input_value() == "PCB-X-1"  # kept, selected, to rescan
    assert served.line.counters.tested == 0


@pytest.mark.skipif(chromium_missing() is not None, reason=str(chromium_missing()))
def test_a_non_loopback_bind_refuses_requests_without_the_token(tmp_path, chromium):
    """`station serve --host 0.0.0.0` as its own process; connections go to 127.0.0.1 only."""
    root = station_dir(tmp_path)
    env = {k: v for k, v in __import__("os").environ.items() if k != "STATION_SERVE_TOKEN"}
    env["NO_COLOR"] = "1"
    server = subprocess.Popen(
        [sys.executable, "-m", "station", "serve", "--host", "0.0.0.0", "--port", "0", "--sim"],
        cwd=root,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    try:
        assert server.stdout is not None
        printed = []
        for line in server.stdout:
            printed.append(line)
            if line.startswith("Ctrl-C"):
                break
        found = re.search(r"open http://0\.0\.0\.0:(\d+)/\?token=(\S+)", "".join(printed))
        assert found, "".join(printed)
        port, token = found[1], found[2]
        base = f"http://127.0.0.1:{port}"

        context = chromium.new_context()
        page = context.new_page()
        response = page.goto(base + "/")
        assert response.status == 401
        assert "token" in page.content()
        for path in ("/api/state", "/api/events", "/api/runs/recent", "/static/station.js"):
            assert httpx.get(base + path, timeout=10).status_code == 401, path
        wrong = httpx.get(base + "/api/state", headers={"Authorization": "Bearer x" * 3})
        assert wrong.status_code == 401
        refused = httpx.post(
            base + "/api/runs",
            json={"procedure": "FVT1", "serial": "SN-1"},
            headers={"X-Station-CSRF": "1"},
        )
        assert refused.status_code == 401
        assert not [p for p in (root / "runs").iterdir() if p.is_dir()]  # nothing ran

        # The printed address: the token becomes an HttpOnly cookie and leaves the address bar.
        page.goto(f"{base}/?token={token}")
        assert page.url == base + "/"
        page.wait_for_selector("#connection.online")  # the event stream got in with the cookie
        cookie = next(c for c in context.cookies() if c["name"] == "station_token")
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
        start_unit(page, "FVT1", "SN-0001")
        wait_verdict(page, "PASS")
        bearer = httpx.get(base + "/api/state", headers={"Authorization": f"Bearer {token}"})
        assert bearer.status_code == 200 and bearer.json()["unit"]["outcome"] == "PASS"
        context.close()
    finally:
        server.send_signal(__import__("signal").SIGINT)
        try:
            out, _ = server.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
            server.communicate(timeout=30)
            raise
    assert server.returncode == 0, out
    assert "stopped" in out
    assert Path(root / "runs").is_dir()


def test_the_readme_shows_the_screenshots_the_script_takes():
    """docs/screenshots/*.png exist, are PNG images and are the ones the README shows; they are
    taken by `python -m tests.web.screenshots`, never by the test suite."""
    from tests.web.screenshots import NAMES, OUT

    readme = (OUT.parents[1] / "README.md").read_text(encoding="utf-8")
    for name in NAMES:
        path = OUT / f"{name}.png"
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", path
        assert f"(docs/screenshots/{name}.png)" in readme, name
