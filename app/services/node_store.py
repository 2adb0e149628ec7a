"""Counting operations on the nodes: each one Lua script call, bounded by the timeout.

Every error but cancellation is translated here, at the boundary, into
`NodeUnavailableError`; a failure marks the node down and a success marks it up,
so the health map reacts before the next periodic check.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from redis.commands.core import AsyncScript

from app.core.errors import NodeUnavailableError
from app.core.redis_manager import RedisManager
from app.services.batch import (
    APPLIED_KEY,
    APPLY_BATCH_LUA,
    EPOCHS_KEY,
    EVENTS_CHANNEL,
    READ_PAGE_LUA,
    RESET_COUNT_LUA,
    RESET_PAGE_LUA,
    RESETS_KEY,
    Batch,
    page_key,
)

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class ApplyResult:
    """What the node did with a batch."""

    applied: bool  # False: the node had applied this batch before (a retry)
    stored: dict[str, int]  # page -> count after this batch, for the pages it added to
    # page -> the node's epoch, for the pages whose increments it dropped: a reset the
    # writer had not heard of came after them (see batch.py)
    dropped: dict[str, int]


@dataclass(frozen=True, slots=True)
class _NodeScripts:
    apply: AsyncScript
    read: AsyncScript
    reset: AsyncScript


class NodeStore:
    def __init__(self, manager: RedisManager) -> None:
        self._manager = manager
        self._scripts: dict[str, _NodeScripts] = {}
        for name in manager.names:
            client = manager.client(name)
            self._scripts[name] = _NodeScripts(
                apply=client.register_script(APPLY_BATCH_LUA),
                read=client.register_script(READ_PAGE_LUA),
                reset=client.register_script(RESET_PAGE_LUA),
            )

    async def apply(self, batch: Batch) -> ApplyResult:
        """Apply `batch` on its node at most once (see `batch.py`); its tags must be known."""
        pages = list(batch.increments)
        args: list[Any] = [batch.writer, batch.seq, EVENTS_CHANNEL]
        for page_id in pages:
            args.extend(batch.increments[page_id])
        keys = [APPLIED_KEY, EPOCHS_KEY, RESETS_KEY, *(page_key(page_id) for page_id in pages)]
        reply = await self._call(batch.node, lambda: self._scripts[batch.node].apply(keys, args))
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
        return ApplyResult(applied=True, stored=stored, dropped=dropped)

    async def read(self, node: str, page_id: str, writer: str) -> tuple[int, int]:
        """The page's stored count and the node's applied-batch mark for `writer`."""
        reply = await self._call(
            node,
            lambda: self._scripts[node].read([page_key(page_id), APPLIED_KEY], [writer]),
        )
        return int(reply[0]), int(reply[1])

    async def reset(self, node: str, page_id: str) -> int:
        """Delete the page's count, give it a new epoch and tell every worker; return the epoch."""
        reply = await self._call(
            node,
            lambda: self._scripts[node].reset(
                [page_key(page_id), EPOCHS_KEY, RESETS_KEY], [page_id, EVENTS_CHANNEL]
            ),
        )
        return int(reply)

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
