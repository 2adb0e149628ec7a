"""The days and hours analytics are kept by, and what one batch writes into them.

A batch's visits are counted in the UTC hour (and day) it was sealed in: the
flush that sealed it came at most one flush interval after the visits, so a
visit just before an hour's end can be counted in the next one. The hour rides
in the batch (`Batch.sealed_hour`), so a retry, a journal replayed days later or
a batch re-routed after a move writes into the same hour as its first attempt.

Days are kept for STATS_RETENTION_DAYS, hours for the last `HOURS_KEPT`. A
batch sealed longer ago than that (a journal replayed after a long outage)
still adds its visits to the counts, but not to the days or hours it is too
old for: they have expired already.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

HOURS_KEPT = 48
DEFAULT_RETENTION_DAYS = 400  # STATS_RETENTION_DAYS
SECONDS_PER_HOUR = 3600
SECONDS_PER_DAY = 86_400


def hour_now(now: datetime | None = None) -> int:
    """Hours since the Unix epoch (UTC): how a batch records when it was sealed."""
    moment = now or datetime.now(UTC)
    return int(moment.timestamp()) // SECONDS_PER_HOUR


def day_name(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d")


def hour_name(moment: datetime) -> str:
    """`YYYY-MM-DDTHH`: sorts as the hours do, so a hash's old hours are its smallest fields."""
    return moment.strftime("%Y-%m-%dT%H")


def day_of_hour(hour: int) -> str:
    """The UTC day an hour (hours since the epoch) is in."""
    return day_name(_at_hour(hour))


def _at_hour(hour: int) -> datetime:
    return datetime.fromtimestamp(hour * SECONDS_PER_HOUR, UTC)


def last_days(days: int, now: datetime | None = None) -> list[str]:
    """The names of the last `days` UTC days, oldest first, today last."""
    today = (now or datetime.now(UTC)).astimezone(UTC)
    return [day_name(today - timedelta(days=back)) for back in range(days - 1, -1, -1)]


def last_hours(now: datetime | None = None) -> list[str]:
    """The names of the last `HOURS_KEPT` UTC hours, oldest first, the current one last."""
    current = _at_hour(hour_now(now))
    return [hour_name(current - timedelta(hours=back)) for back in range(HOURS_KEPT - 1, -1, -1)]


@dataclass(frozen=True, slots=True)
class StatsWindow:
    """What the batch scripts need to file one batch's visits: as `to_argument()`, a JSON
    object the Lua side (`analytics/scripts.py`) decodes."""

    day: str  # "" when the batch is older than the days kept: no day, no unique visitors
    hour: str  # "" when older than the hours kept
    oldest_day: str  # the totals' days below it are dropped when a day is added
    oldest_hour: str
    retention_days: int
    day_expires: int  # when the day's keys expire: Unix seconds, retention days after it began

    @classmethod
    def of(cls, sealed_hour: int, retention_days: int, now: datetime | None = None) -> StatsWindow:
        """The window of a batch sealed in `sealed_hour` (0: unknown, taken as now)."""
        current = hour_now(now)
        moment = _at_hour(sealed_hour or current)
        oldest_day = day_name(_at_hour(current) - timedelta(days=retention_days - 1))
        oldest_hour = hour_name(_at_hour(current - HOURS_KEPT + 1))
        day, hour = day_name(moment), hour_name(moment)
        day_began = moment.replace(hour=0)
        return cls(
            day=day if day >= oldest_day else "",
            hour=hour if hour >= oldest_hour else "",
            oldest_day=oldest_day,
            oldest_hour=oldest_hour,
            retention_days=retention_days,
            day_expires=int((day_began + timedelta(days=retention_days)).timestamp()),
        )

    def to_argument(self, pages: int, visitors: list[tuple[int, list[str], bool]]) -> str:
        """The script's last ARGV: this window, the batch's page count, and for each page
        with visitor ids, in page order: its 1-based index, the ids for its day's
        HyperLogLog, and whether that HyperLogLog needs the day's expiry set
        (`Batch.fresh_visitors`)."""
        return json.dumps(
            {
                "n": pages,
                "day": self.day,
                "hour": self.hour,
                "oldest_day": self.oldest_day,
                "oldest_hour": self.oldest_hour,
                "days_kept": self.retention_days,
                "hours_kept": HOURS_KEPT,
                "day_expires": self.day_expires,
                "visitors": [[index, ids, int(fresh)] for index, ids, fresh in visitors],
            },
            separators=(",", ":"),
        )


@dataclass(frozen=True, slots=True)
class PeriodCounts:
    """One node's part of a page's (or of all pages') analytics for the days and hours asked."""

    daily: list[int]  # visits per day asked for, in their order
    unique: list[int]  # visitors per day, counted by the node (PFCOUNT)
    unique_overall: int  # visitors over the days, counted by the node
    sketches: list[bytes | None] = field(default_factory=list)  # raw, when asked for
    hourly: list[int] = field(default_factory=list)  # totals only: visits per hour asked for
    pages: int = 0  # totals only: the pages with a count

    @property
    def has_visitors(self) -> bool:
        return self.unique_overall > 0

    @classmethod
    def of_page(cls, reply: list[Any]) -> PeriodCounts:
        """From READ_PAGE_DAYS_LUA's reply (analytics/scripts.py)."""
        daily, unique, overall, sketches = reply
        return cls(_ints(daily), _ints(unique), int(overall), _sketches(sketches))

    @classmethod
    def of_totals(cls, reply: list[Any], pages: int) -> PeriodCounts:
        """From READ_TOTALS_LUA's reply."""
        daily, hourly, unique, overall, sketches = reply
        return cls(
            _ints(daily),
            _ints(unique),
            int(overall),
            _sketches(sketches),
            hourly=_ints(hourly),
            pages=pages,
        )


def _ints(values: list[Any]) -> list[int]:
    return [int(value or 0) for value in values]


def _sketches(values: list[Any]) -> list[bytes | None]:
    return [bytes(value) if value else None for value in values]
