"""G6 with JOURNAL_VISITS: `kill -9` of the service under load loses no acknowledged visit."""

from __future__ import annotations

import asyncio

import pytest

from tests.conftest import NodeFactory, ServiceFactory
from tests.support.load import LoadResult, load_until_killed, wait_for_stored_between

pytestmark = pytest.mark.fault

PAGES = [f"story-{number}" for number in range(30)]
CLIENTS = 8


@pytest.mark.parametrize("node_down", [False, True], ids=["nodes-up", "one-node-down"])
async def test_kill_9_under_load_with_the_visit_log_loses_nothing(
    node_down: bool, node_factory: NodeFactory, service_factory: ServiceFactory
) -> None:
    nodes = node_factory(3)
    # A long flush interval: at the crash most acknowledged visits exist only in
    # memory and in the visit log.
    settings = {"journal_visits": "true", "batch_interval_seconds": 2}
    service = service_factory(nodes, workers=2, **settings)
    result = LoadResult()
    load = load_until_killed(service.url, PAGES, CLIENTS, result)
    while result.total_acked < 1000:
        await asyncio.sleep(0.02)
    if node_down:
        await asyncio.to_thread(nodes[2].kill)
    while result.total_acked < 3000:
        await asyncio.sleep(0.02)

    await asyncio.to_thread(service.kill)  # SIGKILL to the server and every worker
    await load
    assert not result.refused

    # Each client stops at its first unanswered request: at most one per client, and
    # such a visit may or may not have been counted before the process died.
    assert result.errors <= CLIENTS

    if node_down:
        await asyncio.to_thread(nodes[2].start)
    service_factory(nodes, workers=2, **settings)
    stored = await wait_for_stored_between(nodes, result)
    await asyncio.sleep(1.0)  # a few more flushes: nothing is replayed twice
    assert await wait_for_stored_between(nodes, result, timeout=0) == stored
    for page_id in PAGES:
        acked, unanswered = result.acked[page_id], result.unanswered[page_id]
        assert acked <= stored[page_id] <= acked + unanswered, page_id
