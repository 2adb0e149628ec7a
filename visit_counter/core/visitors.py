"""Who made a visit: whether it is counted (crawlers are not, unless COUNT_BOTS) and, when the
visitor is known, their visitor id for the day's unique visitors.

The visitor is known when the request came from the visitor's own browser: the snippet's
or beacon's request (it carries `Origin` or `Sec-Fetch-Site`), a pixel or badge load, or a
page of an app counted by `VisitCounterMiddleware`. There the client address and the
User-Agent are the visitor's, and `VisitorIds` turns them into a daily id that stores
neither. A server calling `POST /counter/visit` is one caller speaking for many visitors:
its visits are counted, and not as anyone's.

Crawlers are never visitors, even with COUNT_BOTS=true (which counts their visits). Nor are
image proxies (Gmail's, GitHub's camo): they load a pixel or badge for each person who
opens a mail or page, so their visits are counted, but from one address for everyone.
"""

from __future__ import annotations

from dataclasses import dataclass

from visit_counter.core.bots import HEADER_ENCODING, BotFilter
from visit_counter.core.config import Settings
from visit_counter.core.visitor_id import VisitorIds, visitor_ids_for

# Image proxies that fetch an image each time a person opens a mail or page (the crawler
# list names them, as they are automated): a pixel or badge they load is a human's view.
IMAGE_PROXIES = ("GoogleImageProxy", "YahooMailProxy", "github-camo")
_IMAGE_PROXY_BYTES = tuple(name.encode() for name in IMAGE_PROXIES)

NOT_COUNTED = (False, None)


def image_proxy(user_agent: str | bytes) -> bool:
    if isinstance(user_agent, bytes):
        return any(name in user_agent for name in _IMAGE_PROXY_BYTES)
    return any(name in user_agent for name in IMAGE_PROXIES)


@dataclass(frozen=True, slots=True)
class Visitors:
    bots: BotFilter
    ids: VisitorIds
    count_bots: bool = False

    @classmethod
    def for_settings(cls, settings: Settings) -> Visitors:
        """Compiles the crawler list (about 0.1 s): build it once per process."""
        return cls(BotFilter.from_crawler_list(), visitor_ids_for(settings), settings.count_bots)

    def classify(
        self, browser_user_agent: str | bytes | None, client_host: str
    ) -> tuple[bool, str | None]:
        """(whether to count the visit, the visitor's id or None).

        `browser_user_agent`: the User-Agent of a request the visitor's browser sent (see
        the module docstring), None for a server calling the API: counted, no visitor.
        """
        if browser_user_agent is None or image_proxy(browser_user_agent):
            return True, None
        if self.bots.is_bot(browser_user_agent):
            return (True, None) if self.count_bots else NOT_COUNTED
        return True, self._id_of(browser_user_agent, client_host)

    def visitor_of(self, user_agent: str | bytes, client_host: str) -> str | None:
        """The visitor id of a request the visitor sent, None for a crawler or image proxy."""
        if image_proxy(user_agent) or self.bots.is_bot(user_agent):
            return None
        return self._id_of(user_agent, client_host)

    def _id_of(self, user_agent: str | bytes, client_host: str) -> str:
        if isinstance(user_agent, bytes):
            user_agent = user_agent.decode(HEADER_ENCODING)
        return self.ids.visitor_id(client_host, user_agent)
