"""A page on another origin counts its visits with `navigator.sendBeacon`, in a real browser.

A beacon is a POST with no body: it needs no CORS permission from the service, so pages can
count themselves this way before the service answers cross-origin requests at all.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By

from tests.conftest import ServiceFactory
from tests.support.browser import console_errors, png_size, save_screenshot
from tests.support.site import StaticSite, html_document
from tests.support.visits import API, wait_for_visits
from visit_counter.core.embedded_nodes import RedisNodeProcess

pytestmark = [pytest.mark.e2e, pytest.mark.browser]


def beacon_page(service_url: str, page_id: str) -> str:
    """On load, beacon one visit of `page_id`; `data-queued` on <body> says whether the
    browser accepted the beacon (sendBeacon returns false when it refuses one)."""
    visit_url = json.dumps(f"{service_url}{API}/visit/{page_id}")
    return html_document(
        f"Beacon {page_id}",
        f"<h1>Counted by a beacon: {page_id}</h1>\n"
        "<script>\n"
        'window.addEventListener("load", () => {\n'
        f"  document.body.dataset.queued = String(navigator.sendBeacon({visit_url}));\n"
        "});\n"
        "</script>",
    )


def test_three_loads_of_a_page_on_another_origin_count_three_visits(
    browser: webdriver.Chrome,
    site_origin: StaticSite,
    redis_nodes: list[RedisNodeProcess],
    service_factory: ServiceFactory,
) -> None:
    service = service_factory(redis_nodes)
    page_url = site_origin.write("article.html", beacon_page(service.url, "article"))

    for _ in range(3):
        browser.get(page_url)
        assert browser.find_element(By.TAG_NAME, "body").get_attribute("data-queued") == "true"

    wait_for_visits(service.url, "article", 3)
    assert console_errors(browser) == []


def test_a_screenshot_of_the_beacon_page_is_a_png_of_the_window(
    browser: webdriver.Chrome,
    site_origin: StaticSite,
    redis_nodes: list[RedisNodeProcess],
    service_factory: ServiceFactory,
    tmp_path: Path,
) -> None:
    service = service_factory(redis_nodes)
    browser.get(site_origin.write("article.html", beacon_page(service.url, "article")))

    path = save_screenshot(browser, tmp_path / "screenshots" / "beacon.png")

    viewport = browser.execute_script(
        "return [innerWidth * devicePixelRatio, innerHeight * devicePixelRatio].map(Math.round)"
    )
    assert png_size(path.read_bytes()) == tuple(viewport)
