"""Running totals of the counting engine, read by /metrics, the metrics log and Prometheus."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


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
