"""/metrics with two uvicorn workers: whichever answers, the totals are every worker's."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pytest
from prometheus_client.multiprocess import MultiProcessCollector

from tests.conftest import ServiceFactory
from tests.support.load import post_visits
from tests.support.metrics import Samples, parse_metrics
from visit_counter.core.embedded_nodes import RedisNodeProcess

pytestmark = pytest.mark.e2e

WORKERS = 2
SCRAPES = 12  # fresh connections, so both workers answer some


async def scrape_everywhere(base_url: str) -> list[Samples]:
    limits = httpx.Limits(max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=base_url, limits=limits) as client:
        answers = await asyncio.gather(*(client.get("/metrics") for _ in range(SCRAPES)))
    assert all(answer.status_code == 200 for answer in answers)
    return [parse_metrics(answer.text) for answer in answers]


def accepted_per_process(directory: Path) -> list[float]:
    """Each worker's own visits_accepted, read from its own file."""
    counts = []
    for path in sorted(directory.glob("counter_*.db")):
        for family in MultiProcessCollector.merge([str(path)]):  # type: ignore[no-untyped-call]
            for sample in family.samples:
                if sample.name == "pagevisits_accepted_total":
                    counts.append(sample.value)
    return counts


async def test_metrics_add_up_both_workers_exactly_and_restart_from_zero(
    redis_nodes: list[RedisNodeProcess], service_factory: ServiceFactory, tmp_path: Path
) -> None:
    interval = 0.3
    settings = {"batch_interval_seconds": interval, "log_format": "json"}
    service = service_factory(redis_nodes, workers=WORKERS, **settings)
    total = 400
    load = await post_visits(
        service.url, ["home", "about", "blog"], total=total, concurrency=8, keepalive=False
    )
    assert load.total_acked == total
    await asyncio.sleep(interval * 2)  # one flush interval (and the scheduler's slack)

    for samples in await scrape_everywhere(service.url):
        assert samples.value("pagevisits_accepted_total") == total
        assert samples.value("pagevisits_stored_total") == total
        assert samples.value("pagevisits_pending") == 0
        posts = samples.sum("pagevisits_http_request_duration_seconds_count", method="POST")
        assert posts == total
    per_worker = accepted_per_process(tmp_path / "prometheus")
    assert len(per_worker) == WORKERS
    assert all(count > 0 for count in per_worker), per_worker  # both took visits
    assert sum(per_worker) == total

    # LOG_FORMAT=json: each worker's lines are JSON objects with its pid.
    entries = [json.loads(line) for line in service.log().splitlines() if line.startswith("{")]
    up = {entry["pid"] for entry in entries if entry["message"].startswith("redis node up")}
    assert len(up) == WORKERS

    assert service.terminate() == 0
    restarted = service_factory(redis_nodes, workers=WORKERS, **settings)
    for samples in await scrape_everywhere(restarted.url):
        assert samples.value("pagevisits_accepted_total") == 0  # last run's files gone
    await post_visits(restarted.url, ["home"], total=10, concurrency=2, keepalive=False)
    await asyncio.sleep(interval * 2)
    for samples in await scrape_everywhere(restarted.url):
        assert samples.value("pagevisits_accepted_total") == 10
