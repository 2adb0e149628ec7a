"""GET's engine: a page's stored count plus this process's pending visits, from the cache
or from the page's node(s), one read per page under way at a time.

`VisitCounter` owns the buffer and the outboxes and tells the reader when a reset or a
topology change happened (`changed`): a node read that raced one is done again, so the
stored part and the pending part of an answer always agree. Flushes that end while a
node's answer is on its way need no second read: the outbox tells which of the batches
it let go the answer holds (`NodeOutbox.pending_at`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from visit_counter.core.errors import NodeUnavailableError
from visit_counter.services.cache import StoredCountCache
from visit_counter.services.node_store import CountStore, PageRead
from visit_counter.services.outbox import NodeOutbox, ReadMark
from visit_counter.services.shipping import Shipper
from visit_counter.topology.document import Topology
from visit_counter.topology.nodeset import NodeSet

READ_ATTEMPTS = 3  # a read that keeps racing changes gives up after this many


@dataclass(frozen=True, slots=True)
class VisitCount:
    visits: int
    served_via: str  # "in_memory" or "redis_<port>"
    stale: bool = False


class PageReader:
    """Reads for one process (see the module docstring)."""

    def __init__(
        self,
        nodes: NodeSet,
        store: CountStore,
        cache: StoredCountCache,
        shipper: Shipper,
        buffered: Callable[[str], int],
        epoch: Callable[[str], int],
    ) -> None:
        """`buffered(page)`: the page's visits in the buffer; `epoch(page)`: the newest
        reset of the page this process knows of (older increments will be dropped)."""
        self._nodes = nodes
        self._manager = nodes.manager
        self._store = store
        self._cache = cache
        self._shipper = shipper
        self._buffered = buffered
        self._epoch = epoch
        self._generation = 0  # resets and topology changes seen: a read racing one is redone
        self._reads: dict[str, asyncio.Task[VisitCount]] = {}  # node reads under way, by page

    def changed(self) -> None:
        """A reset or a topology change: node reads under way must not be trusted."""
        self._generation += 1

    async def aclose(self) -> None:
        """Wait for the node reads under way (each bounded by the node call budget)."""
        await asyncio.gather(*self._reads.values(), return_exceptions=True)

    async def top_pages(self, limit: int) -> list[tuple[str, int]]:
        """The `limit` pages with the most visits stored, most first (ties by page id).

        Exact: each node's top `limit` is asked for, and a page lives on one node, so
        every page of the overall top is in its node's list. While a page moves, its
        count is summed over both owners (a part the mover has taken and not yet
        handed in is missing for that moment). Pending visits are not included: it lags
        by one flush interval. NodeUnavailableError when a node cannot answer.
        """
        names = self._nodes.topology.nodes
        lists = await asyncio.gather(*(self._store.top(name, limit) for name in names))
        merged: Counter[str] = Counter()
        for entries in lists:
            for page_id, visits in entries:
                merged[page_id] += visits
        return sorted(merged.items(), key=lambda entry: (-entry[1], entry[0]))[:limit]

    async def get_visits(self, page_id: str) -> VisitCount:
        """Stored count + this process's pending increments (read your writes).

        Other workers' increments appear once they flush (one flush interval).
        While the owner node is down, the last known count is returned marked
        stale (even from a fresh cache entry: nothing can confirm it); with
        nothing known, NodeUnavailableError. While the page moves between nodes,
        both are read (see visit_counter/topology/scripts.py) and the cache is not used.
        """
        owner, source = self._nodes.topology.read_owners(page_id)
        involved = (owner,) if source is None else (owner, source)
        healthy = all(self._manager.is_healthy(name) for name in involved)
        cached = self._cache.fresh(page_id) if source is None else None
        if cached is not None:
            visits = cached + self._own_pending(page_id, owner)
            return VisitCount(visits, "in_memory", stale=not healthy)
        if healthy:
            with contextlib.suppress(NodeUnavailableError):
                return await self._shared_read(page_id)
        last_known = self._cache.last_known(page_id)
        if last_known is None:
            raise NodeUnavailableError(
                f"the node holding page {page_id!r} is unavailable and its count is unknown"
            )
        return VisitCount(last_known + self._own_pending(page_id, owner), "in_memory", stale=True)

    async def _shared_read(self, page_id: str) -> VisitCount:
        """`_read_through`, one at a time per page: a read that finds one under way waits
        for its answer instead of sending its own (a hot page whose cache entry expired
        costs one round trip, not one per request). As exact as a read of its own: the
        answer is taken after the node answered, its own pending included as of that answer
        (`NodeOutbox.pending_at`), and read again when a reset or topology change of this
        worker ran while it was under way; and reads of a page never overlap, so none sees
        an older count than one answered before it. The answer's stored count is cached
        only when the outbox is as it was when the node answered (`NodeOutbox.settled`)."""
        read = self._reads.get(page_id)
        if read is None:
            read = asyncio.ensure_future(self._read_through(page_id))
            self._reads[page_id] = read
            read.add_done_callback(functools.partial(self._read_done, page_id))
        # Shielded: a reader that goes away (its client hung up) leaves the read to the others.
        return await asyncio.shield(read)

    def _read_done(self, page_id: str, read: asyncio.Task[VisitCount]) -> None:
        if self._reads.get(page_id) is read:
            del self._reads[page_id]
        if not read.cancelled():
            read.exception()  # retrieved here: every reader may have gone

    async def _read_through(self, page_id: str) -> VisitCount:
        raced: tuple[int, str] | None = None  # the stored count and owner of the last attempt
        for _ in range(READ_ATTEMPTS):
            topology = self._nodes.topology
            owner, source = topology.read_owners(page_id)
            nodes = (owner,) if source is None else (source, owner)
            outboxes = [self._outbox(name) for name in nodes]
            marks = [outbox.read_mark() for outbox in outboxes]
            try:
                answer = await self._read_nodes(page_id, topology, source, outboxes, marks)
            except NodeUnavailableError:
                # A node that left the topology while it was read (a move ended) is not
                # one that is down: read again by the newer topology, if there is one.
                if (await self._nodes.refresh()).version == topology.version:
                    raise
                continue
            finally:
                for outbox in outboxes:
                    outbox.read_done()
            if isinstance(answer, VisitCount):
                return answer
            raced = answer if answer is not None else raced
        if raced is None:
            raise NodeUnavailableError(f"the topology kept changing while {page_id!r} was read")
        # Every attempt raced a change: the last answer, marked as not confirmed.
        stored, owner = raced
        return VisitCount(stored + self._own_pending(page_id, owner), "in_memory", stale=True)

    async def _read_nodes(
        self,
        page_id: str,
        topology: Topology,
        source: str | None,
        outboxes: list[NodeOutbox],
        marks: list[ReadMark],
    ) -> VisitCount | tuple[int, str] | None:
        """One attempt, on the nodes of `outboxes` (the move's `source` first, if any, then
        the owner): the answer, or what it read when a change raced it (the stored count
        and the owner), or None when a node knows a newer topology."""
        owner = outboxes[-1].node
        reads = (
            self._store.read(
                outbox.node,
                page_id,
                mark.field,
                role=0 if source is None else (1 if outbox.node == source else -1),
                move=topology.move,
            )
            for outbox, mark in zip(outboxes, marks, strict=True)
        )
        generation = self._generation
        # One node (no move): awaited as it is; gather would wrap it in a task.
        parts = [await next(reads)] if source is None else await asyncio.gather(*reads)
        if any(part.topology_version > topology.version for part in parts):
            await self._nodes.refresh()  # a node knows a newer topology: read by it
            return None
        stored = sum(part.count for part in parts)
        if generation != self._generation:
            return stored, owner  # a reset or a topology change ran meanwhile
        epoch = self._epoch(page_id)
        queued = [
            outbox.pending_at(page_id, epoch, mark, part.applied_seq)
            for outbox, mark, part in zip(outboxes, marks, parts, strict=True)
        ]
        if None in queued:
            return stored, owner  # the outbox cannot tell what the answer holds
        pending = self._buffered(page_id) + sum(q for q in queued if q is not None)
        if source is None and outboxes[0].settled(marks[0], parts[0].applied_seq):
            self._cache.put(page_id, stored)
        return VisitCount(stored + pending, self._served_via(owner, parts))

    def _outbox(self, name: str) -> NodeOutbox:
        return self._shipper.outboxes[name]

    def _served_via(self, owner: str, parts: list[PageRead]) -> str:
        """`redis_<port>` of the server that answered for the owner (cluster: per slot)."""
        port = parts[-1].port or self._manager.port(owner)
        return f"redis_{port}"

    def _own_pending(self, page_id: str, owner: str) -> int:
        """Buffered and queued for `owner`, counting the batch being sent as not stored."""
        pending_for = self._outbox(owner).pending_for
        return self._buffered(page_id) + pending_for(page_id, self._epoch(page_id), 0)
