"""Counting operations on a Redis Cluster: the ring's NodeStore, bucket by bucket.

A batch is split by bucket (`buckets.py`); each bucket's group is one script
call whose keys all carry the bucket's hash tag, so they live in one slot, sent
to its primary by `primaries.py` (one pipeline per primary, WAIT for replicas,
redirections followed). A group that applied before is a no-op by its bucket's
mark, so resending is always safe. Whatever is still not done when the call
budget runs out raises NodeUnavailableError: the batch stays in its outbox and
is retried whole.

The cluster is one logical node of the engine (`CLUSTER_NODE`): one outbox, one
reset floor, one mark field per writer.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import TYPE_CHECKING, Any

from redis.asyncio.cluster import RedisCluster

from visit_counter.admin.audit import NO_CHANGE, PageChange
from visit_counter.analytics.keys import (
    CLUSTER_TOTALS_TAG,
    day_key,
    total_visitors_key,
    totals_daily_key,
    totals_hourly_key,
    visitors_key,
)
from visit_counter.analytics.periods import (
    DEFAULT_RETENTION_DAYS,
    PeriodCounts,
    StatsWindow,
)
from visit_counter.analytics.scripts import READ_PAGE_DAYS_LUA, TOTAL_VISITORS_LUA
from visit_counter.cluster import CLUSTER_TOPOLOGY_VERSION
from visit_counter.cluster.buckets import (
    BUCKETS,
    applied_key,
    audit_key,
    bucket_of,
    bucket_tag,
    epochs_key,
    group_by_bucket,
    idempotency_set_key,
    page_key,
    top_key,
)
from visit_counter.cluster.primaries import Answer, Call, Primaries, Script
from visit_counter.cluster.scripts import APPLY_LUA, READ_LUA, RESET_LUA, RESETS_COUNTER_KEY
from visit_counter.services.batch import (
    EVENTS_CHANNEL,
    PAGE_KEY_PREFIX,
    TOP_BUILT_KEY,
    Batch,
)
from visit_counter.services.node_scripts import TOP_BACKFILL_LUA
from visit_counter.services.node_store import (
    ApplyResult,
    PageRead,
    ResetResult,
    as_text,
    repeats_of,
)

if TYPE_CHECKING:
    from visit_counter.cluster.manager import ClusterManager

logger = logging.getLogger(__name__)


class ClusterStore:
    """NodeStore's operations for the one logical node `CLUSTER_NODE`."""

    def __init__(
        self,
        manager: ClusterManager,
        idempotency_window_seconds: int = 86_400,
        stats_retention_days: int = DEFAULT_RETENTION_DAYS,
    ) -> None:
        self._cluster: RedisCluster = manager.cluster
        self._manager = manager
        self._window_ms = idempotency_window_seconds * 1000
        self._retention_days = stats_retention_days
        self._primaries = Primaries(manager)
        self._apply = Script.of(APPLY_LUA)
        self._read = Script.of(READ_LUA)
        self._reset = Script.of(RESET_LUA)
        self._backfill = Script.of(TOP_BACKFILL_LUA)
        self._total_visitors = Script.of(TOTAL_VISITORS_LUA)
        self._read_page_days = Script.of(READ_PAGE_DAYS_LUA)

    async def apply(self, batch: Batch, via: str | None = None) -> ApplyResult:
        """Apply `batch` at most once per bucket; every group durable before this returns."""
        calls: list[Call] = []
        pages_of_call: list[list[str]] = []
        window = StatsWindow.of(batch.sealed_hour, self._retention_days)
        for bucket, pages in group_by_bucket(batch.increments).items():
            keyed = [(index, page) for index, page in enumerate(pages, 1) if page in batch.keys]
            args: list[Any] = [batch.seq, batch.mark, len(keyed), self._window_ms]
            for page_id in pages:
                args.append(page_id)
                args.extend(batch.increments[page_id])
            for index, page_id in keyed:
                args += (index, len(batch.keys[page_id]), *batch.keys[page_id])
            keys = [applied_key(bucket), epochs_key(bucket)]
            keys.extend(page_key(page_id) for page_id in pages)
            keys.extend(idempotency_set_key(page_id) for _, page_id in keyed)
            keys.append(top_key(bucket))
            tag = bucket_tag(bucket)
            keys += (visitors_key(page, window.day, tag) for page in batch.visitor_pages(pages))
            keys += (day_key(window.day, tag), totals_daily_key(tag), totals_hourly_key(tag))
            args.append(batch.stats_argument(pages, window))
            calls.append(self._call(keys, args))
            pages_of_call.append(pages)
        answers = await self._scripts(self._apply, calls)
        stored: dict[str, int] = {}
        dropped: dict[str, int] = {}
        earlier: list[str] = []
        repeats = 0
        repeated: dict[str, int] = {}
        for pages, answer in zip(pages_of_call, answers, strict=True):
            reply = answer.reply
            if int(reply[0]) == 0:
                earlier.extend(pages)
                continue
            total, by_page = repeats_of(reply, pages)
            repeats += total
            repeated.update(by_page)
            for index, page_id in enumerate(pages):
                value, epoch = int(reply[1 + 2 * index]), int(reply[2 + 2 * index])
                if value >= 0:
                    stored[page_id] = value
                else:
                    dropped[page_id] = epoch
        if stored:
            await self._publish_stored(batch.writer, stored)
        if batch.visitors and window.day:
            await self._add_total_visitors(window, batch)
        return ApplyResult(
            applied=bool(stored or dropped),
            stored=stored,
            dropped=dropped,
            applied_before=tuple(earlier),
            repeats=repeats,
            repeated=repeated,
        )

    async def read(
        self, node: str, page_id: str, mark: str, *, role: int = 0, move: int | None = None
    ) -> PageRead:
        """The page's count and this writer's applied mark in its bucket."""
        call = self._call([page_key(page_id), applied_key(bucket_of(page_id))], [mark])
        (answer,) = await self._scripts(self._read, [call], durable=False)
        count, applied = (int(value) for value in answer.reply)
        return PageRead(count, applied, CLUSTER_TOPOLOGY_VERSION, port=answer.port)

    async def reset(
        self,
        node: str,
        page_id: str,
        *,
        version: int,
        move: int | None = None,
        least: int = 0,
        publish: bool = True,
        change: PageChange = NO_CHANGE,
    ) -> ResetResult:
        """Draw a new epoch from the cluster-wide counter, then reset the page in its bucket
        (and set it to `change.value`, with its audit entry, in the same script)."""
        counter_slot = self._cluster.keyslot(RESETS_COUNTER_KEY)
        (counted,) = await self._commands([(counter_slot, ("INCR", RESETS_COUNTER_KEY))])
        bucket = bucket_of(page_id)
        call = self._call(
            [page_key(page_id), epochs_key(bucket), top_key(bucket), audit_key(bucket)],
            [
                page_id,
                EVENTS_CHANNEL,
                max(int(counted.reply), least),
                1 if publish else 0,
                *change.script_args(),
            ],
        )
        (answer,) = await self._scripts(self._reset, [call])
        epoch, old = answer.reply
        return ResetResult(epoch=int(epoch), old=int(old))

    async def publish_reset(self, node: str, page_id: str, epoch: int) -> None:
        event = json.dumps({"type": "reset", "page": page_id, "epoch": epoch})
        await self._primaries.guarded(self._cluster.publish(EVENTS_CHANNEL, event))

    async def reset_count(self, node: str) -> int:
        """The cluster-wide reset counter: a writer's floor (see scripts.py)."""
        value = await self._primaries.guarded(self._cluster.get(RESETS_COUNTER_KEY))
        return int(value or 0)

    async def top(self, node: str, limit: int) -> list[tuple[str, int]]:
        """Every bucket's top `limit`, merged: one ZREVRANGE per bucket, one pipeline per
        primary (a page lives in one bucket, so the merge is exact)."""
        commands = [
            (self._cluster.keyslot(key), ("ZREVRANGE", key, 0, limit - 1, "WITHSCORES"))
            for key in (top_key(bucket) for bucket in range(BUCKETS))
        ]
        answers = await self._commands(commands, durable=False)
        entries: list[tuple[str, int]] = []
        for answer in answers:
            # [[page, score], ...] (the client's reply callback), or flat [page, score, ...]
            reply = answer.reply
            pairs = (
                reply
                if reply and isinstance(reply[0], list | tuple)
                else zip(reply[::2], reply[1::2], strict=True)
            )
            entries.extend((as_text(page), int(float(score))) for page, score in pairs)
        entries.sort(key=lambda entry: (-entry[1], entry[0]))
        return entries[:limit]

    async def page_periods(
        self, node: str, page_id: str, days: list[str], *, sketches: bool = False
    ) -> PeriodCounts:
        """The page's analytics, from its bucket (one script call on its primary)."""
        tag = bucket_tag(bucket_of(page_id))
        keys = [day_key(day, tag) for day in days] + [
            visitors_key(page_id, day, tag) for day in days
        ]
        call = self._call(keys, [page_id, int(sketches)])
        (answer,) = await self._scripts(self._read_page_days, [call], durable=False)
        return PeriodCounts.of_page(answer.reply)

    async def total_periods(
        self, node: str, days: list[str], hours: list[str], *, sketches: bool = False
    ) -> PeriodCounts:
        """Every bucket's totals summed (three commands per bucket, one pipeline per
        primary), and the cluster's visitors, one key per day, counted where they are."""
        commands: list[tuple[int, tuple[Any, ...]]] = []
        for bucket in range(BUCKETS):
            tag = bucket_tag(bucket)
            slot = self._cluster.keyslot(top_key(bucket))
            commands += (
                (slot, ("HMGET", totals_daily_key(tag), *days)),
                (slot, ("HMGET", totals_hourly_key(tag), *hours)),
                (slot, ("ZCARD", top_key(bucket))),
            )
        visitor_keys = [total_visitors_key(day, CLUSTER_TOTALS_TAG) for day in days]
        slot = self._cluster.keyslot(visitor_keys[0])
        commands += ((slot, ("PFCOUNT", key)) for key in visitor_keys)
        commands.append((slot, ("PFCOUNT", *visitor_keys)))
        replies = [a.reply for a in await self._commands(commands, durable=False)]
        daily, hourly, pages = [0] * len(days), [0] * len(hours), 0
        for at in range(0, 3 * BUCKETS, 3):
            daily = [total + int(v or 0) for total, v in zip(daily, replies[at], strict=True)]
            hourly = [total + int(v or 0) for total, v in zip(hourly, replies[at + 1], strict=True)]
            pages += int(replies[at + 2])
        unique = [int(count) for count in replies[3 * BUCKETS : -1]]
        return PeriodCounts(daily, unique, int(replies[-1]), hourly=hourly, pages=pages)

    async def backfill_top(self, node: str) -> int:
        """Score the pages stored before the buckets' top sets existed, bucket by bucket."""
        if await self._primaries.guarded(self._cluster.exists(TOP_BUILT_KEY)):
            return 0
        added = 0
        groups: dict[int, list[str]] = {}

        async def score(groups: dict[int, list[str]]) -> int:
            calls = [
                self._call([*(page_key(page) for page in pages), top_key(bucket)], pages)
                for bucket, pages in groups.items()
            ]
            answers = await self._scripts(self._backfill, calls, durable=False)
            return sum(int(answer.reply) for answer in answers)

        async for key in self._cluster.scan_iter(match=f"{PAGE_KEY_PREFIX}{{b*", count=1000):
            page = as_text(key).split("}:", 1)[1]
            groups.setdefault(bucket_of(page), []).append(page)
            if sum(len(pages) for pages in groups.values()) >= 1000:
                added += await score(groups)
                groups = {}
        if groups:
            added += await score(groups)
        await self._primaries.guarded(self._cluster.set(TOP_BUILT_KEY, 1))
        return added

    async def _add_total_visitors(self, window: StatsWindow, batch: Batch) -> None:
        """The batch's visitors into the cluster's visitors of the day (one key, not one per
        bucket: a read then needs no merge of a thousand HyperLogLogs), expiring with the
        day's other keys. PFADD needs no mark: a retry adds nothing new."""
        ids = sorted({visitor for ids in batch.visitors.values() for visitor in ids})
        key = total_visitors_key(window.day, CLUSTER_TOTALS_TAG)
        call = self._call([key], [window.day_expires, *ids])
        await self._scripts(self._total_visitors, [call], durable=False)

    async def _publish_stored(self, writer: str, stored: dict[str, int]) -> None:
        """Tell the other workers the new counts (their caches); a lost event only ages them."""
        event = json.dumps({"type": "stored", "writer": writer, "values": stored})
        try:
            async with asyncio.timeout(self._manager.call_budget):
                await self._cluster.publish(EVENTS_CHANNEL, event)
        except Exception as exc:
            logger.debug("publishing stored counts failed: %r", exc)

    # -- on the primaries -------------------------------------------------------

    def _call(self, keys: list[str], args: list[Any]) -> Call:
        return self._primaries.call(keys, args)

    async def _scripts(
        self, script: Script, calls: list[Call], durable: bool = True
    ) -> list[Answer]:
        return await self._primaries.guarded(self._primaries.run(script, calls, durable))

    async def _commands(
        self, commands: list[tuple[int, tuple[Any, ...]]], durable: bool = True
    ) -> list[Answer]:
        return await self._primaries.guarded(
            self._primaries.run_commands(commands, durable=durable)
        )
