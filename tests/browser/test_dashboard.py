"""`/dashboard` in a real headless Chromium against the real service with ADMIN_TOKEN set:
log in through the form, see the top pages and their counts, see a page visited after the
load appear without a reload, the Popular badge, node health, the totals and sparklines,
and a phone-width window that never scrolls sideways."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By

from tests.conftest import ServiceFactory
from tests.support.browser import WINDOW_SIZE, console_errors, read_console, wait_until
from tests.support.visits import API, page_path
from visit_counter.core.embedded_nodes import RedisNodeProcess

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

TOKEN = "s3cret-admin-token-for-tests-0123"
POPULAR = 5
SEEDED = {
    "docs/getting-started": 1234,  # grouped for people: 1,234 in en-US
    "home": POPULAR,  # at the threshold: popular
    "blog/2026/a-long-post-title-that-would-push-a-phone-screen-sideways-if-it-could": 3,
}
NEW_PAGE = "pricing"
NEW_PAGE_VISITS = 2
PHONE = (390, 844)

READ_ROWS = """
return Array.from(document.querySelectorAll("#top-pages tbody tr"), row => {
  const line = row.querySelector("svg.spark polyline");
  return {
    page: row.dataset.pageId,
    visits: Number(row.dataset.visits),
    shown: row.querySelector("td.num").textContent,
    popular: row.querySelector(".badge") !== null,
    points: line ? line.getAttribute("points").trim().split(/\\s+/).length : 0,
  };
});
"""


def rows(browser: webdriver.Chrome) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = browser.execute_script(READ_ROWS)
    return found


def counts(browser: webdriver.Chrome) -> dict[str, int]:
    return {row["page"]: row["visits"] for row in rows(browser)}


def log_in(browser: webdriver.Chrome, service_url: str) -> None:
    browser.get(f"{service_url}/dashboard")
    field = browser.find_element(By.ID, "token")  # not logged in: the form
    read_console(browser)  # the form's own 401 is logged as a failed load; not an error here
    field.send_keys(TOKEN)
    browser.find_element(By.CSS_SELECTOR, "#login button[type=submit]").click()
    wait_until(browser, lambda b: b.find_elements(By.ID, "dashboard"), "the dashboard")


def test_the_dashboard_shows_the_top_pages_live_after_logging_in(
    browser: webdriver.Chrome,
    redis_nodes: list[RedisNodeProcess],
    service_factory: ServiceFactory,
) -> None:
    service = service_factory(redis_nodes, admin_token=TOKEN, dashboard_popular_threshold=POPULAR)
    admin = {"Authorization": f"Bearer {TOKEN}"}
    with httpx.Client(base_url=service.url, headers=admin) as client:
        client.post(f"{API}/visits", json=SEEDED).raise_for_status()

        log_in(browser, service.url)
        wait_until(browser, lambda b: counts(b) == SEEDED, f"the top pages {SEEDED}")

        shown = {row["page"]: row["shown"] for row in rows(browser)}
        for page, visits in SEEDED.items():
            expected = browser.execute_script(
                "return new Intl.NumberFormat().format(arguments[0])", visits
            )
            assert shown[page] == expected
        popular = {row["page"] for row in rows(browser) if row["popular"]}
        assert popular == {page for page, visits in SEEDED.items() if visits >= POPULAR}
        nodes = "#nodes li.up"
        wait_until(
            browser, lambda b: len(b.find_elements(By.CSS_SELECTOR, nodes)) == 3, "3 nodes up"
        )

        loaded_at = browser.execute_script("return performance.timeOrigin")
        for _ in range(NEW_PAGE_VISITS):
            client.post(f"{API}/visit/{page_path(NEW_PAGE)}").raise_for_status()
        wait_until(
            browser,
            lambda b: counts(b).get(NEW_PAGE) == NEW_PAGE_VISITS,
            f"{NEW_PAGE} to appear with {NEW_PAGE_VISITS} visits",
        )
        assert browser.execute_script("return performance.timeOrigin") == loaded_at  # no reload

    try:
        browser.set_window_size(*PHONE)
        width = browser.execute_script("return [innerWidth, document.documentElement.scrollWidth]")
        assert width[0] <= PHONE[0]
        assert width[1] <= width[0], f"scrolls sideways at {PHONE[0]} px: {width}"
    finally:
        browser.set_window_size(*WINDOW_SIZE)

    # The analytics routes (GET .../counter/totals and .../counter/stats/{page_id}).
    all_visits = sum(SEEDED.values()) + NEW_PAGE_VISITS
    wait_until(
        browser,
        lambda b: (
            b.find_element(By.ID, "total-visits").get_attribute("data-value") == str(all_visits)
        ),
        f"the 30-day total, {all_visits} (is GET {API}/totals there?)",
    )
    assert browser.find_element(By.ID, "total-pages").get_attribute("data-value") == "4"
    wait_until(
        browser,
        lambda b: all(row["points"] == 30 for row in rows(b)),
        f"a 30-day sparkline on every top page (is GET {API}/stats/<page> there?)",
    )
    assert console_errors(browser) == []


# Before the page's own script runs: the analytics routes answer 404, as on an older service.
WITHOUT_ANALYTICS = """
const realFetch = window.fetch;
window.fetch = (url, options) => /\\/counter\\/(totals|stats\\/)/.test(String(url))
  ? Promise.resolve(new Response("{}", { status: 404 }))
  : realFetch(url, options);
"""


def test_without_the_analytics_routes_the_top_list_still_shows(
    browser: webdriver.Chrome,
    redis_nodes: list[RedisNodeProcess],
    service_factory: ServiceFactory,
) -> None:
    service = service_factory(redis_nodes)  # no ADMIN_TOKEN: the page is open
    with httpx.Client(base_url=service.url) as client:
        client.post(f"{API}/visits", json=SEEDED).raise_for_status()
    added = browser.execute_cdp_cmd(
        "Page.addScriptToEvaluateOnNewDocument", {"source": WITHOUT_ANALYTICS}
    )
    try:
        browser.get(f"{service.url}/dashboard")
        wait_until(browser, lambda b: counts(b) == SEEDED, f"the top pages {SEEDED}")
    finally:
        browser.execute_cdp_cmd(
            "Page.removeScriptToEvaluateOnNewDocument", {"identifier": added["identifier"]}
        )
    assert all(row["points"] == 0 for row in rows(browser))  # no sparkline: a dash
    for total in ("total-pages", "total-visits", "total-unique"):
        assert browser.find_element(By.ID, total).text == "\u2014"
    assert console_errors(browser) == []
