"""The README's screenshots, taken of real pages: a post showing its count with the snippet,
a project page with three badges, and the service's own /dashboard.

Every run writes them to the test's temporary directory. `make screenshots` sets
DOCS_SCREENSHOTS_DIR to docs/ and so writes the committed copies, docs/screenshot-snippet.png,
docs/screenshot-badge.png and docs/screenshot-dashboard.png. Only the page elements (the
dashboard: its window, sized to the page) are captured, at the window's scale of 1, so the
files stay small.
"""

from __future__ import annotations

import html
import os
from pathlib import Path

import httpx
import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement

from tests.conftest import ServiceFactory
from tests.support.browser import (
    WINDOW_SIZE,
    console_errors,
    png_size,
    save_element_screenshot,
    save_screenshot,
    wait_until,
)
from tests.support.site import StaticSite, html_document
from tests.support.visits import API, page_path, visits_of
from visit_counter.core.embedded_nodes import RedisNodeProcess

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

SCREENSHOTS_DIR_VARIABLE = "DOCS_SCREENSHOTS_DIR"
POST_VISITS_BEFORE = 41  # the screenshot's load makes it 42
PROJECT_VISITS = 128
BADGE_QUERIES = ("", "?label=views&color=green", "?label=readers&color=orange&label_color=333")
# The dashboard's pages: most visits sent in one batch, a few by "browsers" (an Origin and a
# User-Agent of their own each), so the unique visitors are not 0. The first is Popular.
DASHBOARD_BATCH = {"docs/getting-started": 1830, "/": 970, "blog/2026/hello": 115, "about": 40}
DASHBOARD_BROWSERS = {"docs/getting-started": 11, "/": 7, "blog/2026/hello": 5, "about": 2}
DASHBOARD_WIDTH = 800
STYLE = """<style>
body { font-family: "DejaVu Sans", sans-serif; color: #1f2328; background: #fff; margin: 0; }
#shot { display: inline-block; padding: 16px 20px; }
article { width: 360px; }
article h1 { font-size: 22px; margin: 0 0 8px; }
article p { font-size: 14px; line-height: 1.5; margin: 0 0 12px; }
article footer { font-size: 13px; color: #59636e; border-top: 1px solid #d1d9e0; padding-top: 8px; }
#shot h2 { font-size: 20px; margin: 0 0 10px; }
#shot img { margin-right: 4px; vertical-align: middle; }
</style>"""


def screenshots_dir(tmp_path: Path) -> Path:
    configured = os.environ.get(SCREENSHOTS_DIR_VARIABLE)
    return Path(configured) if configured else tmp_path / "screenshots"


def snippet_demo(service_url: str) -> str:
    return html_document(
        "Hello, 2026",
        f"{STYLE}\n"
        '<div id="shot"><article>\n'
        "<h1>Hello, 2026</h1>\n"
        "<p>A post on a static site. One script tag counts this page and shows its count "
        "below.</p>\n"
        "<footer>Viewed <span data-visit-count></span> times</footer>\n"
        "</article></div>\n"
        f'<script async src="{service_url}/count.js"></script>',
    )


def badge_demo(service_url: str) -> str:
    badge = f"{service_url}{API}/badge/my-project.svg"
    images = "\n".join(
        f'<img alt="visits" src="{html.escape(badge + query)}">' for query in BADGE_QUERIES
    )
    return html_document(
        "my-project", f'{STYLE}\n<div id="shot">\n<h2>my-project</h2>\n{images}\n</div>'
    )


def capture(browser: webdriver.Chrome, path: Path) -> Path:
    """Save the page's `#shot` element at `path`; check the PNG is that element's size."""
    shot: WebElement = browser.find_element(By.ID, "shot")
    save_element_screenshot(shot, path)
    width, height = png_size(path.read_bytes())
    assert (width, height) == (round(shot.rect["width"]), round(shot.rect["height"]))
    return path


