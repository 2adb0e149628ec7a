"""In-process counters (manager + engine, no HTTP) on real nodes."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from tests.support.proxy import FaultProxy
from visit_counter.core.config import Settings
from visit_counter.core.embedded_nodes import RedisNodeProcess
from visit_counter.services.running import running_counter
from visit_counter.services.visit_counter import VisitCounter

CounterFactory = Callable[[Settings], Awaitable[VisitCounter]]


@pytest.fixture
async def counter_factory() -> AsyncIterator[CounterFactory]:
    """Start counters as the lifespan would; close whatever the test left open."""
    async with contextlib.AsyncExitStack() as running:

        async def factory(settings: Settings) -> VisitCounter:
            return await running.enter_async_context(running_counter(settings))

        yield factory


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
