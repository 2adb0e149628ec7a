"""StoredCountCache: TTL freshness, last-known values, LRU bound, counters."""

from __future__ import annotations

import pytest

from visit_counter.services.cache import StoredCountCache


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def test_an_entry_is_fresh_until_its_ttl_and_expired_from_then_on(clock: FakeClock) -> None:
    cache = StoredCountCache(ttl=5.0, capacity=10, clock=clock)
    cache.put("home", 7)

    clock.advance(4.999)
    assert cache.fresh("home") == 7
    clock.advance(0.001)
    assert cache.fresh("home") is None


def test_last_known_survives_the_ttl(clock: FakeClock) -> None:
    cache = StoredCountCache(ttl=1.0, capacity=10, clock=clock)
    cache.put("home", 3)

    clock.advance(3600)

    assert cache.fresh("home") is None
    assert cache.last_known("home") == 3
    assert "home" in cache
    assert cache.last_known("other") is None


def test_put_restarts_the_ttl(clock: FakeClock) -> None:
    cache = StoredCountCache(ttl=5.0, capacity=10, clock=clock)
    cache.put("home", 1)
    clock.advance(4)
    cache.put("home", 2)
    clock.advance(4)

    assert cache.fresh("home") == 2


def test_the_least_recently_used_entry_is_evicted_at_capacity(clock: FakeClock) -> None:
    cache = StoredCountCache(ttl=60.0, capacity=3, clock=clock)
    cache.put("a", 1)
    cache.put("b", 2)
    cache.put("c", 3)
    assert cache.fresh("a") == 1  # a is now the most recently used; b the least

    cache.put("d", 4)
    assert len(cache) == 3
    assert "b" not in cache
    assert {page for page in "acd" if page in cache} == {"a", "c", "d"}

    cache.put("c", 30)  # rewriting c makes it recent too: a is the oldest now
    cache.put("e", 5)
    assert "a" not in cache
    assert [cache.last_known(page) for page in "cde"] == [30, 4, 5]


def test_capacity_zero_stores_nothing(clock: FakeClock) -> None:
    cache = StoredCountCache(ttl=60.0, capacity=0, clock=clock)
    cache.put("home", 5)
    cache.raise_to("home", 9)

    assert len(cache) == 0
    assert "home" not in cache
    assert cache.fresh("home") is None
    assert cache.last_known("home") is None


def test_ttl_zero_is_never_fresh_but_still_last_known(clock: FakeClock) -> None:
    cache = StoredCountCache(ttl=0.0, capacity=10, clock=clock)
    cache.put("home", 5)

    assert cache.fresh("home") is None
    assert cache.last_known("home") == 5
    assert (cache.hits, cache.misses) == (0, 1)


def test_hits_and_misses_are_counted_by_fresh_only(clock: FakeClock) -> None:
    cache = StoredCountCache(ttl=5.0, capacity=10, clock=clock)
    cache.put("home", 1)

    cache.fresh("home")  # hit
    cache.fresh("home")  # hit
    cache.fresh("absent")  # miss
    cache.last_known("home")  # neither
    cache.last_known("absent")  # neither
    clock.advance(10)
    cache.fresh("home")  # miss: expired

    assert (cache.hits, cache.misses) == (2, 2)


def test_raise_to_raises_an_existing_entry_and_refreshes_it(clock: FakeClock) -> None:
    cache = StoredCountCache(ttl=5.0, capacity=10, clock=clock)
    cache.put("home", 10)
    clock.advance(6)
    assert cache.fresh("home") is None

    cache.raise_to("home", 12)

    assert cache.fresh("home") == 12


def test_raise_to_never_lowers(clock: FakeClock) -> None:
    cache = StoredCountCache(ttl=5.0, capacity=10, clock=clock)
    cache.put("home", 10)

    cache.raise_to("home", 9)

    assert cache.last_known("home") == 10


def test_raise_to_never_creates_an_entry(clock: FakeClock) -> None:
    cache = StoredCountCache(ttl=5.0, capacity=10, clock=clock)

    cache.raise_to("home", 12)

    assert "home" not in cache
    assert cache.last_known("home") is None
    assert len(cache) == 0


def test_discard_forgets_an_entry_and_ignores_unknown_pages(clock: FakeClock) -> None:
    cache = StoredCountCache(ttl=5.0, capacity=10, clock=clock)
    cache.put("home", 10)
    cache.put("about", 2)

    cache.discard("home")
    cache.discard("never-seen")

    assert "home" not in cache
    assert cache.last_known("home") is None
    assert cache.fresh("home") is None
    assert cache.last_known("about") == 2
    assert len(cache) == 1
