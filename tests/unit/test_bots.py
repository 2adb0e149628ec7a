"""The bot filter: what the crawler-user-agents list calls a crawler, and nothing else.

The expected answers are the list's own: its examples (`instances`) and its package's
`is_crawler`, which searches the patterns one group at a time (no union, no cache).
"""

from __future__ import annotations

import crawleruseragents  # type: ignore[import-untyped]
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from visit_counter.core.bots import MAX_CACHED_LENGTH, BotFilter, crawler_patterns

BROWSERS = {
    "Chrome on Windows": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
    "Chrome on Android": "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Chrome/131.0.0.0 Mobile Safari/537.36",
    "Firefox on Linux": "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
    "Firefox on Android": "Mozilla/5.0 (Android 14; Mobile; rv:133.0) Gecko/133.0 Firefox/133.0",
    "Safari on iOS": "Mozilla/5.0 (iPhone; CPU iPhone OS 17_6 like Mac OS X) "
    "AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.6 Mobile/15E148 Safari/604.1",
    "Safari on macOS": "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/18.1 Safari/605.1.15",
    "Edge": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36 Edg/131.0.0.0",
    "Samsung Internet": "Mozilla/5.0 (Linux; Android 14; SAMSUNG SM-S918B) AppleWebKit/537.36 "
    "(KHTML, like Gecko) SamsungBrowser/25.0 Chrome/121.0.0.0 Mobile Safari/537.36",
    "Opera": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Chrome/130.0.0.0 Safari/537.36 OPR/115.0.0.0",
}

CRAWLERS = {
    "Googlebot": "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "Googlebot smartphone": "Mozilla/5.0 (Linux; Android 6.0.1; Nexus 5X Build/MMB29P) "
    "AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Mobile Safari/537.36 "
    "(compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "Bingbot": "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
    "GPTBot": "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; GPTBot/1.2; "
    "+https://openai.com/gptbot)",
    "ClaudeBot": "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; ClaudeBot/1.0; "
    "+claudebot@anthropic.com)",
    "AhrefsBot": "Mozilla/5.0 (compatible; AhrefsBot/7.0; +http://ahrefs.com/robot/)",
    "facebookexternalhit": "facebookexternalhit/1.1 "
    "(+http://www.facebook.com/externalhit_uatext.php)",
    "HeadlessChrome": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 "
    "(KHTML, like Gecko) HeadlessChrome/131.0.0.0 Safari/537.36",
    "curl": "curl/8.5.0",
    "Wget": "Wget/1.21.3",
    "python-requests": "python-requests/2.32.3",
    "Go-http-client": "Go-http-client/1.1",
}


@pytest.fixture(scope="module")
def bot_filter() -> BotFilter:
    return BotFilter.from_crawler_list()


def list_examples() -> list[str]:
    return [
        example
        for entry in crawleruseragents.CRAWLER_USER_AGENTS_DATA
        for example in entry.get("instances", [])
    ]


@pytest.mark.parametrize("user_agent", BROWSERS.values(), ids=BROWSERS.keys())
def test_browsers_are_not_bots(bot_filter: BotFilter, user_agent: str) -> None:
    assert not bot_filter.is_bot(user_agent)


@pytest.mark.parametrize("user_agent", CRAWLERS.values(), ids=CRAWLERS.keys())
def test_crawlers_are_bots(bot_filter: BotFilter, user_agent: str) -> None:
    assert bot_filter.is_bot(user_agent)


def test_every_example_of_the_list_is_a_bot(bot_filter: BotFilter) -> None:
    examples = list_examples()
    assert len(examples) > 1000
    assert [example for example in examples if not bot_filter.is_bot(example)] == []


def test_the_filter_holds_the_whole_installed_list(bot_filter: BotFilter) -> None:
    assert bot_filter.pattern_count == len(crawleruseragents.CRAWLER_USER_AGENTS_DATA) > 1000
    assert crawler_patterns()[0] == crawleruseragents.CRAWLER_USER_AGENTS_DATA[0]["pattern"]


def test_the_patterns_are_case_sensitive_as_the_list_intends(bot_filter: BotFilter) -> None:
    assert bot_filter.is_bot("Googlebot/2.1")
    assert not bot_filter.is_bot("googlebot/2.1")
    assert crawleruseragents.is_crawler("googlebot/2.1") is False


@pytest.mark.parametrize("user_agent", [None, "", b""])
def test_a_missing_or_empty_user_agent_is_not_a_bot(
    bot_filter: BotFilter, user_agent: str | bytes | None
) -> None:
    assert bot_filter.is_bot(user_agent) is False


def test_header_bytes_get_the_answers_of_their_text(bot_filter: BotFilter) -> None:
    assert bot_filter.is_bot(CRAWLERS["Googlebot"].encode("latin-1"))
    assert not bot_filter.is_bot(BROWSERS["Safari on iOS"].encode("latin-1"))
    # Bytes that are not UTF-8 are still read (as Latin-1), not an error.
    assert not bot_filter.is_bot(b"Mozilla/5.0 \xff\xfe")
    assert bot_filter.is_bot(b"curl/8 \xff")


def test_a_long_user_agent_is_answered_but_not_remembered() -> None:
    bot_filter = BotFilter.from_crawler_list()
    padding = "x" * MAX_CACHED_LENGTH
    assert bot_filter.is_bot(padding + " Googlebot/2.1")
    assert not bot_filter.is_bot(padding + " Firefox/133.0")
    assert bot_filter.cached_answers == 0


def test_the_cache_is_bounded() -> None:
    bot_filter = BotFilter(["bot"], cache_size=8)
    answers = [bot_filter.is_bot(f"agent {number} {'bot' * (number % 2)}") for number in range(50)]
    assert answers == [number % 2 == 1 for number in range(50)]
    assert bot_filter.cached_answers == 8


def test_a_remembered_answer_is_the_same_answer() -> None:
    bot_filter = BotFilter(["bot"], cache_size=8)
    assert [bot_filter.is_bot("a bot") for _ in range(3)] == [True, True, True]
    assert [bot_filter.is_bot("a human") for _ in range(3)] == [False, False, False]
    assert bot_filter.cached_answers == 2


EXAMPLES = list_examples()
user_agent_text = st.one_of(
    st.text(max_size=80),
    st.tuples(st.text(max_size=20), st.sampled_from(EXAMPLES), st.text(max_size=20)).map("".join),
    st.sampled_from(list(BROWSERS.values())),
)


@settings(max_examples=300, deadline=None)
@given(user_agent=user_agent_text)
def test_cached_answers_are_the_regex_answers_and_the_lists(
    bot_filter: BotFilter, user_agent: str
) -> None:
    uncached = bot_filter.matches(user_agent)
    assert bot_filter.is_bot(user_agent) == uncached  # first time: computed, then remembered
    assert bot_filter.is_bot(user_agent) == uncached  # second time: from the cache
    assert uncached == crawleruseragents.is_crawler(user_agent)
