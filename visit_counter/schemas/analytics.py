"""The analytics answers: top pages, a page's days and hours, the totals over all pages."""

from __future__ import annotations

from pydantic import BaseModel, Field


class TopPage(BaseModel):
    page_id: str
    visits: int = Field(ge=0, description="Stored count (visits pending in workers not yet).")


class TopPages(BaseModel):
    pages: list[TopPage] = Field(description="Most visits first; ties by page id.")


class DayStats(BaseModel):
    date: str = Field(examples=["2026-11-24"], description="A UTC day.")
    visits: int = Field(ge=0)
    unique_visitors: int = Field(
        ge=0, description="Estimated (HyperLogLog: exact at small counts, about 0.8% off above)."
    )


class HourStats(BaseModel):
    hour: str = Field(examples=["2026-11-24T08:00Z"], description="A UTC hour.")
    visits: int = Field(ge=0)


class PageStats(BaseModel):
    page_id: str
    visits: int = Field(ge=0, description="The page's count, as GET …/visits/{page_id} answers.")
    unique_visitors: int = Field(
        ge=0, description="Visitors over the days asked for (one visitor of several days: one)."
    )
    daily: list[DayStats] = Field(description="The days asked for, oldest first, today last.")


class TotalStats(BaseModel):
    pages: int = Field(ge=0, description="Pages with a count.")
    visits: int = Field(ge=0, description="Visits over the days asked for, all pages.")
    unique_visitors: int = Field(ge=0, description="Visitors over the days asked for.")
    daily: list[DayStats] = Field(description="The days asked for, oldest first, today last.")
    hourly: list[HourStats] = Field(description="The last 48 hours, oldest first.")
