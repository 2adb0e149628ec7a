"""A TTL + LRU cache of stored counts (what the nodes hold, never pending increments)."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable


class StoredCountCache:
    """Page -> last count read from (or written to) its node.

    An entry is *fresh* for `ttl` seconds and then only *last known*: still
    useful to answer, marked stale, while the node is down. At most `capacity`
    entries are kept; the least recently used goes first. Capacity 0 disables it.
    """

    def __init__(
        self, ttl: float, capacity: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.ttl = ttl
        self.capacity = capacity
        self._clock = clock
        self._entries: OrderedDict[str, tuple[int, float]] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, page_id: object) -> bool:
        return page_id in self._entries

    def fresh(self, page_id: str) -> int | None:
        """The cached count if younger than the TTL (counted as a hit), else None (a miss)."""
        entry = self._entries.get(page_id)
        if entry is not None and self._clock() - entry[1] < self.ttl:
            self._entries.move_to_end(page_id)
            self.hits += 1
            return entry[0]
        self.misses += 1
        return None

    def last_known(self, page_id: str) -> int | None:
        """The cached count whatever its age, or None."""
        entry = self._entries.get(page_id)
        return None if entry is None else entry[0]

    def put(self, page_id: str, stored: int) -> None:
        if self.capacity == 0:
            return
        self._entries[page_id] = (stored, self._clock())
        self._entries.move_to_end(page_id)
        while len(self._entries) > self.capacity:
            self._entries.popitem(last=False)

    def raise_to(self, page_id: str, stored: int) -> None:
        """Refresh an existing entry with a newer count; stored counts only grow between resets."""
        entry = self._entries.get(page_id)
        if entry is not None and stored >= entry[0]:
            self._entries[page_id] = (stored, self._clock())

    def discard(self, page_id: str) -> None:
        self._entries.pop(page_id, None)

    def clear(self) -> None:
        """Forget every entry (the counts may live on other nodes now)."""
        self._entries.clear()
