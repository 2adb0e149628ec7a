"""G7, G8: the topology stored on the nodes places every page, whatever REDIS_NODES says.

- A service restarted after `nodes add` with the old REDIS_NODES follows the
  stored topology (and says so in one WARNING line); with the new list it just
  starts. Either way the counts read back exact and new visits land on their
  owner under the stored topology.
- The same nodes listed with other spellings (localhost for 127.0.0.1, an
  explicit `/0`, the password in the URL or in REDIS_PASSWORD, another order)
  move no page: counts and placement stay as they were.
"""

from __future__ import annotations

import asyncio
import signal
from collections import Counter
from pathlib import Path

import httpx
import pytest

from tests.conftest import NodeFactory, ServiceFactory, node_urls
from tests.support.load import post_visits
from tests.support.service import ServiceProcess
from tests.support.topology import newest_topology, owners, page_keys, placement, run_app
from visit_counter.core.embedded_nodes import RedisNodeProcess

pytestmark = pytest.mark.e2e

API = "/api/v1/counter"
DIFFERS = "differs from the topology stored on the nodes"
PASSWORD = "a-node-password-1"


def stored(nodes: list[RedisNodeProcess], password: str | None = None) -> Counter[str]:
    total: Counter[str] = Counter()
    for node in nodes:
        total.update(page_keys(node, password))
    return total


async def wait_stored(
    nodes: list[RedisNodeProcess], expected: Counter[str], password: str | None = None
) -> Counter[str]:
    for _ in range(100):  # 20 s at most
        found = await asyncio.to_thread(stored, nodes, password)
        if found == expected:
            break
        await asyncio.sleep(0.2)
    return found


async def read_all(service: ServiceProcess, pages: list[str]) -> Counter[str]:
    counts: Counter[str] = Counter()
    async with httpx.AsyncClient(base_url=service.url, timeout=10.0) as client:
        for page in pages:
            answer = await client.get(f"{API}/visits/{page}")
            assert answer.status_code == 200, answer.text
            counts[page] = answer.json()["visits"]
    return +counts  # without the zeros, as Counter equality wants


async def post_all(service: ServiceProcess, pages: list[str], total: int) -> Counter[str]:
    result = await post_visits(service.url, pages, total, 8)
    assert result.total_acked == total, (result.refused, result.unanswered)
    return result.acked


async def test_a_service_restarted_after_an_add_follows_the_stored_topology(
    tmp_path: Path, node_factory: NodeFactory, service_factory: ServiceFactory
) -> None:
    nodes = node_factory(4)
    old, added = nodes[:3], nodes[3]
    members = [node.url for node in nodes]
    pages = [f"page-{number}" for number in range(200)]
    service = service_factory(old)
    acked = await post_all(service, pages, 600)

    add = await asyncio.to_thread(
        run_app, "nodes", "add", added.url, cwd=tmp_path, redis_nodes=node_urls(old)
    )
    assert add.returncode == 0, add.stdout + add.stderr
    acked += await post_all(service, pages, 300)
    assert service.terminate() == -signal.SIGTERM  # one worker: uvicorn re-raises it
    assert await wait_stored(nodes, acked) == acked
    assert DIFFERS not in service.log()

    # (a) with the old list, then (b) with the new one: the stored topology rules.
    for listed in (old, nodes):
        restarted = service_factory(listed)
        warnings = [line for line in restarted.log().splitlines() if DIFFERS in line]
        if listed is old:
            assert len(warnings) == 1, restarted.log()
            assert " WARNING " in warnings[0]
            assert added.url in warnings[0]
        else:
            assert warnings == []
        assert await read_all(restarted, pages) == acked  # pages on the added node included
        acked += await post_all(restarted, pages, 400)
        assert restarted.terminate() == -signal.SIGTERM

        assert await wait_stored(nodes, acked) == acked
        assert placement(nodes) == owners(members, acked)  # new visits on their owners
        assert page_keys(added)  # the added node holds its share
        topology = newest_topology(nodes)
        assert topology is not None
        assert (topology.state, set(topology.members)) == ("stable", set(members))


def spellings(nodes: list[RedisNodeProcess]) -> list[dict[str, str]]:
    """REDIS_NODES (and REDIS_PASSWORD) for the same three nodes, spelled differently."""
    ports = [node.port for node in nodes]
    return [
        {"redis_nodes": ",".join(f"redis://:{PASSWORD}@127.0.0.1:{port}" for port in ports)},
        {
            "redis_nodes": ",".join(f"redis://localhost:{port}" for port in ports),
            "redis_password": PASSWORD,
        },
        {
            "redis_nodes": ",".join(f"redis://127.0.0.1:{port}/0" for port in reversed(ports)),
            "redis_password": PASSWORD,
        },
        {"redis_nodes": ",".join(f"redis://:{PASSWORD}@LocalHost:{port}/0" for port in ports)},
    ]


async def test_respelled_node_urls_move_no_page(
    tmp_path: Path, node_factory: NodeFactory, service_factory: ServiceFactory
) -> None:
    nodes = node_factory(3, extra_args=["--requirepass", PASSWORD])
    pages = [f"page-{number}" for number in range(100)]
    expected: Counter[str] = Counter()
    where: dict[str, str] | None = None
    for number, env in enumerate(spellings(nodes)):
        service = service_factory([], **env)
        assert "WARNING" not in service.log(), (env, service.log())
        assert await read_all(service, pages) == expected, env
        expected += await post_all(service, pages, 300)
        assert service.terminate() == -signal.SIGTERM  # one worker: uvicorn re-raises it
        assert await wait_stored(nodes, expected, PASSWORD) == expected, env
        if where is None:
            where = placement(nodes, PASSWORD)
            assert set(where) == set(pages)
        assert placement(nodes, PASSWORD) == where, env
        topology = newest_topology(nodes, PASSWORD)
        assert topology is not None
        assert topology.version == 1, (number, env)  # no move, no new topology
        ping = run_app("nodes", cwd=tmp_path, **env)  # the CLI reaches them too
        assert ping.returncode == 0, (env, ping.stdout, ping.stderr)
        assert ping.stdout.splitlines()[-1] == "3 of 3 nodes up"
