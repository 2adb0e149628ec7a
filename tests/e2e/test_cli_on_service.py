"""`python -m app` as a real process against real nodes and a real uvicorn service."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest
import redis

from tests.conftest import NodeFactory, ServiceFactory, node_urls
from tests.support.load import stored_counts
from tests.support.service import REPO_ROOT
from visit_counter.core.config import Settings
from visit_counter.core.consistent_hash import ConsistentHashRing
from visit_counter.core.embedded_nodes import RedisNodeProcess
from visit_counter.services.batch import page_key

pytestmark = pytest.mark.e2e

API = "/api/v1/counter"
FIELD_KEYS = {name.upper() for name in Settings.model_fields}


def run_cli(
    *arguments: str, cwd: Path, timeout: float = 60, **settings: str
) -> subprocess.CompletedProcess[str]:
    """Run `python -m app ...` with only the given settings (no exports, no `.env`)."""
    env = {key: value for key, value in os.environ.items() if key.upper() not in FIELD_KEYS}
    env.update({key.upper(): value for key, value in settings.items()})
    env["PYTHONPATH"] = str(REPO_ROOT)
    done = subprocess.run(
        [sys.executable, "-m", "app", *arguments],
        cwd=cwd,
        env=env,
        capture_output=True,
        timeout=timeout,
        check=False,
    )
    # Decoded by hand: text=True would turn the progress bar's carriage returns into newlines.
    return subprocess.CompletedProcess(
        done.args, done.returncode, done.stdout.decode(), done.stderr.decode()
    )


def test_ring_owner_names_the_node_the_service_stores_the_page_on(
    redis_nodes: list[RedisNodeProcess], service_factory: ServiceFactory, tmp_path: Path
) -> None:
    service = service_factory(redis_nodes)
    names = [node.url for node in redis_nodes]
    ring = ConsistentHashRing(names, 100)
    # One page per node, chosen in-process; the CLI and the service must both agree.
    pages: dict[str, str] = {}
    for index in range(1000):
        pages.setdefault(ring.owner(f"owner-{index}"), f"owner-{index}")
        if len(pages) == len(names):
            break
    with httpx.Client(base_url=service.url) as client:
        for page in pages.values():
            assert client.post(f"{API}/visit/{page}").status_code == 200
    assert _wait_stored(redis_nodes, Counter(dict.fromkeys(pages.values(), 1)))

    for page in pages.values():
        done = run_cli("ring", "owner", page, cwd=tmp_path, redis_nodes=node_urls(redis_nodes))
        assert done.returncode == 0, done.stderr
        owner = done.stdout.strip()
        holders = [node.url for node in redis_nodes if _holds(node, page)]
        assert holders == [owner]


def _holds(node: RedisNodeProcess, page: str) -> bool:
    with redis.Redis(port=node.port) as client:
        return bool(client.exists(page_key(page)))


def _wait_stored(
    nodes: list[RedisNodeProcess], expected: Counter[str], timeout: float = 10
) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if stored_counts(nodes, list(expected)) == expected:
            return True
        time.sleep(0.1)
    return False


def test_nodes_exit_status_says_whether_every_node_is_up(
    node_factory: NodeFactory, tmp_path: Path
) -> None:
    nodes = node_factory(2)
    urls = node_urls(nodes)

    up = run_cli("nodes", cwd=tmp_path, redis_nodes=urls, redis_timeout="1")
    assert up.returncode == 0, up.stdout + up.stderr
    assert up.stdout.splitlines()[-1] == "2 of 2 nodes up"
    assert all(" up " in line for line in up.stdout.splitlines()[:2])

    nodes[1].stop()
    down = run_cli("nodes", cwd=tmp_path, redis_nodes=urls, redis_timeout="1")
    assert down.returncode == 1
    lines = down.stdout.splitlines()
    assert lines[-1] == "1 of 2 nodes up"
    assert any(line.startswith(nodes[1].url) and " DOWN " in line for line in lines)


def test_load_posts_then_reads_back_matching_counts(
    redis_nodes: list[RedisNodeProcess], service_factory: ServiceFactory, tmp_path: Path
) -> None:
    service = service_factory(redis_nodes)
    done = run_cli(
        "load", "--url", service.url, "--requests", "300", "--pages", "7",
        "--concurrency", "5", "--timeout", "15", "--prefix", "cli-load",
        cwd=tmp_path,
    )  # fmt: skip

    assert done.returncode == 0, done.stdout + done.stderr
    assert "accepted: 300\n" in done.stdout
    assert "counts match: all 7 pages read back their accepted visits (300 in total)" in done.stdout
    assert "visits/s" in done.stdout
    assert "\r[" in done.stderr  # the progress bar, redrawn in place
    assert "300/300" in done.stderr
    pages = [f"cli-load-{index}" for index in range(7)]
    expected = Counter({page: 300 // 7 + (index < 300 % 7) for index, page in enumerate(pages)})
    # The nodes agree too, once the service has flushed (GET adds the pending visits).
    assert _wait_stored(redis_nodes, expected)


def test_load_fails_when_visits_are_refused(
    redis_nodes: list[RedisNodeProcess], service_factory: ServiceFactory, tmp_path: Path
) -> None:
    service = service_factory(redis_nodes, rate_limit_per_second=1, rate_limit_burst=5)
    done = run_cli(
        "load", "--url", service.url, "--requests", "20", "--pages", "2", "--timeout", "5",
        cwd=tmp_path,
    )  # fmt: skip

    assert done.returncode == 1, done.stdout + done.stderr
    assert "x 429" in done.stdout
    assert "POSTs were not accepted" in done.stdout
    # What was accepted still reads back exactly: refused visits were not counted.
    assert "counts match" in done.stdout
