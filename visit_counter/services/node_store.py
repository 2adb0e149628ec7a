"""Counting operations on the nodes: each one Lua script call, bounded by the timeout.

Every error but cancellation is translated here, at the boundary, into
`NodeUnavailableError`; a failure marks the node down and a success marks it up,
so the health map reacts before the next periodic check.
"""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar, cast

from redis.commands.core import AsyncScript

from visit_counter.admin.audit import AUDIT_KEY, NO_CHANGE, PageChange
from visit_counter.analytics.keys import (
    day_key,
    total_visitors_key,
    totals_daily_key,
    totals_hourly_key,
    visitors_key,
)
from visit_counter.analytics.periods import DEFAULT_RETENTION_DAYS, PeriodCounts, StatsWindow
from visit_counter.analytics.scripts import READ_PAGE_DAYS_LUA, READ_TOTALS_LUA
from visit_counter.core.errors import NodeUnavailableError
from visit_counter.core.redis_manager import RedisManager
from visit_counter.services.batch import (
    APPLIED_KEY,
    EPOCHS_KEY,
    EVENTS_CHANNEL,
    PAGE_KEY_PREFIX,
    RESETS_KEY,
    TOP_BUILT_KEY,
    TOP_KEY,
    TOPOLOGY_KEY,
    Batch,
    idempotency_set_key,
    page_key,
)
from visit_counter.services.node_scripts import (
    APPLY_BATCH_LUA,
    READ_PAGE_LUA,
    RESET_COUNT_LUA,
    RESET_PAGE_LUA,
    TOP_BACKFILL_LUA,
)
from visit_counter.topology.scripts import move_keys

T = TypeVar("T")
_SCAN_COUNT = 1000  # keys per SCAN step (a hint to the node)


def as_text(value: object) -> str:
    """A reply element as text (the clients answer bytes; a cluster client may not)."""
    return value.decode() if isinstance(value, bytes) else str(value)


@dataclass(frozen=True, slots=True)
class ApplyResult:
    """What the node did with a batch."""

    applied: bool  # False: the node had applied this batch before (a retry), or refused it
    stored: dict[str, int]  # page -> count after this batch, for the pages it added to
    # page -> the node's epoch, for the pages whose increments it dropped: a reset the
    # writer had not heard of came after them (see batch.py)
    dropped: dict[str, int]
    # The node's write floor when it refused the batch: it was routed at an older
    # topology version (topology/document.py) and must be re-routed. None: not refused.
    stale: int | None = None
    # Pages of the batch an earlier attempt had stored (cluster mode: a slot group
    # applied before the attempt that failed as a whole).
    applied_before: tuple[str, ...] = ()
    # Keyed visits the node had seen the key of (G10): acknowledged twice, counted once.
    repeats: int = 0
    # The same per page, for the pages that had any.
    repeated: dict[str, int] = field(default_factory=dict)

    def added(self, batch: Batch) -> dict[str, int]:
        """What this reply says the node added per page: the batch's count less repeats,
        for the pages it stored now. For a retry whose first reply was lost (`applied`
        False, or `applied_before`), the batch as sent: what the node dropped then is
        not known any more."""
        if not self.applied and self.stale is None:
            return {page: count for page, (count, _) in batch.increments.items()}
        added = {page: batch.increments[page][0] for page in self.applied_before}
        for page in self.stored:
            amount = batch.increments[page][0] - self.repeated.get(page, 0)
            if amount > 0:
                added[page] = amount
        return added


def repeats_of(reply: list[Any], pages: list[str]) -> tuple[int, dict[str, int]]:
    """The repeats at the end of an apply reply (after a count and an epoch per page):
    the total, then (page index, repeats) pairs."""
    at = 1 + 2 * len(pages)
    pairs = reply[at + 1 :]
    repeated = {pages[int(pairs[j]) - 1]: int(pairs[j + 1]) for j in range(0, len(pairs), 2)}
    return int(reply[at]), repeated


@dataclass(frozen=True, slots=True)
class PageRead:
    """One node's part of a page's count, and what the reader needs to trust it."""

    count: int
    applied_seq: int  # the node's applied mark for the mark field asked about
    topology_version: int  # the version the node holds
    port: int | None = None  # the port of the server that answered, when not the node's own


@dataclass(frozen=True, slots=True)
class ResetResult:
    epoch: int | None  # None: refused, the reset was sent at an older topology version
    old: int = 0  # the count the reset deleted on this node


