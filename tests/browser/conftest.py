"""Fixtures for pages that run in a real, headless Chromium against the real service.

One Chromium serves the whole session (its start-up is most of these tests' time); each test
gets it back blank (`browser`). Pages are served from a second origin (`site_origin`), so the
browser's cross-origin rules apply to them as they do to a real web site's pages. The service
itself is the `service_factory` of tests/conftest.py, on the `redis_nodes`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver

from tests.support.browser import (
    BROWSER_PACKAGES,
    find_browser_binaries,
    reset_browser,
    start_chromium,
)
from tests.support.site import StaticSite


@pytest.fixture(scope="session")
def chromium() -> Iterator[webdriver.Chrome]:
    """The session's headless Chromium; quit at the end of the session.

    The one place a test may be skipped: on a machine where `make test` could not install
    the browser (no apt-get, or not allowed to run it)."""
    binaries = find_browser_binaries()
    if binaries is None:
        pytest.skip(
            f"the browser tests need {BROWSER_PACKAGES} packages (`chromium` and "
            "`chromedriver` on PATH); `make test` installs them with apt-get when it can"
        )
    driver = start_chromium(binaries)
    yield driver
    driver.quit()


@pytest.fixture
def browser(chromium: webdriver.Chrome) -> webdriver.Chrome:
    """The session's Chromium, on a blank page with no cookies, no cache, an empty console."""
    reset_browser(chromium)
    return chromium


@pytest.fixture
def site_origin(tmp_path: Path) -> Iterator[StaticSite]:
    """A static site at http://localhost:<free port>, serving the pages the test writes;
    the service is at http://127.0.0.1:<another port>, a different origin."""
    site = StaticSite(tmp_path / "site")
    site.start()
    yield site
    site.stop()
