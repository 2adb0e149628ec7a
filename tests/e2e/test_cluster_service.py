"""The service in cluster mode, over HTTP: status, metrics, resets, and a crash replayed once."""

from __future__ import annotations

import asyncio
from collections import Counter

import httpx
import pytest

from tests.conftest import ClusterFactory, ServiceFactory
from tests.support.cluster import LocalCluster
from tests.support.load import LoadResult, post_visits
from tests.support.on_cluster import cluster_counts

pytestmark = [pytest.mark.e2e, pytest.mark.cluster]

CLIENTS = 8


async def test_status_metrics_and_resets_in_cluster_mode(
    cluster: LocalCluster, service_factory: ServiceFactory
) -> None:
    service = service_factory(cluster.nodes[:1], redis_mode="cluster")
    async with httpx.AsyncClient(base_url=service.url) as client:
        for _ in range(3):
            assert (await client.post("/api/v1/counter/visit/home")).status_code == 200
        await client.post("/api/v1/counter/visit/about")
        assert (await client.get("/api/v1/counter/visits/home")).json()["visits"] == 3

        status = (await client.get("/status")).json()
        redis_status = status["redis_status"]
        assert status["status"] == "healthy"
        assert redis_status["mode"] == "cluster"
        assert redis_status["node_status"] == {"cluster": True}
        assert redis_status["cluster"]["state"] == "ok"
        assert redis_status["cluster"]["min_replicas_ack"] == 1
        members = redis_status["cluster"]["members"]
        primaries = {m["address"] for m in members if m["role"] == "primary"}
        assert len(primaries) == 3
        assert sum(m["slots"] for m in members) == 16384
        assert {m["primary"] for m in members if m["role"] == "replica"} == primaries

        assert (await client.delete("/api/v1/counter/visits/home")).status_code in (200, 204)
        assert (await client.get("/api/v1/counter/visits/home")).json()["visits"] == 0
        await client.post("/api/v1/counter/visit/home")
        assert (await client.get("/api/v1/counter/visits/home")).json()["visits"] == 1

        deadline = asyncio.get_running_loop().time() + 10
        while cluster_counts(cluster, ["home", "about"]) != {"home": 1, "about": 1}:
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.2)
        metrics = (await client.get("/metrics")).text
        assert 'node="cluster"' in metrics


async def test_kill_9_with_the_visit_log_replays_every_visit_once_on_the_cluster(
    cluster_factory: ClusterFactory, service_factory: ServiceFactory
) -> None:
    cluster = cluster_factory()
    pages = [f"story-{number}" for number in range(40)]
    settings = {"redis_mode": "cluster", "journal_visits": "true", "batch_interval_seconds": 2}
    service = service_factory(cluster.nodes[:2], workers=2, **settings)
    result = LoadResult()
    load = asyncio.create_task(
        post_visits(
            service.url, pages, 100_000, CLIENTS, result=result, deadline_seconds=20,
            stop_on_error=True,
        )
    )  # fmt: skip
    while result.total_acked < 2000 and not load.done():
        await asyncio.sleep(0.02)
    await asyncio.to_thread(service.kill)  # SIGKILL to the server and every worker
    await load
    assert not result.refused
    assert result.errors <= CLIENTS  # at most one unanswered request per client

    service_factory(cluster.nodes[:2], workers=2, **settings)

    def within(stored: Counter[str]) -> bool:
        return all(
            result.acked[page] <= stored[page] <= result.acked[page] + result.unanswered[page]
            for page in pages
        )

    deadline = asyncio.get_running_loop().time() + 30
    while not within(stored := cluster_counts(cluster, pages)):
        assert asyncio.get_running_loop().time() < deadline, stored
        await asyncio.sleep(0.3)
    await asyncio.sleep(1.0)  # a few more flushes: nothing is replayed twice
    assert cluster_counts(cluster, pages) == stored
