"""`LogSink`: each stored batch as one log line (a sink to watch, or to start from)."""

from __future__ import annotations

import logging

from visit_counter.sinks.base import Delivery

logger = logging.getLogger(__name__)


class LogSink:
    """Logs `sink log: batch <name>/<seq>: <pages> pages, <visits> visits` at INFO.

    Its applied marks are this process's memory: a delivery handed over twice in one
    run is logged once; one claimed from a dead process's queue may be logged again.
    """

    def __init__(self, name: str = "log", *, level: int = logging.INFO) -> None:
        self.name = name
        self._level = level
        self._applied: set[tuple[str, int]] = set()

    async def start(self) -> None:
        return None

    async def deliver(self, delivery: Delivery) -> bool:
        mark = (delivery.batch, delivery.seq)
        if mark in self._applied:
            return False
        self._applied.add(mark)
        logger.log(
            self._level,
            "sink %s: batch %s/%d: %d pages, %d visits",
            self.name,
            delivery.batch,
            delivery.seq,
            len(delivery.counts),
            delivery.visits,
        )
        return True

    async def aclose(self) -> None:
        return None
