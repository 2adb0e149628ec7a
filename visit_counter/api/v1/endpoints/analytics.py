"""Analytics routes: the top pages, a page's days and hours, the totals over all pages.

Behind ADMIN_TOKEN when one is set (`admin_only`): they list every page id and how its
audience behaves, which a public count badge does not. They lag the visits by at most one
flush interval: they read what the nodes store (`GET …/stats/{page_id}`'s `visits` is the
exact count, pending visits included, as `GET …/visits/{page_id}` answers it).
"""

# No `from __future__ import annotations`: the routes' `days` annotation names a local bound
# (the deployment's retention), which FastAPI can read only as an evaluated annotation.

from dataclasses import asdict
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from visit_counter.analytics.reader import PeriodStats
from visit_counter.api.deps import CounterDep, RuntimeDep, page_id_of
from visit_counter.api.v1.endpoints.counter import PageId
from visit_counter.core.config import Settings
from visit_counter.schemas.analytics import (
    DayStats,
    HourStats,
    PageStats,
    TopPage,
    TopPages,
    TotalStats,
)
from visit_counter.schemas.counter import ErrorBody

MAX_TOP_LIMIT = 1000
DEFAULT_DAYS = 30

_ANSWERS: dict[int | str, dict[str, Any]] = {
    422: {"model": ErrorBody, "description": "Invalid page id or parameter"},
    503: {"model": ErrorBody, "description": "A node cannot answer now"},
}


def analytics_router(settings: Settings) -> APIRouter:
    """The routes, with `days` bounded by this deployment's STATS_RETENTION_DAYS (in the
    OpenAPI document too: older days are not kept)."""
    router = APIRouter(prefix="/counter", tags=["analytics"])
    retention = settings.stats_retention_days
    days_query = Query(
        ge=1, le=retention, description=f"How many days, today included (at most {retention})."
    )
    Days = Annotated[int, days_query]
    default_days = min(DEFAULT_DAYS, retention)

    @router.get("/top", response_model=TopPages, responses=_ANSWERS)
    async def get_top_pages(
        counter: CounterDep,
        limit: Annotated[int, Query(ge=1, le=MAX_TOP_LIMIT, description="How many pages.")] = 10,
    ) -> TopPages:
        """The pages with the most visits stored, across every node (lags by one flush)."""
        pages = await counter.reader.top_pages(limit)
        return TopPages(pages=[TopPage(page_id=page, visits=visits) for page, visits in pages])

    @router.get("/stats/{page_id:path}", response_model=PageStats, responses=_ANSWERS)
    async def get_page_stats(
        page_id: PageId, request: Request, runtime: RuntimeDep, days: Days = default_days
    ) -> PageStats:
        """A page's count, and its visits and unique visitors per UTC day."""
        page_id = page_id_of(request, "stats")
        stats = await runtime.counter.analytics.page(page_id, days)
        count = await runtime.counter.get_visits(page_id)
        return PageStats(
            page_id=page_id,
            visits=count.visits,
            unique_visitors=stats.unique_visitors,
            daily=_days(stats),
        )

    @router.get("/totals", response_model=TotalStats, responses=_ANSWERS)
    async def get_totals(runtime: RuntimeDep, days: Days = default_days) -> TotalStats:
        """All pages' visits and unique visitors per UTC day and hour, and how many pages."""
        stats = await runtime.counter.analytics.totals(days)
        return TotalStats(
            pages=stats.pages,
            visits=stats.visits,
            unique_visitors=stats.unique_visitors,
            daily=_days(stats),
            hourly=[HourStats(**asdict(hour)) for hour in stats.hourly],
        )

    return router


def _days(stats: PeriodStats) -> list[DayStats]:
    return [DayStats(**asdict(day)) for day in stats.daily]
