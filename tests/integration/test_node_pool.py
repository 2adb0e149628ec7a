"""Each node's connection pool is bounded (REDIS_POOL_SIZE), and a busy pool makes calls wait.

redis-py's default pool fails a call at once when its 100 connections are in use
(MaxConnectionsError), and the engine then marked the node down: 600 concurrent
reads through the service marked all three nodes down and answered half with 503.
"""

from __future__ import annotations

import asyncio

import pytest
import redis

from tests.conftest import SettingsFactory
from visit_counter.core.embedded_nodes import RedisNodeProcess
from visit_counter.core.redis_manager import RedisManager
from visit_counter.services.running import running_counter

pytestmark = pytest.mark.integration

POOL_SIZE = 4


def service_connections(node: RedisNodeProcess) -> int:
    """Connections to `node` other than this one (the counter's pool and pub/sub)."""
    with redis.Redis(port=node.port) as admin:
        return len(admin.client_list()) - 1


async def test_reads_far_beyond_the_pool_size_wait_for_a_connection(
    redis_nodes: list[RedisNodeProcess], make_settings: SettingsFactory
) -> None:
    settings = make_settings(redis_nodes, redis_pool_size=POOL_SIZE, cache_capacity=0)
    async with running_counter(settings) as counter:
        for number in range(30):
            for _ in range(number % 3 + 1):
                counter.record_visit(f"pooled-{number}")
        await counter.flush()
        pages = [f"pooled-{number % 30}" for number in range(600)]
        counts = await asyncio.gather(*(counter.get_visits(page) for page in pages))
        assert [count.visits for count in counts] == [number % 30 % 3 + 1 for number in range(600)]
        assert not any(count.stale for count in counts)
        assert all(counter.nodes.manager.node_status().values())
        assert all(service_connections(node) <= POOL_SIZE for node in redis_nodes)


async def test_calls_in_flight_when_their_node_is_removed_leave_no_connection_open(
    redis_nodes: list[RedisNodeProcess], make_settings: SettingsFactory
) -> None:
    """A call that was opening its connection when the pool closed must not keep it open."""
    node = redis_nodes[0]
    manager = RedisManager(make_settings([node]))
    manager.add_node("leaving", node.url)
    client = manager.client("leaving")
    calls = [asyncio.create_task(client.ping()) for _ in range(POOL_SIZE)]
    await asyncio.sleep(0)  # every call is now opening its connection
    await manager.remove_node("leaving")
    assert await asyncio.gather(*calls) == [True] * POOL_SIZE
    assert service_connections(node) > 0  # what the calls opened after the removal

    await manager.check_all()  # the health checks close what the retired pool holds

    assert service_connections(node) == 0
    await manager.aclose()
