"""Issue 9.5: a node that answers slowly, but within REDIS_TIMEOUT, stays usable after
its connections are reset.

Each new connection used to spend about three round trips on its handshake
(connect, AUTH, CLIENT SETINFO) inside the budget of one command, so once the
warm connections were gone every call timed out. Now the connection has its
own budget (REDIS_CONNECT_TIMEOUT) and the handshake is AUTH alone.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import redis

from tests.conftest import NodeFactory, SettingsFactory
from tests.integration.conftest import CounterFactory
from tests.support.proxy import FaultProxy
from visit_counter.core.embedded_nodes import RedisNodeProcess

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


async def test_a_slow_node_that_falls_behind_has_its_queue_journaled_not_held_in_memory(
    slow_node: tuple[RedisNodeProcess, FaultProxy],
    make_settings: SettingsFactory,
    counter_factory: CounterFactory,
) -> None:
    """MAX_PENDING_PAGES_PER_NODE bounds memory for a node that answers, too: what piles up
    behind a slow flush goes to the journal, and arrives once."""
    node, proxy = slow_node
    cap = 40
    settings = make_settings(
        [node],
        redis_nodes=proxy.url,
        redis_password=PASSWORD,
        batch_interval_seconds=60,
        batch_size_limit=cap,
        max_pending_pages_per_node=cap,
    )
    counter = await counter_factory(settings)
    counter.record_visit("warm-up")
    await counter.flush()
    proxy.latency = 0.5  # healthy, but each batch takes half a second
    for number in range(cap):
        counter.record_visit(f"early-{number}")
    sending = asyncio.create_task(counter.flush())
    await asyncio.sleep(0.1)  # the first batch is on its way
    for number in range(3 * cap):
        counter.record_visit(f"late-{number}")
    behind = asyncio.create_task(counter.flush())  # the queue is past the cap: to disk
    await asyncio.sleep(0)

    assert counter.nodes.manager.is_healthy(proxy.url)
    assert counter.journal_batches() == 1, "the late pages went to the journal"
    assert counter.outbox(proxy.url).pages_in_memory == cap, "only the batch being sent"
    await asyncio.gather(sending, behind)
    await counter.flush()
    assert counter.journal_batches() == 0
    assert stored_with_password(node, "early-0") == 1
    assert sum(stored_with_password(node, f"late-{n}") for n in range(3 * cap)) == 3 * cap
