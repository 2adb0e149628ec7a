"""G6 with JOURNAL_VISITS in one process against real nodes: a counter "crashes" (its
files are dropped as the kernel would drop them at `kill -9`, nothing is flushed or
journaled on the way out) and the next counter on the same data directory replays
its visit-log segments and journal. The stored counts must then equal exactly the
visits that were acknowledged (record_visit returned), whatever had been flushed,
journaled, applied without a reply, or reset before the crash.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

import pytest
import redis

from tests.conftest import NodeFactory, SettingsFactory
from tests.integration.conftest import CounterFactory
from tests.support.moves import move
from tests.support.proxy import FaultProxy
from visit_counter.core.config import Settings
from visit_counter.core.embedded_nodes import RedisNodeProcess
from visit_counter.core.errors import VisitNotKeptError
from visit_counter.services.batch import PAGE_KEY_PREFIX, Batch
from visit_counter.services.journal import JournalError
from visit_counter.services.visit_counter import VisitCounter
from visit_counter.services.visit_log import segments_of

pytestmark = pytest.mark.integration


def all_stored(nodes: list[RedisNodeProcess]) -> dict[str, int]:
    """Every page's count, summed over the nodes."""
    totals: Counter[str] = Counter()
    for node in nodes:
        with redis.Redis(port=node.port, decode_responses=True) as client:
            for key in client.scan_iter(match=PAGE_KEY_PREFIX + "*"):
                totals[key.removeprefix(PAGE_KEY_PREFIX)] += int(client.get(key) or 0)
    return {page: count for page, count in totals.items() if count}


def record(counter: VisitCounter, pages: Iterable[str], sent: Counter[str], times: int = 1) -> None:
    """Visit each page `times` times; count in `sent` only the visits that were acknowledged."""
    page_ids = list(pages)
    for _ in range(times):
        for page_id in page_ids:
            try:
                counter.record_visit(page_id)
            except VisitNotKeptError:
                continue
            sent[page_id] += 1


def pages_on(counter: VisitCounter, node_url: str, count: int, prefix: str = "p") -> list[str]:
    candidates = (f"{prefix}-{i}" for i in range(100_000))
    return [p for p in candidates if counter.ring.owner(p) == node_url][:count]


def segment_numbers(settings: Settings, counter: VisitCounter) -> list[int]:
    return [number for number, _ in segments_of(settings.journal_dir, counter.writer)]


def leftovers(settings: Settings, counter: VisitCounter) -> list[str]:
    """Files a dead counter left behind (journal and segments)."""
    return sorted(path.name for path in settings.journal_dir.glob(f"{counter.writer}.*"))


async def crash(counter: VisitCounter) -> None:
    """Die like `kill -9`: no final flush, no journaling, files closed by the "kernel"."""
    assert counter.visit_log is not None
    await counter.abandon()
    assert counter.closed


def visit_settings(
    make_settings: SettingsFactory, nodes: list[RedisNodeProcess], **extra: object
) -> Settings:
    return make_settings(nodes, journal_visits=True, batch_interval_seconds=60, **extra)


# -- (a) nothing ever flushed --------------------------------------------------------


async def test_a_crash_before_any_flush_loses_nothing(
    redis_nodes: list[RedisNodeProcess],
    make_settings: SettingsFactory,
    counter_factory: CounterFactory,
) -> None:
    settings = visit_settings(make_settings, redis_nodes)
    first = await counter_factory(settings)
    sent: Counter[str] = Counter()
    pages = [f"article-{i}" for i in range(40)]
    record(first, pages, sent, times=2)
    record(first, pages[:7], sent, times=3)
    assert all_stored(redis_nodes) == {}, "nothing reached a node before the crash"
    await crash(first)
    assert segment_numbers(settings, first) == [1]

    second = await counter_factory(settings)
    assert leftovers(settings, first) == [], "the dead counter's files were claimed"
    await second.flush()

    assert all_stored(redis_nodes) == dict(sent)
    assert sum(sent.values()) == 40 * 2 + 7 * 3
    await second.aclose()

    third = await counter_factory(settings)  # the replay happened once: nothing left to claim
    await third.flush()
    assert all_stored(redis_nodes) == dict(sent)


# -- (b) some flushes done, then more visits -------------------------------------------


