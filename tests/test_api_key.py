"""The TofuPilot API key never leaks: not through a server that echoes it (across the 4 KiB cut
of an error body), not through a malformed key, not through station.yaml, not through the HTTP
libraries' debug logs, and not in cleartext to a remote http:// server.

Each path is tested by looking for any 8-character piece of the key in everything the commands
printed and every file they wrote.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from station.config.errors import ConfigError
from station.config.model import load_config
from station.tofupilot.client import (
    MAX_ERROR_BODY,
    ApiError,
    TofuPilotClient,
    api_key_problem,
    scrub_secret,
)

KEY = "tp_station_Q7mZ4xR9kLp2Wv8NcT3sHd5B"  # shaped like a real key; fixed for reproducibility

PROCEDURE = """\
from station import phase, measure

@phase
@measure("v", low=1, high=2)
def check(measurements):
    measurements.v = 1.5
"""


def fragments(key: str, size: int = 8) -> list[str]:
    """Every `size`-character piece of the key, but those inside its public kind prefix
    ("tp_station_" is in every station's records as "station_name" and the like)."""
    pieces = [key[i : i + size] for i in range(len(key) - size + 1)]
    return [piece for piece in pieces if piece not in "tp_station_"]


def leaks(text: str, key: str = KEY) -> list[str]:
    return [piece for piece in fragments(key) if piece in text]


def files_text(root: Path) -> str:
    return "\n".join(
        path.read_bytes().decode("utf-8", "replace") for path in root.rglob("*") if path.is_file()
    )


class _Echo(BaseHTTPRequestHandler):
    """Answers every request 500, echoing the Authorization header the worst ways a broken
    proxy could: in a response header, and in the body right across the 4 KiB cut."""

    json_body = False

    def _answer(self) -> None:
        auth = self.headers.get("authorization", "")
        key = auth.removeprefix("Bearer ")
        text = "x" * (MAX_ERROR_BODY - 12) + key + " and more after it"
        body = json.dumps({"message": text}) if self.json_body else text
        data = body.encode()
        self.send_response(500)
        self.send_header("x-echo", auth)
        self.send_header("content-type", "application/json" if self.json_body else "text/plain")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = _answer

    def log_message(self, format: str, *args: object) -> None:  # quiet test output
        pass


@pytest.fixture(params=[False, True], ids=["text-body", "json-body"])
def echo_url(request: pytest.FixtureRequest) -> Iterator[str]:
    handler = type("Echo", (_Echo,), {"json_body": request.param})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/api"
    finally:
        server.shutdown()
        server.server_close()


# -- the client ----------------------------------------------------------------------------------


def test_a_key_echoed_across_the_cut_is_scrubbed_before_truncation(echo_url: str) -> None:
    with TofuPilotClient(echo_url, KEY, timeout_s=5) as client, pytest.raises(ApiError) as info:
        client.whoami()
    error = info.value
    assert len(error.message) <= MAX_ERROR_BODY
    texts = [str(error), repr(error), error.message, *error.issues]
    assert not [t for t in texts if leaks(t)], leaks(error.message)
    assert "***" in error.message


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(self.format(record))


@pytest.fixture
def debug_logs() -> Iterator[list[str]]:
    """Everything logged anywhere, at DEBUG, as formatted lines (pytest's logging is off)."""
    root = logging.getLogger()
    handler, level = _Collect(), root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield handler.messages
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def test_the_http_libraries_debug_logs_never_show_the_key(
    echo_url: str, debug_logs: list[str]
) -> None:
    with TofuPilotClient(echo_url, KEY, timeout_s=5) as client, pytest.raises(ApiError):
        client.whoami()
    assert any("receive_response_headers" in m for m in debug_logs), debug_logs  # DEBUG is on
    assert not [m for m in debug_logs if leaks(m)]


def test_scrub_secret_removes_the_key_and_any_long_start_or_end_of_it() -> None:
    assert scrub_secret(f"a {KEY} b", KEY) == "a *** b"
    assert scrub_secret("cut: " + KEY[:9], KEY) == "cut: ***"
    assert scrub_secret(KEY[-9:] + " was the end", KEY) == "*** was the end"
    assert scrub_secret(KEY[:7] + " is too short to tell", KEY) == KEY[:7] + " is too short to tell"
    assert not leaks(scrub_secret(KEY[:20] + "|" + KEY[3:] + KEY + KEY[:8], KEY))


@pytest.mark.parametrize(
    ("key", "words"),
    [
        ("tp_station_Q7mZ4x\nR9kLp2Wv8NcT3s", "character 18 of 32 is a line break"),
        ("tp_station_Q7mZ4x\u2013R9kLp2Wv8NcT3s", "U+2013 (en dash)"),
        ("tp_station_Q7mZ4x R9kLp2Wv8NcT3s", "is a space"),
        ("tp_station_Q7mZ4x\x00R9kLp2Wv8NcT3s", "control character"),
        ("short", "5 characters long"),
        pytest.param("k" * 5000, "5000 characters long", id="5000-characters"),
    ],
)
def test_a_malformed_key_is_refused_without_echoing_it(key: str, words: str) -> None:
    problem = api_key_problem(key)
    assert problem is not None and words in problem
    with pytest.raises(ValueError) as info:
        TofuPilotClient("https://tp.example/api", key)
    assert words in str(info.value)
    assert not leaks(str(info.value), key)
    assert api_key_problem(KEY) is None


# -- station.yaml ----------------------------------------------------------------------------------


def write_config(root: Path, tofupilot: str, extra: str = "") -> Path:
    path = root / "station.yaml"
    path.write_text(
        "station: {name: Bench K}\n"
        f"tofupilot: {tofupilot}\n"
        "procedures:\n"
        "  T1: {module: t1.py}\n" + extra
    )
    return path


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/api",
        "http://127.9.9.9/api",
        "http://localhost:1/api",
        "http://[::1]/api",
    ],
)
def test_http_to_loopback_is_allowed(tmp_path: Path, url: str) -> None:
    config = load_config(write_config(tmp_path, f"{{url: '{url}'}}"))
    assert config.tofupilot.url == url


