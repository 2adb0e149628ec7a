"""Counting operations on a Redis Cluster: the ring's NodeStore, bucket by bucket.

A batch is split by bucket (`buckets.py`); each bucket's group is one script
call whose keys all carry the bucket's hash tag, so they live in one slot. The
groups bound for one primary go out as one pipeline on one connection, with
`WAIT n` at its end when replicas must acknowledge (REDIS_MIN_REPLICAS_ACK,
guarantee G9): a group counts as done only when its node answered and enough
replicas have it. Every primary's pipeline is in flight at once, so a flush
costs one round trip per primary, not one per bucket.

Redirections are followed with the same groups: MOVED (the slot has a new
owner: the slot map is corrected and the group resent), ASK (the slot is being
migrated: the group goes to the importing node behind ASKING), TRYAGAIN (the
slot's keys are split between the two nodes for a moment: resent after a short
pause), CLUSTERDOWN and connection errors (the slot map is read again). A group
that applied before is a no-op by its bucket's mark, so resending is always
safe. Whatever is still not done when the call budget runs out raises
NodeUnavailableError: the batch stays in its outbox and is retried whole.

The cluster is one logical node of the engine (`CLUSTER_NODE`): one outbox, one
reset floor, one mark field per writer.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from redis.asyncio.cluster import ClusterNode, PipelineCommand, RedisCluster
from redis.exceptions import (
    AskError,
    ClusterDownError,
    MovedError,
    NoScriptError,
    ResponseError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

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
    SECONDS_PER_DAY,
    PeriodCounts,
    StatsWindow,
)
from visit_counter.analytics.scripts import READ_PAGE_DAYS_LUA, TOTAL_VISITORS_LUA
from visit_counter.cluster import CLUSTER_NODE, CLUSTER_TOPOLOGY_VERSION
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
from visit_counter.cluster.scripts import APPLY_LUA, READ_LUA, RESET_LUA, RESETS_COUNTER_KEY
from visit_counter.core.errors import NodeUnavailableError
from visit_counter.services.batch import (
    EVENTS_CHANNEL,
    PAGE_KEY_PREFIX,
    TOP_BACKFILL_LUA,
    TOP_BUILT_KEY,
    Batch,
)
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
T = TypeVar("T")

_PAUSE_S = 0.05  # before resending after TRYAGAIN, CLUSTERDOWN or a lost connection


@dataclass(frozen=True, slots=True)
class _Script:
    body: str
    sha: str

    @classmethod
    def of(cls, body: str) -> _Script:
        return cls(body, hashlib.sha1(body.encode()).hexdigest())


@dataclass(frozen=True, slots=True)
class _Call:
    """One script call: its keys share one hash slot."""

    slot: int
    keys: list[str]
    args: list[Any]


@dataclass(frozen=True, slots=True)
class _Answer:
    reply: Any
    port: int


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
        self._short_of_replicas: set[str] = set()  # primaries whose WAIT fell short
        self._apply = _Script.of(APPLY_LUA)
        self._read = _Script.of(READ_LUA)
        self._reset = _Script.of(RESET_LUA)
        self._backfill = _Script.of(TOP_BACKFILL_LUA)
        self._total_visitors = _Script.of(TOTAL_VISITORS_LUA)
        self._read_page_days = _Script.of(READ_PAGE_DAYS_LUA)

    async def apply(self, batch: Batch, via: str | None = None) -> ApplyResult:
        """Apply `batch` at most once per bucket; every group durable before this returns."""
        calls: list[_Call] = []
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
            keys += (visitors_key(page_id, window.day, tag) for page_id in pages)
            keys += (day_key(window.day, tag), totals_daily_key(tag), totals_hourly_key(tag))
            args.append(batch.stats_argument(pages, window))
            calls.append(self._call(keys, args))
            pages_of_call.append(pages)
        answers = await self._guarded(self._run(self._apply, calls))
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
            await self._add_total_visitors(window.day, batch)
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
        (answer,) = await self._guarded(self._run(self._read, [call], durable=False))
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
        (counted,) = await self._guarded(
            self._run_commands([(counter_slot, ("INCR", RESETS_COUNTER_KEY))])
        )
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
        (answer,) = await self._guarded(self._run(self._reset, [call]))
        epoch, old = answer.reply
        return ResetResult(epoch=int(epoch), old=int(old))

    async def publish_reset(self, node: str, page_id: str, epoch: int) -> None:
        event = json.dumps({"type": "reset", "page": page_id, "epoch": epoch})
        await self._guarded(self._cluster.publish(EVENTS_CHANNEL, event))

    async def reset_count(self, node: str) -> int:
        """The cluster-wide reset counter: a writer's floor (see scripts.py)."""
        value = await self._guarded(self._cluster.get(RESETS_COUNTER_KEY))
        return int(value or 0)

    async def top(self, node: str, limit: int) -> list[tuple[str, int]]:
        """Every bucket's top `limit`, merged: one ZREVRANGE per bucket, one pipeline per
        primary (a page lives in one bucket, so the merge is exact)."""
        commands = [
            (self._cluster.keyslot(key), ("ZREVRANGE", key, 0, limit - 1, "WITHSCORES"))
            for key in (top_key(bucket) for bucket in range(BUCKETS))
        ]
        answers = await self._guarded(self._run_commands(commands, durable=False))
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

    async def page_periods(self, node: str, page_id: str, days: list[str]) -> PeriodCounts:
        """The page's analytics, from its bucket (one script call on its primary)."""
        tag = bucket_tag(bucket_of(page_id))
        keys = [day_key(day, tag) for day in days] + [
            visitors_key(page_id, day, tag) for day in days
        ]
        (answer,) = await self._guarded(
            self._run(self._read_page_days, [self._call(keys, [page_id])], durable=False)
        )
        return PeriodCounts.of_page(answer.reply)

    async def total_periods(self, node: str, days: list[str], hours: list[str]) -> PeriodCounts:
        """Every bucket's totals summed (three commands per bucket, one pipeline per
        primary), and the cluster's visitors per day (one key per day)."""
        commands: list[tuple[int, tuple[Any, ...]]] = []
        for bucket in range(BUCKETS):
            tag = bucket_tag(bucket)
            slot = self._cluster.keyslot(top_key(bucket))
            commands += (
                (slot, ("HMGET", totals_daily_key(tag), *days)),
                (slot, ("HMGET", totals_hourly_key(tag), *hours)),
                (slot, ("ZCARD", top_key(bucket))),
            )
        for day in days:
            key = total_visitors_key(day, CLUSTER_TOTALS_TAG)
            commands.append((self._cluster.keyslot(key), ("GET", key)))
        replies = [
            a.reply for a in await self._guarded(self._run_commands(commands, durable=False))
        ]
        daily, hourly, pages = [0] * len(days), [0] * len(hours), 0
        for at in range(0, 3 * BUCKETS, 3):
            daily = [total + int(v or 0) for total, v in zip(daily, replies[at], strict=True)]
            hourly = [total + int(v or 0) for total, v in zip(hourly, replies[at + 1], strict=True)]
            pages += int(replies[at + 2])
        visitors = [bytes(raw) if raw else None for raw in replies[3 * BUCKETS :]]
        return PeriodCounts(daily=daily, visitors=visitors, hourly=hourly, pages=pages)

    async def backfill_top(self, node: str) -> int:
        """Score the pages stored before the buckets' top sets existed, bucket by bucket."""
        if await self._guarded(self._cluster.exists(TOP_BUILT_KEY)):
            return 0
        added = 0
        groups: dict[int, list[str]] = {}

        async def score(groups: dict[int, list[str]]) -> int:
            calls = [
                self._call([*(page_key(page) for page in pages), top_key(bucket)], pages)
                for bucket, pages in groups.items()
            ]
            answers = await self._guarded(self._run(self._backfill, calls, durable=False))
            return sum(int(answer.reply) for answer in answers)

        async for key in self._cluster.scan_iter(match=f"{PAGE_KEY_PREFIX}{{b*", count=1000):
            page = as_text(key).split("}:", 1)[1]
            groups.setdefault(bucket_of(page), []).append(page)
            if sum(len(pages) for pages in groups.values()) >= 1000:
                added += await score(groups)
                groups = {}
        if groups:
            added += await score(groups)
        await self._guarded(self._cluster.set(TOP_BUILT_KEY, 1))
        return added

    async def _add_total_visitors(self, day: str, batch: Batch) -> None:
        """The batch's visitors into the cluster's visitors of the day (one key, not one per
        bucket: a read then needs no merge of a thousand HyperLogLogs). PFADD needs no
        mark: a retry adds nothing new."""
        ids = sorted({visitor for ids in batch.visitors.values() for visitor in ids})
        key = total_visitors_key(day, CLUSTER_TOTALS_TAG)
        ttl = self._retention_days * SECONDS_PER_DAY
        await self._guarded(
            self._run(self._total_visitors, [self._call([key], [ttl, *ids])], durable=False)
        )

    async def _publish_stored(self, writer: str, stored: dict[str, int]) -> None:
        """Tell the other workers the new counts (their caches); a lost event only ages them."""
        event = json.dumps({"type": "stored", "writer": writer, "values": stored})
        try:
            async with asyncio.timeout(self._manager.call_budget):
                await self._cluster.publish(EVENTS_CHANNEL, event)
        except Exception as exc:
            logger.debug("publishing stored counts failed: %r", exc)

    async def _guarded(self, operation: Awaitable[T]) -> T:
        try:
            async with asyncio.timeout(self._manager.call_budget):
                result = await operation
        except NodeUnavailableError:
            self._manager.mark_down(CLUSTER_NODE, "bucket groups not done within the call budget")
            raise
        except TimeoutError as exc:
            budget = self._manager.call_budget
            self._manager.mark_down(CLUSTER_NODE, f"no answer within {budget:g} s")
            raise NodeUnavailableError(f"the cluster did not answer within {budget:g} s") from exc
        except Exception as exc:
            self._manager.mark_down(CLUSTER_NODE, exc)
            raise NodeUnavailableError(f"the cluster is unavailable: {exc!r}") from exc
        self._manager.mark_up(CLUSTER_NODE)
        return result

    # -- bucket groups on their primaries ---------------------------------------

    def _call(self, keys: list[str], args: list[Any]) -> _Call:
        return _Call(self._cluster.keyslot(keys[0]), keys, args)

    async def _run(
        self, script: _Script, calls: list[_Call], durable: bool = True
    ) -> list[_Answer]:
        commands = [
            (call.slot, ("EVALSHA", script.sha, len(call.keys), *call.keys, *call.args))
            for call in calls
        ]
        return await self._run_commands(commands, script=script, durable=durable)

    async def _run_commands(
        self,
        commands: list[tuple[int, tuple[Any, ...]]],
        *,
        script: _Script | None = None,
        durable: bool = True,
    ) -> list[_Answer]:
        """Each (slot, command) answered by its slot's primary, redirections followed.

        Raises NodeUnavailableError when some are still not done by the deadline.
        """
        answers: dict[int, _Answer] = {}
        asking: dict[int, ClusterNode] = {}  # command index -> the node importing its slot
        todo = list(range(len(commands)))
        loaded: set[str] = set()  # nodes the script was loaded on by this call
        deadline = time.monotonic() + self._manager.call_budget
        wait_for = self._manager.min_replicas_ack if durable else 0
        while todo:
            by_node: dict[ClusterNode, list[int]] = {}
            for index in todo:
                node = asking.get(index) or self._cluster.nodes_manager.get_node_from_slot(
                    commands[index][0]
                )
                by_node.setdefault(node, []).append(index)
            outcomes = await asyncio.gather(
                *(
                    self._on_node(
                        node, [commands[i][1] for i in indexes], indexes, asking, wait_for
                    )
                    for node, indexes in by_node.items()
                ),
                return_exceptions=True,
            )
            todo, pause = [], False
            for (node, indexes), outcome in zip(by_node.items(), outcomes, strict=True):
                if isinstance(outcome, BaseException):
                    if not isinstance(outcome, Exception):
                        raise outcome
                    logger.debug("cluster node %s: %r", node.name, outcome)
                    await self._refresh_slots()
                    todo.extend(indexes)
                    pause = True
                    continue
                replies, replicas = outcome
                short = wait_for > 0 and replicas < wait_for
                self._note_replicas(node.name, short, replicas, wait_for)
                for index, reply in zip(indexes, replies, strict=True):
                    asking.pop(index, None)
                    if not isinstance(reply, Exception) and not short:
                        answers[index] = _Answer(reply, int(node.port))
                        continue
                    todo.append(index)
                    pause |= await self._follow(reply, index, asking, node, script, loaded)
            if todo:
                if time.monotonic() >= deadline:
                    raise NodeUnavailableError(
                        f"{len(todo)} of {len(commands)} commands not done in time"
                    )
                if pause:
                    await asyncio.sleep(_PAUSE_S)
        return [answers[index] for index in range(len(commands))]

    async def _on_node(
        self,
        node: ClusterNode,
        commands: list[tuple[Any, ...]],
        indexes: list[int],
        asking: dict[int, ClusterNode],
        wait_for: int,
    ) -> tuple[list[Any], int]:
        """One pipeline on one connection: the commands, then WAIT; their replies.

        Packed here rather than by redis-py's pipeline, which spends more time
        encoding a 10,000-page flush than the nodes spend running it.
        """
        packed: list[bytes] = []
        positions: list[int] = []
        for index, command in zip(indexes, commands, strict=True):
            if index in asking:
                packed.append(_ASKING)
            positions.append(len(packed))
            packed.append(_pack(command))
        if wait_for > 0:
            # Within the socket's read timeout, or a short count would look like a dead node.
            timeout_ms = max(1, int(self._manager.redis_timeout * 500))
            packed.append(_pack(("WAIT", wait_for, timeout_ms)))
        results: list[Any] = []
        connection = node.acquire_connection()
        try:
            await connection.send_packed_command(b"".join(packed))
            for _ in packed:
                try:
                    results.append(await connection.read_response())
                except ResponseError as exc:
                    results.append(exc)
        finally:
            node.release(connection)
        replies = [results[position] for position in positions]
        replicas = results[-1] if wait_for > 0 else 0
        return replies, 0 if isinstance(replicas, Exception) else int(replicas)

    def _note_replicas(self, node: str, short: bool, replicas: int, wanted: int) -> None:
        """Log once when a primary cannot get its writes to enough replicas, once when it can."""
        if short and node not in self._short_of_replicas:
            self._short_of_replicas.add(node)
            logger.warning(
                "cluster primary %s: %d of %d replicas acknowledged (REDIS_MIN_REPLICAS_ACK); "
                "its batches wait until enough replicas are back",
                node,
                replicas,
                wanted,
            )
        elif not short and node in self._short_of_replicas:
            self._short_of_replicas.discard(node)
            logger.info("cluster primary %s: its replicas acknowledge again", node)

    async def _follow(
        self,
        reply: Any,
        index: int,
        asking: dict[int, ClusterNode],
        node: ClusterNode,
        script: _Script | None,
        loaded: set[str],
    ) -> bool:
        """Prepare the resend of a command; True when it should wait a moment first."""
        if not isinstance(reply, Exception):
            return True  # done, but too few replicas have it yet
        self._manager.redirections += 1
        manager = self._cluster.nodes_manager
        if isinstance(reply, MovedError):
            await manager.move_slot(reply)
            return False
        if isinstance(reply, AskError):
            target = manager.get_node(host=reply.host, port=reply.port)
            if target is None:
                await self._refresh_slots()
                return True
            asking[index] = target
            return False
        if isinstance(reply, NoScriptError) and script is not None:
            if node.name not in loaded:  # a new primary (failover): once per node
                await node.execute_pipeline([PipelineCommand(0, "SCRIPT", "LOAD", script.body)])
                loaded.add(node.name)
            return False
        if isinstance(reply, TryAgainError | ClusterDownError):
            if isinstance(reply, ClusterDownError):
                await self._refresh_slots()
            return True
        if isinstance(reply, RedisConnectionError | RedisTimeoutError):
            await self._refresh_slots()
            return True
        if isinstance(reply, ResponseError):
            raise reply  # not a redirection: a script or configuration error
        raise reply

    async def _refresh_slots(self) -> None:
        """Read the slot map again (a failover, a lost node); errors wait for the next try."""
        try:
            await self._cluster.nodes_manager.initialize()
        except Exception as exc:
            logger.debug("reading the cluster's slot map failed: %r", exc)


def _pack(command: tuple[Any, ...]) -> bytes:
    """One command in RESP: an array of bulk strings."""
    parts = [b"*%d\r\n" % len(command)]
    for argument in command:
        data = argument if isinstance(argument, bytes) else str(argument).encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


_ASKING = _pack(("ASKING",))
