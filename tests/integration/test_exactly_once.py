"""G1, G3, G5, G6 in one process against real nodes: faults injected for real.

Lost replies come from a loopback proxy that lets a script call reach the node
and drops its answer; dead nodes are killed processes; a failing journal is a
journal whose file descriptor now points at /dev/full (ENOSPC on every write).
"""

from __future__ import annotations

import asyncio
import os
from collections import Counter

import pytest
import redis

from tests.conftest import NodeFactory, SettingsFactory
from tests.integration.conftest import CounterFactory
from tests.support.load import stored
from tests.support.proxy import FaultProxy
from visit_counter.core.embedded_nodes import RedisNodeProcess
from visit_counter.core.errors import VisitNotKeptError
from visit_counter.services.batch import EVENTS_CHANNEL
from visit_counter.services.visit_counter import VisitCounter

pytestmark = pytest.mark.integration


def pages_on(counter: VisitCounter, node_url: str, count: int, prefix: str = "p") -> list[str]:
    pages = (f"{prefix}-{i}" for i in range(100_000))
    return [p for p in pages if counter.ring.owner(p) == node_url][:count]


async def wait_for_subscribers(node: RedisNodeProcess, count: int) -> None:
    with redis.Redis(port=node.port) as client:
        for _ in range(100):
            if dict(client.pubsub_numsub(EVENTS_CHANNEL))[EVENTS_CHANNEL.encode()] >= count:
                return
            await asyncio.sleep(0.05)
    raise AssertionError(f"fewer than {count} workers subscribed to {EVENTS_CHANNEL}")


async def test_a_batch_applied_but_unacknowledged_is_not_added_twice(
    redis_nodes: list[RedisNodeProcess],
    proxy: FaultProxy,
    make_settings: SettingsFactory,
    counter_factory: CounterFactory,
) -> None:
    # One node, reached through the proxy, so every page goes through the fault.
    settings = make_settings([redis_nodes[0]], redis_nodes=proxy.url, batch_interval_seconds=60)
    counter = await counter_factory(settings)
    counter.record_visit("warm-up")
    await counter.flush()  # loads the script while replies still pass

    for _ in range(7):
        counter.record_visit("article")
    proxy.set_mode("lose_replies")
    await counter.flush()
    assert proxy.replies_lost >= 1
    assert stored(redis_nodes, "article") == 7, "the node applied the batch"
    assert counter.stats.batches_failed >= 1, "the engine saw no reply and kept the batch"

    proxy.set_mode("pass")
    await counter.nodes.manager.check_all()
    reading = await counter.get_visits("article")
    assert reading.visits == 7, "a read does not add the applied batch a second time"
    await counter.flush()  # the same batch, same id: the node recognises it

    assert stored(redis_nodes, "article") == 7
    assert counter.stats.batches_duplicate == 1
    assert counter.pending_visits() == 0
    counter.record_visit("article")
    await counter.flush()
    assert stored(redis_nodes, "article") == 8


async def test_reset_on_another_worker_drops_increments_held_here(
    redis_nodes: list[RedisNodeProcess],
    proxy: FaultProxy,
    make_settings: SettingsFactory,
    counter_factory: CounterFactory,
) -> None:
    settings = make_settings([redis_nodes[0]], redis_nodes=proxy.url, batch_interval_seconds=60)
    holder = await counter_factory(settings)
    resetter = await counter_factory(make_settings([redis_nodes[0]], batch_interval_seconds=60))
    for _ in range(5):
        holder.record_visit("promo")
    holder.record_visit("other")
    await holder.flush()  # promo=5 stored

    for _ in range(3):
        holder.record_visit("promo")  # will be inflight, sealed before the reset
    proxy.set_mode("refuse")
    await holder.flush()
    assert holder.outbox(proxy.url).inflight is not None
    proxy.set_mode("pass")
    for _ in range(2):
        holder.record_visit("promo")  # will be pending when the reset arrives
    await wait_for_subscribers(redis_nodes[0], 2)  # holder's listener reconnected

    await resetter.reset("promo")
    for _ in range(50):
        if holder.pending.get("promo") is None:
            break
        await asyncio.sleep(0.02)
    assert holder.pending.get("promo") is None, "the reset reached the other worker"

    await holder.flush()
    assert stored(redis_nodes, "promo") == 0, "no pre-reset visit reappeared"
    assert stored(redis_nodes, "other") == 1
    holder.record_visit("promo")
    await holder.flush()
    assert stored(redis_nodes, "promo") == 1, "visits after the reset count"


