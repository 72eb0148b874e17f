"""Without --serial the operator is asked on a real terminal (a pty), as a barcode scanner types."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(not hasattr(os, "openpty"), reason="needs a pty (POSIX)")
def test_serial_is_prompted_on_a_terminal_and_blank_scans_are_asked_again(tmp_path):
    shutil.copy(REPO / "station.yaml", tmp_path / "station.yaml")
    controller, terminal = os.openpty()
    try:
        process = subprocess.Popen(
            [sys.executable, "-m", "station", "run", "FVT1", "--sim"],
            cwd=tmp_path,
            stdin=terminal,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "NO_COLOR": "1"},
        )
        # A blank scan first (the operator pressed Enter), then the barcode with its CR/LF.
        os.write(controller, b"\n  SN-4242  \r\n")
        out, err = process.communicate(timeout=60)
    finally:
        os.close(controller)
        os.close(terminal)
    assert process.returncode == 0, out + err
    assert out.count("Scan or type the serial number:") == 2
    assert "the serial number is empty; try again" in out
    (run_dir,) = (tmp_path / "runs").glob("[!.]*")
    assert json.loads((run_dir / "run.json").read_text())["serial_number"] == "SN-4242"
