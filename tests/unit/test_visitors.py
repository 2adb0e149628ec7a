"""Who a visit is counted as: crawlers are never visitors, image proxies and API callers are
counted without one, and a browser is one visitor a day."""

from __future__ import annotations

import pytest

from tests.unit.test_bots import BROWSERS, CRAWLERS
from visit_counter.core.bots import BotFilter
from visit_counter.core.config import Settings
from visit_counter.core.visitor_id import VisitorIds
from visit_counter.core.visitors import Visitors

SECRET = "s" * 32
FIREFOX = BROWSERS["Firefox on Linux"]


@pytest.fixture(scope="module")
def bots() -> BotFilter:
    return BotFilter.from_crawler_list()


def visitors(bots: BotFilter, *, count_bots: bool = False) -> Visitors:
    return Visitors(bots, VisitorIds(SECRET), count_bots)


def test_a_browser_is_counted_as_its_visitor(bots: BotFilter) -> None:
    counted, visitor = visitors(bots).classify(FIREFOX, "203.0.113.7")
    assert counted
    assert visitor == VisitorIds(SECRET).visitor_id("203.0.113.7", FIREFOX)
    # Header bytes are the same visitor as their text.
    assert visitors(bots).classify(FIREFOX.encode("latin-1"), "203.0.113.7") == (True, visitor)


def test_a_crawler_is_not_counted_and_never_a_visitor(bots: BotFilter) -> None:
    googlebot = CRAWLERS["Googlebot"]
    assert visitors(bots).classify(googlebot, "203.0.113.7") == (False, None)
    assert visitors(bots, count_bots=True).classify(googlebot, "203.0.113.7") == (True, None)
    assert visitors(bots).visitor_of(googlebot, "203.0.113.7") is None


def test_an_image_proxy_is_counted_without_a_visitor(bots: BotFilter) -> None:
    proxy = (
        "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)"
    )
    assert visitors(bots).classify(proxy, "66.249.84.1") == (True, None)


def test_a_server_calling_the_api_is_counted_without_a_visitor(bots: BotFilter) -> None:
    assert visitors(bots).classify(None, "10.0.0.5") == (True, None)


def test_the_settings_build_the_secret_and_count_bots_in(bots: BotFilter) -> None:
    built = Visitors.for_settings(
        Settings(_env_file=None, count_bots=True, visitor_salt_secret=SECRET)
    )
    assert built.count_bots
    assert built.ids.shared_between_processes
    assert built.classify(FIREFOX, "203.0.113.7") == visitors(bots).classify(FIREFOX, "203.0.113.7")
