"""The counting engine: buffer, flusher, cache, resets and the journal hooks.

The hot path (`record_visit`) is a dict increment and never waits on Redis (G4).
A background flusher moves the buffer into per-node outboxes and sends each node
one idempotent batch at a time, nodes in parallel, so a hung node delays only its
own pages (G1, G4). What a node cannot take stays in memory up to a cap per node,
then goes to the journal (G5); at shutdown everything unsent is journaled and the
next start replays it (G6). Resets are fenced by per-page epochs (G3).

Floors (issue 9). Before it serves, the process reads each node's reset count
(its *floor* for that node) right after subscribing to the node's events:
every reset at or below it happened before this process accepted anything, so
increments are tagged with at least the floor and such resets never drop them
(`batch.py`). Later resets reach it as events. A node unreachable at start gets
its floor at the first contact; until then its visits carry `UNKNOWN_TAG`,
resolved to the floor when they are sent.
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
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from app.core.config import Settings
from app.core.consistent_hash import ConsistentHashRing
from app.core.errors import NodeUnavailableError, VisitNotKeptError
from app.core.redis_manager import RedisManager
from app.core.tasks import PeriodicTask
from app.services.batch import UNKNOWN_TAG, Batch
from app.services.cache import StoredCountCache
from app.services.events import Event, NodeEvents, ResetEvent
from app.services.journal import Journal, JournalError
from app.services.node_store import ApplyResult, NodeStore
from app.services.outbox import NodeOutbox
from app.services.quarantine import QuarantinedFile, quarantined
from app.services.visit_log import VisitLog

logger = logging.getLogger(__name__)

_READ_ATTEMPTS = 3


@dataclass(frozen=True, slots=True)
class VisitCount:
    visits: int
    served_via: str  # "in_memory" or "redis_<port>"
    stale: bool = False


@dataclass(slots=True)
class CounterStats:
    visits_accepted: int = 0
    batches_stored: int = 0
    batches_failed: int = 0
    batches_duplicate: int = 0
    batches_journaled: int = 0
    visits_stored: int = 0
    last_batch_write: datetime | None = None


# Told of every batch a node was sent: (node, "stored" | "duplicate" | "failed", seconds).
BatchObserver = Callable[[str, str, float], None]


def new_writer_id() -> str:
    """A name no other process, here or on another host, will ever use."""
    host = re.sub(r"[^A-Za-z0-9.-]", "-", socket.gethostname())[:64] or "host"
    return f"{host}-{os.getpid()}-{secrets.token_hex(4)}"


class VisitCounter:
    def __init__(self, settings: Settings, manager: RedisManager) -> None:
        self._settings = settings
        self._manager = manager
        self._store = NodeStore(manager)
        self.ring = ConsistentHashRing(manager.names, settings.virtual_nodes)
        self.cache = StoredCountCache(settings.cache_ttl_seconds, settings.cache_capacity)
        self.writer = new_writer_id()
        self.journal = Journal(settings.journal_dir, self.writer)
        self.stats = CounterStats()
        self.pending: dict[str, int] = {}
        self._epochs: dict[str, int] = {}  # pages reset while it ran -> epoch it learned
        # Per node: its reset count read before this process counted anything (None: not yet).
        self._floors: dict[str, int | None] = dict.fromkeys(manager.names)
        self._outboxes = {name: NodeOutbox(name) for name in manager.names}
        # Flush number: a batch's seq is the flush that sealed it (see visit_log.py).
        self._swap = 0
        self.visit_log = (
            VisitLog(settings.journal_dir, self.writer) if settings.journal_visits else None
        )
        self._visit_log_failed = False
        self._unknown_tags_logged = False  # the open segment has a line tagged UNKNOWN_TAG
        # Per node: every increment from flushes up to this number is stored or journaled.
        self._covered: dict[str, int] = dict.fromkeys(manager.names, 0)
        self._refusing: set[str] = set()  # nodes whose visits cannot be kept right now
        self._acks: dict[str, int] = dict.fromkeys(manager.names, 0)  # batches stored, per node
        self._resets = 0
        self._drains: dict[str, asyncio.Task[None]] = {}
        self._flusher = PeriodicTask("flusher", self._flush_cycle, settings.batch_interval_seconds)
        self._events = {
            name: NodeEvents(
                name,
                manager.client(name),
                self._on_event,
                functools.partial(self._learn_floor, name),
            )
            for name in manager.names
        }
        self.batch_observer: BatchObserver | None = None  # e.g. the Prometheus metrics

    # -- lifecycle -------------------------------------------------------------

    async def start(self) -> None:
        """Open the journal, subscribe to every node's events and read its floor, adopt
        dead processes' journals and start the flusher.

        Waits for the first subscription attempt of every node (bounded by the
        node call budget), so visits are tagged with the floors from the start.
        """
        self.journal.open()
        if self.visit_log is not None:
            self.visit_log.open(self._swap + 1)
        for events in self._events.values():
            events.start()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._manager.call_budget + 1):
                await asyncio.gather(*(e.attempted.wait() for e in self._events.values()))
        unknown = [name for name, floor in self._floors.items() if floor is None]
        if unknown:
            logger.warning("reset counts not read yet (nodes unreachable): %s", ", ".join(unknown))
        for batch, offset in self.journal.claim_orphans(self.ring.owner):
            outbox = self._outboxes.get(batch.node)
            if outbox is not None:
                outbox.spilled.append(offset)
            else:
                self._reroute(batch)
        self._flusher.start()
        if any(not outbox.empty for outbox in self._outboxes.values()):
            self._flusher.wake()

    async def _stop_background(self) -> None:
        await self._flusher.aclose()
        await asyncio.gather(*(events.aclose() for events in self._events.values()))

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
        left_batches, left_visits, complete = self._journal_everything()
        if self.visit_log is not None:
            self.visit_log.close(remove=complete)
        self.journal.close(keep=not complete)
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
        await self._stop_background()
        await asyncio.gather(*self._drains.values(), return_exceptions=True)
        if self.visit_log is not None:
            self.visit_log.close(remove=False)
        self.journal.close(keep=True)

    @property
    def closed(self) -> bool:
        """After `aclose` or `abandon`."""
        return not self.journal.is_open

    # -- the hot path ----------------------------------------------------------

    def record_visit(self, page_id: str) -> None:
        """Count one visit in memory. Never waits on Redis; stored within one flush interval.

        Raises VisitNotKeptError when the page's node is unreachable, its memory
        cap is reached and the journal cannot be written: the visit is refused
        rather than acknowledged and lost (G5).
        """
        if self._refusing and self.ring.owner(page_id) in self._refusing:
            raise VisitNotKeptError("cannot keep visits for this page now; retry later")
        if self.visit_log is not None:
            self._log_visit(page_id)
        pending = self.pending
        pending[page_id] = pending.get(page_id, 0) + 1
        self.stats.visits_accepted += 1
        if len(pending) >= self._settings.batch_size_limit:
            self._flusher.wake()

    def _tag(self, page_id: str, node: str) -> int:
        """The epoch that visits accepted now for `page_id` on `node` carry (see batch.py)."""
        floor = self._floors[node]
        return max(self._epochs.get(page_id, UNKNOWN_TAG), UNKNOWN_TAG if floor is None else floor)

    def _log_visit(self, page_id: str) -> None:
        assert self.visit_log is not None
        if self._visit_log_failed:
            raise VisitNotKeptError("the visit log cannot be written; retry later")
        tag = self._tag(page_id, self.ring.owner(page_id))
        if tag == UNKNOWN_TAG:
            self._unknown_tags_logged = True
        try:
            self.visit_log.append(page_id, tag)
        except OSError as exc:
            logger.error("visit log write failed; refusing visits: %s", exc)
            raise VisitNotKeptError("the visit log cannot be written; retry later") from exc

    # -- reads and resets ------------------------------------------------------

    async def get_visits(self, page_id: str) -> VisitCount:
        """Stored count + this process's pending increments (read your writes).

        Other workers' increments appear once they flush (one flush interval).
        While the owner node is down, the last known count is returned marked
        stale (even from a fresh cache entry: nothing can confirm it); with
        nothing known, NodeUnavailableError.
        """
        owner = self.ring.owner(page_id)
        cached = self.cache.fresh(page_id)
        if cached is not None:
            visits = cached + self._own_pending(page_id, owner)
            return VisitCount(visits, "in_memory", stale=not self._manager.is_healthy(owner))
        if self._manager.is_healthy(owner):
            with contextlib.suppress(NodeUnavailableError):
                return await self._read_through(page_id, owner)
        last_known = self.cache.last_known(page_id)
        if last_known is None:
            raise NodeUnavailableError(
                f"the node holding page {page_id!r} is unavailable and its count is unknown"
            )
        return VisitCount(last_known + self._own_pending(page_id, owner), "in_memory", stale=True)

    async def _read_through(self, page_id: str, owner: str) -> VisitCount:
        for _ in range(_READ_ATTEMPTS):
            acks, resets = self._acks[owner], self._resets
            stored, applied_seq = await self._store.read(owner, page_id, self.writer)
            if (acks, resets) == (self._acks[owner], self._resets):
                break  # no flush or reset ran meanwhile: stored and pending agree
        else:
            return VisitCount(stored + self._own_pending(page_id, owner), self._via(owner))
        self.cache.put(page_id, stored)
        visits = stored + self._own_pending(page_id, owner, applied_seq)
        return VisitCount(visits, self._via(owner))

    async def reset(self, page_id: str) -> None:
        """Set the page to 0 on its node and in every worker (pub/sub, well under a second).

        Visits any worker accepted before it learns of the reset never reappear.
        """
        owner = self.ring.owner(page_id)
        epoch = await self._store.reset(owner, page_id)
        self._apply_reset(page_id, epoch)

    def _apply_reset(self, page_id: str, epoch: int) -> None:
        self._epochs[page_id] = epoch
        self.pending.pop(page_id, None)
        self._outboxes[self.ring.owner(page_id)].queued.pop(page_id, None)
        self.cache.discard(page_id)
        self._resets += 1

    def _own_pending(self, page_id: str, owner: str, applied_seq: int = 0) -> int:
        return self.pending.get(page_id, 0) + self._outboxes[owner].pending_for(
            page_id, self._epochs.get(page_id, 0), applied_seq, self.writer
        )

    # -- floors ----------------------------------------------------------------

    async def _learn_floor(self, name: str) -> None:
        """Read the node's reset count once (raises NodeUnavailableError)."""
        if self._floors[name] is not None:
            return
        floor = await self._store.reset_count(name)
        if self._floors[name] is not None:
            return
        self._floors[name] = floor
        if self._unknown_tags_logged:
            # Close the segment: its UNKNOWN_TAG lines resolve to this floor at replay,
            # and a segment must never mix them with lines tagged with the floor itself.
            self._unknown_tags_logged = False
            self._distribute()

    def _via(self, node: str) -> str:
        return f"redis_{self._manager.port(node)}"

    # -- flushing --------------------------------------------------------------

    async def flush(self) -> None:
        """Move the buffer to the outboxes and send every node its batches; wait for all."""
        self._distribute()
        drains = [self._start_drain(name) for name, box in self._outboxes.items() if not box.empty]
        await asyncio.gather(*drains)

    async def _flush_cycle(self) -> None:
        """One tick of the flusher: swap the buffer and start the drains (without waiting)."""
        self._distribute()
        for name, outbox in self._outboxes.items():
            if not outbox.empty:
                self._start_drain(name)

    def _distribute(self) -> None:
        """Swap the buffer out and queue its increments on their owners' outboxes.

        Runs without awaiting, so no increment can land in the old buffer after
        the swap; visits arriving meanwhile go to the new one.
        """
        swapped, self.pending = self.pending, {}
        self._swap += 1
        if self.visit_log is not None:
            self._rotate_visit_log()
        by_owner: dict[str, dict[str, int]] = {}
        owner_of = self.ring.owner
        for page_id, count in swapped.items():
            by_owner.setdefault(owner_of(page_id), {})[page_id] = count
        for name, increments in by_owner.items():
            self._outboxes[name].add(increments)
        # With the visit log on, a down node's increments go to the journal at once,
        # so the log's segments can be deleted; without it, only past the cap.
        cap = 1 if self.visit_log is not None else self._settings.max_pending_pages_per_node
        for name, outbox in self._outboxes.items():
            if outbox.pages_in_memory >= cap and not self._manager.is_healthy(name):
                self._spill(name, outbox)
            self._note_coverage(name, outbox)

    def _rotate_visit_log(self) -> None:
        """Start the segment for the next flush; refuse visits while that is impossible."""
        assert self.visit_log is not None
        try:
            self.visit_log.open(self._swap + 1)
        except OSError as exc:
            if not self._visit_log_failed:
                logger.error("visit log segment cannot be opened; refusing visits: %s", exc)
            self._visit_log_failed = True
            return
        self._visit_log_failed = False

    def _note_coverage(self, name: str, outbox: NodeOutbox) -> None:
        """A node with nothing in memory has stored or journaled every flush so far."""
        if outbox.queued or (outbox.inflight is not None and outbox.inflight_offset is None):
            return
        self._covered[name] = self._swap
        if self.visit_log is not None:
            self.visit_log.delete_through(min(self._covered.values()))

    def _spill(self, name: str, outbox: NodeOutbox) -> None:
        """Move what an unreachable node's outbox holds in memory to the journal."""
        pages = visits = 0
        try:
            drain = self._drains.get(name)
            inflight = outbox.inflight
            if inflight is not None and outbox.inflight_offset is None:
                if drain is not None and not drain.done():
                    return  # being sent right now; spill after the attempt
                outbox.inflight_written_to(self.journal.append(inflight))
                pages, visits = len(inflight.increments), inflight.visits
            batch = outbox.seal_queued(self._seal_for(name))
            if batch is not None:
                try:
                    outbox.spilled.append(self.journal.append(batch))
                except JournalError:
                    outbox.add({page: count for page, (count, _) in batch.increments.items()})
                    raise
                pages, visits = pages + len(batch.increments), visits + batch.visits
        except JournalError as exc:
            if name not in self._refusing:
                logger.error("journal failed; refusing visits for pages on %s: %s", name, exc)
            self._refusing.add(name)
            return
        self.stats.batches_journaled += 1
        self._refusing.discard(name)
        logger.warning(
            "node %s unreachable: %d pages (%d visits) moved to the journal", name, pages, visits
        )

    def _start_drain(self, name: str) -> asyncio.Task[None]:
        task = self._drains.get(name)
        if task is None or task.done():
            task = asyncio.create_task(self._drain(name), name=f"drain-{name}")
            self._drains[name] = task
        return task

    async def _drain(self, name: str) -> None:
        """Send the node its batches, oldest first, until it is empty or fails."""
        outbox = self._outboxes[name]
        try:
            await self._learn_floor(name)  # tags must be known before a batch is sealed or sent
        except NodeUnavailableError:
            return
        seal = self._seal_for(name)
        floor = self._floors[name]
        assert floor is not None

        def read_spilled(offset: int) -> Batch:
            return self.journal.read(offset).with_floor(floor)

        while True:
            try:
                batch = outbox.next_batch(seal, read_spilled)
            except JournalError as exc:
                # This process's own record cannot be read back (the disk damaged it):
                # skip it rather than stall the node's queue behind it for good.
                offset = outbox.drop_unreadable()
                logger.error(
                    "journal %s: the record at offset %d for %s cannot be read back; its "
                    "visits are lost: %s",
                    self.journal.path,
                    offset,
                    name,
                    exc,
                )
                continue
            if batch is None:
                break
            started = time.perf_counter()
            try:
                result = await self._store.apply(batch)
            except NodeUnavailableError as exc:
                outbox.release()
                self.stats.batches_failed += 1
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
                return
            from_journal = outbox.inflight_offset is not None
            outbox.acknowledge()
            if from_journal:
                self.journal.acknowledge(batch)
            self._absorb(batch, result)
            self._acks[name] += 1
            self._observe_batch(name, "stored" if result.applied else "duplicate", started)
        if outbox.pages_in_memory < self._settings.max_pending_pages_per_node:
            self._refusing.discard(name)
        self._note_coverage(name, outbox)

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
        self.stats.last_batch_write = datetime.now(UTC)
        if not result.applied:
            # Applied by an earlier attempt whose reply was lost: its visits are stored
            # (any a reset fenced off included; the reply that would say so is gone).
            self.stats.batches_duplicate += 1
            self.stats.visits_stored += batch.visits
            for page_id in batch.increments:
                self.cache.discard(page_id)
            return
        self.stats.batches_stored += 1
        self.stats.visits_stored += sum(batch.increments[page_id][0] for page_id in result.stored)
        for page_id, stored in result.stored.items():
            self.cache.raise_to(page_id, stored)
        for page_id, epoch in result.dropped.items():
            # A reset this process had not heard of: what it holds for the page is older.
            if epoch > self._epochs.get(page_id, 0):
                self._apply_reset(page_id, epoch)

    def _seal_for(self, name: str) -> Callable[[dict[str, int]], Batch]:
        def seal(queued: dict[str, int]) -> Batch:
            # The current flush number. Unique per node: a node's queue is refilled only
            # by a flush, so it is sealed at most once per flush number.
            tag = self._tag
            return Batch(
                writer=self.writer,
                seq=self._swap,
                node=name,
                increments={page: (count, tag(page, name)) for page, count in queued.items()},
            )

        return seal

    def _reroute(self, batch: Batch) -> None:
        """A journaled batch for a node no longer configured: count it on today's owners."""
        logger.warning(
            "journal batch %s/%d names unknown node %s; re-sending its %d visits to today's owners",
            batch.writer,
            batch.seq,
            batch.node,
            batch.visits,
        )
        for page_id, (count, _) in batch.increments.items():
            self.pending[page_id] = self.pending.get(page_id, 0) + count
            if self.visit_log is not None:
                tag = self._tag(page_id, self.ring.owner(page_id))
                for _ in range(count):
                    self.visit_log.append(page_id, tag)
        self.journal.acknowledge(batch)

    def _journal_everything(self) -> tuple[int, int, bool]:
        """At shutdown: write every unsent batch to the journal.

        Returns (batches, visits, complete): complete is False when some batch
        could not be written (then the visit log is kept for the next start).
        """
        self._distribute()
        batches = visits = 0
        complete = True
        for name, outbox in self._outboxes.items():
            to_write = []
            if outbox.inflight is not None and outbox.inflight_offset is None:
                to_write.append(outbox.inflight)
            sealed = outbox.seal_queued(self._seal_for(name))
            if sealed is not None:
                to_write.append(sealed)
            for batch in to_write:
                try:
                    self.journal.append(batch)
                except JournalError:
                    logger.exception(
                        "shutdown: %d visits for %s cannot be journaled%s",
                        batch.visits,
                        name,
                        "; the visit log keeps them" if self.visit_log else " and are LOST",
                    )
                    complete = False
                    break  # a later batch's seq would mark this one's segments as covered
                batches += 1
                visits += batch.visits
            batches += len(outbox.spilled)
        return batches, visits, complete

    # -- events from other workers ---------------------------------------------

    def _on_event(self, event: Event) -> None:
        if isinstance(event, ResetEvent):
            if event.epoch > self._epochs.get(event.page_id, 0):
                self._apply_reset(event.page_id, event.epoch)
        elif event.writer != self.writer:
            for page_id, stored in event.values.items():
                self.cache.raise_to(page_id, stored)

    # -- reporting -------------------------------------------------------------

    def write_buffer_size(self) -> int:
        """Distinct pages with increments held in memory (buffer and outboxes)."""
        return len(self.pending) + sum(box.pages_in_memory for box in self._outboxes.values())

    def pending_visits(self) -> int:
        return sum(self.pending.values()) + sum(
            box.visits_in_memory for box in self._outboxes.values()
        )

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
        return self.journal.writable and not self._refusing and not self._visit_log_failed
