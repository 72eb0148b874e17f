"""Screenshots of the operator page for the README: `python -m tests.web.screenshots`.

Serves a station on the simulated bench in this process (tests/web/support.py), drives the page
in headless Chromium as an operator would and writes docs/screenshots/idle.png (a fresh
station), prompt.png (a unit waiting on the fixture question, with its picture), pass.png and
fail.png. Run by hand after changing the page; the test suite never overwrites them (it only
checks that they exist and are PNG images).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from tests.web.support import REPO, chromium_missing, launch_chromium, served_station, station_dir

OUT = REPO / "docs" / "screenshots"
NAMES = ("idle", "prompt", "pass", "fail")
VIEWPORT = {"width": 1280, "height": 860}


def take(out: Path) -> list[Path]:
    """Write the screenshots into `out`; returns their paths."""
    from playwright.sync_api import sync_playwright

    out.mkdir(parents=True, exist_ok=True)
    written = []
    with (
        tempfile.TemporaryDirectory(prefix="station-screenshots-") as tmp,
        served_station(station_dir(Path(tmp))) as served,
        sync_playwright() as playwright,
    ):
        browser = launch_chromium(playwright)
        page = browser.new_page(viewport=VIEWPORT)
        page.set_default_timeout(30_000)
        page.goto(served.url)
        page.wait_for_selector("#connection.online")

        def shot(name: str) -> None:
            path = out / f"{name}.png"
            page.mouse.move(0, 0)
            page.screenshot(path=str(path))
            written.append(path)

        def unit(procedure: str, serial: str) -> None:
            page.select_option("#procedure", procedure)
            page.fill("#serial", serial)
            page.click("#start")

        shot("idle")

        unit("PROMPTED", "PCB-B-00042")
        page.wait_for_function("() => document.getElementById('prompt-image').naturalWidth > 0")
        shot("prompt")
        dialog = page.locator("dialog#prompt")
        dialog.get_by_role("button", name="Yes").click()
        page.wait_for_selector("#prompt-text >> text=Which revision")
        dialog.get_by_role("button", name="B", exact=True).click()
        page.wait_for_selector("#prompt-text >> text=How many boards")
        page.fill("#prompt-answer", "4")
        page.keyboard.press("Enter")
        page.wait_for_selector("#prompt-text >> text=Any remark?")
        page.keyboard.press("Enter")
        page.wait_for_selector('#verdict[data-verdict="PASS"]')

        unit("FVT1", "SN-0001")
        page.wait_for_selector('#verdict[data-verdict="RUNNING"]')
        page.wait_for_selector('#verdict[data-verdict="PASS"]')
        shot("pass")

        unit("FVT1", "SN-0002-F")
        page.wait_for_selector('#verdict[data-verdict="RUNNING"]')
        page.wait_for_selector('#verdict[data-verdict="FAIL"]')
        shot("fail")
        browser.close()
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.web.screenshots", description=__doc__)
    parser.add_argument("--out", type=Path, default=OUT, help=f"directory (default {OUT})")
    args = parser.parse_args(argv)
    why = chromium_missing()
    if why is not None:
        print(why, file=sys.stderr)
        return 2
    for path in take(args.out):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