class CountStore(Protocol):
    """The counting operations the engine needs of its storage: a ring node or a cluster."""

    async def apply(self, batch: Batch, via: str | None = None) -> ApplyResult: ...

    async def read(
        self, node: str, page_id: str, mark: str, *, role: int = 0, move: int | None = None
    ) -> PageRead: ...

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
    ) -> ResetResult: ...

    async def publish_reset(self, node: str, page_id: str, epoch: int) -> None: ...

    async def reset_count(self, node: str) -> int: ...

    async def top(self, node: str, limit: int) -> list[tuple[str, int]]:
        """The node's `limit` pages with the most visits stored, most first."""
        ...

    async def backfill_top(self, node: str) -> int:
        """Score the pages stored before the top sets existed (once per node; later calls
        return 0 at once). Returns the pages added."""
        ...

    async def page_periods(
        self, node: str, page_id: str, days: list[str], *, sketches: bool = False
    ) -> PeriodCounts:
        """The page's visits and visitors per day kept on the node (with `sketches`, the
        raw HyperLogLogs too, to merge with other nodes')."""
        ...

    async def total_periods(
        self, node: str, days: list[str], hours: list[str], *, sketches: bool = False
    ) -> PeriodCounts:
        """The same over all the node's pages, and how many pages it holds a count of."""
        ...


@dataclass(frozen=True, slots=True)
class _NodeScripts:
    apply: AsyncScript
    read: AsyncScript
    reset: AsyncScript
    read_page_days: AsyncScript
    read_totals: AsyncScript


