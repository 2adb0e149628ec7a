"""Per-client token buckets for POST visits (RATE_LIMIT_PER_SECOND, RATE_LIMIT_BURST).

Pure and synchronous: no I/O, no awaits, so a check cannot interleave with another.
Each client IP has a bucket of `burst` tokens that refills at `rate` per second;
a visit takes one token, and a visit that finds less than one is refused (429)
and not counted.

Memory is bounded two ways. A client whose bucket has refilled completely is
indistinguishable from a client never seen, so it is forgotten; and at most
`max_clients` are tracked, the least recently seen dropped first. Dropping a
client only ever makes the limit more lenient for it: under a flood of distinct
addresses the limiter fails open rather than grow without bound.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable

from visit_counter.core.config import Settings

DEFAULT_MAX_CLIENTS = 65_536


class RateLimiter:
    """Token bucket per client. `retry_after(client)` is O(1) and allocates nothing for
    a client already tracked."""

    __slots__ = ("_buckets", "_burst", "_clock", "_full_after", "_max_clients", "_rate")

    def __init__(
        self,
        rate: float,
        burst: int,
        *,
        max_clients: int = DEFAULT_MAX_CLIENTS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if rate <= 0 or burst < 1 or max_clients < 1:
            raise ValueError("rate must be > 0, burst and max_clients >= 1")
        self._rate = float(rate)
        self._burst = float(burst)
        self._max_clients = max_clients
        self._clock = clock
        # An empty bucket is full again after this long: a client idle that long is forgettable.
        self._full_after = burst / rate
        # client -> [tokens, last seen], least recently seen first.
        self._buckets: OrderedDict[str, list[float]] = OrderedDict()

    def __len__(self) -> int:
        """Clients tracked right now."""
        return len(self._buckets)

    def retry_after(self, client: str) -> int:
        """Take a token for `client`: 0 when the visit may go ahead, else the whole
        seconds (at least 1) until the client has a token again."""
        now = self._clock()
        bucket = self._buckets.get(client)
        if bucket is None:
            self._make_room(now)
            self._buckets[client] = [self._burst - 1.0, now]
            return 0
        self._buckets.move_to_end(client)
        tokens = bucket[0] + (now - bucket[1]) * self._rate
        if tokens > self._burst:
            tokens = self._burst
        bucket[1] = now
        if tokens >= 1.0:
            bucket[0] = tokens - 1.0
            return 0
        bucket[0] = tokens
        return max(1, math.ceil((1.0 - tokens) / self._rate))

    def _make_room(self, now: float) -> None:
        """Before tracking a new client: forget up to two idle ones, and stay under the cap.

        Two per new client keeps the idle ones from piling up without ever scanning
        the whole table on a request.
        """
        buckets = self._buckets
        for _ in range(2):
            if not buckets:
                return
            oldest = next(iter(buckets.values()))
            if now - oldest[1] < self._full_after:
                break
            buckets.popitem(last=False)
        while len(buckets) >= self._max_clients:
            buckets.popitem(last=False)


def rate_limiter_for(settings: Settings) -> RateLimiter | None:
    """The limiter RATE_LIMIT_PER_SECOND asks for, or None when it is 0 (off)."""
    if settings.rate_limit_per_second <= 0:
        return None
    return RateLimiter(settings.rate_limit_per_second, settings.rate_limit_burst)
