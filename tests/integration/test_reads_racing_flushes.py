"""A read of a page whose flush lands while the read is under way, on a real node.

The node's answer is taken at one moment and a flush runs on another connection: the
batch may be applied before the answer is taken and acknowledged only after it is
seen, or applied after it and acknowledged before. Either way the answer is the
page's exact count, in one node read. (Under two test workers, the first order once
made a read answer 6 and the next one 5: the batch was counted in the node's answer
and again as pending.)

The interleavings are forced with a store that pauses where the test says
(`PausingStore`), around the real node store.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from tests.conftest import NodeFactory, SettingsFactory
from tests.support.moves import move
from visit_counter.core.config import Settings
from visit_counter.core.embedded_nodes import RedisNodeProcess
from visit_counter.services.batch import Batch
from visit_counter.services.node_store import ApplyResult, CountStore, PageRead
from visit_counter.services.storage import open_storage
from visit_counter.services.visit_counter import VisitCounter
from visit_counter.topology.nodeset import canonical_label

pytestmark = pytest.mark.integration

PAGE = "racing"
Hook = Callable[[], Awaitable[None]]


class PausingStore:
    """The real store, with hooks around its calls: `before_read` runs before a node
    read is sent, `after_read` once its answer came back (before the reader sees it),
    `after_apply` once a batch is applied (before the shipper hears of it)."""

    def __init__(self, store: CountStore) -> None:
        self._store = store
        self.reads = 0
        self.before_read: Hook | None = None
        self.after_read: Hook | None = None
        self.after_apply: Hook | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def read(self, node: str, page_id: str, mark: str, **kwargs: Any) -> PageRead:
        self.reads += 1
        if self.before_read is not None:
            await self.before_read()
        answer = await self._store.read(node, page_id, mark, **kwargs)
        if self.after_read is not None:
            await self.after_read()
        return answer

    async def apply(self, batch: Batch, via: str | None = None) -> ApplyResult:
        result = await self._store.apply(batch, via)
        if self.after_apply is not None:
            await self.after_apply()
        return result


@contextlib.asynccontextmanager
async def counter_on_pausing_store(
    settings: Settings,
) -> AsyncIterator[tuple[VisitCounter, PausingStore]]:
    storage = open_storage(settings)
    store = PausingStore(storage.store)
    await storage.nodes.start()
    counter = VisitCounter(settings, storage.nodes, store)  # type: ignore[arg-type]
    await storage.manager.start()
    await counter.start()
    try:
        yield counter, store
    finally:
        await counter.aclose()
        await storage.nodes.aclose()
        await storage.manager.aclose()


@contextlib.asynccontextmanager
async def five_stored_one_buffered(
    settings: Settings,
) -> AsyncIterator[tuple[VisitCounter, PausingStore]]:
    """A counter with 5 visits of PAGE stored and a sixth buffered."""
    async with counter_on_pausing_store(settings) as (counter, store):
        for _ in range(5):
            counter.record_visit(PAGE)
        await counter.flush()
        counter.record_visit(PAGE)
        yield counter, store


@pytest.fixture
async def racing(
    redis_nodes: list[RedisNodeProcess], make_settings: SettingsFactory
) -> AsyncIterator[tuple[VisitCounter, PausingStore]]:
    """`five_stored_one_buffered`, nothing flushed on its own (a long interval) and no
    cache (every read asks the node)."""
    settings = make_settings(redis_nodes, batch_interval_seconds=60, cache_ttl_seconds=0)
    async with five_stored_one_buffered(settings) as racing:
        yield racing


@pytest.fixture
async def cached_racing(
    redis_nodes: list[RedisNodeProcess], make_settings: SettingsFactory
) -> AsyncIterator[tuple[VisitCounter, PausingStore]]:
    """As `racing`, with the cache on (a minute): a read's answer is cached."""
    settings = make_settings(redis_nodes, batch_interval_seconds=60, cache_ttl_seconds=60)
    async with five_stored_one_buffered(settings) as racing:
        yield racing


