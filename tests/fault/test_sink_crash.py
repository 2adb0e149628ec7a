"""G11 through a crash: `kill -9` of a service with SINKS=postgres under load, while the
database is unreachable (through a proxy), then a restart on the same data directory.
PostgreSQL's hits end equal, page by page, to what the nodes stored: every stored batch
reached the sink once, whether it was delivered before, waiting in a dead worker's queue
file (claimed by the restarted workers), or still in the journal and visit log."""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.conftest import NodeFactory, ServiceFactory
from tests.support.load import LoadResult, load_until_killed, stored_counts, wait_for_stored_between
from tests.support.postgres import PgProxy, PgSchema

pytestmark = pytest.mark.fault

PAGES = [f"post-{number}" for number in range(20)]
CLIENTS = 8


async def test_kill_9_with_a_postgres_sink_then_restart_mirrors_every_stored_batch_once(
    node_factory: NodeFactory,
    service_factory: ServiceFactory,
    postgres: PgSchema,
    pg_proxy: PgProxy,
) -> None:
    nodes = node_factory(3)
    schema, proxy = postgres, pg_proxy
    settings = {
        "journal_visits": "true",
        "batch_interval_seconds": 0.2,
        "sinks": "postgres",
        "postgres_dsn": proxy.dsn(schema),
    }
    service = service_factory(nodes, workers=2, **settings)
    result = LoadResult()
    load = load_until_killed(service.url, PAGES, CLIENTS, result)
    while result.total_acked < 1000:
        await asyncio.sleep(0.02)
    proxy.set_mode("refuse")  # the database goes away: deliveries wait in the queue files
    while result.total_acked < 3000:
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.5)  # a few flushes stored on the nodes, not in PostgreSQL
    await asyncio.to_thread(service.kill)  # SIGKILL to the server and every worker
    await load
    assert not result.refused
    before_restart = schema.hits()
    assert before_restart, "some batches reached PostgreSQL before it went away"
    assert sum(before_restart.values()) < result.total_acked

    restarted = service_factory(nodes, workers=2, **settings)
    proxy.set_mode("pass")
    stored = await wait_for_stored_between(nodes, result)
    deadline = time.monotonic() + 15
    while schema.hits() != dict(stored) and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert schema.hits() == dict(stored)
    assert restarted.terminate() == 0
    assert stored_counts(nodes, PAGES) == stored  # nothing replayed twice either
    assert schema.hits() == dict(stored)