class NodeStore:
    def __init__(
        self,
        manager: RedisManager,
        idempotency_window_seconds: int = 86_400,
        stats_retention_days: int = DEFAULT_RETENTION_DAYS,
    ) -> None:
        self._manager = manager
        self._scripts: dict[str, _NodeScripts] = {}
        self._window_ms = idempotency_window_seconds * 1000
        self._retention_days = stats_retention_days

    def _for(self, name: str) -> _NodeScripts:
        """The node's scripts, registered on its client when first used (nodes come and go)."""
        scripts = self._scripts.get(name)
        client = self._manager.client(name)
        if scripts is None or scripts.apply.registered_client is not client:
            scripts = _NodeScripts(
                apply=client.register_script(APPLY_BATCH_LUA),
                read=client.register_script(READ_PAGE_LUA),
                reset=client.register_script(RESET_PAGE_LUA),
                read_page_days=client.register_script(READ_PAGE_DAYS_LUA),
                read_totals=client.register_script(READ_TOTALS_LUA),
            )
            self._scripts[name] = scripts
        return scripts

    async def apply(self, batch: Batch, via: str | None = None) -> ApplyResult:
        """Apply `batch` on its node at most once (see `batch.py`); its tags must be known.

        `via`: send it to this node instead, for a batch whose node left the topology.
        The mover copied the applied marks of a removed node to every node that
        stayed, so the batch is found applied there, or refused and re-routed.
        """
        node = via or batch.node
        pages = list(batch.increments)
        keyed = [(index, page) for index, page in enumerate(pages, 1) if page in batch.keys]
        # Release 1's mark (the writer alone) speaks for the node that holds it only.
        legacy = batch.writer if node == batch.node else ""
        args: list[Any] = [
            batch.writer,
            batch.seq,
            EVENTS_CHANNEL,
            batch.mark,
            batch.version,
            legacy,
            len(keyed),
            self._window_ms,
        ]
        for page_id in pages:
            args.extend(batch.increments[page_id])
        for index, page_id in keyed:
            args += (index, len(batch.keys[page_id]), *batch.keys[page_id])
        window = StatsWindow.of(batch.sealed_hour, self._retention_days)
        args.append(batch.stats_argument(pages, window))
        keys = [
            APPLIED_KEY,
            EPOCHS_KEY,
            RESETS_KEY,
            TOPOLOGY_KEY,
            *(page_key(page_id) for page_id in pages),
            *(idempotency_set_key(page_id) for _, page_id in keyed),
            *(visitors_key(page_id, window.day) for page_id in batch.visitor_pages(pages)),
            day_key(window.day),
            totals_daily_key(),
            totals_hourly_key(),
            total_visitors_key(window.day),
        ]
        reply = await self._call(node, lambda: self._for(node).apply(keys, args))
        if int(reply[0]) == 2:
            return ApplyResult(applied=False, stored={}, dropped={}, stale=int(reply[1]))
        if int(reply[0]) == 0:
            return ApplyResult(applied=False, stored={}, dropped={})
        stored: dict[str, int] = {}
        dropped: dict[str, int] = {}
        for index, page_id in enumerate(pages):
            value, epoch = int(reply[1 + 2 * index]), int(reply[2 + 2 * index])
            if value >= 0:
                stored[page_id] = value
            else:
                dropped[page_id] = epoch
        repeats, repeated = repeats_of(reply, pages)
        return ApplyResult(
            applied=True, stored=stored, dropped=dropped, repeats=repeats, repeated=repeated
        )

    async def read(
        self, node: str, page_id: str, mark: str, *, role: int = 0, move: int | None = None
    ) -> PageRead:
        """The node's part of the page's count (`role`: 1 the move's source, -1 its target)."""
        _, out, _, in_, _ = move_keys(move)
        keys = [page_key(page_id), APPLIED_KEY, TOPOLOGY_KEY, out if role > 0 else in_]
        reply = await self._call(node, lambda: self._for(node).read(keys, [mark, page_id, role]))
        return PageRead(int(reply[0]), int(reply[1]), int(reply[2]))

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
        """Delete the page's count and give it a new epoch (see RESET_PAGE_LUA); then set
        it to `change.value` and write its audit entry, in the same script.

        With `publish`, every worker is told; `least` is also the cutoff for what the
        mover took before this reset (the old owner's new epoch, during a move).
        """
        _, out, _, in_, cutoff = move_keys(move)
        keys = [page_key(page_id), EPOCHS_KEY, RESETS_KEY, TOPOLOGY_KEY, out, in_, cutoff]
        keys.append(AUDIT_KEY)
        args: list[Any] = [page_id, EVENTS_CHANNEL, version, least, 1 if publish else 0, least]
        args += change.script_args()
        reply = await self._call(node, lambda: self._for(node).reset(keys, args))
        if int(reply[0]) == 0:
            return ResetResult(epoch=None)
        return ResetResult(epoch=int(reply[1]), old=int(reply[2]))

    async def publish_reset(self, node: str, page_id: str, epoch: int) -> None:
        """Tell the node's subscribers of a reset made in several steps (during a move)."""
        event = json.dumps({"type": "reset", "page": page_id, "epoch": epoch})
        client = self._manager.client(node)
        await self._call(node, lambda: client.publish(EVENTS_CHANNEL, event))

    async def reset_count(self, node: str) -> int:
        """The node's reset count: every epoch it has handed out is at or below it.

        Read once per process and node, so sent as EVAL: no script cache to miss.
        """
        client = self._manager.client(node)
        reply = await self._call(
            node,
            lambda: client.eval(RESET_COUNT_LUA, 2, EPOCHS_KEY, RESETS_KEY),
        )
        return int(reply)

    async def top(self, node: str, limit: int) -> list[tuple[str, int]]:
        client = self._manager.client(node)
        entries = cast(
            "list[tuple[bytes, float]]",
            await self._call(
                node, lambda: client.zrevrange(TOP_KEY, 0, limit - 1, withscores=True)
            ),
        )
        return [(as_text(page), int(score)) for page, score in entries]

    async def backfill_top(self, node: str) -> int:
        client = self._manager.client(node)
        if await self._call(node, lambda: client.exists(TOP_BUILT_KEY)):
            return 0
        backfill = client.register_script(TOP_BACKFILL_LUA)
        added = 0
        cursor = 0
        while True:
            step = functools.partial(
                client.scan, cursor, match=f"{PAGE_KEY_PREFIX}*", count=_SCAN_COUNT
            )
            cursor, found = await self._call(node, step)
            keys = [as_text(key) for key in found]
            if keys:
                pages = [key.removeprefix(PAGE_KEY_PREFIX) for key in keys]
                chunk = functools.partial(backfill, [*keys, TOP_KEY], pages)
                added += int(await self._call(node, chunk))
            if int(cursor) == 0:
                break
        await self._call(node, lambda: client.set(TOP_BUILT_KEY, 1))
        return added

    async def page_periods(
        self, node: str, page_id: str, days: list[str], *, sketches: bool = False
    ) -> PeriodCounts:
        keys = [day_key(day) for day in days] + [visitors_key(page_id, day) for day in days]
        script = self._for(node).read_page_days
        reply = await self._call(node, lambda: script(keys, [page_id, int(sketches)]))
        return PeriodCounts.of_page(reply)

    async def total_periods(
        self, node: str, days: list[str], hours: list[str], *, sketches: bool = False
    ) -> PeriodCounts:
        keys = [totals_daily_key(), totals_hourly_key()]
        keys += (total_visitors_key(day) for day in days)
        script = self._for(node).read_totals
        reply = await self._call(node, lambda: script(keys, [int(sketches), *days, *hours]))
        client = self._manager.client(node)
        pages = await self._call(node, lambda: client.zcard(TOP_KEY))
        return PeriodCounts.of_totals(reply, int(pages))

    async def _call(self, node: str, operation: Callable[[], Awaitable[T]]) -> T:
        try:
            async with asyncio.timeout(self._manager.call_budget):
                result = await operation()
        except Exception as exc:
            # Not only RedisError and OSError: a peer reset on an idle connection
            # surfaces from uvloop as a RuntimeError ("the handler is closed"), and
            # whatever a client library raises, the node could not be used (issue 9).
            self._manager.mark_down(node, exc)
            raise NodeUnavailableError(f"redis node {node} is unavailable") from exc
        self._manager.mark_up(node)
        return result
