"""Cluster mode on a real 6-process Redis Cluster: exact counts, once, slot by slot (issue 11)."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest
import redis
from redis.crc import key_slot

from tests.conftest import NodeFactory, SettingsFactory
from tests.support.cluster import LocalCluster
from tests.support.on_cluster import (
    cluster_client,
    cluster_counts,
    cluster_store,
    primary_port_of,
)
from visit_counter.cluster.buckets import applied_key, bucket_of, idempotency_set_key, page_key
from visit_counter.core.errors import NodeUnavailableError
from visit_counter.services.batch import Batch
from visit_counter.services.running import running_counter
from visit_counter.topology.nodeset import TopologyError

pytestmark = pytest.mark.cluster


async def test_counts_are_exact_on_the_cluster_and_read_back(
    cluster: LocalCluster, make_settings: SettingsFactory
) -> None:
    settings = make_settings(cluster.nodes[:2], redis_mode="cluster")
    sent = Counter(f"page-{number % 800}" for number in range(2000))
    async with running_counter(settings) as counter:
        for page, count in sent.items():
            for _ in range(count):
                counter.record_visit(page)
        await counter.flush()
        reads = await asyncio.gather(*(counter.get_visits(page) for page in sent))
        assert counter.stats.visits_stored == sum(sent.values())

    assert [read.visits for read in reads] == list(sent.values())
    assert cluster_counts(cluster, list(sent)) == sent
    owners = {page: primary_port_of(cluster, key_slot(page_key(page).encode())) for page in sent}
    assert {read.served_via for read in reads} <= {f"redis_{port}" for port in owners.values()}
    assert all(
        read.served_via == f"redis_{owners[page]}" for page, read in zip(sent, reads, strict=True)
    )


async def test_more_reads_at_once_than_pooled_connections_wait_for_one(
    cluster: LocalCluster, make_settings: SettingsFactory
) -> None:
    """redis-py's cluster client refuses a connection past the pool (MaxConnectionsError);
    a read waits for one instead, as on a ring node."""
    settings = make_settings(cluster.nodes[:1], redis_mode="cluster", redis_pool_size=2)
    pages = [f"page-{number}" for number in range(300)]
    async with running_counter(settings) as counter:
        for page in pages:
            counter.record_visit(page)
        await counter.flush()
        reads = await asyncio.gather(*(counter.get_visits(page) for page in pages))
    assert [read.visits for read in reads] == [1] * len(pages)
    assert not any(read.stale for read in reads)


async def test_primaries_that_lost_their_scripts_are_sent_them_again(
    cluster: LocalCluster, make_settings: SettingsFactory
) -> None:
    """A primary without the scripts (restarted, failed over, SCRIPT FLUSH) answers
    NOSCRIPT; the command is sent again with the script's body, and counts stay exact."""
    settings = make_settings(cluster.nodes[:1], redis_mode="cluster")
    pages = [f"page-{number}" for number in range(100)]
    async with running_counter(settings) as counter:
        for page in pages:
            counter.record_visit(page)
        await counter.flush()
        for node in cluster.nodes:
            with redis.Redis(port=node.port) as client:
                client.script_flush()
        for page in pages:
            counter.record_visit(page)
        await counter.flush()
        reads = await asyncio.gather(*(counter.get_visits(page) for page in pages))
        assert counter.stats.visits_stored == 2 * len(pages)
    assert [read.visits for read in reads] == [2] * len(pages)
    assert cluster_counts(cluster, pages) == Counter(dict.fromkeys(pages, 2))


async def test_a_batch_sent_twice_is_applied_once_per_bucket_and_its_mark_lives_there(
    cluster: LocalCluster, make_settings: SettingsFactory
) -> None:
    settings = make_settings(cluster.nodes[:1], redis_mode="cluster")
    batch = Batch(
        writer="w1",
        seq=7,
        node="cluster",
        increments={f"p{number}": (number + 1, 0) for number in range(300)},
        version=1,
    )
    async with cluster_store(settings) as store:
        first = await store.apply(batch)
        again = await store.apply(batch)

    assert first.applied
    assert len(first.stored) == 300
    assert not again.applied
    assert not again.stored
    assert cluster_counts(cluster, list(batch.increments)) == {
        page: count for page, (count, _) in batch.increments.items()
    }
    with cluster_client(cluster) as client:
        for page in batch.increments:
            mark = applied_key(bucket_of(page))
            assert key_slot(mark.encode()) == key_slot(page_key(page).encode())
            assert client.hget(mark, "w1|cluster") == b"7"


