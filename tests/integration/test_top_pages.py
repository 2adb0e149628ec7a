"""Top pages across shards (issue 13, item 1), on real nodes and a real Redis Cluster.

Every answer is checked against a brute force: every page's count read from the nodes
themselves, sorted by visits (then page id).
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter

import pytest
import redis
from fastapi.testclient import TestClient

from tests.conftest import NodeFactory, SettingsFactory
from tests.integration.conftest import CounterFactory
from tests.support.cluster import LocalCluster
from tests.support.load import stored_counts
from tests.support.moves import move
from tests.support.on_cluster import cluster_counts
from visit_counter.core.embedded_nodes import RedisNodeProcess
from visit_counter.main import create_app
from visit_counter.services.batch import page_key
from visit_counter.services.visit_counter import VisitCounter

pytestmark = pytest.mark.integration

PAGES = [f"article-{number}" for number in range(300)]


def visit_randomly(counter: VisitCounter, seed: int, visits: int = 3000) -> None:
    rng = random.Random(seed)
    for _ in range(visits):
        counter.record_visit(rng.choice(PAGES[: rng.randint(1, len(PAGES))]))


def brute_force(counts: Counter[str], limit: int) -> list[tuple[str, int]]:
    ranked = sorted(((p, v) for p, v in counts.items() if v > 0), key=lambda e: (-e[1], e[0]))
    return ranked[:limit]


async def test_top_pages_are_exact_across_three_nodes(
    redis_nodes: list[RedisNodeProcess],
    make_settings: SettingsFactory,
    counter_factory: CounterFactory,
) -> None:
    counter = await counter_factory(make_settings(redis_nodes))
    visit_randomly(counter, seed=1)
    await counter.flush()
    visit_randomly(counter, seed=2)
    await counter.flush()
    truth = stored_counts(redis_nodes, PAGES)
    assert len({counter.ring.owner(page) for page, _ in brute_force(truth, 50)}) == 3
    for limit in (1, 10, 50, 1000):
        assert await counter.reader.top_pages(limit) == brute_force(truth, limit)


async def test_a_reset_page_leaves_the_top(
    redis_nodes: list[RedisNodeProcess],
    make_settings: SettingsFactory,
    counter_factory: CounterFactory,
) -> None:
    counter = await counter_factory(make_settings(redis_nodes))
    visit_randomly(counter, seed=3)
    await counter.flush()
    (first, _), *_ = await counter.reader.top_pages(1)
    await counter.reset(first)
    truth = stored_counts(redis_nodes, PAGES)
    assert truth[first] == 0
    assert await counter.reader.top_pages(20) == brute_force(truth, 20)


async def test_top_pages_stay_exact_after_a_node_is_added(
    node_factory: NodeFactory, make_settings: SettingsFactory, counter_factory: CounterFactory
) -> None:
    nodes = node_factory(4)
    settings = make_settings(nodes[:3])
    counter = await counter_factory(settings)
    visit_randomly(counter, seed=4)
    await counter.flush()
    summary = await move(settings, "add", nodes[3].url)
    assert summary.pages > 0
    await counter.nodes.refresh()
    truth = stored_counts(nodes, PAGES)
    assert await counter.reader.top_pages(1000) == brute_force(truth, 1000)
    visit_randomly(counter, seed=5, visits=500)
    await counter.flush()
    truth = stored_counts(nodes, PAGES)
    assert await counter.reader.top_pages(40) == brute_force(truth, 40)


async def test_pages_stored_before_the_top_sets_existed_are_scored_at_start(
    redis_nodes: list[RedisNodeProcess],
    make_settings: SettingsFactory,
    counter_factory: CounterFactory,
) -> None:
    earlier = {"old-a": 7, "old-b": 30, "old-c": 2}
    settings = make_settings(redis_nodes)
    first = await counter_factory(settings)  # stores the topology
    for page, count in earlier.items():  # as an earlier release left them: no top entry
        with redis.Redis(port=redis_nodes[0].port) as client:
            client.set(page_key(page), count)
    for node in redis_nodes:
        with redis.Redis(port=node.port) as client:
            client.delete("vc:top:built")
    await first.aclose()
    counter = await counter_factory(settings)
    deadline = 100  # the backfill starts 2 s after the counter
    while await counter.reader.top_pages(3) != [("old-b", 30), ("old-a", 7), ("old-c", 2)]:
        deadline -= 1
        assert deadline, "the earlier pages were never scored"
        await asyncio.sleep(0.1)


def test_the_top_route_answers_the_pages_and_checks_its_limit(
    redis_nodes: list[RedisNodeProcess], make_settings: SettingsFactory
) -> None:
    with TestClient(create_app(make_settings(redis_nodes))) as client:
        for page, times in (("x", 3), ("y", 1), ("z", 2)):
            for _ in range(times):
                client.post(f"/api/v1/counter/visit/{page}")
        runtime = client.app_state["runtime"]
        client.portal.call(runtime.counter.flush)
        answer = client.get("/api/v1/counter/top?limit=2")
        assert answer.status_code == 200
        assert answer.json() == {
            "pages": [{"page_id": "x", "visits": 3}, {"page_id": "z", "visits": 2}]
        }
        for bad in ("0", "1001", "ten"):
            refused = client.get(f"/api/v1/counter/top?limit={bad}")
            assert refused.status_code == 422
            assert refused.json()["error"] == "invalid_parameter"


@pytest.mark.cluster
async def test_top_pages_are_exact_on_a_redis_cluster(
    cluster: LocalCluster, make_settings: SettingsFactory, counter_factory: CounterFactory
) -> None:
    counter = await counter_factory(make_settings(cluster.nodes[:1], redis_mode="cluster"))
    visit_randomly(counter, seed=6)
    await counter.flush()
    truth = cluster_counts(cluster, PAGES)
    for limit in (5, 100):
        assert await counter.reader.top_pages(limit) == brute_force(truth, limit)
    (first, _), *_ = await counter.reader.top_pages(1)
    await counter.reset(first)
    assert first not in dict(await counter.reader.top_pages(1000))
