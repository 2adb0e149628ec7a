"""G8 end to end: nodes added and removed while two services count and read.

Two service instances of two workers each share the nodes. A POST load runs
on both and readers poll pages on both while `python -m app nodes add URL` and
then `nodes remove URL` run as separate processes. Afterwards every visit a
service acknowledged is stored exactly once, on its owner under the final
topology alone, the removed node holds no count, and no reader ever saw a
page's count go down.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.conftest import NodeFactory, ServiceFactory, SettingsFactory, node_urls
from tests.support.load import LoadResult, post_visits, stored_counts, wait_for_stored
from tests.support.topology import (
    newest_topology,
    owners,
    page_keys,
    placement,
    run_app,
    seed_counts,
)

pytestmark = [pytest.mark.e2e, pytest.mark.serial]

API = "/api/v1/counter"
SEEDED = 5_000  # pages on the nodes before the services start, so the moves have work
LOADED = 300  # of those, the pages the load visits
READ = 24  # of those, the pages each reader polls


@dataclass
class Reads:
    """What one reader saw: one keep-alive connection, so one worker of one service."""

    answers: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    drops: list[str] = field(default_factory=list)


async def read_until(base_url: str, pages: list[str], stop: asyncio.Event, reads: Reads) -> None:
    """Poll `pages` until `stop`; note any count below one this connection read before.

    A reconnect may land on another worker, whose own pending visits differ (G2 lets
    workers disagree for a flush interval): what was read before is forgotten then.
    """
    highest: dict[str, int] = {}
    connection: object = None
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=10.0) as client:
        while not stop.is_set():
            for page in pages:
                try:
                    response = await client.get(f"{API}/visits/{page}")
                except httpx.HTTPError as exc:
                    reads.errors[type(exc).__name__] += 1
                    continue
                stream = response.extensions.get("network_stream")
                address = stream.get_extra_info("client_addr") if stream is not None else None
                if address != connection:
                    connection, highest = address, {}
                if response.status_code != 200:
                    reads.errors[f"{response.status_code} {response.text}"] += 1
                    continue
                reads.answers += 1
                visits = int(response.json()["visits"])
                if visits < highest.get(page, 0):
                    reads.drops.append(f"{page}: {highest[page]} then {visits}")
                highest[page] = max(visits, highest.get(page, 0))


async def until_acked(results: list[LoadResult], more: int) -> None:
    target = sum(result.total_acked for result in results) + more
    for _ in range(3000):  # 60 s at most
        if sum(result.total_acked for result in results) >= target:
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the load stalled")


async def test_adding_and_removing_nodes_under_load_keeps_every_visit_once(
    tmp_path: Path,
    node_factory: NodeFactory,
    make_settings: SettingsFactory,
    service_factory: ServiceFactory,
) -> None:
    nodes = node_factory(4)
    first, added, removed = nodes[:3], nodes[3], nodes[0]
    pages = [f"page-{number}" for number in range(SEEDED)]
    seeded = Counter({page: number % 5 + 1 for number, page in enumerate(pages)})
    await seed_counts(make_settings(first), seeded)
    services = [
        service_factory(
            first,
            workers=2,
            data_dir=tmp_path / f"data-{name}",
            prometheus_dir=tmp_path / f"prometheus-{name}",
            cache_ttl_seconds=0,  # every read goes to the nodes: the move's read path
        )
        for name in ("a", "b")
    ]
    loaded = pages[:LOADED]
    stop = asyncio.Event()
    results = [LoadResult() for _ in services]
    load = [
        asyncio.create_task(
            post_visits(
                service.url, loaded, 10**9, 4, result=result, deadline_seconds=90, stop=stop
            )
        )
        for service, result in zip(services, results, strict=True)
    ]
    reads = [Reads() for _ in range(4)]
    readers = [
        asyncio.create_task(
            read_until(services[index % 2].url, loaded[index * READ : (index + 1) * READ], stop, r)
        )
        for index, r in enumerate(reads)
    ]
    env = {"redis_nodes": node_urls(first)}
    try:
        await until_acked(results, 500)
        add = await asyncio.to_thread(run_app, "nodes", "add", added.url, cwd=tmp_path, **env)
        assert add.returncode == 0, add.stdout + add.stderr
        await until_acked(results, 500)
        remove = await asyncio.to_thread(
            run_app, "nodes", "remove", removed.url, cwd=tmp_path, **env
        )
        assert remove.returncode == 0, remove.stdout + remove.stderr
        await until_acked(results, 500)
    finally:
        stop.set()
        await asyncio.gather(*load, *readers)

    acked = sum((result.acked for result in results), Counter[str]())
    assert sum(result.errors for result in results) == 0
    assert not any(result.refused for result in results)
    expected = seeded + acked
    assert await wait_for_stored(nodes, expected) == expected
    final = {node.url for node in nodes if node is not removed}
    topology = newest_topology(nodes)
    assert topology is not None
    assert topology.state == "stable"
    assert set(topology.members) == final
    assert page_keys(removed) == {}
    assert placement(nodes) == owners(sorted(final), expected)
    for reader in reads:
        assert reader.errors == Counter()
        assert reader.drops == []
        assert reader.answers > 0
    # Both services, every worker (fresh connections), read the stored counts.
    async with httpx.AsyncClient(limits=httpx.Limits(max_keepalive_connections=0)) as client:
        for service in services:
            for page in loaded[:: LOADED // 20]:
                answer = await client.get(f"{service.url}{API}/visits/{page}")
                assert answer.json()["visits"] == expected[page], page
    assert sum(stored_counts(nodes, pages).values()) == sum(expected.values())
