"""Observability on real nodes: /metrics, the probes, node configuration checks, event logs."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient

from tests.conftest import NodeFactory, SettingsFactory
from tests.integration.conftest import CounterFactory
from tests.support.metrics import Samples, parse_metrics
from tests.support.moves import move
from visit_counter.core.config import redact_url
from visit_counter.core.embedded_nodes import RedisNodeProcess
from visit_counter.main import create_app
from visit_counter.topology.nodeset import canonical_label

pytestmark = pytest.mark.integration

API = "/api/v1/counter"
VISIT_ROUTE = f"{API}/visit/{{page_id:path}}"
NO_PERSISTENCE = ("--appendonly", "no", "--save", "")
EVICTING = ("--maxmemory-policy", "allkeys-lru")
CONFIG_RENAMED = ("--rename-command", "CONFIG", "")


def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)


def scrape(client: TestClient) -> Samples:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return parse_metrics(response.text)


# -- /metrics ----------------------------------------------------------------------------------


def test_metrics_count_visits_batches_cache_and_requests_by_route_template(
    redis_nodes: list[RedisNodeProcess], make_settings: SettingsFactory
) -> None:
    pages = [f"secret-page-{i}" for i in range(7)]
    with TestClient(create_app(make_settings(redis_nodes))) as client:
        for page_id in pages:
            assert client.post(f"{API}/visit/{page_id}").status_code == 200
        assert client.post(f"{API}/visit/bad%00page").status_code == 422
        client.get(f"{API}/visits/{pages[0]}")  # a miss, read from the node
        client.get(f"{API}/visits/{pages[0]}")  # a hit
        wait_until(lambda: scrape(client).value("pagevisits_stored_total") == 7)
        samples = scrape(client)

    assert samples.value("pagevisits_accepted_total") == 7
    assert samples.value("pagevisits_pending_pages") == 0
    assert samples.value("pagevisits_pending") == 0
    assert samples.value("pagevisits_journal_batches") == 0
    assert samples.value("pagevisits_cache_hits_total") == 1
    assert samples.value("pagevisits_cache_misses_total") == 1
    nodes = {redact_url(node.url) for node in redis_nodes}
    assert samples.label_values("pagevisits_node_up", "node") == nodes
    assert all(value == 1 for value in samples.values("pagevisits_node_up"))
    assert samples.sum("pagevisits_flush_batches_total", outcome="stored") >= 1
    assert samples.sum("pagevisits_flush_batches_total", outcome="failed") == 0
    assert samples.sum("pagevisits_flush_duration_seconds_count") >= 1

    duration = "pagevisits_http_request_duration_seconds_count"
    assert samples.sum(duration, route=VISIT_ROUTE, method="POST", status="200") == 7
    assert samples.sum(duration, route=VISIT_ROUTE, method="POST", status="422") == 1
    assert samples.sum(duration, route=f"{API}/visits/{{page_id:path}}", method="GET") == 2
    for labels in samples.labels_of(duration):
        assert not any("secret-page" in value for value in labels.values()), labels


def test_a_node_added_while_serving_gets_its_batch_series(
    node_factory: NodeFactory, make_settings: SettingsFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """The batch series were made for the nodes known at start; a batch to a node a move
    added failed in the observer, once per flush, and was never counted."""
    nodes = node_factory(4)
    settings = make_settings(nodes[:3])
    added = canonical_label(nodes[3].url, 0)
    with TestClient(create_app(settings)) as client:
        assert client.post(f"{API}/visit/before-the-move").status_code == 200
        summary = asyncio.run(move(settings, "add", nodes[3].url))
        version = summary.version
        wait_until(lambda: scrape(client).value("pagevisits_topology_version") == version)
        for number in range(100):  # about a quarter of them on the new node
            assert client.post(f"{API}/visit/page-{number}").status_code == 200
        wait_until(lambda: scrape(client).value("pagevisits_stored_total") == 101)
        samples = scrape(client)

    assert samples.value("pagevisits_flush_batches_total", node=added, outcome="stored") >= 1
    assert samples.value("pagevisits_flush_batches_total", node=added, outcome="failed") == 0
    assert samples.value("pagevisits_flush_duration_seconds_count", node=added) >= 1
    assert "batch observer failed" not in caplog.text


def test_unmatched_paths_share_one_route_label(
    redis_nodes: list[RedisNodeProcess], make_settings: SettingsFactory
) -> None:
    with TestClient(create_app(make_settings(redis_nodes))) as client:
        for path in ("/nope/1", "/nope/2", f"{API}/visit/a/b"):
            client.get(path)
        client.post(f"{API}/visit/a/b")
        samples = scrape(client)
    routes = samples.label_values("pagevisits_http_request_duration_seconds_count", "route")
    assert "unmatched" in routes
    assert not any("nope" in route or "a/b" in route for route in routes), routes


def test_metrics_off_means_no_route_and_no_files(
    redis_nodes: list[RedisNodeProcess], make_settings: SettingsFactory
) -> None:
    settings = make_settings(redis_nodes, enable_metrics=False)
    with TestClient(create_app(settings)) as client:
        assert client.get("/metrics").status_code == 404
        assert client.app_state["runtime"].prometheus is None
    assert not settings.prometheus_dir.exists()


# -- probes ------------------------------------------------------------------------------------


def test_liveness_answers(
    redis_nodes: list[RedisNodeProcess], make_settings: SettingsFactory
) -> None:
    with TestClient(create_app(make_settings(redis_nodes))) as client:
        response = client.get("/health/live")
    assert response.status_code == 200
    assert response.json() == {"status": "alive"}


def test_readiness_is_503_only_without_nodes_and_journal(
    node_factory: NodeFactory, make_settings: SettingsFactory
) -> None:
    (node,) = node_factory(1)
    settings = make_settings([node], batch_size_limit=1, max_pending_pages_per_node=1)
    with TestClient(create_app(settings)) as client:
        ready = client.get("/health/ready")
        assert ready.status_code == 200
        assert ready.json() == {
            "status": "ready",
            "nodes_reachable": True,
            "journal_writable": True,
        }

        node.stop()
        wait_until(lambda: not client.get("/health/ready").json()["nodes_reachable"])
        assert client.get("/health/ready").json()["journal_writable"] is True  # still ready

        journal = client.app_state["runtime"].counter.journal
        full = os.open("/dev/full", os.O_WRONLY)
        os.dup2(full, journal.fileno())  # every journal write now fails with ENOSPC
        os.close(full)
        client.post(f"{API}/visit/page")  # the next flushes fail, then the spill fails
        wait_until(lambda: client.get("/health/ready").status_code == 503)
        body = client.get("/health/ready").json()
        assert body["status"] == "error"
        assert body["error"] == "not_ready"

        node.start()
        wait_until(lambda: client.get("/health/ready").status_code == 200)
        assert client.get("/health/ready").json() == {
            "status": "ready",
            "nodes_reachable": True,
            "journal_writable": False,
        }


# -- node configuration ------------------------------------------------------------------------


def test_nodes_that_can_lose_counts_are_reported_once_each(
    node_factory: NodeFactory,
    make_settings: SettingsFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    (safe,) = node_factory(1)
    (unpersisted,) = node_factory(1, NO_PERSISTENCE)
    (evicting,) = node_factory(1, EVICTING)
    (hidden,) = node_factory(1, CONFIG_RENAMED)
    nodes = [safe, unpersisted, evicting, hidden]
    with (
        caplog.at_level("INFO", logger="visit_counter.core.redis_manager"),
        TestClient(create_app(make_settings(nodes))) as client,
    ):
        time.sleep(1.0)  # five health checks (0.2 s apart)
        status = client.get("/status").json()
        samples = scrape(client)

    warnings: dict[str, list[str]] = status["redis_status"]["config_warnings"]
    assert set(warnings) == {unpersisted.url, evicting.url, hidden.url}
    assert len(warnings[unpersisted.url]) == 1
    assert "no persistence" in warnings[unpersisted.url][0]
    assert len(warnings[evicting.url]) == 1
    assert "allkeys-lru" in warnings[evicting.url][0]
    # CONFIG is gone but INFO still says AOF is on: only the policy is unknown.
    assert len(warnings[hidden.url]) == 1
    assert warnings[hidden.url][0].startswith("configuration unknown")
    assert status["status"] == "healthy"  # a warning, not a failure

    logged = [r.getMessage() for r in caplog.records if "configuration may lose" in r.getMessage()]
    for node in (unpersisted, evicting, hidden):
        assert sum(node.url in line for line in logged) == 1, logged
    assert not any(safe.url in line for line in logged)

    gauge = "pagevisits_node_config_warnings"
    assert samples.sum(gauge, node=safe.url) == 0
    assert samples.sum(gauge, node=unpersisted.url) == 1


def test_the_embedded_nodes_pass_the_configuration_check(
    redis_nodes: list[RedisNodeProcess], make_settings: SettingsFactory
) -> None:
    """The test nodes run exactly as `python -m app serve` runs the embedded ones."""
    with TestClient(create_app(make_settings(redis_nodes))) as client:
        status = client.get("/status").json()
    assert status["redis_status"]["config_warnings"] == {}


# -- log events --------------------------------------------------------------------------------


def lines_with(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if text in r.getMessage()]


async def test_each_event_that_matters_is_one_log_line_without_the_password(
    node_factory: NodeFactory,
    make_settings: SettingsFactory,
    counter_factory: CounterFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    password = "s3cret-Pa55"
    (node,) = node_factory(1, ("--requirepass", password))
    url = f"redis://:{password}@127.0.0.1:{node.port}"
    name = f"redis://127.0.0.1:{node.port}"  # a node's ring label never holds credentials
    settings = make_settings([node], redis_nodes=url, batch_interval_seconds=60)
    caplog.set_level("INFO", logger="visit_counter")

    counter = await counter_factory(settings)  # its health checks run every 0.2 s
    assert len(lines_with(caplog, f"redis node up: {name}")) == 1
    for _ in range(3):
        counter.record_visit("page")
    node.stop()
    await counter.flush()  # fails: the batch is kept
    await counter.flush()  # the same batch fails again: each attempt is an event
    await asyncio.sleep(0.6)  # failed health checks say nothing new
    assert len(lines_with(caplog, f"redis node down: {name}")) == 1
    failures = lines_with(caplog, f"flush to {name} failed")
    assert len(failures) == 2
    assert all("(1 pages, 3 visits" in line for line in failures)

    await counter.aclose()  # shutdown: the batch goes to the journal
    (summary,) = lines_with(caplog, "shutdown:")
    assert "3 visits in 1 batches left in the journal" in summary

    node.start()
    await asyncio.sleep(0.6)
    assert len(lines_with(caplog, f"redis node up: {name}")) == 2  # seen back, once
    replaying = await counter_factory(settings)
    (replay,) = lines_with(caplog, "journal replay:")
    assert "1 batches (3 visits)" in replay
    await replaying.flush()
    assert password not in caplog.text
