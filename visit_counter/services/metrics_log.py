"""One log line of counter metrics every METRICS_INTERVAL_SECONDS (when ENABLE_METRICS)."""

from __future__ import annotations

import logging

from visit_counter.core.redis_manager import RedisManager
from visit_counter.core.tasks import PeriodicTask
from visit_counter.services.visit_counter import VisitCounter

logger = logging.getLogger(__name__)


class MetricsLogger:
    def __init__(self, counter: VisitCounter, manager: RedisManager, interval: float) -> None:
        self._counter = counter
        self._manager = manager
        self._task = PeriodicTask("metrics-log", self._log_step, interval)

    def summary(self) -> str:
        counter, stats = self._counter, self._counter.stats
        status = self._manager.node_status()
        return (
            f"metrics: visits accepted={stats.visits_accepted} stored={stats.visits_stored} "
            f"pending={counter.pending_visits()} pages_pending={counter.write_buffer_size()} "
            f"journal_batches={counter.journal_batches()} batches_failed={stats.batches_failed} "
            f"cache hits={counter.cache.hits} misses={counter.cache.misses} "
            f"nodes_up={sum(status.values())}/{len(status)}"
        )

    def start(self) -> None:
        self._task.start()

    async def _log_step(self) -> None:
        logger.info(self.summary())

    async def aclose(self) -> None:
        await self._task.aclose()
