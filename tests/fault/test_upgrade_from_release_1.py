"""Issue 10, item 4: upgrading from release 1 keeps every count.

Release 1 (commit 116f534, `tests/fixtures/release-1.tar.gz`) stored no topology:
a node's ring label was its REDIS_NODES URL as listed, password redacted. Its
code runs here as a real service on real nodes, then today's code starts on the
same nodes (and the same DATA_DIR) and must read every count, move no page, and
replay what release 1 left in its journal exactly once.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import signal
import sys
import tarfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import httpx
import pytest
import redis

from tests.conftest import NodeFactory, ServiceFactory
from tests.support.load import post_visits, wait_for_stored
from tests.support.service import ServiceProcess
from visit_counter.core.config import redact_url
from visit_counter.core.consistent_hash import ConsistentHashRing
from visit_counter.core.embedded_nodes import RedisNodeProcess
from visit_counter.services.batch import TOPOLOGY_KEY, Batch, page_key
from visit_counter.services.journal_format import record_text
from visit_counter.topology.document import Topology
from visit_counter.topology.nodeset import canonical_label

pytestmark = pytest.mark.fault

RELEASE_1 = Path(__file__).resolve().parents[1] / "fixtures" / "release-1.tar.gz"
PASSWORD = "upgrade-secret-7"
PAGES = [f"page-{number}" for number in range(300)]
FIRST = Counter({page: 1 + number % 5 for number, page in enumerate(PAGES)})  # 900 visits
TIMINGS = {"redis_connect_timeout": 1}  # a dead node is given up on quickly


@pytest.fixture
def release_1(tmp_path: Path) -> Path:
    """Release 1's `app` package, unpacked: run a service with this as its directory."""
    target = tmp_path / "release-1"
    with tarfile.open(RELEASE_1) as archive:
        if hasattr(tarfile, "data_filter"):
            archive.extractall(target, filter="data")
        else:  # Python before 3.11.4; the archive is our own
            archive.extractall(target)
    return target


async def send(url: str, counts: Counter[str]) -> None:
    """POST each page's visits; every one must be acknowledged."""
    order = [page for page, count in counts.items() for _ in range(count)]
    result = await post_visits(url, order, len(order), concurrency=16)
    assert result.acked == counts
    assert not result.refused
    assert not result.unanswered


async def read_all(url: str) -> Counter[str]:
    """Every page's count as the service reads it (never stale: all nodes are up)."""
    limits = httpx.Limits(max_connections=16)
    timeout = httpx.Timeout(10.0, pool=None)  # waiting for one of the 16 is not a failure
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=timeout) as client:
        responses = await asyncio.gather(
            *(client.get(f"/api/v1/counter/visits/{page}") for page in PAGES)
        )
    counts: Counter[str] = Counter()
    for page, response in zip(PAGES, responses, strict=True):
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["stale"] is False
        counts[page] = body["visits"]
    return counts


async def stop(service: ServiceProcess) -> str:
    """SIGTERM (counts flushed, or journaled); return the service's log."""
    exit_code = await asyncio.to_thread(service.terminate, 30.0)
    log = service.log()
    assert exit_code in (0, -signal.SIGTERM), log
    assert "Application shutdown complete" in log
    return log


def placement(nodes: list[RedisNodeProcess], password: str | None) -> dict[str, dict[int, int]]:
    """page -> {port of every node holding the page's key: its count}."""
    held: dict[str, dict[int, int]] = {page: {} for page in PAGES}
    for node in nodes:
        with redis.Redis(port=node.port, password=password) as client:
            values = client.mget([page_key(page) for page in PAGES])
        for page, value in zip(PAGES, values, strict=True):
            if value is not None:
                held[page][node.port] = int(value)
    return held


def stored_topology(node: RedisNodeProcess, password: str | None = None) -> Topology | None:
    with redis.Redis(port=node.port, password=password) as client:
        raw = client.hget(TOPOLOGY_KEY, "doc")
    return None if raw is None else Topology.from_json(raw)


