"""Adding and removing nodes while counters run: every count exact, before, during, after."""

from __future__ import annotations

import asyncio
from collections import Counter

import redis

from tests.conftest import NodeFactory, SettingsFactory
from tests.integration.conftest import CounterFactory
from tests.support.moves import move
from visit_counter.core.embedded_nodes import RedisNodeProcess
from visit_counter.core.redis_manager import RedisManager
from visit_counter.services.batch import PAGE_KEY_PREFIX, Batch
from visit_counter.services.journal import Journal
from visit_counter.services.node_store import NodeStore
from visit_counter.services.visit_counter import VisitCounter
from visit_counter.topology.document import Topology


def stored(nodes: list[RedisNodeProcess]) -> Counter[str]:
    """Every page's count summed over the nodes."""
    total: Counter[str] = Counter()
    for node in nodes:
        with redis.Redis(port=node.port, decode_responses=True) as client:
            for key in client.scan_iter(match=PAGE_KEY_PREFIX + "*"):
                total[key.removeprefix(PAGE_KEY_PREFIX)] += int(client.get(key) or 0)
    return total


async def heard_of_stable(counter: VisitCounter, timeout: float = 10.0) -> Topology:
    """The counter's topology once the mover's last event (stable) has reached it.

    The mover returns after storing the stable topology on every node; the
    running counter hears of it by the event, a moment later.
    """
    async with asyncio.timeout(timeout):
        while counter.topology.state != "stable":
            await asyncio.sleep(0.01)
    return counter.topology


def keys_on(node: RedisNodeProcess) -> set[str]:
    with redis.Redis(port=node.port, decode_responses=True) as client:
        return {
            key.removeprefix(PAGE_KEY_PREFIX) for key in client.scan_iter(PAGE_KEY_PREFIX + "*")
        }


async def test_adding_a_node_moves_its_share_and_keeps_every_count(
    node_factory: NodeFactory, make_settings: SettingsFactory, counter_factory: CounterFactory
) -> None:
    nodes = node_factory(4)
    settings = make_settings(nodes[:3])
    counter = await counter_factory(settings)
    sent: Counter[str] = Counter()
    for number in range(600):
        page = f"page-{number}"
        for _ in range(number % 3 + 1):
            counter.record_visit(page)
            sent[page] += 1
    await counter.flush()

    summary = await move(settings, "add", nodes[3].url)

    assert summary.pages == len(keys_on(nodes[3])) > 100
    assert summary.visits == sum(sent[page] for page in keys_on(nodes[3]))
    assert stored(nodes) == sent
    topology = await heard_of_stable(counter)
    assert topology.members == tuple(node.url for node in nodes)
    for page in sent:
        assert page in keys_on(nodes[[n.url for n in nodes].index(topology.ring.owner(page))])
    reads = await asyncio.gather(*(counter.get_visits(page) for page in sent))
    assert [read.visits for read in reads] == list(sent.values())


async def test_removing_a_node_drains_it(
    node_factory: NodeFactory, make_settings: SettingsFactory, counter_factory: CounterFactory
) -> None:
    nodes = node_factory(3)
    settings = make_settings(nodes)
    counter = await counter_factory(settings)
    sent = Counter(f"page-{number % 300}" for number in range(900))
    for page, count in sent.items():
        for _ in range(count):
            counter.record_visit(page)
    await counter.flush()

    await move(settings, "remove", nodes[1].url)

    assert keys_on(nodes[1]) == set()
    assert stored(nodes) == sent
    assert (await heard_of_stable(counter)).members == (nodes[0].url, nodes[2].url)
    reads = await asyncio.gather(*(counter.get_visits(page) for page in sent))
    assert [read.visits for read in reads] == list(sent.values())