class HeldReply:
    """Before the next node read, a flush is applied and its reply held back: the
    node's answer holds the batch, the outbox still does too, until `release`."""

    def __init__(self, counter: VisitCounter, store: PausingStore) -> None:
        self._counter, self._store = counter, store
        self._applied, self._acknowledge = asyncio.Event(), asyncio.Event()
        self._flushing: asyncio.Future[None] | None = None
        store.before_read = self._flush_first

    async def _hold_the_reply(self) -> None:
        self._applied.set()
        await self._acknowledge.wait()

    async def _flush_first(self) -> None:
        self._store.before_read = None
        self._store.after_apply = self._hold_the_reply
        self._flushing = asyncio.ensure_future(self._counter.flush())
        await self._applied.wait()  # the node holds 6 now; the flusher has not heard yet

    async def release(self) -> None:
        """The reply is seen: the flush ends."""
        self._acknowledge.set()
        assert self._flushing is not None, "no node read was sent"
        await self._flushing


def flush_after_the_next_answer(counter: VisitCounter, store: PausingStore) -> None:
    """The next node read's answer is seen only after a whole flush (applied and
    acknowledged) ran."""

    async def flush_meanwhile() -> None:
        store.after_read = None
        await counter.flush()

    store.after_read = flush_meanwhile


async def test_a_batch_applied_before_the_answer_and_acknowledged_after_is_counted_once(
    racing: tuple[VisitCounter, PausingStore],
) -> None:
    counter, store = racing
    held = HeldReply(counter, store)
    answer = await counter.get_visits(PAGE)
    await held.release()
    assert answer.visits == 6
    assert (await counter.get_visits(PAGE)).visits == 6


async def test_a_batch_applied_after_the_answer_and_acknowledged_before_it_is_seen_is_counted(
    racing: tuple[VisitCounter, PausingStore],
) -> None:
    counter, store = racing
    flush_after_the_next_answer(counter, store)  # while the answer (5) is on its way
    store.reads = 0
    answer = await counter.get_visits(PAGE)
    assert answer.visits == 6
    assert not answer.stale
    assert store.reads == 1  # no second read needed to know the answer holds 5 of the 6
    # The batch kept for the read is let go with it.
    assert all(counter.outbox(name).remembered == 0 for name in counter.topology.nodes)


async def test_a_read_that_raced_an_acknowledged_flush_caches_no_older_count(
    cached_racing: tuple[VisitCounter, PausingStore],
) -> None:
    """The answer (5 stored) is seen after the batch of the sixth visit was acknowledged:
    cached as the stored count, the next read, from the cache, would say 5."""
    counter, store = cached_racing
    flush_after_the_next_answer(counter, store)
    assert (await counter.get_visits(PAGE)).visits == 6
    assert [(await counter.get_visits(PAGE)).visits for _ in range(3)] == [6, 6, 6]


async def test_a_read_of_a_batch_applied_but_not_acknowledged_caches_no_count_it_holds_twice(
    cached_racing: tuple[VisitCounter, PausingStore],
) -> None:
    """The node's answer (6) holds the batch being sent; until its reply is seen the
    outbox still holds it too: a cached 6 would read 7 from the cache, then 6."""
    counter, store = cached_racing
    held = HeldReply(counter, store)
    reads = [(await counter.get_visits(PAGE)).visits for _ in range(3)]
    await held.release()
    reads += [(await counter.get_visits(PAGE)).visits for _ in range(3)]
    assert reads == [6] * 6


async def test_a_read_sent_to_a_node_that_left_and_stopped_is_read_again_by_the_new_topology(
    node_factory: NodeFactory, make_settings: SettingsFactory
) -> None:
    """A move ends and its removed node is shut down while a read of one of its pages is
    on its way there: the page lives on another node now, so the read asks that one
    (it answered 503, node_unavailable, once under load in e2e/test_online_moves)."""
    nodes = node_factory(3)
    settings = make_settings(nodes, batch_interval_seconds=60, cache_ttl_seconds=0)
    async with counter_on_pausing_store(settings) as (counter, store):
        owner = counter.topology.ring.owner(PAGE)
        (leaving,) = [node for node in nodes if canonical_label(node.url, 0) == owner]
        for _ in range(5):
            counter.record_visit(PAGE)
        await counter.flush()

        async def remove_the_owner() -> None:
            store.before_read = None
            await move(settings, "remove", leaving.url)
            leaving.stop()

        store.before_read = remove_the_owner
        store.reads = 0
        answer = await counter.get_visits(PAGE)
    assert answer.visits == 5
    assert not answer.stale
    assert store.reads == 2  # the one to the stopped node, then the one to the new owner
