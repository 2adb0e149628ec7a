"""Where the analytics live on a node.

- `vc:day:<day>`: hash, page -> its visits on that UTC day (`YYYY-MM-DD`), one per node and
  day, so counting a page's day costs one HINCRBY and the whole day expires at once,
  STATS_RETENTION_DAYS after it began (EXPIREAT, set with every batch: absolute, so
  setting it again changes nothing).
- `vc:uv:<day>:<page>`: the page's HyperLogLog of visitor ids that day, expiring with it.
- `vc:totals:daily`, `vc:totals:hourly`: the node's visits over all its pages by day and by
  hour (`YYYY-MM-DDTHH`), a field each; a day (an hour) is dropped once it is older than
  the days (48 hours) kept, when a new one is added.
- `vc:uvt:<day>`: the node's HyperLogLog of all visitors of the day.

In cluster mode every key but the last carries its bucket's hash tag after the prefix
(`vc:day:{b12}:<day>`, `vc:totals:daily:{b12}`, see cluster/buckets.py), so a bucket's
script writes them with its counts; the visitors of the whole cluster are one key per
day, `vc:uvt:{totals}:<day>`.
"""

from __future__ import annotations

DAY_PREFIX = "vc:day:"
VISITORS_PREFIX = "vc:uv:"
TOTALS_DAILY_KEY = "vc:totals:daily"
TOTALS_HOURLY_KEY = "vc:totals:hourly"
TOTAL_VISITORS_PREFIX = "vc:uvt:"
CLUSTER_TOTALS_TAG = "{totals}"


def _tagged(prefix: str, tag: str) -> str:
    return f"{prefix}{tag}:" if tag else prefix


def day_key(day: str, tag: str = "") -> str:
    """The day's hash of page -> visits."""
    return _tagged(DAY_PREFIX, tag) + day


def visitors_key(page_id: str, day: str, tag: str = "") -> str:
    return f"{_tagged(VISITORS_PREFIX, tag)}{day}:{page_id}"


def totals_daily_key(tag: str = "") -> str:
    return f"{TOTALS_DAILY_KEY}:{tag}" if tag else TOTALS_DAILY_KEY


def totals_hourly_key(tag: str = "") -> str:
    return f"{TOTALS_HOURLY_KEY}:{tag}" if tag else TOTALS_HOURLY_KEY


def total_visitors_key(day: str, tag: str = "") -> str:
    return _tagged(TOTAL_VISITORS_PREFIX, tag) + day
