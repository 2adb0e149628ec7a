"""G10 in the engine against real nodes: a visit repeated with its idempotency key counts once.

Repeats arrive the ways a retried request does: in the same worker's buffer, in
another worker, after the first copy was flushed, after a reply was lost, after
a crash (visit log) or a restart (journal), and across a move of the page.
"""

from __future__ import annotations

import asyncio

import pytest
import redis

from tests.conftest import NodeFactory, SettingsFactory
from tests.integration.conftest import CounterFactory
from tests.support.load import stored
from tests.support.moves import move
from tests.support.proxy import FaultProxy
from visit_counter.core.embedded_nodes import RedisNodeProcess
from visit_counter.services.batch import EPOCHS_KEY, RESETS_KEY, idempotency_set_key, page_key
from visit_counter.services.visit_counter import VisitCounter
from visit_counter.topology.scripts import RECEIVE_LUA, TAKE_LUA, move_keys

pytestmark = pytest.mark.integration


def keys_held(node: RedisNodeProcess, page_id: str) -> set[str]:
    with redis.Redis(port=node.port, decode_responses=True) as client:
        return set(client.zrange(idempotency_set_key(page_id), 0, -1))


def visit(counter: VisitCounter, page_id: str, keys: list[str]) -> None:
    for key in keys:
        counter.record_visit(page_id, key)


async def test_a_key_repeated_in_one_buffer_in_another_worker_and_after_a_flush_counts_once(
    redis_nodes: list[RedisNodeProcess],
    make_settings: SettingsFactory,
    counter_factory: CounterFactory,
) -> None:
    settings = make_settings(redis_nodes, batch_interval_seconds=60)
    first = await counter_factory(settings)
    second = await counter_factory(settings)

    visit(first, "home", ["k1", "k2", "k1"])  # a repeat in the same buffer
    first.record_visit("home")  # an unkeyed visit always counts
    visit(second, "home", ["k2", "k3"])  # k2 retried on another worker
    assert first.stats.visits_repeated == 1, "the buffer caught its own repeat"
    assert (await first.get_visits("home")).visits == 3, "no Redis call decided that"
    await asyncio.gather(first.flush(), second.flush())
    visit(first, "home", ["k3", "k1"])  # retried after both copies were stored
    await first.flush()

    assert stored(redis_nodes, "home") == 4, "k1, k2, k3 and the unkeyed visit"
    assert first.stats.visits_repeated + second.stats.visits_repeated == 4
    assert first.stats.visits_stored + second.stats.visits_stored == 4
    owner = next(node for node in redis_nodes if first.ring.owner("home") == node.url)
    assert keys_held(owner, "home") == {"k1", "k2", "k3"}
    with redis.Redis(port=owner.port) as client:
        ttl = client.ttl(idempotency_set_key("home"))
    assert 0 < ttl <= settings.idempotency_window_seconds, "the key set expires by itself"


async def test_the_same_key_on_two_pages_is_two_visits(
    redis_nodes: list[RedisNodeProcess],
    make_settings: SettingsFactory,
    counter_factory: CounterFactory,
) -> None:
    counter = await counter_factory(make_settings(redis_nodes, batch_interval_seconds=60))
    visit(counter, "a", ["shared"])
    visit(counter, "b", ["shared"])
    await counter.flush()

    assert (stored(redis_nodes, "a"), stored(redis_nodes, "b")) == (1, 1)


async def test_a_lost_reply_then_the_clients_retry_counts_once(
    redis_nodes: list[RedisNodeProcess],
    proxy: FaultProxy,
    make_settings: SettingsFactory,
    counter_factory: CounterFactory,
) -> None:
    settings = make_settings([redis_nodes[0]], redis_nodes=proxy.url, batch_interval_seconds=60)
    counter = await counter_factory(settings)
    counter.record_visit("warm-up")
    await counter.flush()  # loads the script while replies still pass

    visit(counter, "article", ["a", "b"])
    proxy.set_mode("lose_replies")
    await counter.flush()
    assert proxy.replies_lost >= 1
    assert stored(redis_nodes, "article") == 2
    proxy.set_mode("pass")
    await counter.nodes.manager.check_all()
    visit(counter, "article", ["b", "c"])  # the client retried b (and sent c)
    await counter.flush()  # the lost batch again (a duplicate), then b and c

    assert counter.stats.batches_duplicate == 1
    assert stored(redis_nodes, "article") == 3


async def test_a_key_counts_again_once_the_window_has_passed(
    redis_nodes: list[RedisNodeProcess],
    make_settings: SettingsFactory,
    counter_factory: CounterFactory,
) -> None:
    settings = make_settings(redis_nodes, batch_interval_seconds=60, idempotency_window_seconds=1)
    counter = await counter_factory(settings)
    visit(counter, "news", ["k"])
    await counter.flush()
    visit(counter, "news", ["k"])
    await counter.flush()
    assert stored(redis_nodes, "news") == 1

    await asyncio.sleep(1.2)
    visit(counter, "news", ["k"])
    await counter.flush()
    assert stored(redis_nodes, "news") == 2, "a day later, the same key is a new visit"