async def test_counts_stay_exact_and_reads_never_drop_while_nodes_come_and_go(
    node_factory: NodeFactory, make_settings: SettingsFactory, counter_factory: CounterFactory
) -> None:
    nodes = node_factory(4)
    settings = make_settings(nodes[:3], batch_interval_seconds=0.05)
    writers = [await counter_factory(settings), await counter_factory(settings)]
    pages = [f"page-{number}" for number in range(200)]
    sent: Counter[str] = Counter()
    highest_read: dict[str, int] = {}
    stop = asyncio.Event()

    async def write(counter_index: int) -> None:
        number = counter_index
        while not stop.is_set():
            page = pages[number % len(pages)]
            writers[counter_index].record_visit(page)
            sent[page] += 1
            number += 7
            await asyncio.sleep(0.0005)

    async def read() -> None:
        reader = writers[0]
        while not stop.is_set():
            for page in pages[:40]:
                visits = (await reader.get_visits(page)).visits
                assert visits >= highest_read.get(page, 0), page
                highest_read[page] = visits
            await asyncio.sleep(0.001)  # a cached read never yields to the event loop

    tasks = [
        asyncio.create_task(write(0)),
        asyncio.create_task(write(1)),
        asyncio.create_task(read()),
    ]
    await asyncio.sleep(0.3)
    await move(settings, "add", nodes[3].url)
    await asyncio.sleep(0.2)
    await move(settings, "remove", nodes[0].url)
    await asyncio.sleep(0.2)
    stop.set()
    await asyncio.gather(*tasks)
    for counter in writers:
        await counter.flush()

    assert stored(nodes) == sent
    assert keys_on(nodes[0]) == set()
    for counter in writers:
        reads = await asyncio.gather(*(counter.get_visits(page) for page in pages))
        assert {page: r.visits for page, r in zip(pages, reads, strict=True)} == dict(sent)


async def test_a_reset_during_a_move_holds_on_both_owners(
    node_factory: NodeFactory, make_settings: SettingsFactory, counter_factory: CounterFactory
) -> None:
    nodes = node_factory(3)
    settings = make_settings(nodes[:2], batch_interval_seconds=0.05)
    counter = await counter_factory(settings)
    other = await counter_factory(settings)
    pages = [f"page-{number}" for number in range(300)]
    for page in pages:
        counter.record_visit(page)
        other.record_visit(page)
    await counter.flush()
    await other.flush()

    moving = asyncio.create_task(move(settings, "add", nodes[2].url))
    for page in pages:  # reset every page while the move runs
        await counter.reset(page)
        await asyncio.sleep(0.001)
    await moving
    await asyncio.sleep(0.3)  # the other counter hears of the last resets
    for page in pages:
        counter.record_visit(page)
        other.record_visit(page)
    await counter.flush()
    await other.flush()

    # The visits from before each reset never come back; the two after it count.
    assert stored(nodes) == Counter(dict.fromkeys(pages, 2))
    for reader in (counter, other):
        reads = await asyncio.gather(*(reader.get_visits(page) for page in pages))
        assert {read.visits for read in reads} == {2}


async def test_a_journal_for_a_removed_node_replays_exactly_once(
    node_factory: NodeFactory, make_settings: SettingsFactory, counter_factory: CounterFactory
) -> None:
    # A dead process left two batches for node X in its journal: X applied the first
    # (its reply was lost), not the second. X is then removed. The next start asks a
    # node that stayed, which holds X's applied marks (the mover copied them).
    kept, removed = node_factory(2)
    settings = make_settings([kept, removed])
    counter = await counter_factory(settings)
    pages = [
        page
        for page in (f"page-{n}" for n in range(100))
        if counter.ring.owner(page) == removed.url
    ][:10]
    await counter.aclose()
    applied = Batch(
        writer="dead", seq=5, node=removed.url, increments=dict.fromkeys(pages, (2, 0)), version=1
    )
    unsent = Batch(
        writer="dead", seq=6, node=removed.url, increments=dict.fromkeys(pages, (3, 0)), version=1
    )
    manager = RedisManager(settings)
    manager.add_node(removed.url, removed.url)
    assert (await NodeStore(manager).apply(applied)).applied
    await manager.aclose()
    journal = Journal(settings.journal_dir, "dead")
    journal.open()
    journal.append(applied)
    journal.append(unsent)
    journal.close(keep=True)

    await move(settings, "remove", removed.url)
    assert keys_on(removed) == set()
    heir = await counter_factory(settings)
    await heir.flush()

    assert stored([kept, removed]) == Counter(dict.fromkeys(pages, 5))
    assert heir.journal_batches() == 0
