"""Running totals of the counting engine, read by /metrics, the metrics log and Prometheus."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from visit_counter.services.batch import Batch
from visit_counter.services.node_store import ApplyResult


@dataclass(slots=True)
class CounterStats:
    visits_accepted: int = 0
    bots_rejected: int = 0  # requests from known crawlers: answered 200, not counted
    # keyed visits whose Idempotency-Key was seen before (in this buffer, or by the node):
    # answered 200, counted once
    visits_repeated: int = 0
    batches_stored: int = 0
    batches_failed: int = 0
    batches_duplicate: int = 0
    batches_journaled: int = 0
    visits_stored: int = 0
    last_batch_write: datetime | None = None

    def stored(self, batch: Batch, result: ApplyResult) -> None:
        """A node acknowledged `batch`: the visits it holds now, and how they got there."""
        self.last_batch_write = datetime.now(UTC)
        if not result.applied:
            # Applied by an earlier attempt whose reply was lost: its visits are stored
            # (any a reset fenced off included; the reply that would say so is gone).
            self.batches_duplicate += 1
            self.visits_stored += batch.visits
            return
        self.batches_stored += 1
        self.visits_repeated += result.repeats
        self.visits_stored += (
            sum(batch.increments[page][0] for page in (*result.stored, *result.applied_before))
            - result.repeats
        )