async def test_a_crash_after_some_flushes_replays_only_what_was_not_stored(
    redis_nodes: list[RedisNodeProcess],
    make_settings: SettingsFactory,
    counter_factory: CounterFactory,
) -> None:
    settings = visit_settings(make_settings, redis_nodes)
    first = await counter_factory(settings)
    sent: Counter[str] = Counter()
    pages = [f"doc-{i}" for i in range(30)]
    record(first, pages, sent)
    await first.flush()
    record(first, pages[:10], sent, times=2)
    await first.flush()
    stored_before_crash = dict(sent)
    assert all_stored(redis_nodes) == stored_before_crash
    assert segment_numbers(settings, first) == [3], "stored segments were deleted"
    record(first, pages[5:25], sent, times=3)
    await crash(first)

    second = await counter_factory(settings)
    await second.flush()

    assert all_stored(redis_nodes) == dict(sent)
    assert sum(sent.values()) - sum(stored_before_crash.values()) == 60


# -- (c) a batch applied, its reply lost ---------------------------------------------


async def test_a_batch_applied_without_reply_is_not_replayed_twice_after_a_crash(
    redis_nodes: list[RedisNodeProcess],
    proxy: FaultProxy,
    make_settings: SettingsFactory,
    counter_factory: CounterFactory,
) -> None:
    # One node, reached through the proxy, so every page goes through the fault.
    settings = visit_settings(make_settings, [redis_nodes[0]], redis_nodes=proxy.url)
    first = await counter_factory(settings)
    sent: Counter[str] = Counter()
    record(first, ["warm-up"], sent)
    await first.flush()  # loads the script while replies still pass

    record(first, ["article"], sent, times=7)
    record(first, ["other"], sent, times=2)
    proxy.set_mode("lose_replies")
    await first.flush()
    assert proxy.replies_lost >= 1
    assert all_stored([redis_nodes[0]]) == dict(sent), "the node applied the batch"
    assert first.stats.batches_failed >= 1, "the engine saw no reply"
    assert 2 in segment_numbers(settings, first), "the unconfirmed segment is kept"

    proxy.set_mode("pass")
    record(first, ["article"], sent, times=3)
    record(first, ["late"], sent)
    await crash(first)

    second = await counter_factory(settings)
    await second.flush()

    assert all_stored([redis_nodes[0]]) == dict(sent)
    assert sent["article"] == 10
    assert second.stats.batches_duplicate >= 1, "segment 2's batch was recognised as applied"


# -- (d) a node down for several flushes ---------------------------------------------


async def test_a_crash_while_a_node_is_down_replays_journal_and_segments_exactly(
    node_factory: NodeFactory,
    make_settings: SettingsFactory,
    counter_factory: CounterFactory,
) -> None:
    nodes = node_factory(3)
    settings = visit_settings(make_settings, nodes)
    first = await counter_factory(settings)
    down = nodes[1]
    pages = [p for node in nodes for p in pages_on(first, node.url, 8, prefix="story")]
    on_down = set(pages_on(first, down.url, 8, prefix="story"))
    sent: Counter[str] = Counter()

    record(first, pages, sent)
    await first.flush()  # all up: stored everywhere
    down.kill()
    for round_number in range(3):
        record(first, pages[round_number * 4 :], sent)
        await first.flush()  # the down node's part goes to the journal
    assert first.journal_batches() >= 2, "batches for the down node were journaled"
    expected_up = {p: n for p, n in sent.items() if p not in on_down}
    assert all_stored([nodes[0], nodes[2]]) == expected_up

    record(first, pages, sent, times=2)  # only in memory and in the visit log
    await crash(first)
    down.start()

    second = await counter_factory(settings)
    await second.flush()

    assert all_stored(nodes) == dict(sent)
    assert second.journal_batches() == 0


# -- (e) a crash during the replay ----------------------------------------------------


async def crash_during_replay(
    redis_nodes: list[RedisNodeProcess],
    proxy: FaultProxy,
    settings: Settings,
    counter_factory: CounterFactory,
    sent: Counter[str],
) -> VisitCounter:
    """First counter crashes with segments on disk; the second replays them (the node
    applies, the reply is lost) and is returned, still running."""
    first = await counter_factory(settings)
    record(first, ["warm-up"], sent)
    await first.flush()  # loads the script while replies still pass
    record(first, ["guide"], sent, times=5)
    await first.flush()
    record(first, ["guide"], sent, times=4)
    record(first, ["faq"], sent, times=2)
    await crash(first)

    proxy.set_mode("lose_replies")
    replaying = await counter_factory(settings)
    assert replaying.journal_batches() == 1, "segment 3 of the first counter, claimed"
    await replaying.flush()  # the node applies the replayed batch; the reply is lost
    assert proxy.replies_lost >= 1
    assert all_stored([redis_nodes[0]]) == dict(sent)
    assert replaying.journal_batches() == 1, "not acknowledged, so still journaled"
    return replaying


