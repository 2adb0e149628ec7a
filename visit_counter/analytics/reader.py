"""The analytics reads: a page's days and unique visitors, and the totals over all pages.

Counts by day (and, for the totals, by hour) add up across nodes, and visitors merge
(HyperLogLogs are unions), so every node of the topology is read and the parts summed and
merged: a page whose history was written on other nodes before a move (`nodes add`)
keeps all of it. On a
cluster, the topology is the one cluster node, and a resharding moves the keys with the
bucket.

Visitors a single node holds are counted by that node (PFCOUNT, one per day and one over
the days): the usual case, a page's history on its owner. Only when several nodes hold
some (a page's history split by a move; the totals of a ring of several nodes) are the raw
sketches fetched and merged here (`hll.py`), in a worker thread: a month of dense
sketches is milliseconds of CPU that must not hold up the event loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from visit_counter.analytics.hll import max_registers, registers_count, union_registers
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

        def read(node: str, sketches: bool) -> Awaitable[PeriodCounts]:
            return self._store.page_periods(node, page_id, day_names, sketches=sketches)

        return await self._merged(read, day_names, [])

    async def totals(self, days: int) -> PeriodStats:
        """All pages' last `days` days and 48 hours, and how many pages have a count."""
        day_names, hour_names = last_days(days), last_hours()

        def read(node: str, sketches: bool) -> Awaitable[PeriodCounts]:
            return self._store.total_periods(node, day_names, hour_names, sketches=sketches)

        return await self._merged(read, day_names, hour_names)

    async def _merged(
        self,
        read: Callable[[str, bool], Awaitable[PeriodCounts]],
        day_names: list[str],
        hour_names: list[str],
    ) -> PeriodStats:
        """Counts added up; visitors as the nodes counted them when one node holds them all
        (the usual case), else merged here from the sketches of the nodes that hold some."""
        nodes = self._nodes.topology.nodes
        parts = await asyncio.gather(*(read(node, False) for node in nodes))
        holders = [node for node, part in zip(nodes, parts, strict=True) if part.has_visitors]
        if len(holders) <= 1:
            held = next((part for part in parts if part.has_visitors), None)
            unique = held.unique if held is not None else [0] * len(day_names)
            overall = held.unique_overall if held is not None else 0
        else:
            with_sketches = await asyncio.gather(*(read(node, True) for node in holders))
            unique, overall = await asyncio.to_thread(_merge_visitors, with_sketches, day_names)
        hourly = [sum(part.hourly[i] for part in parts) for i in range(len(hour_names))]
        daily = [sum(part.daily[i] for part in parts) for i in range(len(day_names))]
        return PeriodStats(
            visits=sum(daily),
            unique_visitors=overall,
            daily=[
                DayStats(date=name, visits=visits, unique_visitors=visitors)
                for name, visits, visitors in zip(day_names, daily, unique, strict=True)
            ],
            hourly=[
                HourStats(hour=f"{name}:00Z", visits=visits)
                for name, visits in zip(hour_names, hourly, strict=True)
            ],
            pages=sum(part.pages for part in parts),
        )


def _merge_visitors(parts: list[PeriodCounts], day_names: list[str]) -> tuple[list[int], int]:
    """Visitors per day and over the days, from several nodes' sketches: each day's union,
    then the union of the days', every sketch decoded once."""
    unique: list[int] = []
    overall = 0
    for i in range(len(day_names)):
        sketches = [raw for part in parts if (raw := part.sketches[i])]
        if not sketches:
            unique.append(0)
            continue
        day = union_registers(sketches)
        unique.append(registers_count(day))
        overall = max_registers(overall, day)
    return unique, registers_count(overall)