async def test_memory_cap_spills_to_journal_and_everything_arrives_after_restart(
    node_factory: NodeFactory,
    make_settings: SettingsFactory,
    counter_factory: CounterFactory,
) -> None:
    nodes = node_factory(3)
    settings = make_settings(
        nodes, batch_interval_seconds=60, batch_size_limit=5, max_pending_pages_per_node=5
    )
    counter = await counter_factory(settings)
    down = nodes[1]
    pages = pages_on(counter, down.url, 40) + pages_on(counter, nodes[0].url, 10, "up")
    down.kill()

    sent: Counter[str] = Counter()
    for round_number in range(4):
        for page_id in pages[round_number * 10 : round_number * 10 + 20]:
            counter.record_visit(page_id)
            sent[page_id] += 1
        await counter.flush()
    assert counter.journal_batches() >= 2, "past the cap, batches went to disk"
    assert counter.outbox(down.url).pages_in_memory < 5 + 5

    down.start()
    await counter.nodes.manager.check_all()
    await counter.flush()
    assert counter.journal_batches() == 0
    assert {p: stored(nodes, p) for p in sent} == dict(sent)


async def test_visits_are_refused_not_lost_when_the_journal_cannot_be_written(
    node_factory: NodeFactory,
    make_settings: SettingsFactory,
    counter_factory: CounterFactory,
) -> None:
    nodes = node_factory(2)
    settings = make_settings(
        nodes, batch_interval_seconds=60, batch_size_limit=3, max_pending_pages_per_node=3
    )
    counter = await counter_factory(settings)
    down_pages = pages_on(counter, nodes[0].url, 10)
    up_page = pages_on(counter, nodes[1].url, 1)[0]
    nodes[0].kill()
    full = os.open("/dev/full", os.O_WRONLY)
    os.dup2(full, counter.journal.fileno())  # every journal write now fails with ENOSPC
    os.close(full)

    for page_id in down_pages:
        counter.record_visit(page_id)
    counter.record_visit(up_page)
    await counter.flush()  # the node fails here: now known to be down
    await counter.flush()  # over the cap for a down node: the journal write fails

    with pytest.raises(VisitNotKeptError):
        counter.record_visit(down_pages[0])
    counter.record_visit(up_page)  # other nodes' pages are still accepted
    await counter.flush()
    assert stored(nodes[1:], up_page) == 2

    nodes[0].start()
    await counter.nodes.manager.check_all()
    await counter.flush()
    counter.record_visit(down_pages[0])  # accepted again once the node drained
    await counter.flush()
    assert stored(nodes, down_pages[0]) == 2
    assert all(stored(nodes, page_id) == 1 for page_id in down_pages[1:])


async def test_shutdown_journals_what_a_down_node_missed_and_next_start_replays_it_once(
    node_factory: NodeFactory,
    make_settings: SettingsFactory,
    counter_factory: CounterFactory,
) -> None:
    nodes = node_factory(3)
    settings = make_settings(nodes, batch_interval_seconds=60)
    first = await counter_factory(settings)
    pages = [f"doc-{i}" for i in range(30)]
    for page_id in pages:
        first.record_visit(page_id)
    await first.flush()
    nodes[2].kill()
    for page_id in pages:
        first.record_visit(page_id)
    await first.aclose()
    journal_files = list(settings.journal_dir.glob("*.jsonl"))
    assert len(journal_files) == 1, "the down node's batch is on disk"

    nodes[2].start()
    second = await counter_factory(settings)
    await second.flush()
    await second.aclose()
    third = await counter_factory(settings)
    await third.flush()

    assert {p: stored(nodes, p) for p in pages} == dict.fromkeys(pages, 2)
    assert list(settings.journal_dir.glob("*.jsonl")) == [third.journal.path]


async def test_a_crash_during_replay_does_not_count_the_replayed_batch_twice(
    redis_nodes: list[RedisNodeProcess],
    proxy: FaultProxy,
    make_settings: SettingsFactory,
    counter_factory: CounterFactory,
) -> None:
    settings = make_settings([redis_nodes[0]], redis_nodes=proxy.url, batch_interval_seconds=60)
    first = await counter_factory(settings)
    first.record_visit("warm-up")
    await first.flush()  # the node now caches the script
    proxy.set_mode("refuse")
    for _ in range(9):
        first.record_visit("guide")
    await first.aclose()  # node unreachable: the batch goes to the journal

    proxy.set_mode("lose_replies")
    replaying = await counter_factory(settings)
    await replaying.flush()  # the node applies the replayed batch; the reply is lost
    assert stored(redis_nodes, "guide") == 9
    assert replaying.journal_batches() == 1, "not acknowledged, so still journaled"
    await replaying.abandon()  # crash: the process dies holding its journal

    proxy.set_mode("pass")
    after_crash = await counter_factory(settings)
    await after_crash.flush()
    assert after_crash.stats.batches_duplicate == 1, "the replay of the replay was recognised"
    assert stored(redis_nodes, "guide") == 9
    assert after_crash.journal_batches() == 0