async def test_a_crash_during_replay_then_a_third_counter_counts_exactly_once(
    redis_nodes: list[RedisNodeProcess],
    proxy: FaultProxy,
    make_settings: SettingsFactory,
    counter_factory: CounterFactory,
) -> None:
    settings = visit_settings(make_settings, [redis_nodes[0]], redis_nodes=proxy.url)
    sent: Counter[str] = Counter()
    replaying = await crash_during_replay(redis_nodes, proxy, settings, counter_factory, sent)
    await crash(replaying)

    proxy.set_mode("pass")
    third = await counter_factory(settings)
    await third.flush()

    assert all_stored([redis_nodes[0]]) == dict(sent)
    assert sent["guide"] == 9
    assert third.stats.batches_duplicate >= 1, "the replay of the replay was recognised"
    assert third.journal_batches() == 0


async def test_the_replaying_counters_own_visits_survive_its_crash(
    redis_nodes: list[RedisNodeProcess],
    proxy: FaultProxy,
    make_settings: SettingsFactory,
    counter_factory: CounterFactory,
) -> None:
    # Like the test above, but the replaying counter also takes visits of its own,
    # before and after its replay flush, which never reach the node. Its journal then
    # holds the first counter's batch with seq 3, and its own segments are numbered
    # from 1: the claim must not treat the other writer's seq 3 as covering them.
    settings = visit_settings(make_settings, [redis_nodes[0]], redis_nodes=proxy.url)
    sent: Counter[str] = Counter()
    first = await counter_factory(settings)
    record(first, ["warm-up"], sent)
    await first.flush()
    record(first, ["guide"], sent, times=5)
    await first.flush()
    record(first, ["guide"], sent, times=4)
    await crash(first)

    proxy.set_mode("lose_replies")
    replaying = await counter_factory(settings)
    record(replaying, ["mine"], sent, times=2)  # segment 1 of the replaying counter
    await replaying.flush()  # the claimed batch goes first; its reply is lost
    assert proxy.replies_lost >= 1
    record(replaying, ["mine"], sent, times=3)  # a later segment
    record(replaying, ["yours"], sent)
    assert "mine" not in all_stored([redis_nodes[0]]), "its own visits never reached the node"
    assert segment_numbers(settings, replaying)[0] == 1
    await crash(replaying)

    proxy.set_mode("pass")
    third = await counter_factory(settings)
    await third.flush()

    assert all_stored([redis_nodes[0]]) == dict(sent)
    assert sent["mine"] == 5


# -- (f) a reset before the crash ----------------------------------------------------


async def test_visits_before_a_reset_do_not_come_back_after_a_crash(
    redis_nodes: list[RedisNodeProcess],
    make_settings: SettingsFactory,
    counter_factory: CounterFactory,
) -> None:
    settings = visit_settings(make_settings, redis_nodes)
    first = await counter_factory(settings)
    sent: Counter[str] = Counter()
    record(first, ["promo", "other"], sent, times=5)
    await first.flush()  # promo=5 stored, then reset below

    record(first, ["promo"], sent, times=3)  # pending when the reset comes: dropped
    record(first, ["gone"], sent, times=4)  # never flushed, reset, nothing after
    await first.reset("promo")
    await first.reset("gone")
    del sent["promo"], sent["gone"]
    assert all_stored(redis_nodes) == {"other": 5}

    record(first, ["promo"], sent, times=2)  # after the reset: these count
    record(first, ["other"], sent, times=3)
    assert first.visit_log is not None
    logged = first.visit_log.path(2).read_text().splitlines()
    assert logged.count("promo") == 3, "the segment holds the pre-reset visits too"
    await crash(first)

    second = await counter_factory(settings)
    await second.flush()

    assert all_stored(redis_nodes) == {"promo": 2, "other": 8}
    assert dict(sent) == {"promo": 2, "other": 8}


# -- a journal write that fails at shutdown ----------------------------------------


