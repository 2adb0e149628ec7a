"""The analytics reads: a page's days and unique visitors, and the totals over all pages.

Counts by day (and, for the totals, by hour) add up across nodes, and visitors merge
(HyperLogLogs are unions), so every node of the topology is read and the parts summed and
merged: a page whose history was written on other nodes before a move (`nodes add`)
keeps all of it. On a
cluster, the topology is the one cluster node, and a resharding moves the keys with the
bucket.

HyperLogLogs read off different nodes are merged here (`hll.union_count`), in a worker
thread: a year of dense sketches is milliseconds of CPU that must not hold up the event
loop, and with it the hot path.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from visit_counter.analytics.hll import union_count
from visit_counter.analytics.periods import PeriodCounts, last_days, last_hours
from visit_counter.services.node_store import CountStore
from visit_counter.topology.nodeset import NodeSet


@dataclass(frozen=True, slots=True)
class DayStats:
    date: str
    visits: int
    unique_visitors: int


@dataclass(frozen=True, slots=True)
class HourStats:
    hour: str  # `YYYY-MM-DDTHH:00Z`
    visits: int


@dataclass(frozen=True, slots=True)
class PeriodStats:
    visits: int  # over the days asked for
    unique_visitors: int  # over the days asked for (a visitor of several days counts once)
    daily: list[DayStats]  # oldest first, today last
    hourly: list[HourStats]  # totals only: the last 48 hours, oldest first
    pages: int = 0  # totals only: pages with a count


class StatsReader:
    def __init__(self, nodes: NodeSet, store: CountStore) -> None:
        self._nodes = nodes
        self._store = store

    async def page(self, page_id: str, days: int) -> PeriodStats:
        """The page's last `days` days, summed over every node (see the module docstring).
        NodeUnavailableError when a node cannot answer."""
        day_names = last_days(days)
        return await self._merged(
            lambda node: self._store.page_periods(node, page_id, day_names), day_names, []
        )

    async def totals(self, days: int) -> PeriodStats:
        """All pages' last `days` days and 48 hours, and how many pages have a count."""
        day_names, hour_names = last_days(days), last_hours()
        return await self._merged(
            lambda node: self._store.total_periods(node, day_names, hour_names),
            day_names,
            hour_names,
        )

    async def _merged(
        self,
        read: Callable[[str], Awaitable[PeriodCounts]],
        day_names: list[str],
        hour_names: list[str],
    ) -> PeriodStats:
        parts = await asyncio.gather(*(read(node) for node in self._nodes.topology.nodes))
        return await asyncio.to_thread(_merge, parts, day_names, hour_names)


def _merge(parts: list[PeriodCounts], day_names: list[str], hour_names: list[str]) -> PeriodStats:
    daily = [sum(part.daily[i] for part in parts) for i in range(len(day_names))]
    hourly = [sum(part.hourly[i] for part in parts) for i in range(len(hour_names))]
    sketches = [[raw for part in parts if (raw := part.visitors[i])] for i in range(len(day_names))]
    return PeriodStats(
        visits=sum(daily),
        unique_visitors=union_count(raw for day in sketches for raw in day),
        daily=[
            DayStats(date=name, visits=visits, unique_visitors=union_count(day))
            for name, visits, day in zip(day_names, daily, sketches, strict=True)
        ],
        hourly=[
            HourStats(hour=f"{name}:00Z", visits=visits)
            for name, visits in zip(hour_names, hourly, strict=True)
        ],
        pages=sum(part.pages for part in parts),
    )
