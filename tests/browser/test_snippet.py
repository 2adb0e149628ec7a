"""`/count.js` on pages of another origin, in a real browser: one tag counts the page, and the
page's `data-visit-count` elements show its count.

With such an element the snippet POSTs `…/visit/<page>?return=count` with `fetch` and reads the
answer, which needs the service's CORS permission for the page's origin (CORS_ALLOW_ORIGINS);
without one it sends a beacon, which needs none.
"""

from __future__ import annotations

import html
import time

import httpx
import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By

from tests.conftest import ServiceFactory
from tests.support.browser import console_errors, wait_for_console_error, wait_until
from tests.support.site import StaticSite, html_document
from tests.support.visits import API, visits_of, wait_for_visits
from visit_counter.core.embedded_nodes import RedisNodeProcess

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

COUNT_ELEMENT = "[data-visit-count]"


def snippet_page(service_url: str, *, data_page: str | None = None, show_count: bool = True) -> str:
    """A page with the one-tag snippet (and `data-page` when given) and, unless `show_count`
    is false, an element that shows the count."""
    page_attribute = f' data-page="{html.escape(data_page)}"' if data_page is not None else ""
    shown = "<p>Viewed <span data-visit-count></span> times.</p>\n" if show_count else ""
    return html_document(
        "Snippet",
        f"<h1>A page that counts itself</h1>\n{shown}"
        f'<script async src="{service_url}/count.js"{page_attribute}></script>',
    )


def shown_count(browser: webdriver.Chrome) -> str:
    return browser.find_element(By.CSS_SELECTOR, COUNT_ELEMENT).text


def wait_for_shown_count(browser: webdriver.Chrome, expected: str) -> None:
    wait_until(
        browser,
        lambda driver: shown_count(driver) == expected,
        f"the count element to show {expected!r} (it shows {shown_count(browser)!r})",
    )


def test_three_loads_show_1_then_2_then_3_and_the_service_agrees(
    browser: webdriver.Chrome,
    site_origin: StaticSite,
    redis_nodes: list[RedisNodeProcess],
    service_factory: ServiceFactory,
) -> None:
    service = service_factory(redis_nodes, cors_allow_origins=site_origin.origin)
    page_url = site_origin.write("counted.html", snippet_page(service.url))

    for expected in ("1", "2", "3"):  # Intl.NumberFormat: small numbers read the same anywhere
        browser.get(page_url)
        wait_for_shown_count(browser, expected)

    assert console_errors(browser) == []
    assert visits_of(service.url, "counted.html") == 3


def test_data_page_names_the_page_instead_of_its_path(
    browser: webdriver.Chrome,
    site_origin: StaticSite,
    redis_nodes: list[RedisNodeProcess],
    service_factory: ServiceFactory,
) -> None:
    """Also: with CORS_ALLOW_ORIGINS=* any origin's page reads its count."""
    service = service_factory(redis_nodes, cors_allow_origins="*")
    page_url = site_origin.write("article.html", snippet_page(service.url, data_page="custom/id"))

    browser.get(page_url)
    wait_for_shown_count(browser, "1")

    assert console_errors(browser) == []
    assert visits_of(service.url, "custom/id") == 1
    assert visits_of(service.url, "article.html") == 0


def test_a_page_without_a_count_element_is_counted_once_per_load_by_a_beacon(
    browser: webdriver.Chrome,
    site_origin: StaticSite,
    redis_nodes: list[RedisNodeProcess],
    service_factory: ServiceFactory,
) -> None:
    """No CORS_ALLOW_ORIGINS at all: a beacon needs no permission to be sent."""
    service = service_factory(redis_nodes)
    page_url = site_origin.write("quiet.html", snippet_page(service.url, show_count=False))
    visit_requests = (
        "return performance.getEntriesByType('resource')"
        ".filter(entry => entry.name.includes('/counter/visit/'))"
        ".map(entry => [entry.initiatorType, entry.name])"
    )

    keys = set()
    for visits in (1, 2, 3):
        browser.get(page_url)
        wait_for_visits(service.url, "quiet.html", visits)
        sent = wait_until(
            browser, lambda driver: driver.execute_script(visit_requests), "the visit request"
        )
        [(initiator, url)] = sent
        visit_url, _, key = url.partition("?idempotency_key=")
        assert (initiator, visit_url) == ("beacon", f"{service.url}{API}/visit/%2Fquiet.html")
        keys.add(key)

    assert console_errors(browser) == []
    assert len(keys) == 3, "each load has its own key"
    with httpx.Client() as client:  # the browser sends the last beacon again
        assert client.post(url).status_code == 200
    time.sleep(0.5)  # past the service's flush interval
    assert visits_of(service.url, "quiet.html") == 3, "a repeated beacon counts once"


def test_url_paths_are_counted_under_their_canonical_page_ids(
    browser: webdriver.Chrome,
    site_origin: StaticSite,
    redis_nodes: list[RedisNodeProcess],
    service_factory: ServiceFactory,
) -> None:
    """The snippet counts `location.pathname`, which the browser gives percent-encoded; the
    service stores the id without its leading slash, decoded (README, "Page ids"), the same
    id a server posting the path gets. The site root is the id `/`."""
    service = service_factory(redis_nodes, cors_allow_origins=site_origin.origin)
    pages = [  # (the page's path on the site, location.pathname, the service's page id)
        ("blog/2026/hello.html", "/blog/2026/hello.html", "blog/2026/hello.html"),
        ("blog/café.html", "/blog/caf%C3%A9.html", "blog/café.html"),
        ("", "/", "/"),  # the site root, served from index.html
    ]

    for path, pathname, page_id in pages:
        site_origin.write(path or "index.html", snippet_page(service.url))
        browser.get(site_origin.url(path))
        assert browser.execute_script("return location.pathname") == pathname
        wait_for_shown_count(browser, "1")
        assert visits_of(service.url, page_id) == 1

    assert console_errors(browser) == []
    assert visits_of(service.url, "blog/caf%C3%A9.html") == 0  # not split in two spellings


def test_an_origin_cors_does_not_allow_is_counted_but_never_shown_its_count(
    browser: webdriver.Chrome,
    site_origin: StaticSite,
    redis_nodes: list[RedisNodeProcess],
    service_factory: ServiceFactory,
) -> None:
    """What a site whose origin is not in CORS_ALLOW_ORIGINS sees.

    The snippet's POST carries no body and no custom header, so the browser sends it without
    asking first (no preflight): the service counts the visit. Its answer carries no
    `Access-Control-Allow-Origin` for this origin, so the browser keeps it from the script:
    the count element stays empty, and the console shows the CORS error (the page's author
    learns what to configure). Asserted in that order: the error, which says the answer came
    back and was withheld; then the empty element; then the count the service holds.
    """
    service = service_factory(redis_nodes, cors_allow_origins="https://www.example.com")
    page_url = site_origin.write("elsewhere.html", snippet_page(service.url))

    browser.get(page_url)
    errors = wait_for_console_error(browser, "blocked by CORS policy")

    assert any("No 'Access-Control-Allow-Origin' header" in error.message for error in errors)
    assert shown_count(browser) == ""
    assert visits_of(service.url, "elsewhere.html") == 1
