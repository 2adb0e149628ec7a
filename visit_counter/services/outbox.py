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

What a reader needs (`ReadMark`, `pending_at`): a node's answer is taken at one moment,
and batches may leave the outbox while it is on its way. The outbox numbers its
removals and, while a read is under way (`read_mark` to `read_done`), remembers the
batches the node stored, so the reader can tell, from the node's applied mark, which
of them the answer holds. With no read under way it holds none of them.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from visit_counter.services.batch import (
    Batch,
    PendingKeys,
    PendingVisitors,
    applied_mark,
    merge_pending,
    merge_visitors,
)

# Seals queued increments (and their idempotency keys and visitor ids) into the next batch.
Seal = Callable[[dict[str, int], PendingKeys, PendingVisitors], Batch]

# Removals remembered for readers: more than a node read ever sees go by (a flush per
# interval); a read that missed more is simply done again.
_REMEMBERED_REMOVALS = 64


@dataclass(frozen=True, slots=True)
class ReadMark:
    """What a reader notes of an outbox just before it asks the node for a page."""

    field: str  # the applied-hash field to ask the node about
    removals: int  # the outbox's removals so far


class NodeOutbox:
    def __init__(self, node: str, writer: str) -> None:
        self.node = node
        self.own_mark = applied_mark(writer, node)  # the applied field of this writer's batches
        self.inflight: Batch | None = None
        self.inflight_offset: int | None = None  # journal offset when inflight came from disk
        self.sealed: deque[Batch] = deque()
        self.spilled: deque[int] = deque()
        self.queued: dict[str, int] = {}
        self.queued_keys: PendingKeys = {}  # page -> keys of queued keyed visits
        self.queued_visitors: PendingVisitors = {}  # page -> visitor ids of queued visits
        self._removals = 0  # batches or queues that left memory, stored or not
        self._readers = 0  # reads under way that noted a mark (`read_mark`)
        # While a read is under way: (removal number, the batch if the node stored it,
        # else None), newest last.
        self._removed: deque[tuple[int, Batch | None]] = deque(maxlen=_REMEMBERED_REMOVALS)

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
        self._note_removal(None)
        return offset

    def acknowledge(self, *, stored: bool = True) -> Batch:
        """The inflight batch is done with: stored by the node, or (`stored` False) handed
        to other nodes' outboxes after the node refused it. Forget it and return it."""
        batch = self.inflight
        assert batch is not None, "acknowledge() without an inflight batch"
        if self.inflight_offset is not None:
            self.spilled.popleft()
        self.inflight, self.inflight_offset = None, None
        self._note_removal(batch if stored else None)
        return batch

    def release(self) -> None:
        """The send failed: keep the batch for retry, but not in memory if it is on disk."""
        if self.inflight_offset is not None:
            self.inflight, self.inflight_offset = None, None
            self._note_removal(None)

    def inflight_written_to(self, offset: int) -> None:
        """The unsent-or-failed inflight batch is now on disk at `offset`: free the memory.

        Its seq is older than every spilled batch, so it goes to the front.
        """
        assert self.inflight is not None, "no inflight batch"
        assert self.inflight_offset is None, "inflight batch is on disk already"
        self.spilled.appendleft(offset)
        self.inflight = None
        self._note_removal(None)

    def spill_sealed(self, write: Callable[[Batch], int]) -> list[Batch]:
        """Move the sealed batches to disk (`write` returns each one's offset), newest first
        so they stay in order in front of the spilled ones. Each leaves memory only once
        it is written (`write` may raise). Returns those moved."""
        moved = []
        while self.sealed:
            batch = self.sealed[-1]
            self.spilled.appendleft(write(batch))
            self.sealed.pop()
            self._note_removal(None)
            moved.append(batch)
        return moved

    def seal_queued(self, seal: Seal) -> Batch | None:
        """Seal the queue into a batch (for spilling); it is *not* queued here any more."""
        if not self.queued:
            return None
        self._note_removal(None)
        return self._seal(seal)

    def _seal(self, seal: Seal) -> Batch:
        batch = seal(self.queued, self.queued_keys, self.queued_visitors)
        self.queued, self.queued_keys, self.queued_visitors = {}, {}, {}
        return batch

    def _note_removal(self, stored: Batch | None) -> None:
        self._removals += 1
        if self._readers:
            self._removed.append((self._removals, stored))

    def read_mark(self) -> ReadMark:
        """Noted by a reader before it asks the node (see `pending_at`); the reader calls
        `read_done` once it has the answer, or gave up.

        The field asked about is this writer's own, unless the batch being sent is
        another writer's (re-routed, or replayed from an earlier process's journal):
        then that batch's, so it is known whether the node applied it."""
        inflight = self.inflight
        field = self.own_mark if inflight is None else inflight.mark
        self._readers += 1
        return ReadMark(field, self._removals)

    def read_done(self) -> None:
        """A read that noted a mark is done with it (answered or not): once none is left,
        the batches remembered for reads are let go."""
        self._readers -= 1
        if not self._readers:
            self._removed.clear()

    @property
    def remembered(self) -> int:
        """Removals remembered for the reads under way (the memory held for them)."""
        return len(self._removed)

    def pending_at(self, page_id: str, epoch: int, mark: ReadMark, applied_seq: int) -> int | None:
        """This process's increments for `page_id` not in the node's answer, or None when
        that cannot be known (the reader asks again).

        `mark` was noted before the node was asked; `applied_seq` is the node's applied
        mark for `mark.field` as it answered. A batch with that field is in the answer
        if and only if its seq is at or below `applied_seq` (a writer's batches reach a
        node in seq order). Batches the node stored since `mark` are added back if
        the answer does not hold them; any other removal since (to the journal, to
        other nodes) cannot be told apart, nor can a batch with another field.
        """
        added = 0
        first_unseen = mark.removals + 1
        if self._removals >= first_unseen:
            removed = self._removed
            if not removed or removed[0][0] > first_unseen:
                return None  # more removals than remembered
            for number, batch in removed:
                if number < first_unseen:
                    continue
                if batch is None or batch.mark != mark.field:
                    return None
                if batch.seq > applied_seq:
                    added += self._count(batch, page_id, epoch)
        inflight = self.inflight
        if inflight is not None and inflight.mark != mark.field:
            return None
        return added + self.pending_for(page_id, epoch, applied_seq)

    def settled(self, mark: ReadMark, applied_seq: int) -> bool:
        """Whether the node's answer may be cached as the page's stored count.

        A cached count is later added to what the outbox holds *then*
        (`pending_for`), so it must hold none of the outbox's batches and miss none
        it let go of: nothing left the outbox since `mark`, and the batch being sent
        is not in the answer (its seq is above `applied_seq`). Otherwise a cache hit
        would count a batch never (it left after the answer) or twice (the node holds
        it and the outbox still does, until its reply is seen).
        """
        inflight = self.inflight
        return self._removals == mark.removals and (inflight is None or inflight.seq > applied_seq)

    @staticmethod
    def _count(batch: Batch, page_id: str, epoch: int) -> int:
        """The batch's visits of the page the node keeps (not fenced off by a reset)."""
        count_tag = batch.increments.get(page_id)
        if count_tag is None or count_tag[1] < epoch:
            return 0
        return count_tag[0]

    def pending_for(self, page_id: str, epoch: int, applied_seq: int) -> int:
        """This process's increments for `page_id` not yet in the node's count.

        `applied_seq` is the node's mark for the inflight batch's field: an inflight
        batch at or below it was applied already (its reply was lost) and is not
        added twice; increments tagged below `epoch`, the newest reset this process
        knows of, will be dropped by the node (that reset came after them) and are
        not added either. Spilled batches live on disk and are not counted here.
        """
        pending = self.queued.get(page_id, 0)
        inflight = self.inflight
        if inflight is not None and inflight.seq > applied_seq:
            pending += self._count(inflight, page_id, epoch)
        for batch in self.sealed:
            pending += self._count(batch, page_id, epoch)
        return pending
