"""Per-node queue of increments on their way to the node. Pure bookkeeping, no I/O.

Four stages, sent strictly in this order so a writer's seqs reach the node in
increasing order (what the idempotency mark in `batch.py` relies on):

1. `inflight`: the sealed batch being sent. Once sent it is never changed, only
   resent with the same writer and seq until the node acknowledges it.
2. `sealed`: batches sealed ahead of their turn, kept in memory: the ones
   another node refused after the topology changed, re-routed here
   (`Batch.rerouted`; their writer ids are derived, so their order relative
   to this writer's own batches does not matter), and this writer's own queue
   sealed when the topology changed (only while nothing is spilled, so seqs
   still reach the node in order; see `VisitCounter._on_topology`).
3. `spilled`: sealed batches written to the journal because the node was
   unreachable for too long (their journal offsets, oldest first).
4. `queued`: increments not sealed yet. New flushes merge into it, which keeps
   memory at one entry per distinct page however long the node is away (plus
   one per distinct idempotency key, `queued_keys`: a key queued twice is one
   visit).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping

from visit_counter.services.batch import (
    Batch,
    PendingKeys,
    PendingVisitors,
    merge_pending,
    merge_visitors,
)

# Seals queued increments (and their idempotency keys and visitor ids) into the next batch.
Seal = Callable[[dict[str, int], PendingKeys, PendingVisitors], Batch]


class NodeOutbox:
    def __init__(self, node: str) -> None:
        self.node = node
        self.inflight: Batch | None = None
        self.inflight_offset: int | None = None  # journal offset when inflight came from disk
        self.sealed: deque[Batch] = deque()
        self.spilled: deque[int] = deque()
        self.queued: dict[str, int] = {}
        self.queued_keys: PendingKeys = {}  # page -> keys of queued keyed visits
        self.queued_visitors: PendingVisitors = {}  # page -> visitor ids of queued visits

    @property
    def empty(self) -> bool:
        return self.inflight is None and not self.sealed and not self.spilled and not self.queued

    @property
    def pages_in_memory(self) -> int:
        inflight = len(self.inflight.increments) if self.inflight is not None else 0
        return inflight + sum(len(b.increments) for b in self.sealed) + len(self.queued)

    @property
    def entries_in_memory(self) -> int:
        """Pages, plus the idempotency key members and visitor ids riding with them: what the
        memory cap (MAX_PENDING_PAGES_PER_NODE) counts, so one page's many keys and
        visitors are bounded too."""
        batches = [*self.sealed, *([self.inflight] if self.inflight is not None else [])]
        riding = sum(
            len(members)
            for batch in batches
            for members in (*batch.keys.values(), *batch.visitors.values())
        )
        riding += sum(len(members) for members in self.queued_keys.values())
        riding += sum(len(ids) for ids in self.queued_visitors.values())
        return self.pages_in_memory + riding

    @property
    def visits_in_memory(self) -> int:
        inflight = self.inflight.visits if self.inflight is not None else 0
        return inflight + sum(b.visits for b in self.sealed) + sum(self.queued.values())

    def add(
        self,
        increments: Mapping[str, int],
        keys: PendingKeys | None = None,
        visitors: PendingVisitors | None = None,
    ) -> None:
        """Queue increments; `keys`: the idempotency keys of keyed visits among them;
        `visitors`: the visitor ids of their visits.

        A key queued already stands for a visit counted already: it is added once.
        """
        merge_pending(self.queued, self.queued_keys, increments, keys)
        merge_visitors(self.queued_visitors, visitors)

    def forget(self, page_id: str) -> None:
        """Drop what is queued for the page (a reset made it older than the page's count)."""
        self.queued.pop(page_id, None)
        self.queued_keys.pop(page_id, None)
        self.queued_visitors.pop(page_id, None)

    def next_batch(self, seal: Seal, read_spilled: Callable[[int], Batch]) -> Batch | None:
        """The batch to send now: the inflight one, else a sealed one, else the oldest
        spilled, else seal the queue."""
        if self.inflight is None:
            if self.sealed:
                self.inflight = self.sealed.popleft()
            elif self.spilled:
                self.inflight_offset = self.spilled[0]
                self.inflight = read_spilled(self.inflight_offset)
            elif self.queued:
                self.inflight = self._seal(seal)
        return self.inflight

    def drop_unreadable(self) -> int:
        """The oldest spilled batch could not be read back: forget it; return its offset."""
        offset = self.spilled.popleft()
        self.inflight, self.inflight_offset = None, None
        return offset

    def acknowledge(self) -> Batch:
        """The inflight batch is stored; forget it and return it."""
        batch = self.inflight
        assert batch is not None, "acknowledge() without an inflight batch"
        if self.inflight_offset is not None:
            self.spilled.popleft()
        self.inflight, self.inflight_offset = None, None
        return batch

    def release(self) -> None:
        """The send failed: keep the batch for retry, but not in memory if it is on disk."""
        if self.inflight_offset is not None:
            self.inflight, self.inflight_offset = None, None

    def inflight_written_to(self, offset: int) -> None:
        """The unsent-or-failed inflight batch is now on disk at `offset`: free the memory.

        Its seq is older than every spilled batch, so it goes to the front.
        """
        assert self.inflight is not None, "no inflight batch"
        assert self.inflight_offset is None, "inflight batch is on disk already"
        self.spilled.appendleft(offset)
        self.inflight = None

    def seal_queued(self, seal: Seal) -> Batch | None:
        """Seal the queue into a batch (for spilling); it is *not* queued here any more."""
        if not self.queued:
            return None
        return self._seal(seal)

    def _seal(self, seal: Seal) -> Batch:
        batch = seal(self.queued, self.queued_keys, self.queued_visitors)
        self.queued, self.queued_keys, self.queued_visitors = {}, {}, {}
        return batch

    @property
    def inflight_mark(self) -> str | None:
        """The applied-hash field a reader asks the node about (see `pending_for`)."""
        return None if self.inflight is None else self.inflight.mark

    def pending_for(self, page_id: str, epoch: int, applied_seq: int) -> int:
        """This process's increments for `page_id` not yet in the node's count.

        `applied_seq` is the node's mark for the inflight batch (`inflight_mark`):
        an inflight batch at or below it was applied already (its reply was lost)
        and is not added twice; increments tagged below `epoch`, the newest reset
        this process knows of, will be dropped by the node (that reset came after
        them) and are not added either. Spilled batches live on disk and are not
        counted here.
        """
        pending = self.queued.get(page_id, 0)
        batches = list(self.sealed)
        inflight = self.inflight
        if inflight is not None and inflight.seq > applied_seq:
            batches.append(inflight)
        for batch in batches:
            count_tag = batch.increments.get(page_id)
            if count_tag is not None and count_tag[1] >= epoch:
                pending += count_tag[0]
        return pending
