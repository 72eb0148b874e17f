"""Fixtures of the operator page's tests: a served station, and a browser page on it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.web.support import Served, chromium_missing, launch_chromium, served_station, station_dir


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    """`station serve --sim` on loopback, on a port the OS chose; stopped after the test."""
    with served_station(station_dir(tmp_path)) as station:
        yield station


@pytest.fixture(scope="session")
def chromium() -> Iterator[Any]:
    why = chromium_missing()
    if why is not None:
        pytest.skip(why)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def page(chromium: Any) -> Iterator[Any]:
    """A fresh browser context (no cookies) and page; JavaScript errors fail the test."""
    context = chromium.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(20_000)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        yield page
    finally:
        context.close()
    assert not errors, f"the page raised: {errors}"