def test_http_to_another_host_is_refused_unless_allowed(tmp_path: Path) -> None:
    path = write_config(tmp_path, "\n  url: http://tofupilot.plant.example/api")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert message.startswith(f"{path}:3: tofupilot.url: http:// would send the API key")
    assert "cleartext" in message and "allow_insecure_http: true" in message
    path = write_config(
        tmp_path, "\n  url: http://tofupilot.plant.example/api\n  allow_insecure_http: true"
    )
    assert load_config(path).tofupilot.url == "http://tofupilot.plant.example/api"


@pytest.mark.parametrize("variable", ["TOFUPILOT_API_KEY", "BENCH_KEY"])
def test_the_key_variable_cannot_be_expanded_into_station_yaml(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    monkeypatch.setenv(variable, KEY)
    path = write_config(
        tmp_path,
        "{api_key_env: BENCH_KEY}",
        f"instruments:\n  dmm: {{driver: keysight_34461a, resource: 'x${{{variable}}}'}}\n",
    )
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert message.startswith(f"{path}:6: instruments.dmm.resource: ${{{variable}}} is the")
    assert "remove this reference" in message
    assert not leaks(message)


def test_a_key_pasted_into_api_key_env_is_refused_without_echoing_it(tmp_path: Path) -> None:
    key_like_a_name = "tp_station_Q7mZ4xR9kLp2Wv8NcT3sHd5B"  # letters, digits and _ only
    path = write_config(tmp_path, f"{{api_key_env: {key_like_a_name}}}")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "must be the NAME of the environment variable" in str(info.value)
    assert not leaks(str(info.value), key_like_a_name)
    for name in ("TOFUPILOT_API_KEY", "BENCH3_TP_KEY", "tofupilot_key_line_2", "TP_KEY_ABCDEF12"):
        assert load_config(write_config(tmp_path, f"{{api_key_env: {name}}}"))


# -- every command, end to end ---------------------------------------------------------------------


def station(root: Path, *args: str, key: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "STATION_OPERATOR": "tester", "NO_COLOR": "1", "TOFUPILOT_API_KEY": key}
    env.pop("STATION_CONFIG", None)
    return subprocess.run(
        [sys.executable, "-m", "station", *args],
        cwd=root,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=90,
        env=env,
    )


@pytest.fixture
def bench(tmp_path: Path, echo_url: str) -> Path:
    write_config(tmp_path, f"{{url: '{echo_url}'}}")
    (tmp_path / "t1.py").write_text(PROCEDURE)
    return tmp_path


@pytest.mark.slow
def test_no_command_output_or_file_holds_the_key_when_the_server_echoes_it(bench: Path) -> None:
    seen = []
    for command in (["run", "T1", "--serial", "SN-1"], ["upload"], ["runs"], ["check"]):
        result = station(bench, *command, key=KEY)
        assert "Traceback" not in result.stderr, result.stderr
        seen += [result.stdout, result.stderr]
    assert seen[0].count("== T1 PASS") == 1  # the run itself was not disturbed
    upload_state = next(bench.rglob("upload.json")).read_text()
    assert "***" in upload_state  # the echoed body was recorded, scrubbed
    everything = "\n".join(seen) + files_text(bench)
    assert not leaks(everything), leaks(everything)


@pytest.mark.slow
@pytest.mark.parametrize(
    "key",
    ["tp_station_Q7mZ4x\nR9kLp2Wv8NcT3sHd5B", "tp_station_Q7mZ4x\u2013R9kLp2Wv8NcT3sHd5B"],
    ids=["newline", "en-dash"],
)
def test_a_malformed_key_stops_every_command_at_start_without_echoing_it(
    bench: Path, key: str
) -> None:
    for command in (["run", "T1", "--serial", "SN-1"], ["upload"], ["check"]):
        result = station(bench, *command, key=key)
        assert result.returncode == 2, (command, result.stderr)
        assert "Traceback" not in result.stderr
        assert "$TOFUPILOT_API_KEY does not hold a usable API key: character 18" in result.stderr
        output = result.stdout + result.stderr
        assert not leaks(output, key) and not leaks(output, key.replace("\n", "\\n"))
    assert not (bench / "runs").exists() or not leaks(files_text(bench), key)
