"""Crawler detection by User-Agent, so that robots' requests are not counted as visits.

The patterns are the list maintained at github.com/monperrus/crawler-user-agents, from its
PyPI package (`crawler-user-agents`, pinned in requirements.txt): about 1,500 regexes, each
with example User-Agents, covering search engines (Googlebot, bingbot), AI crawlers (GPTBot,
ClaudeBot), SEO tools (AhrefsBot, SemrushBot), social previews (facebookexternalhit),
monitors, feed readers, archivers, scanners, headless browsers (HeadlessChrome) and HTTP
libraries and tools (curl, Wget, python-requests, Go-http-client, okhttp). It recognises
crawlers that say what they are: a robot sending a browser's User-Agent is counted.

The patterns are case-sensitive, as the list intends (its validation requires every example
to match exactly, and its own `is_crawler` defaults to `case_sensitive=True`): `Googlebot/`
is a crawler, `googlebot/` is not.

A missing or empty User-Agent is *not* a bot. That is what the list answers (no pattern
matches an empty string) and what `isbot`, the most used JavaScript detector, does (it
requires a non-empty string). A client that says nothing has not declared itself a robot;
and a robot that wanted to be counted could send any browser's User-Agent anyway.

`BotFilter` compiles the list into one regex (visit_counter/core/pattern_union.py) once, when the
service starts, and remembers its last answers: real traffic repeats a few User-Agents.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable

from visit_counter.core.pattern_union import union_pattern

CACHE_SIZE = 1024
# Longer User-Agents are answered without the cache, which so holds at most ~0.5 MB of text.
# Browsers send 100-300 characters; a very long one is rare, or someone filling the cache.
MAX_CACHED_LENGTH = 512
# The list is read as HTTP headers are decoded: Latin-1 maps every byte to one character.
HEADER_ENCODING = "latin-1"


class BotFilter:
    """Answers `is_bot(user_agent)` from a set of search patterns, remembering recent answers.

    Build it once per process (it compiles ~1,500 patterns, about 0.1 s) and share it.
    """

    def __init__(self, patterns: Iterable[str], *, cache_size: int = CACHE_SIZE) -> None:
        self._patterns = tuple(patterns)
        self._regex = re.compile(union_pattern(self._patterns))
        self._cached_matches = functools.lru_cache(maxsize=cache_size)(self.matches)

    @classmethod
    def from_crawler_list(cls, *, cache_size: int = CACHE_SIZE) -> BotFilter:
        """The filter of the crawler-user-agents list installed with the service."""
        return cls(crawler_patterns(), cache_size=cache_size)

    @property
    def pattern_count(self) -> int:
        return len(self._patterns)

    @property
    def cached_answers(self) -> int:
        """User-Agents whose answer is remembered now (at most the cache size)."""
        return self._cached_matches.cache_info().currsize

    def is_bot(self, user_agent: str | bytes | None) -> bool:
        """True when `user_agent` (a header's text, or its raw bytes) is a known crawler's.

        None and empty are not bots (see the module docstring). Answers for User-Agents up to
        MAX_CACHED_LENGTH characters are remembered, the least recently asked forgotten first.
        """
        if not user_agent:
            return False
        if len(user_agent) > MAX_CACHED_LENGTH:
            return self.matches(user_agent)
        return self._cached_matches(user_agent)

    def matches(self, user_agent: str | bytes) -> bool:
        """The regex's answer, never cached: whether some pattern is found in `user_agent`."""
        if isinstance(user_agent, bytes):
            user_agent = user_agent.decode(HEADER_ENCODING)
        return self._regex.search(user_agent) is not None


def crawler_patterns() -> list[str]:
    """The patterns of the installed crawler-user-agents list, in its order."""
    # Imported here, not at the top: the package parses its JSON list when imported, and
    # this module is imported by code (the CLI, tests) that never builds a filter.
    import crawleruseragents  # type: ignore[import-untyped]  # the package ships no types

    entries = crawleruseragents.CRAWLER_USER_AGENTS_DATA
    if not isinstance(entries, list) or not entries:
        raise RuntimeError("crawler-user-agents: the installed list is empty or unreadable")
    return [str(entry["pattern"]) for entry in entries]
