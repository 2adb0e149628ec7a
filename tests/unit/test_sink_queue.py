"""SinkQueue: order, retries, the memory bound, shutdown, claims and damage (a fake sink).

The fake keeps its applied marks and its totals together, as a real sink must; it
can be switched down (every delivery raises) to play a sink that is unreachable.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from pathlib import Path

import pytest

from visit_counter.services.batch import Batch
from visit_counter.services.node_store import ApplyResult
from visit_counter.sinks.base import Delivery
from visit_counter.sinks.queue import SinkQueue


class FakeSink:
    def __init__(self, name: str = "fake") -> None:
        self.name = name
        self.down = False
        self.marks: set[tuple[str, int]] = set()
        self.totals: Counter[str] = Counter()
        self.order: list[int] = []
        self.attempts = 0
        self.lose_replies = 0  # this many deliveries are applied, then raise
        self.hang_after_applying = False

    async def start(self) -> None:
        return None

    async def deliver(self, delivery: Delivery) -> bool:
        self.attempts += 1
        if self.down:
            raise ConnectionError("sink down")
        if (delivery.batch, delivery.seq) in self.marks:
            return False
        self.marks.add((delivery.batch, delivery.seq))
        self.totals.update(delivery.counts)
        self.order.append(delivery.seq)
        if self.lose_replies:
            self.lose_replies -= 1
            raise ConnectionError("reply lost")
        if self.hang_after_applying:
            await asyncio.Event().wait()
        return True

    async def aclose(self) -> None:
        return None


def delivery(seq: int, page: str = "p", count: int = 1) -> Delivery:
    return Delivery("w|redis://n:1", seq, {page: count})


def queue_for(sink: FakeSink, directory: Path, writer: str, **options: float) -> SinkQueue:
    queue = SinkQueue(sink, directory, writer, **options)  # type: ignore[arg-type]
    queue.open()
    queue.start()
    return queue


async def drained(queue: SinkQueue, seconds: float = 5.0) -> None:
    async with asyncio.timeout(seconds):
        while queue.pending:
            await asyncio.sleep(0.01)


async def test_deliveries_are_handed_over_in_order_and_the_file_emptied(tmp_path: Path) -> None:
    sink = FakeSink()
    queue = queue_for(sink, tmp_path, "w1")
    for seq in range(1, 51):
        queue.offer(delivery(seq, f"p{seq % 3}", seq))
    await drained(queue)
    assert sink.order == list(range(1, 51))
    assert sum(sink.totals.values()) == sum(range(1, 51))
    assert queue.stats().delivered == 50
    await asyncio.sleep(0.05)  # the loop empties the file once it is idle
    assert queue.path.stat().st_size == 0
    await queue.aclose()
    assert not queue.path.exists()


async def test_a_sink_that_is_down_is_retried_until_it_takes_each_delivery_once(
    tmp_path: Path,
) -> None:
    sink = FakeSink()
    sink.down = True
    queue = queue_for(sink, tmp_path, "w1")
    for seq in range(1, 6):
        queue.offer(delivery(seq))
    await asyncio.sleep(0.5)
    assert queue.pending == 5
    assert queue.stats().failures >= 2
    assert queue.stats().last_error == "ConnectionError: sink down"
    sink.down = False
    await drained(queue)
    assert sink.totals == {"p": 5}
    assert queue.stats().last_error is None
    await queue.aclose()


async def test_beyond_the_memory_bound_deliveries_wait_in_the_file_and_keep_their_order(
    tmp_path: Path,
) -> None:
    sink = FakeSink()
    sink.down = True
    queue = queue_for(sink, tmp_path, "w1", max_in_memory=4)
    for seq in range(1, 31):
        queue.offer(delivery(seq))
    assert queue.pending == 30
    sink.down = False
    await drained(queue)
    assert sink.order == list(range(1, 31))
    await queue.aclose()


async def test_what_shutdown_cannot_hand_over_is_claimed_by_the_next_process(
    tmp_path: Path,
) -> None:
    sink = FakeSink()
    first = queue_for(sink, tmp_path, "w1", shutdown_seconds=0.2)
    first.offer(delivery(1, "a", 2))
    await drained(first)
    sink.down = True
    first.offer(delivery(2, "a", 3))
    first.offer(delivery(3, "b", 4))
    await first.aclose()
    assert first.path.exists()
    sink.down = False
    second = queue_for(sink, tmp_path, "w2")
    await drained(second)
    assert sink.totals == {"a": 5, "b": 4}
    assert not first.path.exists()
    await second.aclose()


async def test_a_lost_reply_is_retried_and_the_marks_apply_it_once(tmp_path: Path) -> None:
    sink = FakeSink()
    sink.lose_replies = 1  # applied, then the answer never arrives
    queue = queue_for(sink, tmp_path, "w1")
    queue.offer(delivery(1, "p", 5))
    await drained(queue)
    assert sink.totals == {"p": 5}
    stats = queue.stats()
    assert (stats.failures, stats.delivered, stats.duplicates) == (1, 0, 1)
    await queue.aclose()


async def test_a_crash_mid_delivery_replays_the_file_and_the_marks_apply_it_once(
    tmp_path: Path,
) -> None:
    sink = FakeSink()
    sink.hang_after_applying = True
    first = queue_for(sink, tmp_path, "w1")
    first.offer(delivery(1, "p", 5))
    async with asyncio.timeout(5):
        while not sink.totals:
            await asyncio.sleep(0.01)
    await first.abandon()  # kill -9 while the sink's answer is on its way
    sink.hang_after_applying = False
    second = queue_for(sink, tmp_path, "w2")
    await drained(second)
    assert sink.totals == {"p": 5}
    assert (second.stats().delivered, second.stats().duplicates) == (0, 1)
    await second.aclose()


async def test_a_live_writers_file_is_not_claimed(tmp_path: Path) -> None:
    sink = FakeSink()
    sink.down = True
    live = queue_for(sink, tmp_path, "w1")
    live.offer(delivery(1))
    other = queue_for(FakeSink(), tmp_path, "w2")
    assert live.path.exists()
    assert other.pending == 0
    sink.down = False
    await drained(live)
    await other.aclose()
    await live.aclose()


async def test_a_damaged_record_in_a_claimed_file_is_skipped_logged_and_counted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sink = FakeSink()
    sink.down = True
    first = queue_for(sink, tmp_path, "w1", shutdown_seconds=0.05)
    for seq in range(1, 4):
        first.offer(delivery(seq))
    await first.aclose()
    lines = first.path.read_bytes().splitlines(keepends=True)
    lines[1] = lines[1].replace(b'"seq":2', b'"seq":9')  # the checksum no longer matches
    first.path.write_bytes(b"".join(lines))
    sink.down = False
    with caplog.at_level(logging.ERROR, logger="visit_counter.sinks.queue"):
        second = queue_for(sink, tmp_path, "w2")
        await drained(second)
    assert sink.order == [1, 3]
    assert second.stats().damaged == 1
    assert any("unreadable" in record.getMessage() for record in caplog.records)
    await second.aclose()


def test_the_counts_handed_over_are_what_the_node_added() -> None:
    batch = Batch("w", 7, "redis://n:1", {"a": (5, 0), "b": (2, 0), "c": (1, 0), "d": (4, 0)})
    stored = ApplyResult(
        applied=True,
        stored={"a": 10, "b": 2, "c": 7},
        dropped={"d": 3},  # a reset came after its visits
        repeats=3,
        repeated={"a": 2, "c": 1},  # keys seen before: acknowledged twice, added once
    )
    assert stored.added(batch) == {"a": 3, "b": 2}
    retry = ApplyResult(applied=False, stored={}, dropped={})  # applied before, reply lost
    assert retry.added(batch) == {"a": 5, "b": 2, "c": 1, "d": 4}
    refused = ApplyResult(applied=False, stored={}, dropped={}, stale=4)
    assert refused.added(batch) == {}
