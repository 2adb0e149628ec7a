"""G3 without losing G1: a reset fences visits accepted before it, and no others.

Regression tests for issue 9, item 1: a process that starts after a page was
reset (a deploy, a respawned worker) used to tag its increments with epoch 0;
the node, holding epoch >= 1 for the page, dropped them, so the first flush of
every page ever reset was lost after every restart. An empty replacement node
met the same mismatch from the other side.
"""

from __future__ import annotations

import pytest
import redis

from tests.conftest import NodeFactory, SettingsFactory
from tests.integration.conftest import CounterFactory
from tests.integration.test_exactly_once import stored
from tests.support.proxy import FaultProxy
from visit_counter.core.embedded_nodes import RedisNodeProcess

pytestmark = pytest.mark.integration

PAGES = [f"news-{number}" for number in range(30)]


async def test_visits_after_a_restart_count_on_pages_reset_before_it(
    redis_nodes: list[RedisNodeProcess],
    make_settings: SettingsFactory,
    counter_factory: CounterFactory,
) -> None:
    settings = make_settings(redis_nodes, batch_interval_seconds=60)
    first = await counter_factory(settings)
    for page_id in PAGES:
        first.record_visit(page_id)
    await first.flush()
    for page_id in PAGES[:20]:
        await first.reset(page_id)
        await first.reset(page_id)  # a page reset twice has epoch 2
    for page_id in PAGES:
        first.record_visit(page_id)  # one visit after the reset, counted by the first writer
    await first.aclose()

    second = await counter_factory(settings)  # a new writer: knows no epoch of its own
    for _ in range(10):
        for page_id in PAGES:
            second.record_visit(page_id)
    await second.flush()
    # Held back a flush: a visit the reply would once have "reset" locally.
    for page_id in PAGES:
        second.record_visit(page_id)
    await second.flush()

    assert {p: stored(redis_nodes, p) for p in PAGES[:20]} == dict.fromkeys(PAGES[:20], 12)
    assert {p: stored(redis_nodes, p) for p in PAGES[20:]} == dict.fromkeys(PAGES[20:], 13)
    reading = await second.get_visits(PAGES[0])
    assert reading.visits == 12


async def test_a_reset_after_start_still_fences_what_was_accepted_before_it(
    redis_nodes: list[RedisNodeProcess],
    proxy: FaultProxy,
    make_settings: SettingsFactory,
    counter_factory: CounterFactory,
) -> None:
    direct = make_settings([redis_nodes[0]], batch_interval_seconds=60)
    earlier = await counter_factory(direct)
    await earlier.reset("promo")  # before the holder starts: must not fence it
    await earlier.reset("promo")
    holder = await counter_factory(
        make_settings([redis_nodes[0]], redis_nodes=proxy.url, batch_interval_seconds=60)
    )
    for _ in range(3):
        holder.record_visit("promo")
    await holder.flush()
    assert stored(redis_nodes, "promo") == 3, "resets older than the writer cost nothing"

    for _ in range(4):
        holder.record_visit("promo")
    proxy.set_mode("refuse")  # the holder's events subscription is cut: it hears nothing
    await earlier.reset("promo")  # after those four visits: they must never count
    proxy.set_mode("pass")
    await holder.flush()  # the node fences them by their tag, and says so
    holder.record_visit("promo")
    await holder.flush()
    assert stored(redis_nodes, "promo") == 1


async def test_an_empty_replacement_node_keeps_every_visit_and_fences_later_resets(
    node_factory: NodeFactory,
    make_settings: SettingsFactory,
    counter_factory: CounterFactory,
) -> None:
    nodes = node_factory(1, extra_args=["--appendonly", "no"])
    settings = make_settings(nodes, batch_interval_seconds=60)
    counter = await counter_factory(settings)
    for page_id in PAGES:
        for _ in range(3):
            await counter.reset(page_id)  # this writer now knows epoch 3 for each page

    with redis.Redis(port=nodes[0].port) as client:
        client.flushall()  # the node is replaced by an empty one at the same address
        for page_id in PAGES:
            counter.record_visit(page_id)
        await counter.flush()
        assert {p: stored(nodes, p) for p in PAGES} == dict.fromkeys(PAGES, 1)

        # The new node learned the tags in use: its next epoch fences writers that
        # know epoch 3 but have not heard of this reset.
        await counter.reset(PAGES[0])
        assert int(client.hget("vc:epochs", PAGES[0]) or 0) > 3
