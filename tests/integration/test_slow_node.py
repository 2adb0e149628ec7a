"""Issue 9.5: a node that answers slowly, but within REDIS_TIMEOUT, stays usable after
its connections are reset.

Each new connection used to spend about three round trips on its handshake
(connect, AUTH, CLIENT SETINFO) inside the budget of one command, so once the
warm connections were gone every call timed out. Now the connection has its
own budget (REDIS_CONNECT_TIMEOUT) and the handshake is AUTH alone.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import redis

from app.core.embedded_nodes import RedisNodeProcess
from tests.conftest import NodeFactory, SettingsFactory
from tests.integration.conftest import CounterFactory
from tests.support.proxy import FaultProxy

pytestmark = pytest.mark.integration

TIMEOUT = 1.0
PASSWORD = "slow-node-password"


@pytest.fixture
async def slow_node(
    node_factory: NodeFactory,
) -> AsyncIterator[tuple[RedisNodeProcess, FaultProxy]]:
    node = node_factory(1, extra_args=["--requirepass", PASSWORD])[0]
    proxy = FaultProxy(node.port)
    await proxy.start()
    yield node, proxy
    await proxy.aclose()


def stored_with_password(node: RedisNodeProcess, page_id: str) -> int:
    with redis.Redis(port=node.port, password=PASSWORD) as client:
        return int(client.get(f"visits:{page_id}") or 0)


async def test_a_slow_node_is_usable_after_its_connections_are_reset(
    slow_node: tuple[RedisNodeProcess, FaultProxy],
    make_settings: SettingsFactory,
    counter_factory: CounterFactory,
) -> None:
    node, proxy = slow_node
    settings = make_settings(
        [node],
        redis_nodes=proxy.url,
        redis_password=PASSWORD,
        redis_timeout=TIMEOUT,
        redis_connect_timeout=TIMEOUT,
        batch_interval_seconds=60,
        health_check_interval_seconds=60,
    )
    counter = await counter_factory(settings)
    proxy.latency = 0.3 * TIMEOUT  # every reply: within REDIS_TIMEOUT, but not thrice
    for round_number in range(1, 4):
        for _ in range(5):
            counter.record_visit("slow-page")
        proxy.reset_all()  # the warm connections are gone: each call must reconnect
        await counter.flush()
        assert stored_with_password(node, "slow-page") == 5 * round_number
    assert counter.pending_visits() == 0
    reading = await counter.get_visits("slow-page")
    assert reading.visits == 15
