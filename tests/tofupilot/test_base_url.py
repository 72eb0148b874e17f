"""`tofupilot.url` as users copy it: the site, `/api` or `/api/v2` (TofuPilot's docs), with or
without a trailing slash, all mean the API root; a v1 URL or an endpoint is refused at file:line
with what to write instead. A station configured with the docs' form uploads to the emulator."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from station.config.model import ConfigError, api_root, load_config

REPO = Path(__file__).resolve().parents[2]
ROOT = "https://www.tofupilot.app/api"


def config_with(tmp_path: Path, tofupilot: str) -> Path:
    path = tmp_path / "station.yaml"
    path.write_text(
        f"station: {{name: Bench}}\nprocedures:\n  FVT1: {{module: p.py}}\ntofupilot:\n{tofupilot}"
    )
    return path


@pytest.mark.parametrize(
    "url",
    [
        "https://www.tofupilot.app",
        "https://www.tofupilot.app/",
        "https://www.tofupilot.app/api",
        "https://www.tofupilot.app/api/",
        "https://www.tofupilot.app/api/v2",
        "https://www.tofupilot.app/api/v2/",
        "  https://www.tofupilot.app/API/v2  ",
    ],
)
def test_every_form_users_copy_is_the_api_root(tmp_path, url):
    path = config_with(tmp_path, f"  url: '{url}'\n")
    expected = ROOT if "/API" not in url else "https://www.tofupilot.app/API"
    assert load_config(path).tofupilot.url == expected


@pytest.mark.parametrize(
    ("url", "root"),
    [
        ("https://tp.example.com", "https://tp.example.com/api"),
        ("https://tp.example.com/api/v2", "https://tp.example.com/api"),
        ("https://tools.example.com/tofupilot/", "https://tools.example.com/tofupilot/api"),
        ("https://tools.example.com/tofupilot/api/v2", "https://tools.example.com/tofupilot/api"),
        ("http://127.0.0.1:8123/api/v2/", "http://127.0.0.1:8123/api"),
        ("https://[::1]:8443", "https://[::1]:8443/api"),
    ],
)
def test_self_hosted_servers_normalise_the_same_way(url, root):
    assert api_root(url) == root


@pytest.mark.parametrize(
    "url", ["https://www.tofupilot.app/api/v1", "https://www.tofupilot.app/v1/"]
)
def test_a_v1_url_is_refused_at_its_line_with_the_v2_url_and_the_v1_switch(tmp_path, url):
    path = config_with(tmp_path, f"  url: {url}\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    text = str(info.value)
    assert text.startswith(f"{path}:5: tofupilot.url: ")
    assert f"'{url}' is the legacy v1 API; station uploads through v2: use {ROOT}" in text
    assert "set `api: v1` in the tofupilot section" in text


def test_with_api_v1_a_v1_url_is_its_root(tmp_path):
    for url in ("https://old.example.com/api/v1", "https://old.example.com"):
        path = config_with(tmp_path, f"  api: v1\n  url: {url}\n")
        settings = load_config(path).tofupilot
        assert (settings.api, settings.url) == ("v1", "https://old.example.com/api")


@pytest.mark.parametrize(
    ("url", "said"),
    [
        (
            "https://www.tofupilot.app/api/v2/runs",
            f"points at an endpoint, not the API root: use {ROOT}",
        ),
        ("https://www.tofupilot.app/api?key=1", "without a query or fragment"),
        ("https://www.tofupilot.app/api#top", "without a query or fragment"),
    ],
)
def test_an_endpoint_a_query_or_a_fragment_is_refused(tmp_path, url, said):
    path = config_with(tmp_path, f"  url: '{url}'\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).startswith(f"{path}:5: tofupilot.url: ")
    assert said in str(info.value)


def test_insecure_http_is_still_refused_after_normalising(tmp_path):
    path = config_with(tmp_path, "  url: http://tp.example.com/api/v2\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "would send the API key to tp.example.com in cleartext" in str(info.value)


def test_a_station_with_the_docs_url_uploads_to_the_emulator(tmp_path, emulator):
    text = (REPO / "station.yaml").read_text()
    assert "https://www.tofupilot.app/api\n" in text
    (tmp_path / "station.yaml").write_text(
        text.replace("https://www.tofupilot.app/api\n", f"{emulator.url}/v2/\n")
    )
    env = {**os.environ, "TOFUPILOT_API_KEY": emulator.station_key, "NO_COLOR": "1"}
    env.pop("STATION_CONFIG", None)
    result = subprocess.run(
        [sys.executable, "-m", "station", "run", "FVT1", "--sim", "--serial", "SN-URL-1"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "uploaded: run" in result.stdout, result.stdout
    (stored,) = emulator.runs.values()
    assert stored.body["serial_number"] == "SN-URL-1"
    assert {r.path for r in emulator.requests} <= {
        "/api/v2/whoami",
        "/api/v2/stations/current",
        "/api/v2/runs",
    }
