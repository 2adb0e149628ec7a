"""What a sink is handed, and what it must promise (seed 000's handler catalog).

After a node stored a batch, the counts it added are handed to every registered
sink as one `Delivery`, named by the batch (`<writer>|<node>` and its seq: the
same name the node's applied marks use). A delivery can be handed over more than
once: the reply to the node was lost and the batch was retried, the process
stopped before the sink confirmed it, or a dead process's deliveries were
claimed. So a sink applies a delivery at most once by its own applied marks,
kept where it keeps the counts and changed in the same transaction; together
with the queue's retries (`queue.py`) that is exactly once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

import orjson


@dataclass(frozen=True, slots=True)
class Delivery:
    """The visits a node added for one batch: what every sink mirrors."""

    batch: str  # the batch's applied-mark name: `<writer>|<node>`
    seq: int  # its sequence number in that stream
    counts: Mapping[str, int]  # page -> visits added (> 0)

    @property
    def visits(self) -> int:
        return sum(self.counts.values())

    def to_json(self) -> str:
        return orjson.dumps({"batch": self.batch, "seq": self.seq, "counts": self.counts}).decode()

    @classmethod
    def from_json(cls, text: str) -> Delivery:
        """ValueError for anything that is not a delivery."""
        data = orjson.loads(text)
        if not isinstance(data, dict):
            raise ValueError("not an object")
        batch, seq, counts = data.get("batch"), data.get("seq"), data.get("counts")
        if not isinstance(batch, str) or not isinstance(seq, int) or not isinstance(counts, dict):
            raise ValueError("not a delivery")
        if not all(isinstance(n, int) and n > 0 for n in counts.values()):
            raise ValueError("a count is not a positive integer")
        return cls(batch, seq, counts)


class Sink(Protocol):
    """A place counts are mirrored to. `name` names its queue directory and its marks."""

    name: str

    async def start(self) -> None:
        """Connect and prepare (e.g. create the marks table); cheap once done. The queue
        calls it before each delivery; when it raises, the delivery is retried."""

    async def deliver(self, delivery: Delivery) -> bool:
        """Apply `delivery` unless this sink's marks say it was applied: True if applied
        now, False if before. Raises when it cannot tell (the queue retries it)."""

    async def aclose(self) -> None:
        """Release connections. Never raises."""
