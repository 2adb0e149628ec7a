"""A counter on its nodes, started and stopped as the service's lifespan does it.

For the command line, the benchmark and the tests, which need the engine without
the HTTP service around it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from visit_counter.core.config import Settings
from visit_counter.services.storage import open_storage
from visit_counter.services.visit_counter import VisitCounter
from visit_counter.sinks.base import Sink


@asynccontextmanager
async def running_counter(
    settings: Settings, sinks: Sequence[Sink] = ()
) -> AsyncIterator[VisitCounter]:
    """Node set, health checks and counter started; on the way out, the counter closed
    (unless the caller did, e.g. `abandon` in a crash test), then the nodes."""
    storage = open_storage(settings)
    manager, nodes = storage.manager, storage.nodes
    try:
        await nodes.start()
        counter = VisitCounter(settings, nodes, storage.store, sinks)
        await manager.start()
        await counter.start()
        try:
            yield counter
        finally:
            if not counter.closed:
                await counter.aclose()
    finally:
        await nodes.aclose()
        await manager.aclose()
