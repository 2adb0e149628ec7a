"""A full data disk (issue 9): the process lives, healthy nodes' visits count, the rest get 503.

DATA_DIR is a small tmpfs mounted for the test and written full (ENOSPC). Two
layouts of the Prometheus files: off the data disk (the default, a tmpfs of its
own), and on the full disk itself (PROMETHEUS_DIR under DATA_DIR, as on a host
without /dev/shm), where the files cannot be allocated and that worker's metrics
turn off. Before the fix the files were sparse memory maps under DATA_DIR, and
the first new page touched on a full disk killed the process with SIGBUS.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import NodeFactory, ServiceFactory
from tests.support.full_disk import fill, mounted_tmpfs
from tests.support.load import post_visits, wait_for_stored
from tests.support.metrics import parse_metrics
from tests.support.service import ServiceProcess
from visit_counter.core.consistent_hash import ConsistentHashRing
from visit_counter.core.embedded_nodes import RedisNodeProcess

pytestmark = pytest.mark.fault

API = "/api/v1/counter"
# A down node's pages go to the journal once this many are held in memory (the cap
# may not be below BATCH_SIZE_LIMIT): small, so the full journal shows at once.
CAP = 4
LAYOUTS = ["metrics_off_the_data_disk", "metrics_on_the_full_disk"]


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Path]:
    with mounted_tmpfs(tmp_path / "disk", "4m") as path:
        yield path


def settings_for(layout: str, disk: Path) -> dict[str, object]:
    settings: dict[str, object] = {
        "data_dir": disk / "data",
        "batch_size_limit": CAP,
        "max_pending_pages_per_node": CAP,
    }
    if layout == "metrics_on_the_full_disk":
        settings["prometheus_dir"] = disk / "data" / "prometheus"
    return settings


def pages_of(nodes: list[RedisNodeProcess], per_node: int) -> dict[str, list[str]]:
    ring = ConsistentHashRing([node.url for node in nodes], 100)
    placed: dict[str, list[str]] = {node.url: [] for node in nodes}
    for number in range(10_000):
        owned = placed[ring.owner(f"page-{number}")]
        if len(owned) < per_node:
            owned.append(f"page-{number}")
    return placed


async def request_new_metric_series(client: httpx.AsyncClient) -> None:
    """Answers the service has not given yet: each is a new histogram series (new file keys)."""
    for method in ("GET", "PUT", "PATCH", "DELETE", "OPTIONS"):
        await client.request(method, "/no-such-route")
    for method in ("PUT", "PATCH"):
        await client.request(method, "/status")
    await client.get(f"{API}/visits/not%20a%20page")
    await client.get(f"{API}/visits/page-0")


def error_lines(service: ServiceProcess, text: str) -> list[str]:
    return [line for line in service.log().splitlines() if " ERROR " in line and text in line]


def assert_answering(service: ServiceProcess, healthy: bool = True) -> None:
    assert service.exit_code is None, f"the service died ({service.exit_code}):\n{service.log()}"
    ready = httpx.get(f"{service.url}/health/ready")
    assert ready.status_code == 200, ready.text
    status = httpx.get(f"{service.url}/status")
    assert status.status_code == 200, status.text
    assert status.json()["status"] == ("healthy" if healthy else "degraded")


def assert_stops_cleanly(service: ServiceProcess) -> None:
    # One worker: uvicorn re-raises SIGTERM once the shutdown is complete.
    assert service.terminate() == -signal.SIGTERM
    assert "Application shutdown complete." in service.log()


@pytest.mark.parametrize("layout", LAYOUTS)
async def test_a_disk_filling_up_under_load_costs_no_visit_and_no_process(
    layout: str, disk: Path, node_factory: NodeFactory, service_factory: ServiceFactory
) -> None:
    nodes = node_factory(3)
    service = service_factory(nodes, **settings_for(layout, disk))
    pages = [f"page-{number}" for number in range(40)]
    acked: Counter[str] = Counter()
    async with httpx.AsyncClient(base_url=service.url) as client:
        before = await post_visits(service.url, pages, 400)
        assert (await client.get("/metrics")).status_code == 200
        fill(disk)
        await request_new_metric_series(client)
        during = asyncio.create_task(post_visits(service.url, pages, 400))
        scrapes = [await client.get("/metrics") for _ in range(3)]
        after = await during
        for result in (before, after):
            assert result.total_acked == 400, (result.refused, result.unanswered)
            acked.update(result.acked)
        assert_answering(service)
        # Pages allocated before the disk filled hold every series asked for above.
        assert [scrape.status_code for scrape in scrapes] == [200, 200, 200]
        final = parse_metrics((await client.get("/metrics")).text)
        assert final.value("pagevisits_accepted_total") == 800

    assert await wait_for_stored(nodes, acked) == acked
    assert_stops_cleanly(service)


@pytest.mark.parametrize("layout", LAYOUTS)
async def test_started_on_a_full_disk_it_counts_healthy_nodes_and_refuses_a_down_ones_pages(
    layout: str, disk: Path, node_factory: NodeFactory, service_factory: ServiceFactory
) -> None:
    nodes = node_factory(3)
    (disk / "data").mkdir()
    fill(disk)
    service = service_factory(nodes, **settings_for(layout, disk))
    placed = pages_of(nodes, 2 * CAP)
    victim = nodes[1]
    healthy_pages = [page for url, owned in placed.items() if url != victim.url for page in owned]
    acked: Counter[str] = Counter()

    every_page = [page for owned in placed.values() for page in owned]
    first = await post_visits(service.url, every_page, 240)
    assert first.total_acked == 240, (first.refused, first.unanswered)
    acked.update(first.acked)
    assert_answering(service)
    metrics = httpx.get(f"{service.url}/metrics")
    status = httpx.get(f"{service.url}/status").json()
    if layout == "metrics_off_the_data_disk":
        assert metrics.status_code == 200
        assert status["metrics_status"]["error"] is None
    else:  # this worker's files could not be allocated: its metrics are off, and it says so
        assert metrics.status_code == 503, metrics.text
        assert metrics.json()["error"] == "metrics_unavailable"
        assert "No space left on device" in status["metrics_status"]["error"]
        assert error_lines(service, "Prometheus metrics are off in this worker"), service.log()

    await asyncio.to_thread(victim.kill)
    deadline = time.monotonic() + 10
    while httpx.get(f"{service.url}/status").json()["status"] != "degraded":
        assert time.monotonic() < deadline, "the killed node was never reported down"
        await asyncio.sleep(0.1)
    # The victim's pages fill its memory cap; the journal cannot take them: 503 from then on.
    refused = await post_visits(service.url, placed[victim.url], 400, concurrency=2)
    acked.update(refused.acked)
    assert refused.refused.keys() == {503}, refused.refused
    assert refused.unanswered.total() == 0
    still = await post_visits(service.url, healthy_pages, 160)
    assert still.total_acked == 160, still.refused
    acked.update(still.acked)
    assert_answering(service, healthy=False)
    ready = httpx.get(f"{service.url}/health/ready").json()
    assert ready == {"status": "ready", "nodes_reachable": True, "journal_writable": False}
    assert error_lines(service, "journal failed; refusing visits"), service.log()

    await asyncio.to_thread(victim.start)
    assert await wait_for_stored(nodes, acked) == acked  # every visit answered 2xx, exactly
    assert_stops_cleanly(service)
