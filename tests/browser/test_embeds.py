"""The pixel and the badge in `<img>` tags of pages on another origin, in a real browser; and
which requests the crawler filter drops, over HTTP.

An image needs no CORS permission: the service runs without CORS_ALLOW_ORIGINS here.
"""

from __future__ import annotations

import httpx
import pytest
from selenium import webdriver

from tests.conftest import ServiceFactory
from tests.support.browser import console_errors
from tests.support.site import StaticSite, html_document
from tests.support.visits import API, counter_metrics, visits_of, wait_for_visits
from visit_counter.core.embedded_nodes import RedisNodeProcess

GOOGLEBOT = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
CURL = "curl/8.5.0"
IMAGE_STATE = (
    "const image = document.getElementById('embed');"
    "return [image.complete, image.naturalWidth, image.naturalHeight]"
)
SVG_TEXTS = "return Array.from(document.querySelectorAll('text'), text => text.textContent)"


def image_page(image_url: str) -> str:
    """A page showing `image_url` in `<img id="embed">`."""
    return html_document("Embed", f'<h1>An image</h1>\n<img id="embed" alt="" src="{image_url}">')


@pytest.mark.e2e
@pytest.mark.browser
def test_the_pixel_counts_each_load_of_a_page_on_another_origin(
    browser: webdriver.Chrome,
    site_origin: StaticSite,
    redis_nodes: list[RedisNodeProcess],
    service_factory: ServiceFactory,
) -> None:
    service = service_factory(redis_nodes)
    pixel_url = f"{service.url}{API}/pixel/newsletter/2026-11.gif"
    page_url = site_origin.write("newsletter.html", image_page(pixel_url))

    for visits in (1, 2, 3):
        browser.get(page_url)  # returns after the load event: the image has loaded or failed
        assert browser.execute_script(IMAGE_STATE) == [True, 1, 1]
        wait_for_visits(service.url, "newsletter/2026-11", visits)

    assert console_errors(browser) == []


@pytest.mark.e2e
@pytest.mark.browser
def test_the_badge_renders_the_count_and_does_not_count_by_itself(
    browser: webdriver.Chrome,
    site_origin: StaticSite,
    redis_nodes: list[RedisNodeProcess],
    service_factory: ServiceFactory,
) -> None:
    service = service_factory(redis_nodes)
    with httpx.Client(base_url=service.url) as client:
        for _ in range(2):
            client.post(f"{API}/visit/readme").raise_for_status()
    badge_url = f"{service.url}{API}/badge/readme.svg?label=views&color=green"
    page_url = site_origin.write("readme.html", image_page(badge_url))

    browser.get(page_url)
    complete, width, height = browser.execute_script(IMAGE_STATE)
    assert complete
    assert width > 0
    assert height == 20
    assert console_errors(browser) == []

    # The SVG itself, as the browser parsed it. (Read after the page's console: opened on its
    # own, the image makes the browser ask the service for /favicon.ico, a 404.)
    browser.get(badge_url)
    assert browser.execute_script(SVG_TEXTS) == ["views", "2"]
    assert visits_of(service.url, "readme") == 2


@pytest.mark.e2e
@pytest.mark.browser
def test_a_counting_badge_counts_each_load_and_shows_the_new_count(
    browser: webdriver.Chrome,
    site_origin: StaticSite,
    redis_nodes: list[RedisNodeProcess],
    service_factory: ServiceFactory,
) -> None:
    """`?count=true`: counted on every load, so the browser never served it from its cache."""
    service = service_factory(redis_nodes)
    badge_url = f"{service.url}{API}/badge/home.svg?count=true"
    page_url = site_origin.write("home.html", image_page(badge_url))

    for visits in (1, 2, 3):
        browser.get(page_url)
        complete, width, _ = browser.execute_script(IMAGE_STATE)
        assert complete
        assert width > 0
        wait_for_visits(service.url, "home", visits)
    assert console_errors(browser) == []

    browser.get(badge_url)  # a fourth load, and what it shows
    assert browser.execute_script(SVG_TEXTS) == ["visits", "4"]


@pytest.mark.e2e
def test_a_crawler_in_a_browser_is_not_counted_and_a_server_calling_the_api_is(
    redis_nodes: list[RedisNodeProcess], service_factory: ServiceFactory
) -> None:
    """Browsers do not let a page set User-Agent, so the crawler's requests are made here.

    A request with `Origin` comes from a browser, where User-Agent names the visitor's browser:
    Googlebot's is answered 200 and not counted. A server calling the API sends no `Origin`,
    and its User-Agent names its HTTP library (curl, which the crawler list names too): it is
    counted. The pixel is only ever loaded by browsers and image proxies: a crawler's load of
    it is not counted either.
    """
    service = service_factory(redis_nodes)
    with httpx.Client(base_url=service.url) as client:
        crawler = client.post(
            f"{API}/visit/landing",
            headers={"Origin": "https://www.example.com", "User-Agent": GOOGLEBOT},
        )
        server = client.post(f"{API}/visit/landing", headers={"User-Agent": CURL})
        pixel = client.get(f"{API}/pixel/landing.gif", headers={"User-Agent": GOOGLEBOT})

    assert crawler.status_code == 200
    assert crawler.json()["page_id"] == "landing"
    assert server.status_code == 200
    assert pixel.status_code == 200
    assert pixel.headers["content-type"] == "image/gif"
    assert visits_of(service.url, "landing") == 1
    metrics = counter_metrics(service.url)
    assert (metrics["visits_accepted"], metrics["bots_rejected"]) == (1, 2)
