"""Issue 9.4: a burst of TCP resets must not blind the service (uvloop, real processes).

A peer reset on an idle pooled connection surfaces from uvloop as a RuntimeError.
It once escaped the error handling of node calls, the health checks and the
events listener: the health-check task died, a killed node still showed
"healthy", and with the cache off GET and DELETE answered 500.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import httpx
import pytest

from tests.conftest import NodeFactory, ServiceFactory
from tests.support.load import post_visits, wait_for_stored
from tests.support.proxy import FaultProxy
from visit_counter.core.embedded_nodes import RedisNodeProcess

pytestmark = pytest.mark.fault

API = "/api/v1/counter"


@pytest.fixture
async def node_and_proxy(
    node_factory: NodeFactory,
) -> AsyncIterator[tuple[RedisNodeProcess, FaultProxy]]:
    node = node_factory(1)[0]
    proxy = FaultProxy(node.port)
    await proxy.start()
    yield node, proxy
    await proxy.aclose()


async def status_of(client: httpx.AsyncClient) -> str:
    return str((await client.get("/status")).json()["status"])


async def wait_for_status(client: httpx.AsyncClient, wanted: str, timeout: float = 10.0) -> str:
    deadline = time.monotonic() + timeout
    while (status := await status_of(client)) != wanted and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    return status


async def test_health_checks_reads_and_resets_survive_bursts_of_connection_resets(
    node_and_proxy: tuple[RedisNodeProcess, FaultProxy], service_factory: ServiceFactory
) -> None:
    node, proxy = node_and_proxy
    service = service_factory([node], redis_nodes=proxy.url, cache_ttl_seconds=0)
    before = await post_visits(service.url, ["home"], total=20)
    async with httpx.AsyncClient(base_url=service.url) as client:
        for _ in range(3):  # bursts on idle pooled connections
            await asyncio.sleep(0.4)
            assert proxy.reset_all() > 0
            await asyncio.sleep(0.4)
            read = await client.get(f"{API}/visits/home")
            assert read.status_code == 200, read.text
        assert await wait_for_status(client, "healthy") == "healthy"

        await asyncio.to_thread(node.kill)  # the health checks are alive: they see it
        assert await wait_for_status(client, "unhealthy") == "unhealthy"
        await asyncio.to_thread(node.start)
        assert await wait_for_status(client, "healthy") == "healthy"

        proxy.reset_all()
        await asyncio.sleep(0.2)
        reset = await client.delete(f"{API}/visits/home")
        assert reset.status_code == 200, reset.text
        after = await post_visits(service.url, ["home"], total=5)
    assert before.total_acked == 20
    assert await wait_for_stored([node], after.acked) == after.acked
    assert "Traceback" not in service.log()
