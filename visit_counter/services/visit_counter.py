"""The counting engine's face: the hot path, reads, resets, and the node events.

The hot path (`record_visit`) is a dict increment and never waits on Redis (G4).
The buffer is shipped to the nodes by `shipping.py` (flusher, drains, journal:
G1, G4-G6); resets are fenced by per-page epochs and per-node floors
(`fencing.py`, G3). This module wires those together, answers reads (stored
count + this process's pending increments, from both owners while a page
moves) and resets, and follows each node's events and the topology
(visit_counter/topology/nodeset.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import re
import secrets
import socket
from collections.abc import Mapping, Sequence

from visit_counter.admin.audit import NO_CHANGE, PageChange
from visit_counter.analytics.reader import StatsReader
from visit_counter.core.config import Settings
from visit_counter.core.consistent_hash import ConsistentHashRing
from visit_counter.core.errors import NodeUnavailableError, VisitNotKeptError
from visit_counter.core.tasks import PeriodicTask
from visit_counter.services.batch import (
    UNKNOWN_TAG,
    PendingKeys,
    PendingVisitors,
    key_member,
    merge_pending,
    merge_visitors,
)
from visit_counter.services.cache import StoredCountCache
from visit_counter.services.events import Event, NodeEvents, ResetEvent, TopologyEvent
from visit_counter.services.fencing import ResetFencing
from visit_counter.services.journal import Journal
from visit_counter.services.node_store import CountStore, NodeStore
from visit_counter.services.outbox import NodeOutbox
from visit_counter.services.quarantine import QuarantinedFile, quarantined
from visit_counter.services.reads import PageReader, VisitCount
from visit_counter.services.resets import PageResetter
from visit_counter.services.shipping import BatchObserver, Shipper
from visit_counter.services.stats import CounterStats
from visit_counter.services.visit_log import VisitLog
from visit_counter.sinks.base import Sink
from visit_counter.sinks.fanout import SinkFanout
from visit_counter.topology.document import Topology
from visit_counter.topology.nodeset import NodeSet

logger = logging.getLogger(__name__)

# The top sets' backfill starts this long after the counter (not in the start-up burst of
# connections) and is tried again as often for a node that could not be reached.
_BACKFILL_PAUSE_SECONDS = 2.0


def new_writer_id() -> str:
    """A name no other process, here or on another host, will ever use."""
    host = re.sub(r"[^A-Za-z0-9.-]", "-", socket.gethostname())[:64] or "host"
    return f"{host}-{os.getpid()}-{secrets.token_hex(4)}"


class VisitCounter:
    def __init__(
        self,
        settings: Settings,
        nodes: NodeSet,
        store: CountStore | None = None,
        sinks: Sequence[Sink] = (),
    ) -> None:
        """`store`: where counts are kept (by default, the node set's ring nodes).
        `sinks`: where each stored batch is mirrored too, exactly once (visit_counter/sinks)."""
        self._settings = settings
        self._nodes = nodes
        self._manager = nodes.manager
        self._store: CountStore = store or NodeStore(
            self._manager, settings.idempotency_window_seconds, settings.stats_retention_days
        )
        self.cache = StoredCountCache(settings.cache_ttl_seconds, settings.cache_capacity)
        self.writer = new_writer_id()
        self.journal = Journal(settings.journal_dir, self.writer)
        self.stats = CounterStats()
        self.pending: dict[str, int] = {}
        self.pending_keys: PendingKeys = {}  # idempotency keys of keyed visits in `pending`
        self.pending_visitors: PendingVisitors = {}  # visitor ids of visits in `pending`
        self.visit_log = (
            VisitLog(settings.journal_dir, self.writer) if settings.journal_visits else None
        )
        self._fencing = ResetFencing(self._store)
        self._shipper = Shipper(
            settings,
            nodes,
            self._store,
            self._fencing,
            self.journal,
            self.visit_log,
            self.stats,
            self.cache,
            self,
            self.writer,
        )
        self._shipper.on_reset = self._hear_reset
        self._shipper.on_retired = self._retire
        self.sinks = SinkFanout(
            sinks,
            settings.data_dir / "sinks",
            self.writer,
            max_in_memory=settings.sink_max_pending_batches,
            shutdown_seconds=settings.shutdown_flush_timeout_seconds,
        )
        self._shipper.on_stored = self.sinks.offer
        self._refusing = self._shipper.refusing  # the same set, read on the hot path
        self._events: dict[str, NodeEvents] = {}
        self._retiring: set[asyncio.Task[None]] = set()  # closing nodes that left
        self.reader = PageReader(
            nodes, self._store, self.cache, self._shipper, self._buffered, self._fencing.epoch
        )
        self.analytics = StatsReader(nodes, self._store)  # days, hours, unique visitors
        self._resetter = PageResetter(nodes, self._store)
        self._started = False
        self._unscored_nodes: list[str] = []  # nodes whose earlier pages are not in the top
        self._backfill_failed: set[str] = set()
        self._top_backfill = PeriodicTask(
            "top-backfill", self._backfill_top, _BACKFILL_PAUSE_SECONDS
        )
        nodes.subscribe(self._on_topology)

    @property
    def nodes(self) -> NodeSet:
        """The node set this counter routes by."""
        return self._nodes

    @property
    def topology(self) -> Topology:
        return self._nodes.topology

    @property
    def ring(self) -> ConsistentHashRing:
        """The ring increments go to now (the new one once a move's transfer has begun)."""
        return self.topology.write_ring

    @property
    def batch_observer(self) -> BatchObserver | None:
        return self._shipper.batch_observer

    @batch_observer.setter
    def batch_observer(self, observer: BatchObserver | None) -> None:
        self._shipper.batch_observer = observer

    def outbox(self, node: str) -> NodeOutbox:
        """What this process holds for `node` (a seam for tests and reports)."""
        return self._shipper.outboxes[node]

    def _add_node(self, name: str) -> None:
        if name in self._events:
            return
        self._fencing.add_node(name)
        self._shipper.add_node(name)
        self._events[name] = NodeEvents(
            name,
            self._manager.events_source(name),
            self._on_event,
            functools.partial(self._shipper.learn_floor, name),
        )
        if self._started:
            self._events[name].start()

    # -- the buffer (shipping.WriteBuffer) -------------------------------------

    def take(self) -> tuple[dict[str, int], PendingKeys, PendingVisitors]:
        swapped, self.pending = self.pending, {}
        keys, self.pending_keys = self.pending_keys, {}
        visitors, self.pending_visitors = self.pending_visitors, {}
        return swapped, keys, visitors

    def give_back(
        self, increments: Mapping[str, int], keys: PendingKeys, visitors: PendingVisitors
    ) -> None:
        merge_pending(self.pending, self.pending_keys, increments, keys)
        merge_visitors(self.pending_visitors, visitors)

    # -- lifecycle -------------------------------------------------------------

    async def start(self) -> None:
        """Open the journal, subscribe to every node's events and read its floor, adopt
        dead processes' journals and start the flusher.

        Waits for the first subscription attempt of every node (bounded by the
        node call budget), so visits are tagged with the floors from the start.
        """
        self.journal.open()
        if self.visit_log is not None:
            self.visit_log.open(self._shipper.swap + 1)
            self.visit_log.mark_version(self._shipper.swap + 1, self.topology.version)
        for name in self.topology.nodes:
            self._add_node(name)
        self._started = True
        for events in self._events.values():
            events.start()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._manager.call_budget + 1):
                await asyncio.gather(*(e.attempted.wait() for e in self._events.values()))
        unknown = self._fencing.unknown_floors()
        if unknown:
            logger.warning("reset counts not read yet (nodes unreachable): %s", ", ".join(unknown))
        self.sinks.start()  # before the journals replay: their batches are offered too
        for batch, offset in self.journal.claim_orphans(self.topology.ring_at):
            # A batch for a node that left the topology is asked about on a node that
            # stayed: the mover copied the removed node's applied marks to each of them.
            via = batch.node if batch.node in self._events else self.topology.members[0]
            self.outbox(via).spilled.append(offset)
        self._shipper.start()
        self._unscored_nodes = list(self.topology.nodes)
        self._top_backfill.start()

    async def _backfill_top(self) -> None:
        """Put the pages stored before the top sets existed into them, once per node
        (`CountStore.backfill_top`); a node that cannot be reached is tried again at the
        next step (and logged once). A no-op once every node is done."""
        for name in list(self._unscored_nodes):
            try:
                added = await self._store.backfill_top(name)
            except NodeUnavailableError:
                if name not in self._backfill_failed:
                    self._backfill_failed.add(name)
                    logger.warning("top pages: backfill of %s failed; retrying", name)
                continue
            self._unscored_nodes.remove(name)
            if added:
                logger.info("top pages: %d pages stored earlier scored on %s", added, name)

    async def _stop_background(self, *, wait_for_drains: bool = False) -> None:
        await self._top_backfill.aclose()
        self._nodes.unsubscribe(self._on_topology)  # a stopping counter routes no more
        await self._shipper.stop(wait_for_drains=wait_for_drains)
        await asyncio.gather(*(events.aclose() for events in self._events.values()))
        await asyncio.gather(*self._retiring, return_exceptions=True)
        await self.reader.aclose()

    async def aclose(self) -> None:
        """Stop the tasks, flush within the shutdown budget, journal whatever is left."""
        await self._stop_background()
        try:
            async with asyncio.timeout(self._settings.shutdown_flush_timeout_seconds):
                await self.flush()
        except TimeoutError:
            logger.warning("shutdown: flush did not finish in time; journaling the rest")
        except Exception:
            logger.exception("shutdown: flush failed; journaling the rest")
        left_batches, left_visits, complete = self._shipper.journal_everything()
        if self.visit_log is not None:
            self.visit_log.close(remove=complete)
        self.journal.close(keep=not complete)
        await self.sinks.aclose()  # last: the final flush's batches were offered to them
        logger.info(
            "shutdown: %d visits stored this run, %d visits in %d batches left in the journal",
            self.stats.visits_stored,
            left_visits,
            left_batches,
        )

    async def abandon(self) -> None:
        """Stop as `kill -9` would leave things: no flush, nothing more journaled, the
        journal and visit-log files left on disk, unlocked, for the next start to claim.

        For crash tests: only the background tasks are stopped first, so nothing of
        this counter runs after the crash point.
        """
        await self._stop_background(wait_for_drains=True)
        if self.visit_log is not None:
            self.visit_log.close(remove=False)
        self.journal.close(keep=True)
        await self.sinks.abandon()

    @property
    def closed(self) -> bool:
        """After `aclose` or `abandon`."""
        return not self.journal.is_open

    async def flush(self) -> None:
        """Send everything buffered to the nodes now; wait until each node took it or failed."""
        await self._shipper.flush()

    # -- the hot path ----------------------------------------------------------

    def record_visit(
        self, page_id: str, key: str | None = None, visitor: str | None = None
    ) -> None:
        """Count one visit in memory. Never waits on Redis; stored within one flush interval.

        `key`: the visit's idempotency key (visit_counter/core/idempotency.py). A key this
        buffer holds already is a repeat and adds nothing; any other repeat is
        dropped by the page's node when the batch arrives (G10).
        `visitor`: who visited (visit_counter/core/visitor_id.py), for the page's unique
        visitors of the day; None when that is not known (a server calling the API).

        Raises VisitNotKeptError when the page's node is unreachable, its memory
        cap is reached and the journal cannot be written: the visit is refused
        rather than acknowledged and lost (G5).
        """
        if self._refusing and self.ring.owner(page_id) in self._refusing:
            raise VisitNotKeptError("cannot keep visits for this page now; retry later")
        if key is not None:
            page_keys = self.pending_keys.get(page_id)
            if page_keys is not None and key in page_keys:
                # Acknowledged, and settled at once: visits_accepted stays equal to
                # visits_stored + visits_repeated + what is pending.
                self.stats.visits_accepted += 1
                self.stats.visits_repeated += 1
                return
        if self.visit_log is not None:
            self._log_visit(page_id, key)
        if key is not None:
            self.pending_keys.setdefault(page_id, set()).add(key)
        if visitor is not None:
            self.pending_visitors.setdefault(page_id, set()).add(visitor)
        pending = self.pending
        pending[page_id] = pending.get(page_id, 0) + 1
        self.stats.visits_accepted += 1
        if len(pending) >= self._settings.batch_size_limit:
            self._shipper.wake()

    def record_visits(self, increments: Mapping[str, int], key: str | None = None) -> int:
        """Count several pages' visits at once (batch ingest): all of them, or none.

        `key`: the request's idempotency key; for each page it stands for that page's
        count (`key_member`), so a repeated request adds nothing, page by page.
        Returns the visits that were not repeats this buffer recognised. Raises
        VisitNotKeptError, before anything is counted, when any page's node cannot
        take visits now, or the visit log cannot be written.
        """
        if self._refusing:
            owner = self.ring.owner
            if any(owner(page_id) in self._refusing for page_id in increments):
                raise VisitNotKeptError("cannot keep visits for these pages now; retry later")
        members: dict[str, str] = {}
        new: Mapping[str, int] = increments
        if key is not None:
            held = self.pending_keys
            for page_id, count in increments.items():
                member = key_member(key, count)
                page_keys = held.get(page_id)
                if page_keys is None or member not in page_keys:
                    members[page_id] = member
            new = {page_id: increments[page_id] for page_id in members}
        total = sum(increments.values())
        if self.visit_log is not None and new:
            self._log_visits(new, key)
        pending = self.pending
        for page_id, count in new.items():
            pending[page_id] = pending.get(page_id, 0) + count
        for page_id, member in members.items():
            self.pending_keys.setdefault(page_id, set()).add(member)
        added = sum(new.values())
        self.stats.visits_accepted += total
        self.stats.visits_repeated += total - added
        if len(pending) >= self._settings.batch_size_limit:
            self._shipper.wake()
        return added

    def _log_visits(self, increments: Mapping[str, int], key: str | None) -> None:
        assert self.visit_log is not None
        if self._shipper.visit_log_failed:
            raise VisitNotKeptError("the visit log cannot be written; retry later")
        owner, tag_of = self.ring.owner, self._fencing.tag
        records = []
        for page_id, count in increments.items():
            tag = tag_of(page_id, owner(page_id))
            if tag == UNKNOWN_TAG:
                self._shipper.unknown_tags_logged = True
            records.append((page_id, tag, count, key))
        try:
            self.visit_log.append_many(records)
        except OSError as exc:
            logger.error("visit log write failed; refusing visits: %s", exc)
            raise VisitNotKeptError("the visit log cannot be written; retry later") from exc

    def _log_visit(self, page_id: str, key: str | None) -> None:
        assert self.visit_log is not None
        if self._shipper.visit_log_failed:
            raise VisitNotKeptError("the visit log cannot be written; retry later")
        tag = self._fencing.tag(page_id, self.ring.owner(page_id))
        if tag == UNKNOWN_TAG:
            self._shipper.unknown_tags_logged = True
        try:
            self.visit_log.append(page_id, tag, key)
        except OSError as exc:
            logger.error("visit log write failed; refusing visits: %s", exc)
            raise VisitNotKeptError("the visit log cannot be written; retry later") from exc

    # -- reads and resets ------------------------------------------------------

    async def get_visits(self, page_id: str) -> VisitCount:
        """Stored count + this process's pending increments (read your writes); see
        `PageReader.get_visits` for what a read promises."""
        return await self.reader.get_visits(page_id)

    async def reset(self, page_id: str, change: PageChange = NO_CHANGE) -> int:
        """Set the page to `change.value` (0: a reset) on its node(s) and in every worker
        (pub/sub, well under a second); returns the count it had.

        Visits any worker accepted before it learns of the reset never reappear; later
        ones are added on top of the value. While the page moves, both owners are reset
        (see `PageResetter`).
        """
        done = await self._resetter.reset(page_id, change)
        self._apply_reset(page_id, done.epoch)
        return done.old

    def _hear_reset(self, page_id: str, epoch: int) -> None:
        """A reset this process learned of (an event, or a node that dropped increments)."""
        if self._fencing.hear(page_id, epoch):
            self._forget(page_id)

    def _apply_reset(self, page_id: str, epoch: int) -> None:
        """This process reset the page: what it holds for the page is older."""
        self._fencing.hear(page_id, epoch)
        self._forget(page_id)

    def _forget(self, page_id: str) -> None:
        self.pending.pop(page_id, None)
        self.pending_keys.pop(page_id, None)
        self.pending_visitors.pop(page_id, None)
        for outbox in self._shipper.outboxes.values():
            outbox.forget(page_id)
        self.cache.discard(page_id)
        self.reader.changed()

    def _buffered(self, page_id: str) -> int:
        return self.pending.get(page_id, 0)

    # -- events and topology changes -------------------------------------------

    def _on_event(self, event: Event) -> None:
        if isinstance(event, ResetEvent):
            self._hear_reset(event.page_id, event.epoch)
        elif isinstance(event, TopologyEvent):
            self._nodes.observe_version("", event.version)
        elif event.writer != self.writer:
            for page_id, stored in event.values.items():
                self.cache.raise_to(page_id, stored)

    def _on_topology(self, old: Topology, new: Topology) -> None:
        """A new topology, before anything is routed by it.

        New nodes get an outbox and an events subscription, and the cache is
        emptied (the counts it holds may live elsewhere now). When the write
        ring changed, what this process holds is sealed as routed so far
        (`Shipper.seal_for_ring_change`), and every node's floor is read again
        before its next batch (`fencing.py`).
        """
        for name in new.nodes:
            self._add_node(name)
        self.reader.changed()
        self.cache.clear()
        if old.write_ring.nodes != new.write_ring.nodes:
            self._shipper.seal_for_ring_change(old)
            self._fencing.mark_all_stale()

    def _retire(self, name: str) -> None:
        """A node that left the topology holds nothing of this process any more."""
        self._fencing.forget_node(name)
        events = self._events.pop(name, None)
        task = asyncio.get_running_loop().create_task(self._close_node(name, events))
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    async def _close_node(self, name: str, events: NodeEvents | None) -> None:
        if events is not None:
            await events.aclose()
        await self._manager.remove_node(name)
        logger.info("node %s left the topology and holds nothing of this process", name)

    # -- reporting -------------------------------------------------------------

    def write_buffer_size(self) -> int:
        """Distinct pages with increments held in memory (buffer and outboxes)."""
        outboxes = self._shipper.outboxes.values()
        return len(self.pending) + sum(box.pages_in_memory for box in outboxes)

    def pending_visits(self) -> int:
        outboxes = self._shipper.outboxes.values()
        return sum(self.pending.values()) + sum(box.visits_in_memory for box in outboxes)

    def journal_batches(self) -> int:
        return self.journal.outstanding

    def journal_damage(self) -> list[QuarantinedFile]:
        """Damaged journal files in the quarantine, whichever worker found them.

        Read from the quarantine directory on each call (a listing and a small
        report per incident), so an operator's removal shows at once.
        """
        return quarantined(self.journal.directory)

    def can_journal(self) -> bool:
        """Whether the on-disk journal (and the visit log, when on) can take writes now.

        Judged from the last write of each, without I/O: cheap enough for a probe.
        """
        return self.journal.writable and not self._refusing and not self._shipper.visit_log_failed

    def refuse_visits_for(self, node: str) -> None:
        """Refuse visits for the node's pages, as after a failed journal write (a test seam)."""
        self._refusing.add(node)