async def test_an_unjournaled_batch_left_to_the_visit_log_is_not_masked_by_a_later_one(
    redis_nodes: list[RedisNodeProcess],
    proxy: FaultProxy,
    make_settings: SettingsFactory,
    counter_factory: CounterFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Graceful stop with the node unreachable; the journal refuses the older batch
    # (seq 2, say a transient EIO) but takes the newer one (seq 4). `aclose` then keeps
    # the visit log for the next start ("the visit log keeps them"), but the journaled
    # seq 4 makes the claim skip segments 2..4 for that node: seq 2's visits are lost.
    settings = visit_settings(make_settings, [redis_nodes[0]], redis_nodes=proxy.url)
    first = await counter_factory(settings)
    sent: Counter[str] = Counter()
    record(first, ["warm-up"], sent)
    await first.flush()

    record(first, ["early"], sent, times=6)
    proxy.set_mode("refuse")
    await first.flush()  # seq 2 fails and stays in memory; the node is marked down
    real_append = first.journal.append

    def append_failing_seq_2(batch: Batch) -> int:
        if batch.seq == 2:
            raise JournalError("cannot write journal: Input/output error")
        return real_append(batch)

    monkeypatch.setattr(first.journal, "append", append_failing_seq_2)
    record(first, ["later"], sent, times=4)
    await first.aclose()
    assert first.visit_log is not None
    assert segment_numbers(settings, first), "incomplete journal: the visit log was kept"

    proxy.set_mode("pass")
    second = await counter_factory(settings)
    await second.flush()

    assert all_stored([redis_nodes[0]]) == dict(sent)


# -- a node dropped from REDIS_NODES between runs -----------------------------------


async def test_a_node_dropped_from_the_list_between_runs_still_gets_its_journaled_visits(
    node_factory: NodeFactory,
    make_settings: SettingsFactory,
    counter_factory: CounterFactory,
) -> None:
    # The first counter journals what its dead node missed, then crashes. The next
    # start lists only the other node; it follows the topology stored on the nodes
    # (visit_counter/topology/nodeset.py), so the journaled batches wait for their own node
    # instead of being counted elsewhere, through another crash, until it is back.
    kept, dropped = node_factory(2)
    first = await counter_factory(visit_settings(make_settings, [kept, dropped]))
    pages = pages_on(first, kept.url, 5, "k") + pages_on(first, dropped.url, 5, "r")
    dropped.kill()
    sent: Counter[str] = Counter()
    record(first, pages, sent)
    await first.flush()  # the dropped node's batch fails and stays in memory
    record(first, pages, sent)
    await first.flush()  # ... and now goes to the journal
    assert first.journal_batches() == 2
    await crash(first)

    settings = visit_settings(make_settings, [kept])
    second = await counter_factory(settings)
    assert second.topology.members == (kept.url, dropped.url)
    assert second.journal_batches() == 2
    await crash(second)

    dropped.start()
    third = await counter_factory(settings)
    await third.flush()

    assert all_stored([kept, dropped]) == dict(sent)


# -- a crash across a change of the node set -------------------------------------------


async def test_a_visit_log_spanning_a_move_replays_exactly_once(
    node_factory: NodeFactory,
    make_settings: SettingsFactory,
    counter_factory: CounterFactory,
) -> None:
    # Visits are logged before, during and after `nodes add`; some are stored, some
    # are not when the counter dies. The next start routes each segment as the dead
    # counter did (its topology version), so the nodes' marks, or their refusal of
    # an old version, decide: nothing is lost, nothing counted twice.
    nodes = node_factory(3)
    settings = visit_settings(make_settings, nodes[:2])
    first = await counter_factory(settings)
    pages = [f"moving-{number}" for number in range(120)]
    sent: Counter[str] = Counter()
    record(first, pages, sent)
    await first.flush()  # stored under version 1
    record(first, pages, sent)  # in the buffer when the move starts
    await move(settings, "add", nodes[2].url)
    assert first.topology.members == tuple(node.url for node in nodes)
    record(first, pages[:60], sent)  # routed by the new ring
    await first.flush()
    record(first, pages, sent, times=2)  # never flushed
    await crash(first)

    second = await counter_factory(settings)
    await second.flush()

    assert all_stored(nodes) == dict(sent)
    topology = second.topology
    for node in nodes:
        with redis.Redis(port=node.port, decode_responses=True) as client:
            held = {
                key.removeprefix(PAGE_KEY_PREFIX) for key in client.scan_iter(PAGE_KEY_PREFIX + "*")
            }
        assert all(topology.ring.owner(page) == node.url for page in held)


async def test_a_segment_stored_before_a_move_is_not_counted_again_on_the_new_owner(
    redis_nodes: list[RedisNodeProcess],
    proxy: FaultProxy,
    make_settings: SettingsFactory,
    counter_factory: CounterFactory,
) -> None:
    # The node applied the dead counter's batch but the reply was lost, so its segment
    # stayed. The pages then moved to a new node. The replay must ask the node the
    # segment was routed to (its mark says "applied"), not the pages' new owner.
    settings = visit_settings(
        make_settings, [redis_nodes[1]], redis_nodes=f"{proxy.url},{redis_nodes[1].url}"
    )
    first = await counter_factory(settings)
    pages = pages_on(first, proxy.url, 40, "stored")
    sent: Counter[str] = Counter()
    record(first, pages, sent)
    await first.flush()  # stored, and the node has the script now
    record(first, pages, sent, times=3)
    proxy.set_mode("lose_replies")
    await first.flush()  # applied on the node, reply lost: the segment stays
    assert proxy.replies_lost >= 1
    proxy.set_mode("pass")
    await crash(first)

    await move(settings, "add", redis_nodes[2].url)
    second = await counter_factory(settings)
    await second.flush()

    assert all_stored(redis_nodes) == dict(sent)
