"""Every registered sink's queue, fed from the flush: what the engine talks to."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from visit_counter.services.batch import Batch
from visit_counter.services.node_store import ApplyResult
from visit_counter.sinks.base import Delivery, Sink
from visit_counter.sinks.queue import SinkQueue, SinkStats

logger = logging.getLogger(__name__)


class SinkFanout:
    """Hands each stored batch to every sink's queue (`queue.py`), never waiting."""

    def __init__(
        self,
        sinks: Sequence[Sink],
        directory: Path,
        writer: str,
        *,
        max_in_memory: int,
        shutdown_seconds: float,
    ) -> None:
        names = [sink.name for sink in sinks]
        duplicated = sorted({name for name in names if names.count(name) > 1})
        if duplicated:
            raise ValueError(f"two sinks are named {', '.join(duplicated)}: name them apart")
        self.queues = [
            SinkQueue(
                sink,
                directory / sink.name,
                writer,
                max_in_memory=max_in_memory,
                shutdown_seconds=shutdown_seconds,
            )
            for sink in sinks
        ]

    def start(self) -> None:
        for queue in self.queues:
            queue.open()
            queue.start()

    def offer(self, batch: Batch, result: ApplyResult) -> None:
        """What the node added for `batch`, to every sink (nothing when it added nothing)."""
        if not self.queues:
            return
        added = result.added(batch)
        if not added:
            return
        delivery = Delivery(batch.mark, batch.seq, added)
        for queue in self.queues:
            queue.offer(delivery)

    async def aclose(self) -> None:
        for queue in self.queues:
            try:
                await queue.aclose()
            except Exception:
                logger.exception("sink %s: close failed", queue.sink.name)

    async def abandon(self) -> None:
        """As `kill -9` would leave them: nothing more handed over, files left as they are."""
        for queue in self.queues:
            await queue.abandon()

    def stats(self) -> list[SinkStats]:
        return [queue.stats() for queue in self.queues]