def test_the_readme_screenshots_show_a_count_and_badges(
    browser: webdriver.Chrome,
    site_origin: StaticSite,
    redis_nodes: list[RedisNodeProcess],
    service_factory: ServiceFactory,
    tmp_path: Path,
) -> None:
    service = service_factory(redis_nodes, cors_allow_origins=site_origin.origin)
    with httpx.Client(base_url=service.url) as client:
        for page_id, visits in (
            ("blog/2026/hello.html", POST_VISITS_BEFORE),
            ("my-project", PROJECT_VISITS),
        ):
            for _ in range(visits):
                client.post(f"{API}/visit/{page_id}").raise_for_status()
    output = screenshots_dir(tmp_path)
    assert browser.execute_script("return devicePixelRatio") == 1

    browser.get(site_origin.write("blog/2026/hello.html", snippet_demo(service.url)))
    count = browser.find_element(By.CSS_SELECTOR, "[data-visit-count]")
    wait_until(browser, lambda _: count.text == "42", "the post to show its count, 42")
    capture(browser, output / "screenshot-snippet.png")

    browser.get(site_origin.write("my-project.html", badge_demo(service.url)))
    loaded = "return Array.from(document.images, image => image.complete && image.naturalWidth)"
    assert all(browser.execute_script(loaded))
    assert len(browser.find_elements(By.TAG_NAME, "img")) == len(BADGE_QUERIES)
    capture(browser, output / "screenshot-badge.png")

    assert console_errors(browser) == []
    assert visits_of(service.url, "my-project") == PROJECT_VISITS  # showing badges counts nothing


def test_the_readme_screenshot_of_the_dashboard(
    browser: webdriver.Chrome,
    redis_nodes: list[RedisNodeProcess],
    service_factory: ServiceFactory,
    tmp_path: Path,
) -> None:
    service = service_factory(redis_nodes)  # no ADMIN_TOKEN: no login on the way
    with httpx.Client(base_url=service.url) as client:
        client.post(f"{API}/visits", json=DASHBOARD_BATCH).raise_for_status()
        visitor = 0
        for page_id, visits in DASHBOARD_BROWSERS.items():
            for _ in range(visits):
                visitor += 1
                browser_like = {
                    "Origin": service.url,
                    "User-Agent": f"Mozilla/5.0 reader-{visitor}",
                }
                response = client.post(f"{API}/visit/{page_path(page_id)}", headers=browser_like)
                response.raise_for_status()
    totals = {page: DASHBOARD_BATCH[page] + DASHBOARD_BROWSERS[page] for page in DASHBOARD_BATCH}
    pages = (
        "return Array.from(document.querySelectorAll('#top-pages tbody tr'), row => "
        "[row.dataset.pageId, Number(row.dataset.visits), !!row.querySelector('svg.spark')])"
    )

    browser.get(f"{service.url}/dashboard")
    wait_until(
        browser,
        lambda b: (
            b.execute_script(pages) == [[page, visits, True] for page, visits in totals.items()]
        ),
        "the dashboard to show every page with its count and sparkline",
    )
    nodes_up = "#nodes li.up"
    wait_until(
        browser, lambda b: len(b.find_elements(By.CSS_SELECTOR, nodes_up)) == 3, "3 nodes up"
    )
    wait_until(
        browser,
        lambda b: b.find_element(By.ID, "total-unique").get_attribute("data-value") == str(visitor),
        f"the unique visitors, {visitor}",
    )
    try:
        # The window's size is its outer size: add the browser's own bars to the page's height.
        height, bars = browser.execute_script(
            "return [document.documentElement.scrollHeight, outerHeight - innerHeight]"
        )
        browser.set_window_size(DASHBOARD_WIDTH, height + bars)
        path = save_screenshot(browser, screenshots_dir(tmp_path) / "screenshot-dashboard.png")
    finally:
        browser.set_window_size(*WINDOW_SIZE)
    assert png_size(path.read_bytes()) == (DASHBOARD_WIDTH, height)
    assert console_errors(browser) == []
