"""The engine against three real nodes: placement, counts, reads, resets, status."""

from __future__ import annotations

import time

import pytest
import redis
from fastapi.testclient import TestClient

from tests.conftest import NodeFactory, SettingsFactory
from tests.integration.conftest import CounterFactory
from visit_counter.core.embedded_nodes import RedisNodeProcess
from visit_counter.core.errors import NodeUnavailableError
from visit_counter.main import create_app
from visit_counter.services.batch import page_key

pytestmark = pytest.mark.integration


def stored_on(node: RedisNodeProcess, page_id: str) -> int | None:
    with redis.Redis(port=node.port) as client:
        value = client.get(page_key(page_id))
    return None if value is None else int(value)


def by_url(nodes: list[RedisNodeProcess]) -> dict[str, RedisNodeProcess]:
    return {node.url: node for node in nodes}


async def test_each_page_is_stored_only_on_the_node_the_ring_names(
    redis_nodes: list[RedisNodeProcess],
    make_settings: SettingsFactory,
    counter_factory: CounterFactory,
) -> None:
    counter = await counter_factory(make_settings(redis_nodes))
    expected = {f"page-{i}": i % 7 + 1 for i in range(60)}
    for page_id, visits in expected.items():
        for _ in range(visits):
            counter.record_visit(page_id)
    await counter.flush()

    nodes = by_url(redis_nodes)
    owners_used = set()
    for page_id, visits in expected.items():
        owner = counter.ring.owner(page_id)
        owners_used.add(owner)
        for url, node in nodes.items():
            assert stored_on(node, page_id) == (visits if url == owner else None), (page_id, url)
    assert owners_used == set(nodes), "60 pages should use all three nodes"


async def test_get_is_stored_plus_pending_then_served_from_cache(
    redis_nodes: list[RedisNodeProcess],
    make_settings: SettingsFactory,
    counter_factory: CounterFactory,
) -> None:
    counter = await counter_factory(make_settings(redis_nodes, batch_interval_seconds=60))
    assert (await counter.get_visits("fresh-page")).visits == 0
    for _ in range(3):
        counter.record_visit("home")
    await counter.flush()
    counter.record_visit("home")
    counter.record_visit("home")

    owner_port = redis_nodes[[n.url for n in redis_nodes].index(counter.ring.owner("home"))].port
    first = await counter.get_visits("home")
    assert (first.visits, first.served_via) == (5, f"redis_{owner_port}")
    second = await counter.get_visits("home")
    assert (second.visits, second.served_via) == (5, "in_memory")
    assert counter.cache.hits >= 1


async def test_reset_zeroes_node_buffer_and_cache(
    redis_nodes: list[RedisNodeProcess],
    make_settings: SettingsFactory,
    counter_factory: CounterFactory,
) -> None:
    counter = await counter_factory(make_settings(redis_nodes, batch_interval_seconds=60))
    for _ in range(4):
        counter.record_visit("news")
    await counter.flush()
    await counter.get_visits("news")  # cached now
    counter.record_visit("news")  # and one pending

    await counter.reset("news")

    assert (await counter.get_visits("news")).visits == 0
    assert stored_on(by_url(redis_nodes)[counter.ring.owner("news")], "news") is None
    await counter.flush()
    assert stored_on(by_url(redis_nodes)[counter.ring.owner("news")], "news") is None
    counter.record_visit("news")
    await counter.flush()
    assert (await counter.get_visits("news")).visits == 1


def test_status_and_metrics_report_a_stopped_node_as_degraded(
    node_factory: NodeFactory, make_settings: SettingsFactory
) -> None:
    nodes = node_factory(3)
    settings = make_settings(nodes)
    with TestClient(create_app(settings)) as client:
        status = client.get("/status").json()
        assert status["status"] == "healthy"
        assert status["redis_status"] == {
            "mode": "ring",
            "cluster": None,
            "topology": {
                "version": 1,
                "state": "stable",
                "members": [node.url for node in nodes],
                "moving_from": None,
            },
            "nodes": 3,
            "healthy_nodes": 3,
            "node_status": {node.url: True for node in nodes},
            "down_nodes": {},
            "config_warnings": {},  # the test nodes run AOF, like the embedded ones
            "replaced_nodes": {},
        }
        client.post("/api/v1/counter/visit/page1")
        metrics = client.get("/api/v1/counter/metrics").json()
        assert metrics["status"] == "healthy"
        assert metrics["metrics"]["write_buffer_size"] == 1
        assert metrics["metrics"]["visits_accepted"] == 1
        assert set(metrics["redis_nodes"]) == {node.url for node in nodes}

        nodes[1].stop()
        status = client.get("/status").json()
        for _ in range(50):  # health checks run every 0.2 s
            if status["status"] == "degraded":
                break
            time.sleep(0.1)
            status = client.get("/status").json()
        assert status["status"] == "degraded"
        assert status["redis_status"]["healthy_nodes"] == 2
        assert list(status["redis_status"]["down_nodes"]) == [nodes[1].url]
        assert client.get("/api/v1/counter/metrics").json()["redis_nodes"][nodes[1].url] is False

        for node in (nodes[0], nodes[2]):
            node.stop()
        for _ in range(50):
            status = client.get("/status").json()
            if status["status"] == "unhealthy":
                break
            time.sleep(0.1)
        assert status["status"] == "unhealthy"


async def test_unknown_count_on_a_down_node_is_a_clear_error_and_known_one_is_stale(
    node_factory: NodeFactory,
    make_settings: SettingsFactory,
    counter_factory: CounterFactory,
) -> None:
    nodes = node_factory(3)
    counter = await counter_factory(make_settings(nodes, batch_interval_seconds=60))
    down = by_url(nodes)[counter.ring.owner("known")]
    counter.record_visit("known")
    await counter.flush()
    await counter.get_visits("known")
    unknown = next(
        f"unknown-{i}" for i in range(1000) if counter.ring.owner(f"unknown-{i}") == down.url
    )
    down.kill()
    await counter.nodes.manager.check_all()
    counter.record_visit("known")

    reading = await counter.get_visits("known")
    assert (reading.visits, reading.served_via, reading.stale) in {(2, "in_memory", True)}
    with pytest.raises(NodeUnavailableError):
        await counter.get_visits(unknown)


def test_metrics_summary_is_logged_every_interval(
    redis_nodes: list[RedisNodeProcess],
    make_settings: SettingsFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = make_settings(redis_nodes, metrics_interval_seconds=0.1)
    with (
        caplog.at_level("INFO", logger="visit_counter.services.metrics_log"),
        TestClient(create_app(settings)) as client,
    ):
        client.post("/api/v1/counter/visit/logged")
        time.sleep(0.35)
    lines = [r.getMessage() for r in caplog.records if r.name.endswith("services.metrics_log")]
    assert len(lines) >= 2
    assert "visits accepted=1" in lines[-1]
    assert "nodes_up=3/3" in lines[-1]


def test_no_metrics_route_or_log_when_metrics_are_disabled(
    redis_nodes: list[RedisNodeProcess],
    make_settings: SettingsFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = make_settings(redis_nodes, enable_metrics=False, metrics_interval_seconds=0.1)
    with (
        caplog.at_level("INFO", logger="visit_counter.services.metrics_log"),
        TestClient(create_app(settings)) as client,
    ):
        assert client.get("/api/v1/counter/metrics").status_code == 404
        time.sleep(0.25)
    assert not [r for r in caplog.records if r.name == "visit_counter.services.metrics_log"]
