"""In-process counters (manager + engine, no HTTP) on real nodes."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from app.core.config import Settings
from app.core.embedded_nodes import RedisNodeProcess
from app.core.redis_manager import RedisManager
from app.services.visit_counter import VisitCounter
from tests.support.proxy import FaultProxy

CounterFactory = Callable[[Settings], Awaitable[VisitCounter]]


@pytest.fixture
async def counter_factory() -> AsyncIterator[CounterFactory]:
    """Start counters as the lifespan would; close whatever the test left open."""
    running: list[tuple[VisitCounter, RedisManager]] = []

    async def factory(settings: Settings) -> VisitCounter:
        manager = RedisManager(settings)
        counter = VisitCounter(settings, manager)
        await manager.start()
        await counter.start()
        running.append((counter, manager))
        return counter

    yield factory
    for counter, manager in reversed(running):
        if not counter.closed:  # not closed (or "crashed") by the test itself
            await counter.aclose()
        await manager.aclose()


async def close(counter: VisitCounter) -> None:
    """Graceful stop of one counter (its manager is closed by the fixture)."""
    await counter.aclose()


@pytest.fixture
async def proxy(redis_nodes: list[RedisNodeProcess]) -> AsyncIterator[FaultProxy]:
    """A fault proxy in front of the first session node (see tests/support/proxy.py)."""
    fault_proxy = FaultProxy(redis_nodes[0].port)
    await fault_proxy.start()
    yield fault_proxy
    await fault_proxy.aclose()
