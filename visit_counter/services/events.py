"""Following one node's events channel: resets, stored counts and topology changes.

One `NodeEvents` per node runs as a `PeriodicTask` whose step is one
subscription session: subscribe, call `on_subscribed` (the counter reads the
node's reset count there, see `VisitCounter`), then hand every message to
`on_event` until the connection fails or the task stops. A failed session is
logged and the next one starts after a short pause.

The session polls `stopping` instead of relying on cancellation: a pub/sub read
cancelled mid-way can swallow the cancellation (seen with redis-py 8.1).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from visit_counter.core.tasks import PeriodicTask
from visit_counter.services.batch import EVENTS_CHANNEL

logger = logging.getLogger(__name__)

POLL_SECONDS = 0.5


@dataclass(frozen=True, slots=True)
class ResetEvent:
    page_id: str
    epoch: int


@dataclass(frozen=True, slots=True)
class StoredEvent:
    writer: str
    values: dict[str, int]  # page -> stored count


@dataclass(frozen=True, slots=True)
class TopologyEvent:
    version: int  # a new topology was stored on the node (visit_counter/topology/store.py)


Event = ResetEvent | StoredEvent | TopologyEvent


def parse_event(data: bytes | str) -> Event | None:
    """One message of the channel; None for anything this release does not know."""
    try:
        event = json.loads(data)
        if event.get("type") == "reset":
            return ResetEvent(str(event["page"]), int(event["epoch"]))
        if event.get("type") == "stored":
            values = event.get("values")
            # cjson encodes an empty table as [].
            counts = {str(p): int(v) for p, v in values.items()} if isinstance(values, dict) else {}
            return StoredEvent(str(event.get("writer")), counts)
        if event.get("type") == "topology":
            return TopologyEvent(int(event["version"]))
    except (ValueError, KeyError, TypeError, AttributeError):
        logger.warning("events channel: ignoring a message that cannot be read: %r", data[:200])
    return None


class NodeEvents:
    """The events subscription of one node (see the module docstring)."""

    def __init__(
        self,
        name: str,
        client: Redis | RedisCluster,
        on_event: Callable[[Event], None],
        on_subscribed: Callable[[], Awaitable[None]],
    ) -> None:
        self.name = name
        self._client = client
        self._on_event = on_event
        self._on_subscribed = on_subscribed
        self.attempted = asyncio.Event()  # set once the first session has tried
        self._task = PeriodicTask(f"events-{name}", self._session, POLL_SECONDS, run_first=True)

    def start(self) -> None:
        self._task.start()

    async def aclose(self) -> None:
        await self._task.aclose()

    async def _session(self) -> None:
        pubsub = self._client.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(EVENTS_CHANNEL)
            await self._on_subscribed()
            self.attempted.set()
            while not self._task.stopping.is_set():
                message = await pubsub.get_message(timeout=POLL_SECONDS)
                if message is not None and (event := parse_event(message["data"])) is not None:
                    self._on_event(event)
        except Exception as exc:  # the next session resubscribes
            logger.debug("events channel on %s: %r; resubscribing", self.name, exc)
        finally:
            self.attempted.set()
            with contextlib.suppress(Exception):
                await pubsub.aclose()  # type: ignore[no-untyped-call]
