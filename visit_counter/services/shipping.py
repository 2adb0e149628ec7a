"""Getting increments from the buffer to their nodes: the flusher and the per-node drains.

A background flusher moves the buffer into per-node outboxes (`outbox.py`) and
sends each node one idempotent batch at a time, nodes in parallel, so a hung
node delays only its own pages (G1, G4). What a node cannot take stays in
memory up to a cap per node, then goes to the journal (G5); at shutdown
everything unsent is journaled and the next start replays it (G6).

A node that refuses a batch routed at an older topology gets it re-routed to
today's owners as derived batches (`Batch.rerouted`), so it lands once on the
right node. When the write ring changes, every queue is sealed as routed so
far (`seal_for_ring_change`), which keeps a journal or a visit log replayed
later exact too.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from typing import Protocol

from visit_counter.analytics.fresh import FreshVisitors
from visit_counter.analytics.periods import day_of_hour, hour_now
from visit_counter.core.config import Settings
from visit_counter.core.consistent_hash import ConsistentHashRing
from visit_counter.core.errors import NodeUnavailableError
from visit_counter.core.tasks import PeriodicTask
from visit_counter.services.batch import Batch, PendingKeys, PendingVisitors
from visit_counter.services.cache import StoredCountCache
from visit_counter.services.fencing import ResetFencing
from visit_counter.services.journal import Journal, JournalError
from visit_counter.services.node_store import ApplyResult, CountStore
from visit_counter.services.outbox import NodeOutbox, Seal
from visit_counter.services.spilling import spill, unsent
from visit_counter.services.stats import CounterStats
from visit_counter.services.visit_log import VisitLog
from visit_counter.topology.document import Topology
from visit_counter.topology.nodeset import NodeSet

logger = logging.getLogger(__name__)

# Told of every batch a node was sent: (node, "stored" | "duplicate" | "failed", seconds).
BatchObserver = Callable[[str, str, float], None]


class WriteBuffer(Protocol):
    """The hot path's buffer (`VisitCounter`), swapped out at each flush."""

    def take(self) -> tuple[dict[str, int], PendingKeys, PendingVisitors]: ...

    def give_back(
        self, increments: Mapping[str, int], keys: PendingKeys, visitors: PendingVisitors
    ) -> None: ...