async def test_a_reset_keeps_the_keys_so_a_retry_of_an_erased_visit_stays_erased(
    redis_nodes: list[RedisNodeProcess],
    make_settings: SettingsFactory,
    counter_factory: CounterFactory,
) -> None:
    counter = await counter_factory(make_settings(redis_nodes, batch_interval_seconds=60))
    visit(counter, "promo", ["k1"])
    await counter.flush()
    await counter.reset("promo")
    visit(counter, "promo", ["k1", "k2"])
    await counter.flush()

    assert stored(redis_nodes, "promo") == 1, "only k2: k1 was counted, then reset"


async def test_keys_survive_the_journal_of_a_down_node_and_a_restart(
    node_factory: NodeFactory,
    make_settings: SettingsFactory,
    counter_factory: CounterFactory,
) -> None:
    nodes = node_factory(1)
    settings = make_settings(nodes, batch_interval_seconds=60)
    first = await counter_factory(settings)
    nodes[0].stop()
    visit(first, "page", ["k1", "k2"])
    await first.aclose()  # the node is down: the keyed batch goes to the journal
    assert first.journal_batches() == 1
    nodes[0].start()

    second = await counter_factory(settings)
    visit(second, "page", ["k2", "k3"])  # k2 retried against the restarted service
    await second.flush()

    assert stored(nodes, "page") == 3


async def test_keys_survive_a_crash_in_the_visit_log(
    redis_nodes: list[RedisNodeProcess],
    make_settings: SettingsFactory,
    counter_factory: CounterFactory,
) -> None:
    settings = make_settings(redis_nodes, journal_visits=True, batch_interval_seconds=60)
    first = await counter_factory(settings)
    visit(first, "page", ["k1", "k2", "k1"])
    await first.abandon()  # kill -9: only the visit log has them

    second = await counter_factory(settings)
    visit(second, "page", ["k1", "k3"])
    await second.flush()

    assert stored(redis_nodes, "page") == 3


async def test_a_retry_across_a_move_counts_once_and_the_keys_move_with_the_page(
    node_factory: NodeFactory,
    make_settings: SettingsFactory,
    counter_factory: CounterFactory,
) -> None:
    nodes = node_factory(2)
    settings = make_settings(nodes[:1], batch_interval_seconds=60)
    counter = await counter_factory(settings)
    pages = [f"p{i}" for i in range(300)]
    for page in pages:
        visit(counter, page, [f"{page}-a", f"{page}-b"])
    await counter.flush()

    await move(settings, "add", nodes[1].url)
    await counter.nodes.refresh()
    moved = [page for page in pages if counter.ring.owner(page) == nodes[1].url]
    assert moved, "some pages moved to the new node"
    for page in pages:
        visit(counter, page, [f"{page}-b", f"{page}-c"])  # b retried after the move
    await counter.flush()

    assert {page: stored(nodes, page) for page in pages} == dict.fromkeys(pages, 3)
    page = moved[0]
    assert keys_held(nodes[1], page) == {f"{page}-a", f"{page}-b", f"{page}-c"}


def take_and_receive(source: redis.Redis, target: redis.Redis, page: str, window_ms: int) -> int:
    """One page through TAKE and RECEIVE, with the arguments the mover sends."""
    taken, out, got, in_, cutoff = move_keys(1)
    reply = source.eval(TAKE_LUA, 3, taken, out, EPOCHS_KEY, page)
    keys = (got, in_, cutoff, EPOCHS_KEY, RESETS_KEY)
    return int(target.eval(RECEIVE_LUA, 5, *keys, window_ms, page, *reply))


def test_receive_adds_one_visit_fewer_per_key_both_nodes_counted(
    node_factory: NodeFactory,
) -> None:
    """A visit stored on the old owner and its retry stored on the new one before the
    transfer reached the page: the key is on both, with different scores."""
    old, new = node_factory(2)
    with redis.Redis(port=old.port) as source, redis.Redis(port=new.port) as target:
        batch = "req\x1f4"  # a batch request's 4 visits of the page under key "req"
        source.set(page_key("home"), 9)
        source.zadd(
            idempotency_set_key("home"), {"a": 1000, "b": 1001, batch: 1002, "moved-back": 900}
        )
        target.set(page_key("home"), 6)  # the retries of b and of the batch, a visit keyed c
        target.zadd(
            idempotency_set_key("home"), {"b": 2000, batch: 2001, "c": 2002, "moved-back": 900}
        )

        assert take_and_receive(source, target, "home", 60_000) == 4, "9 taken, 5 counted twice"
        assert int(target.get(page_key("home"))) == 10, "a, b, c, the batch's 4 and 3 unkeyed"
        assert take_and_receive(source, target, "home", 60_000) == 0, "a rerun adds nothing"
        assert int(target.get(page_key("home"))) == 10
        held = dict(target.zrange(idempotency_set_key("home"), 0, -1, withscores=True))
        assert held == {
            b"a": 1000,
            b"b": 2000,
            batch.encode(): 2001,
            b"c": 2002,
            b"moved-back": 900,
        }
        assert 0 < target.pttl(idempotency_set_key("home")) <= 60_000
