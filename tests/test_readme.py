"""Every code example in README.md runs as printed.

The fenced blocks are read from README.md at test time, so an edited README is tested as it
reads: the procedure example runs on the simulated bench with the station.yaml example (PASS on
a good board, FAIL on fault boards), the station.yaml example loads with `load_config`, and each
shell command is either run here, in a temporary copy of the bench, or named in `NOT_RUN` with
the reason. A block in a language this file does not know, or a new shell command, fails until
it is handled here.
"""

from __future__ import annotations

import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest

from station.config.model import load_config

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
RUN_TIMEOUT_S = 120  # generous: a run takes about a second, a loaded CI machine much longer

# Shell commands not run by this file, each with the reason. Everything else must be run below.
NOT_RUN = {
    "pip install -e .": "installs this checkout; the tests run in an environment that has it",
    "pip install -e '.[test]'": "as above, with the test extra (.ci/run installs it as written)",
    "python -m pytest -q -n auto": "the test suite itself; .ci/run runs this exact command",
}


@dataclass(frozen=True)
class Block:
    language: str
    text: str
    line: int  # of the opening fence, for messages


def readme_blocks() -> list[Block]:
    """The fenced code blocks of README.md, in order."""
    blocks: list[Block] = []
    opened: tuple[str, int] | None = None
    body: list[str] = []
    for number, line in enumerate(README.read_text(encoding="utf-8").split("\n"), start=1):
        if line.startswith("```"):
            if opened is None:
                opened, body = (line[3:].strip(), number), []
            else:
                blocks.append(Block(opened[0], "\n".join(body) + "\n", opened[1]))
                opened = None
        elif opened is not None:
            body.append(line)
    assert opened is None, f"README.md:{opened[1]}: a code block is never closed"
    return blocks


def the_block(language: str, containing: str) -> Block:
    found = [b for b in readme_blocks() if b.language == language and containing in b.text]
    assert len(found) == 1, f"README.md: expected one {language} block with {containing!r}"
    return found[0]


def shell_commands() -> list[str]:
    """Every command of the README's sh blocks; `a && b` counts as two."""
    commands = []
    for block in readme_blocks():
        if block.language == "sh":
            for line in block.text.splitlines():
                commands += [part.strip() for part in line.split("&&") if part.strip()]
    return commands


def station_env(**extra: str) -> dict[str, str]:
    """The environment of a station process: no key or config from the caller's shell."""
    env = {k: v for k, v in os.environ.items() if k not in ("TOFUPILOT_API_KEY", "STATION_CONFIG")}
    return {**env, "NO_COLOR": "1", **extra}