class Shipper:
    """The outboxes, the flusher and the drains of one process (see the module docstring)."""

    def __init__(
        self,
        settings: Settings,
        nodes: NodeSet,
        store: CountStore,
        fencing: ResetFencing,
        journal: Journal,
        visit_log: VisitLog | None,
        stats: CounterStats,
        cache: StoredCountCache,
        buffer: WriteBuffer,
        writer: str,
    ) -> None:
        self._settings = settings
        self._nodes = nodes
        self._manager = nodes.manager
        self._store = store
        self._fencing = fencing
        self._journal = journal
        self._visit_log = visit_log
        self._stats = stats
        self._cache = cache
        self._buffer = buffer
        self._fresh_visitors = FreshVisitors()  # pages whose visitors key has its expiry
        self._writer = writer
        self.outboxes: dict[str, NodeOutbox] = {}
        # Flush number: a batch's seq is the flush that sealed it (see visit_log.py).
        self.swap = 0
        # Per node: every increment from flushes up to this number is stored or journaled.
        self._covered: dict[str, int] = {}
        self.refusing: set[str] = set()  # nodes whose visits cannot be kept right now
        self.visit_log_failed = False  # its next segment could not be opened
        self.unknown_tags_logged = False  # the open segment has a line tagged UNKNOWN_TAG
        self._drains: dict[str, asyncio.Task[None]] = {}
        self._flusher = PeriodicTask("flusher", self._cycle, settings.batch_interval_seconds)
        self.batch_observer: BatchObserver | None = None  # e.g. the Prometheus metrics
        self.on_reset: Callable[[str, int], None] = lambda page_id, epoch: None
        self.on_retired: Callable[[str], None] = lambda name: None
        # Told of every batch a node stored (or had stored: a retry), before it leaves the
        # outbox or the journal, so a crash in between offers it again, never not at all.
        self.on_stored: Callable[[Batch, ApplyResult], None] = lambda batch, result: None

    @property
    def _topology(self) -> Topology:
        return self._nodes.topology

    def add_node(self, name: str) -> None:
        if name not in self.outboxes:
            self.outboxes[name] = NodeOutbox(name, self._writer)
            self._covered[name] = self.swap

    # -- the flusher -----------------------------------------------------------

    def start(self) -> None:
        self._flusher.start()
        if any(not outbox.empty for outbox in self.outboxes.values()):
            self._flusher.wake()

    def wake(self) -> None:
        self._flusher.wake()

    async def stop(self, *, wait_for_drains: bool = False) -> None:
        await self._flusher.aclose()
        if wait_for_drains:
            await asyncio.gather(*self._drains.values(), return_exceptions=True)

    async def flush(self) -> None:
        """Move the buffer to the outboxes and send every node its batches; wait for all."""
        self.distribute()
        drains = [self._start_drain(name) for name, box in self.outboxes.items() if not box.empty]
        await asyncio.gather(*drains)

    async def _cycle(self) -> None:
        """One tick of the flusher: swap the buffer and start the drains (without waiting)."""
        self.distribute()
        members = self._topology.nodes
        for name, outbox in list(self.outboxes.items()):
            if not outbox.empty:
                self._start_drain(name)
            elif name not in members and not self._draining(name):
                self._retire(name)

    def distribute(self, ring: ConsistentHashRing | None = None) -> None:
        """Swap the buffer out and queue its increments on their owners' outboxes
        (owners on `ring`, by default the current write ring).

        Runs without awaiting, so no increment can land in the old buffer after
        the swap; visits arriving meanwhile go to the new one.
        """
        swapped, keys, visitors = self._buffer.take()
        self.swap += 1
        if self._visit_log is not None:
            self._rotate_visit_log()
        by_owner: dict[str, dict[str, int]] = {}
        keys_by_owner: dict[str, PendingKeys] = {}
        visitors_by_owner: dict[str, PendingVisitors] = {}
        owner_of = (ring or self._topology.write_ring).owner
        for page_id, count in swapped.items():
            owner = owner_of(page_id)
            by_owner.setdefault(owner, {})[page_id] = count
            page_keys = keys.get(page_id)
            if page_keys is not None:
                keys_by_owner.setdefault(owner, {})[page_id] = page_keys
            page_visitors = visitors.get(page_id)
            if page_visitors is not None:
                visitors_by_owner.setdefault(owner, {})[page_id] = page_visitors
        for name, increments in by_owner.items():
            self.outboxes[name].add(
                increments, keys_by_owner.get(name), visitors_by_owner.get(name)
            )
        # Over the cap, a node's increments go to the journal, down or not (a slow node
        # must not grow memory without bound either). With the visit log on, a down
        # node's go at once, so the log's segments can be deleted. A node that answers
        # never needs the disk: while the journal cannot be written, its queue stays.
        cap = self._settings.max_pending_pages_per_node
        down_cap = 1 if self._visit_log is not None else cap
        journal_writable = self._journal.writable
        for name, outbox in self.outboxes.items():
            held = outbox.entries_in_memory
            if not self._manager.is_healthy(name):
                if held >= down_cap:
                    self._spill(name, outbox, refuse_on_failure=True)
            elif held > cap and journal_writable:
                self._spill(name, outbox, refuse_on_failure=False)
            self._note_coverage(name, outbox)

    def seal_for_ring_change(self, old: Topology) -> None:
        """The write ring changed: seal what is held as `old` routed it (see the docstring).

        The buffer goes to the old owners' queues, and every queue becomes a batch
        of the old version, kept in memory, or journaled behind spilled ones so a
        node still gets one writer's seqs in order.
        """
        self.distribute(old.write_ring)
        self._fresh_visitors.forget()  # pages may have new owners: their keys, no expiry yet
        for name, outbox in self.outboxes.items():
            batch = outbox.seal_queued(self._seal_for(name, old.version))
            if batch is None:
                continue
            if not outbox.spilled:
                outbox.sealed.append(batch)
                continue
            try:
                outbox.spilled.append(self._journal.append(batch))
            except JournalError:
                # Never ahead of older spilled batches: back to the buffer, routed anew.
                logger.exception("journal failed; %d visits re-routed in memory", batch.visits)
                self._buffer.give_back(
                    {page: c for page, (c, _) in batch.increments.items()},
                    batch.pending_keys(),
                    batch.pending_visitors(),
                )
        if self._visit_log is not None:
            self._visit_log.mark_version(self.swap + 1, self._topology.version)
        self.wake()

    def _rotate_visit_log(self) -> None:
        """Start the segment for the next flush; refuse visits while that is impossible."""
        assert self._visit_log is not None
        try:
            self._visit_log.open(self.swap + 1)
        except OSError as exc:
            if not self.visit_log_failed:
                logger.error("visit log segment cannot be opened; refusing visits: %s", exc)
            self.visit_log_failed = True
            return
        self.visit_log_failed = False

    def _note_coverage(self, name: str, outbox: NodeOutbox) -> None:
        """A node with nothing in memory has stored or journaled every flush so far."""
        if outbox.queued or outbox.sealed:
            return
        if outbox.inflight is not None and outbox.inflight_offset is None:
            return
        self._covered[name] = self.swap
        if self._visit_log is not None:
            self._visit_log.delete_through(min(self._covered.values()))

    def _spill(self, name: str, outbox: NodeOutbox, *, refuse_on_failure: bool) -> None:
        """Move what an unreachable or lagging node's outbox holds in memory to the journal
        (all but a batch being sent right now). When the journal fails, an unreachable
        node's visits are refused from then on (`refuse_on_failure`); a lagging one's stay
        in memory."""
        inflight = outbox.inflight
        sending = inflight is not None and outbox.inflight_offset is None and self._draining(name)
        try:
            moved = spill(outbox, self._journal, self._seal_for(name), sending=sending)
        except JournalError as exc:
            if not refuse_on_failure:
                logger.error("journal failed; %s's queue stays in memory: %s", name, exc)
                return
            if name not in self.refusing:
                logger.error("journal failed; refusing visits for pages on %s: %s", name, exc)
            self.refusing.add(name)
            return
        self.refusing.discard(name)
        if not moved:
            return  # only a batch being sent was held: it stays until its attempt ends
        pages = sum(len(batch.increments) for batch in moved)
        visits = sum(batch.visits for batch in moved)
        self._stats.batches_journaled += 1
        logger.warning(
            "node %s %s: %d pages (%d visits) moved to the journal",
            name,
            "unreachable" if not self._manager.is_healthy(name) else "behind its flushes",
            pages,
            visits,
        )

    # -- the drains ------------------------------------------------------------

    def _draining(self, name: str) -> bool:
        task = self._drains.get(name)
        return task is not None and not task.done()

    def _start_drain(self, name: str) -> asyncio.Task[None]:
        task = self._drains.get(name)
        if task is None or task.done():
            task = asyncio.create_task(self._drain(name), name=f"drain-{name}")
            self._drains[name] = task
        return task

    async def _drain(self, name: str) -> None:
        """Send the node its batches, oldest first, until it is empty or fails."""
        outbox = self.outboxes[name]
        fencing = self._fencing
        seal = self._seal_for(name)

        def read_spilled(offset: int) -> Batch:
            floor = fencing.floor(name)
            assert floor is not None
            return self._journal.read(offset).with_floor(floor)

        while True:
            if fencing.needs_floor(name):  # tags must be known before a batch is sealed
                try:
                    await self.learn_floor(name)
                except NodeUnavailableError:
                    return
            try:
                batch = outbox.next_batch(seal, read_spilled)
            except JournalError as exc:
                # This process's own record cannot be read back (the disk damaged it):
                # skip it rather than stall the node's queue behind it for good.
                offset = outbox.drop_unreadable()
                logger.error(
                    "journal %s: the record at offset %d for %s cannot be read back; its "
                    "visits are lost: %s",
                    self._journal.path,
                    offset,
                    name,
                    exc,
                )
                continue
            if batch is None:
                break
            if outbox.inflight_offset is None:
                # Sealed before the node's floor was known (a new node): resolve it now,
                # before its first send; a retry then resends it unchanged.
                floor = fencing.floor(name)
                assert floor is not None
                batch = outbox.inflight = batch.with_floor(floor)
            if not await self._send(name, outbox, batch):
                return
        if outbox.entries_in_memory < self._settings.max_pending_pages_per_node:
            self.refusing.discard(name)
        self._note_coverage(name, outbox)

    async def _send(self, name: str, outbox: NodeOutbox, batch: Batch) -> bool:
        """Send the inflight batch once; False when the drain has to stop for now."""
        started = time.perf_counter()
        try:
            result = await self._store.apply(batch, via=name)
        except NodeUnavailableError as exc:
            outbox.release()
            self._stats.batches_failed += 1
            self._observe_batch(name, "failed", started)
            logger.warning(
                "flush to %s failed (%d pages, %d visits, batch %s/%d kept for retry): %s",
                name,
                len(batch.increments),
                batch.visits,
                batch.writer,
                batch.seq,
                exc.__cause__ or exc,
            )
            return False
        if result.stale is not None:
            return await self._reroute(name, outbox, batch, result.stale)
        self.on_stored(batch, result)
        from_journal = outbox.inflight_offset is not None
        outbox.acknowledge()
        if from_journal:
            self._journal.acknowledge(batch)
        self._absorb(batch, result)
        self._observe_batch(name, "stored" if result.applied else "duplicate", started)
        return True

    async def learn_floor(self, name: str) -> None:
        """Read the node's floor when needed (raises NodeUnavailableError).

        The first time, a visit-log segment holding lines logged with an unknown
        tag is closed: its lines resolve to this floor at replay, and a segment
        must never mix them with lines tagged with the floor itself.
        """
        if await self._fencing.learn_floor(name) and self.unknown_tags_logged:
            self.unknown_tags_logged = False
            self.distribute()

    def _observe_batch(self, name: str, outcome: str, started: float) -> None:
        observer = self.batch_observer
        if observer is None:
            return
        try:
            observer(name, outcome, time.perf_counter() - started)
        except Exception:  # reporting must never break a flush
            logger.exception("batch observer failed")

    def _absorb(self, batch: Batch, result: ApplyResult) -> None:
        """Learn from a node's reply: new stored counts, and epochs changed by resets."""
        self._stats.stored(batch, result)
        if batch.fresh_visitors:
            self._fresh_visitors.stored(day_of_hour(batch.sealed_hour), batch.fresh_visitors)
        if not result.applied:  # a retry: the counts its lost reply held are unknown
            for page_id in batch.increments:
                self._cache.discard(page_id)
            return
        for page_id in result.applied_before:
            self._cache.discard(page_id)
        for page_id, stored in result.stored.items():
            self._cache.raise_to(page_id, stored)
        for page_id, epoch in result.dropped.items():
            # A reset this process had not heard of: what it holds for the page is older.
            self.on_reset(page_id, epoch)

    def _seal_for(self, name: str, version: int | None = None) -> Seal:
        """Sealing `name`'s queue as a batch routed at `version` (by default the current)."""
        routed_at = self._topology.version if version is None else version

        def seal(queued: dict[str, int], keys: PendingKeys, visitors: PendingVisitors) -> Batch:
            # The current flush number. Unique per node: a node's queue is refilled only
            # by a flush, so it is sealed at most once per flush number.
            tag = self._fencing.tag
            sealed_hour = hour_now()
            return Batch(
                writer=self._writer,
                seq=self.swap,
                node=name,
                increments={page: (count, tag(page, name)) for page, count in queued.items()},
                version=routed_at,
                keys={page: tuple(sorted(page_keys)) for page, page_keys in keys.items()},
                sealed_hour=sealed_hour,
                visitors={page: tuple(sorted(ids)) for page, ids in visitors.items()},
                fresh_visitors=self._fresh_visitors.fresh(day_of_hour(sealed_hour), visitors),
            )

        return seal

    async def _reroute(self, name: str, outbox: NodeOutbox, batch: Batch, floor: int) -> bool:
        """The node refused `batch`: it was routed at a topology older than `floor`.

        Reads the topology the node holds, then hands the batch's increments to
        their owners there as derived batches (`Batch.rerouted`: the same ones
        however often this runs). A journaled batch is journaled again as its
        parts before its record is acknowledged. False when the topology cannot
        be read yet (the batch stays, for the next attempt).
        """
        if self._topology.version < floor:
            await self._nodes.refresh()
            if self._topology.version < floor:
                outbox.release()
                logger.warning("%s refused a batch routed at an old topology; retrying", name)
                return False
        topology = self._topology
        parts = batch.rerouted(topology.write_ring.owner, topology.version)
        from_journal = outbox.inflight_offset is not None
        offsets: list[int] = []
        if from_journal:
            try:
                offsets = [self._journal.append(part) for part in parts]
            except JournalError:
                outbox.release()
                logger.exception("journal failed while re-routing a batch of %s; retrying", name)
                return False
        outbox.acknowledge(stored=False)
        if from_journal:
            self._journal.acknowledge(batch)
        for index, part in enumerate(parts):
            target = self.outboxes[part.node]
            if from_journal:
                target.spilled.append(offsets[index])
            else:
                target.sealed.append(part)
            self._covered[part.node] = min(self._covered[part.node], self._covered[name])
            self._start_drain(part.node)
        logger.info(
            "batch %s/%d for %s re-routed by topology version %d to %s",
            batch.writer,
            batch.seq,
            name,
            topology.version,
            ", ".join(part.node for part in parts),
        )
        return True

    def _retire(self, name: str) -> None:
        """Forget a node that left the topology once nothing for it is left."""
        self._covered.pop(name, None)
        self.outboxes.pop(name, None)
        self.refusing.discard(name)
        self.on_retired(name)

    def journal_everything(self) -> tuple[int, int, bool]:
        """At shutdown: write every unsent batch to the journal.

        Returns (batches, visits, complete): complete is False when some batch
        could not be written (then the visit log is kept for the next start).
        """
        self.distribute()
        batches = visits = 0
        complete = True
        for name, outbox in self.outboxes.items():
            for batch in unsent(outbox, self._seal_for(name)):
                try:
                    self._journal.append(batch)
                except JournalError:
                    logger.exception(
                        "shutdown: %d visits for %s cannot be journaled%s",
                        batch.visits,
                        name,
                        "; the visit log keeps them" if self._visit_log else " and are LOST",
                    )
                    complete = False
                    break  # a later batch's seq would mark this one's segments as covered
                batches += 1
                visits += batch.visits
            batches += len(outbox.spilled)
        return batches, visits, complete
