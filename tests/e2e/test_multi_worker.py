"""G2 and G3 with several uvicorn workers sharing the nodes."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from tests.conftest import ServiceFactory
from tests.support.load import post_visits, stored_counts
from visit_counter.core.embedded_nodes import RedisNodeProcess

pytestmark = pytest.mark.e2e

API = "/api/v1/counter"
WORKERS = 3
READS = 24  # fresh connections, so the kernel spreads them over the workers


async def read_everywhere(base_url: str, page_id: str) -> list[int]:
    limits = httpx.Limits(max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=base_url, limits=limits) as client:
        answers = await asyncio.gather(
            *(client.get(f"{API}/visits/{page_id}") for _ in range(READS))
        )
    return [answer.json()["visits"] for answer in answers]


async def test_every_worker_converges_on_the_exact_total(
    redis_nodes: list[RedisNodeProcess], service_factory: ServiceFactory
) -> None:
    interval = 0.5
    service = service_factory(redis_nodes, workers=WORKERS, batch_interval_seconds=interval)
    pages = ["home", "about", "blog"]
    load = await post_visits(service.url, pages, total=600, concurrency=12, keepalive=False)
    assert load.total_acked == 600

    await asyncio.sleep(interval * 1.5)  # one flush interval (and the scheduler's slack)
    for page_id in pages:
        assert await read_everywhere(service.url, page_id) == [200] * READS, page_id
    assert stored_counts(redis_nodes, pages) == load.acked


async def test_a_reset_on_one_worker_zeroes_every_worker_and_stays_zero(
    redis_nodes: list[RedisNodeProcess], service_factory: ServiceFactory
) -> None:
    interval = 1.5  # long, so the other workers still hold pending visits at the reset
    service = service_factory(redis_nodes, workers=WORKERS, batch_interval_seconds=interval)
    await post_visits(service.url, ["sale"], total=300, concurrency=12, keepalive=False)
    await asyncio.sleep(interval * 1.5)
    await post_visits(service.url, ["sale"], total=150, concurrency=12, keepalive=False)

    async with httpx.AsyncClient(base_url=service.url) as client:
        reset = await client.delete(f"{API}/visits/sale")
    assert reset.status_code == 200
    reset_at = time.monotonic()
    await asyncio.sleep(0.3)
    assert await read_everywhere(service.url, "sale") == [0] * READS
    assert time.monotonic() - reset_at < 1.0

    await asyncio.sleep(interval * 2)  # every worker has flushed since the reset
    assert await read_everywhere(service.url, "sale") == [0] * READS
    assert stored_counts(redis_nodes, ["sale"])["sale"] == 0

    await post_visits(service.url, ["sale"], total=30, concurrency=6, keepalive=False)
    await asyncio.sleep(interval * 1.5)
    assert await read_everywhere(service.url, "sale") == [30] * READS
