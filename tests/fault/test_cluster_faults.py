"""Cluster mode under load through the service, while the cluster reshards and fails over.

Each test runs the service (uvicorn, REDIS_MODE=cluster) on a cluster of its
own, POSTs a bounded number of visits while the fault happens, then checks
that every acknowledged visit is stored exactly once: read directly on the
cluster and through the service's GET.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable

import httpx
import pytest

from tests.conftest import ClusterFactory, ServiceFactory
from tests.support.cluster import LocalCluster
from tests.support.load import LoadResult, post_visits
from tests.support.on_cluster import cluster_counts

pytestmark = [pytest.mark.cluster, pytest.mark.fault]

PAGES = [f"page-{number}" for number in range(300)]
# A call budget (connect + reply) well under a failover: batches fail whole and are
# resent, so the buckets an earlier attempt applied are sent again.
SHORT_BUDGET = {"redis_mode": "cluster", "redis_timeout": 0.5, "redis_connect_timeout": 0.5}
VISITS = 4000


async def load_while(fault: Callable[[], None], base_url: str) -> LoadResult:
    """POST `VISITS` visits; `fault` runs in a thread once a quarter of them are in."""
    result = LoadResult()
    load = asyncio.create_task(
        post_visits(base_url, PAGES, VISITS, concurrency=8, result=result, deadline_seconds=90)
    )
    while result.total_acked < VISITS // 4 and not load.done():
        await asyncio.sleep(0.05)
    await asyncio.to_thread(fault)
    await load
    return result


async def assert_exact(cluster: LocalCluster, base_url: str, result: LoadResult) -> None:
    assert result.errors == 0, result.unanswered
    assert not result.refused
    expected = Counter(result.acked)
    assert result.total_acked == VISITS
    deadline = asyncio.get_running_loop().time() + 30
    while (stored := await asyncio.to_thread(cluster_counts, cluster, PAGES)) != expected:
        assert asyncio.get_running_loop().time() < deadline, expected - stored or stored - expected
        await asyncio.sleep(0.3)
    async with httpx.AsyncClient(base_url=base_url) as client:
        for page in PAGES:
            response = await client.get(f"/api/v1/counter/visits/{page}")
            assert response.json()["visits"] == expected[page], page


async def test_counts_stay_exact_while_2000_slots_are_resharded(
    cluster_factory: ClusterFactory, service_factory: ServiceFactory
) -> None:
    cluster = cluster_factory()
    service = service_factory(cluster.nodes[:3], **SHORT_BUDGET)
    source, target = (node.port for node in cluster.primaries()[:2])

    def reshard() -> None:
        cluster.reshard(source, target, 2000)

    result = await load_while(reshard, service.url)

    assert len(cluster.slots_of(target)) >= 5461 + 2000
    await assert_exact(cluster, service.url, result)


async def test_counts_stay_exact_when_a_primary_is_killed_and_its_replica_promoted(
    cluster_factory: ClusterFactory, service_factory: ServiceFactory
) -> None:
    cluster = cluster_factory()
    service = service_factory(cluster.nodes[:3], **SHORT_BUDGET)
    victim = cluster.primaries()[0].port

    def kill() -> None:
        cluster.kill_primary(victim)
        cluster.wait_for_failover(victim)
        # The promoted replica has no replica of its own: with REDIS_MIN_REPLICAS_ACK at its
        # default (1) its batches wait, kept, until the replaced node is back as its replica.
        cluster.node(victim).start()
        cluster.wait_stable()

    result = await load_while(kill, service.url)

    await assert_exact(cluster, service.url, result)


async def test_counts_stay_exact_when_a_primary_is_paused_past_the_node_timeout(
    cluster_factory: ClusterFactory, service_factory: ServiceFactory
) -> None:
    cluster = cluster_factory(node_timeout_ms=1000)
    service = service_factory(cluster.nodes[:3], **SHORT_BUDGET)
    victim = cluster.primaries()[1].port

    def pause() -> None:
        cluster.pause(victim)
        cluster.wait_for_failover(victim)
        cluster.resume(victim)  # it comes back as a replica of its promoted one
        cluster.wait_stable()

    result = await load_while(pause, service.url)

    await assert_exact(cluster, service.url, result)