def run_station_command(command: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """A README command line (`python -m ...`) run with this interpreter in `cwd`."""
    words = command.split()
    assert words[0] == "python", command
    return subprocess.run(
        [sys.executable, *words[1:]],
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        env=station_env(**env),
    )


def run_records(root: Path) -> dict[str, dict]:
    """run.json of every run under root/runs, by serial number."""
    found = {}
    for path in sorted((root / "runs").glob("*/run.json")):
        record = json.loads(path.read_text(encoding="utf-8"))
        found[record["serial_number"]] = record
    return found


def copy_of_this_bench(root: Path) -> Path:
    """The repository's station.yaml and procedures/, as a user's checkout has them."""
    shutil.copy(REPO / "station.yaml", root / "station.yaml")
    shutil.copytree(REPO / "procedures", root / "procedures")
    return root


# -- the blocks themselves -------------------------------------------------------------------


def test_every_code_block_is_in_a_language_this_file_runs_or_shows_output():
    for block in readme_blocks():
        assert block.language in ("python", "yaml", "sh", "text"), (
            f"README.md:{block.line}: code block in {block.language or 'no language'!r}: tag it "
            "python, yaml, sh or text (output) and make tests/test_readme.py run it"
        )


def test_every_shell_command_is_run_here_or_says_why_not():
    run_here = {
        "python -m station run FVT1 --sim --serial SN-0001",
        "python -m sim.tofupilot --port 8765",
        "python -m pytest -m soak -s tests/chaos",
    }
    for command in shell_commands():
        assert command in run_here or command in NOT_RUN, (
            f"README.md: the shell command {command!r} is not tested: run it in "
            "tests/test_readme.py, or add it to NOT_RUN with the reason"
        )


# -- Writing a procedure + station.yaml ------------------------------------------------------


@pytest.fixture
def readme_bench(tmp_path: Path) -> Path:
    """A station directory made of the README's station.yaml and its procedure example."""
    (tmp_path / "station.yaml").write_text(the_block("yaml", "name: Bench 3").text, "utf-8")
    (tmp_path / "procedures").mkdir()
    procedure = the_block("python", "FVT1: functional test").text
    (tmp_path / "procedures" / "fvt1.py").write_text(procedure, "utf-8")
    return tmp_path


def test_station_yaml_example_loads(readme_bench):
    config = load_config(readme_bench / "station.yaml")
    assert set(config.instruments) == {"dmm", "psu"}
    assert config.instruments["dmm"].driver == "keysight-34461a"
    assert set(config.procedures) == {"FVT1"}
    assert config.procedures["FVT1"].module == "procedures.fvt1"


@pytest.mark.slow
def test_procedure_example_passes_a_good_board_on_the_simulated_bench(readme_bench):
    result = run_station_command("python -m station run FVT1 --sim --serial SN-0001", readme_bench)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "== FVT1 PASS  SN-0001" in result.stdout
    record = run_records(readme_bench)["SN-0001"]
    # The README's procedure ran, not the repository's FVT1.
    assert [p["name"] for p in record["phases"]] == ["identify", "power_up", "power_down"]
    (power_up,) = [p for p in record["phases"] if p["name"] == "power_up"]
    rail = next(m for m in power_up["measurements"] if m["name"] == "rail_3v3")
    assert rail["outcome"] == "PASS" and 3.25 <= rail["measured_value"] <= 3.35, rail


@pytest.mark.slow
@pytest.mark.parametrize(
    ("serial", "failing"),
    [("SN-0002-F", "rail_3v3"), ("SN-0003-F:shorted_rail", "input_current")],
)
def test_procedure_example_fails_a_fault_board(readme_bench, serial, failing):
    result = run_station_command(
        f"python -m station run FVT1 --sim --serial {serial}", readme_bench
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert re.search(rf"^\s+{failing}\s.*FAIL\s*$", result.stdout, re.MULTILINE), result.stdout
    assert run_records(readme_bench)[serial]["outcome"] == "FAIL"


# -- Quick start -----------------------------------------------------------------------------


@pytest.mark.slow
def test_quick_start_runs_fvt1_on_the_simulated_bench(tmp_path):
    command = "python -m station run FVT1 --sim --serial SN-0001"
    assert command in shell_commands()
    result = run_station_command(command, copy_of_this_bench(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "== FVT1 PASS  SN-0001" in result.stdout


# -- Reporting to TofuPilot: the emulator, and following what it prints -----------------------


class Lines:
    """A process's stdout lines as they come (a reader thread), with a deadline per wait."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self._lines: queue.Queue[str | None] = queue.Queue()
        assert process.stdout is not None
        stream = process.stdout
        threading.Thread(target=self._pump, args=(stream,), daemon=True).start()
        self.seen: list[str] = []

    def _pump(self, stream) -> None:
        for line in stream:
            self._lines.put(line)
        self._lines.put(None)

    def until(self, text: str, timeout_s: float = 60.0) -> str:
        while True:
            try:
                line = self._lines.get(timeout=timeout_s)
            except queue.Empty:
                raise AssertionError(f"never printed {text!r}; printed: {self.seen}") from None
            if line is None:
                raise AssertionError(f"ended before printing {text!r}; printed: {self.seen}")
            self.seen.append(line)
            if text in line:
                return "".join(self.seen)


@pytest.mark.slow
def test_emulator_command_serves_and_a_run_uploads_by_following_what_it_prints(tmp_path):
    printed = "python -m sim.tofupilot --port 8765"
    assert printed in shell_commands()
    # The one change to the printed command: a port the OS chooses, so tests never collide.
    words = printed.replace("--port 8765", "--port 0").split()
    emulator = subprocess.Popen(
        [sys.executable, *words[1:]],
        cwd=REPO,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=station_env(),
    )
    try:
        lines = Lines(emulator)
        banner = lines.until("Ctrl-C to stop.")
        key = re.search(r"export TOFUPILOT_API_KEY=(\S+)", banner)
        url = re.search(r"tofupilot: \{url: (\S+)\}", banner)
        assert key and url, banner
        assert url[1].startswith("http://127.0.0.1:"), banner

        bench = copy_of_this_bench(tmp_path)
        config = (bench / "station.yaml").read_text(encoding="utf-8")
        config = re.sub(r"(?m)^  url: .*$", f"  url: {url[1]}", config)
        (bench / "station.yaml").write_text(config, encoding="utf-8")
        result = run_station_command(
            "python -m station run FVT1 --sim --serial SN-0001", bench, TOFUPILOT_API_KEY=key[1]
        )
        assert result.returncode == 0, result.stdout + result.stderr
        (upload_state,) = (bench / "runs").glob("*/upload.json")
        state = json.loads(upload_state.read_text(encoding="utf-8"))
        assert state.get("run_id"), state  # TofuPilot (the emulator) has the run

        emulator.send_signal(signal.SIGINT)  # "Ctrl-C to stop"
        lines.until("stopped")
        assert emulator.wait(timeout=30) == 0
    finally:
        if emulator.poll() is None:
            emulator.kill()
            emulator.wait(timeout=30)


# -- Reliability: the soak command selects the soak tests --------------------------------------


@pytest.mark.slow
def test_soak_command_selects_the_soak_tests():
    """Collected only: the soak itself takes minutes (it is meant to be run by hand)."""
    printed = "python -m pytest -m soak -s tests/chaos"
    assert printed in shell_commands()
    result = run_station_command(f"{printed} --collect-only -q -p no:cacheprovider", REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    collected = [line for line in result.stdout.splitlines() if "::" in line]
    assert collected and all("soak" in line for line in collected), result.stdout
