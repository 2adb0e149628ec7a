"""The per-client token bucket: burst, refill, Retry-After, and bounded memory."""

from __future__ import annotations

import pytest

from visit_counter.core.config import Settings
from visit_counter.services.rate_limit import RateLimiter, rate_limiter_for


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def test_a_burst_is_allowed_then_refused_with_the_wait(clock: FakeClock) -> None:
    limiter = RateLimiter(rate=2, burst=3, clock=clock)
    assert [limiter.retry_after("a") for _ in range(3)] == [0, 0, 0]
    assert limiter.retry_after("a") == 1  # half a second to the next token: rounded up
    clock.now += 0.5
    assert limiter.retry_after("a") == 0
    assert limiter.retry_after("a") == 1


def test_refused_visits_take_no_token(clock: FakeClock) -> None:
    limiter = RateLimiter(rate=1, burst=1, clock=clock)
    assert limiter.retry_after("a") == 0
    for _ in range(100):
        assert limiter.retry_after("a") == 1
    clock.now += 1.0
    assert limiter.retry_after("a") == 0


def test_retry_after_is_whole_seconds_and_at_least_one(clock: FakeClock) -> None:
    slow = RateLimiter(rate=0.1, burst=1, clock=clock)
    assert slow.retry_after("a") == 0
    assert slow.retry_after("a") == 10
    clock.now += 9.5
    assert slow.retry_after("a") == 1
    fast = RateLimiter(rate=1000, burst=1, clock=clock)
    assert fast.retry_after("b") == 0
    assert fast.retry_after("b") == 1


def test_the_bucket_refills_only_up_to_the_burst(clock: FakeClock) -> None:
    limiter = RateLimiter(rate=10, burst=2, clock=clock)
    limiter.retry_after("a")
    clock.now += 3600
    assert [limiter.retry_after("a") for _ in range(3)] == [0, 0, 1]


def test_clients_have_separate_buckets(clock: FakeClock) -> None:
    limiter = RateLimiter(rate=1, burst=1, clock=clock)
    assert limiter.retry_after("a") == 0
    assert limiter.retry_after("a") == 1
    assert limiter.retry_after("b") == 0


def test_idle_clients_are_forgotten_as_new_ones_arrive(clock: FakeClock) -> None:
    limiter = RateLimiter(rate=1, burst=2, clock=clock)  # full again 2 s after emptying
    for client in range(100):
        limiter.retry_after(f"old-{client}")
    clock.now += 2.0
    for client in range(30):
        limiter.retry_after(f"new-{client}")
    assert len(limiter) == 100 + 30 - 2 * 30  # two idle ones dropped per new client
    for client in range(30, 200):
        limiter.retry_after(f"new-{client}")
    assert len(limiter) == 200  # only the new ones, all still recent


def test_a_recently_seen_client_is_not_forgotten(clock: FakeClock) -> None:
    limiter = RateLimiter(rate=1, burst=1, clock=clock)
    limiter.retry_after("busy")
    clock.now += 0.5
    limiter.retry_after("other")
    assert limiter.retry_after("busy") == 1  # still limited: its bucket was kept


def test_the_number_of_clients_is_capped(clock: FakeClock) -> None:
    limiter = RateLimiter(rate=1, burst=5, max_clients=10, clock=clock)
    for client in range(1000):
        limiter.retry_after(f"c{client}")
        assert len(limiter) <= 10
    # The least recently seen go first: the last ten are the ones still tracked.
    limiter.retry_after("c999")
    assert limiter.retry_after("c999") == 0  # burst of 5: two of five used


def test_settings_turn_it_on_and_off() -> None:
    assert rate_limiter_for(Settings(_env_file=None)) is None
    limiter = rate_limiter_for(
        Settings(_env_file=None, rate_limit_per_second=5, rate_limit_burst=2)
    )
    assert limiter is not None
    assert [limiter.retry_after("x") for _ in range(3)] == [0, 0, 1]


@pytest.mark.parametrize(
    ("rate", "burst", "max_clients"), [(0, 1, 1), (-1, 1, 1), (1, 0, 1), (1, 1, 0)]
)
def test_nonsense_parameters_are_refused(rate: float, burst: int, max_clients: int) -> None:
    with pytest.raises(ValueError, match="rate must be"):
        RateLimiter(rate, burst, max_clients=max_clients)