def unacknowledged(journal_dir: Path) -> list[tuple[Batch, dict[str, object]]]:
    """The batches the journal files hold and do not acknowledge, with their raw records."""
    batches: dict[tuple[str, int, str], tuple[Batch, dict[str, object]]] = {}
    for path in sorted(journal_dir.glob("*.jsonl")):
        for line in path.read_bytes().splitlines():
            record = json.loads(record_text(line))
            if "ack" in record:
                writer, seq, node = record["ack"]
                batches.pop((writer, seq, node), None)
            else:
                batch = Batch.from_record(record)
                batches[(batch.writer, batch.seq, batch.node)] = (batch, record)
    return list(batches.values())


def load_release_1_batch(release_dir: Path, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """Release 1's `visit_counter/services/batch.py` (standard library only), under another name."""
    name = "release_1_batch"
    spec = importlib.util.spec_from_file_location(
        name, release_dir / "app" / "services" / "batch.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, name, module)  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def apply_as_release_1(release: ModuleType, port: int, batch: Batch) -> None:
    """Apply `batch` on a node as release 1's `NodeStore.apply` did: its script, its keys."""
    pages = list(batch.increments)
    keys = [release.APPLIED_KEY, release.EPOCHS_KEY, release.RESETS_KEY]
    keys += [release.page_key(page) for page in pages]
    args: list[object] = [batch.writer, batch.seq, release.EVENTS_CHANNEL]
    for page in pages:
        args.extend(batch.increments[page])
    with redis.Redis(port=port) as client:
        reply = client.eval(release.APPLY_BATCH_LUA, len(keys), *keys, *args)
    assert int(reply[0]) == 1, "release 1 had not applied it yet"


async def wait_until(condition: Callable[[], bool], timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.1)
    return True


async def test_counts_written_by_release_1_read_exactly_after_the_upgrade_and_a_respelling(
    node_factory: NodeFactory, service_factory: ServiceFactory, release_1: Path
) -> None:
    nodes = node_factory(3, extra_args=["--requirepass", PASSWORD])
    ports = [node.port for node in nodes]
    # Spellings release 1 accepts, each naming its node differently from today's canonical
    # label: a password in the URL (redacted into the label), a host in capitals, a `/0`.
    listed = [
        f"redis://:{PASSWORD}@127.0.0.1:{ports[0]}",
        f"redis://:{PASSWORD}@LOCALHOST:{ports[1]}/0",
        f"redis://:{PASSWORD}@localhost:{ports[2]}",
    ]
    old_labels = [redact_url(url) for url in listed]
    old_ring = ConsistentHashRing(old_labels)
    canonical_ring = ConsistentHashRing([canonical_label(url, 0) for url in listed])
    old_port = {page: ports[old_labels.index(old_ring.owner(page))] for page in PAGES}
    # The upgrade has something to get wrong: canonical labels would move most pages.
    assert sum(old_ring.owner(p) != canonical_ring.owner(p) for p in PAGES) > len(PAGES) // 2

    # Release 1 counts, and stops (SIGTERM flushes everything: every node is up).
    old = service_factory(nodes, app_dir=release_1, redis_nodes=",".join(listed), **TIMINGS)
    await send(old.url, FIRST)
    logs = [await stop(old)]
    assert all(stored_topology(node, PASSWORD) is None for node in nodes), "not release 1?"
    assert placement(nodes, PASSWORD) == {page: {old_port[page]: FIRST[page]} for page in PAGES}

    # Today's release, same REDIS_NODES: every count reads back; new visits land where
    # release 1 put the page, and nowhere else.
    new = service_factory(nodes, redis_nodes=",".join(listed), **TIMINGS)
    assert await read_all(new.url) == FIRST
    await send(new.url, Counter(PAGES))
    logs.append(await stop(new))
    assert "release 1's node names kept" in logs[-1]
    assert "differs from the topology stored on the nodes" not in logs[-1]
    second = FIRST + Counter(PAGES)
    assert placement(nodes, PASSWORD) == {page: {old_port[page]: second[page]} for page in PAGES}
    for node in nodes:
        topology = stored_topology(node, PASSWORD)
        assert topology is not None
        assert topology.members == tuple(old_labels)

    # Restarted with REDIS_NODES respelled (127.0.0.1 for localhost, `/0` moved, the password
    # in REDIS_PASSWORD): the stored topology rules; the same servers spelled otherwise are
    # not a different node set, so nothing is logged as a difference.
    respelled = [
        f"redis://127.0.0.1:{ports[0]}/0",
        f"redis://127.0.0.1:{ports[1]}",
        f"redis://127.0.0.1:{ports[2]}",
    ]
    again = service_factory(
        nodes, redis_nodes=",".join(respelled), redis_password=PASSWORD, **TIMINGS
    )
    assert await read_all(again.url) == second
    await send(again.url, Counter(PAGES))
    logs.append(await stop(again))
    assert "differs from the topology stored on the nodes" not in logs[-1]
    third = second + Counter(PAGES)
    assert placement(nodes, PASSWORD) == {page: {old_port[page]: third[page]} for page in PAGES}
    assert all(PASSWORD not in log for log in logs)


async def test_a_journal_left_by_release_1_replays_exactly_once_after_the_upgrade(
    node_factory: NodeFactory,
    service_factory: ServiceFactory,
    release_1: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    nodes = node_factory(3)
    ports = [node.port for node in nodes]
    # Release 1's labels (the URLs as listed) all differ from today's canonical ones.
    listed = [
        f"redis://LOCALHOST:{ports[0]}/0",
        f"redis://LOCALHOST:{ports[1]}",
        f"redis://127.0.0.1:{ports[2]}/0",
    ]
    labels = [redact_url(url) for url in listed]
    ring = ConsistentHashRing(labels)
    owner_port = {page: ports[labels.index(ring.owner(page))] for page in PAGES}
    down = nodes[0]
    data_dir = tmp_path / "data"

    old = service_factory(
        nodes,
        app_dir=release_1,
        data_dir=data_dir,
        redis_nodes=",".join(listed),
        # The down node's pages go to the journal while it runs, not only at shutdown.
        max_pending_pages_per_node=20,
        batch_size_limit=20,
        **TIMINGS,
    )
    await send(old.url, FIRST)
    assert await wait_for_stored(nodes, FIRST) == FIRST  # release 1's applied marks exist
    await asyncio.to_thread(down.kill)
    more = Counter({page: 2 for page in PAGES})
    await send(old.url, more)
    log = await stop(old)  # with the node still down: its batches stay in the journal
    assert "moved to the journal" in log
    assert "left in the journal" in log

    journaled = unacknowledged(data_dir / "journal")
    assert {batch.node for batch, _ in journaled} == {labels[0]}
    assert all("tv" not in record for _, record in journaled)  # release 1's format: version 0
    on_down = [page for page in PAGES if owner_port[page] == down.port]
    assert sum(batch.visits for batch, _ in journaled) == sum(more[page] for page in on_down)

    await asyncio.to_thread(down.start)
    # A lost reply, as release 1 could leave one: the node applied the oldest journaled
    # batch (release 1's own script: the applied mark under the writer alone), but the
    # journal still holds it. Replaying it must add nothing.
    oldest = min((batch for batch, _ in journaled), key=lambda batch: batch.seq)
    apply_as_release_1(load_release_1_batch(release_1, monkeypatch), down.port, oldest)

    new = service_factory(nodes, data_dir=data_dir, redis_nodes=",".join(listed), **TIMINGS)
    expected = FIRST + more
    assert await wait_for_stored(nodes, expected) == expected

    def duplicates() -> int:
        metrics = httpx.get(f"{new.url}/api/v1/counter/metrics", timeout=10.0).json()["metrics"]
        return int(metrics["batches_duplicate"])

    assert await wait_until(lambda: duplicates() >= 1)  # that batch, found applied
    assert await read_all(new.url) == expected
    await asyncio.sleep(1.0)  # a few more flush intervals: nothing is replayed twice
    # Exact, and every page still on the node release 1 put it on.
    assert placement(nodes, None) == {page: {owner_port[page]: expected[page]} for page in PAGES}
    log = await stop(new)
    assert "re-routed" not in log
    assert "no longer a node" not in log
    assert unacknowledged(data_dir / "journal") == []