async def test_a_keyed_visit_retried_on_another_worker_counts_once_in_its_bucket(
    cluster: LocalCluster, make_settings: SettingsFactory
) -> None:
    settings = make_settings(cluster.nodes[:1], redis_mode="cluster", batch_interval_seconds=60)
    pages = [f"keyed-{number}" for number in range(300)]  # over many buckets and primaries
    async with running_counter(settings) as first, running_counter(settings) as second:
        for page in pages:
            first.record_visit(page, f"{page}-a")
            second.record_visit(page, f"{page}-a")  # the retry, on another worker
            second.record_visit(page, f"{page}-b")
        await asyncio.gather(first.flush(), second.flush())
        for page in pages:
            first.record_visit(page, f"{page}-b")  # retried after it was stored
        await first.flush()
        repeats = first.stats.visits_repeated + second.stats.visits_repeated

    assert repeats == 2 * len(pages)
    assert cluster_counts(cluster, pages) == dict.fromkeys(pages, 2)
    with cluster_client(cluster) as client:
        keys = idempotency_set_key(pages[0])
        assert key_slot(keys.encode()) == key_slot(page_key(pages[0]).encode())
        assert set(client.zrange(keys, 0, -1)) == {f"{pages[0]}-a".encode(), b"keyed-0-b"}


async def test_a_reset_drops_older_increments_in_any_slot(
    cluster: LocalCluster, make_settings: SettingsFactory
) -> None:
    settings = make_settings(cluster.nodes[:1], redis_mode="cluster")
    pages = [f"reset-{number}" for number in range(50)]

    def batch(seq: int, tag: int) -> Batch:
        return Batch("w1", seq, "cluster", {page: (1, tag) for page in pages}, 1)

    async with cluster_store(settings) as store:
        floor = await store.reset_count("cluster")
        await store.apply(batch(1, floor))
        epoch = (await store.reset("cluster", pages[0], version=1)).epoch
        assert epoch is not None
        assert epoch > floor
        late = await store.apply(batch(2, floor))  # sealed before the reset was heard of
        tagged = await store.apply(batch(3, epoch))
        assert await store.reset_count("cluster") >= epoch

    assert late.dropped == {pages[0]: epoch}
    assert pages[0] in tagged.stored
    counts = cluster_counts(cluster, pages)
    assert counts[pages[0]] == 1
    assert all(counts[page] == 3 for page in pages[1:])


async def test_too_few_replicas_keep_the_batch_for_a_retry_that_adds_nothing_twice(
    cluster: LocalCluster, make_settings: SettingsFactory
) -> None:
    """WAIT 2 on primaries with one replica each: never enough, so the batch is not done."""
    batch = Batch("w1", 1, "cluster", {f"wait-{n}": (2, 0) for n in range(40)}, 1)
    strict = make_settings(
        cluster.nodes[:1], redis_mode="cluster", redis_min_replicas_ack=2, redis_timeout=0.5
    )
    async with cluster_store(strict) as store:
        with pytest.raises(NodeUnavailableError):
            await store.apply(batch)
    usual = make_settings(cluster.nodes[:1], redis_mode="cluster")
    async with cluster_store(usual) as store:
        retried = await store.apply(batch)  # the groups applied before are no-ops

    assert not retried.applied
    assert set(retried.applied_before) == set(batch.increments)
    assert cluster_counts(cluster, list(batch.increments)) == dict.fromkeys(batch.increments, 2)


async def test_cluster_mode_refuses_a_standalone_node_and_ring_mode_a_cluster_node(
    cluster: LocalCluster, node_factory: NodeFactory, make_settings: SettingsFactory
) -> None:
    standalone = node_factory(1)
    with pytest.raises(TopologyError, match=r"standalone server \(cluster_enabled:0\)"):
        async with running_counter(make_settings(standalone, redis_mode="cluster")):
            pass
    with pytest.raises(TopologyError, match=r"Redis Cluster node \(cluster_enabled:1\)"):
        async with running_counter(make_settings(cluster.nodes[:1])):
            pass
