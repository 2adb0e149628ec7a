"""Which pages' visitors a batch sends first today: their HyperLogLog needs its expiry set.

A page's visitors of a day are one HyperLogLog key on its node, created by the first PFADD,
which cannot set a TTL. Setting it with every PFADD would cost one more command per page
per batch; instead each writer remembers the pages whose key it has given the day's
expiry (EXPIREAT, absolute, so many writers setting it agree), and flags only the others
in the next batch (`Batch.fresh_visitors`). A page counts as done once a batch flagging it
was stored; until then every batch flags it again. After a topology change the pages may
have new owners whose keys have no expiry yet, so everything is flagged again; the same
when the memory bound is reached (a few more EXPIREATs, never a key without one).
"""

from __future__ import annotations

from collections.abc import Iterable

MAX_REMEMBERED = 100_000  # pages per writer and day; beyond it, start over


class FreshVisitors:
    def __init__(self, max_remembered: int = MAX_REMEMBERED) -> None:
        self._day = ""
        self._done: set[str] = set()
        self._max = max_remembered

    def fresh(self, day: str, pages: Iterable[str]) -> frozenset[str]:
        """Of `pages` (pages with visitors in a batch of `day`), the ones to flag."""
        if day != self._day:
            self._day, self._done = day, set()
        return frozenset(page for page in pages if page not in self._done)

    def stored(self, day: str, pages: Iterable[str]) -> None:
        """A batch of `day` flagging `pages` was stored: their keys have the expiry."""
        if day != self._day:
            return  # a day that is over; its keys were flagged and expire with it
        self._done.update(pages)
        if len(self._done) > self._max:
            self._done = set()

    def forget(self) -> None:
        """The topology changed: flag every page again."""
        self._done = set()
