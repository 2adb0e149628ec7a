"""What an outbox holds in memory, written to the journal (G5, G6).

`spill`: its node is unreachable, or behind its flushes past the memory cap.
`unsent`: at shutdown, everything not on disk yet. Either way a node's batches reach
the journal in seq order, so a replay sends them in that order too.
"""

from __future__ import annotations

from visit_counter.services.batch import Batch
from visit_counter.services.journal import Journal, JournalError
from visit_counter.services.outbox import NodeOutbox, Seal


def spill(outbox: NodeOutbox, journal: Journal, seal: Seal, *, sending: bool) -> list[Batch]:
    """Move what `outbox` holds in memory to `journal`; returns the batches moved.

    The sealed batches go first, to the front (older than what is spilled already),
    then the inflight batch unless it is being sent right now (`sending`: it stays
    until that attempt ends, and the rest, newer, may go to disk behind it), then the
    queue, sealed. Raises JournalError: what was written stays on disk, the rest in
    memory.
    """
    moved = outbox.spill_sealed(journal.append)
    inflight = outbox.inflight
    if inflight is not None and outbox.inflight_offset is None and not sending:
        outbox.inflight_written_to(journal.append(inflight))
        moved.append(inflight)
    batch = outbox.seal_queued(seal)
    if batch is not None:
        try:
            outbox.spilled.append(journal.append(batch))
        except JournalError:
            outbox.add(
                {page: count for page, (count, _) in batch.increments.items()},
                batch.pending_keys(),
                batch.pending_visitors(),
            )
            raise
        moved.append(batch)
    return moved


def unsent(outbox: NodeOutbox, seal: Seal) -> list[Batch]:
    """The batches of `outbox` not on disk, oldest first: the inflight one, the sealed
    ones, then the queue sealed into one more (it is no longer queued)."""
    batches = []
    if outbox.inflight is not None and outbox.inflight_offset is None:
        batches.append(outbox.inflight)
    batches.extend(outbox.sealed)
    queued = outbox.seal_queued(seal)
    if queued is not None:
        batches.append(queued)
    return batches
