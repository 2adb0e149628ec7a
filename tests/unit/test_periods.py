"""The day and hour a batch is filed under, what falls out of the window, and which pages'
visitors a batch flags for the day's expiry."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from visit_counter.analytics.fresh import FreshVisitors
from visit_counter.analytics.periods import StatsWindow, hour_now, last_days, last_hours

NOW = datetime(2026, 11, 24, 9, 30, tzinfo=UTC)


def test_a_batch_is_filed_under_the_hour_it_was_sealed_in() -> None:
    window = StatsWindow.of(hour_now(NOW) - 10, retention_days=400, now=NOW)
    assert (window.day, window.hour) == ("2026-11-23", "2026-11-23T23")
    # The day's keys expire 400 days after the day began, whenever the batch is applied.
    began = datetime(2026, 11, 23, tzinfo=UTC).timestamp()
    assert window.day_expires == began + 400 * 86_400


def test_a_batch_older_than_the_hours_or_the_days_kept_is_not_filed_there() -> None:
    two_days_ago = StatsWindow.of(hour_now(NOW) - 49, retention_days=400, now=NOW)
    assert (two_days_ago.day, two_days_ago.hour) == ("2026-11-22", "")
    too_old = StatsWindow.of(hour_now(NOW) - 24 * 3, retention_days=3, now=NOW)
    assert (too_old.day, too_old.hour) == ("", "")
    assert too_old.oldest_day == "2026-11-22"


def test_unknown_sealing_hours_are_filed_as_now() -> None:
    assert StatsWindow.of(0, retention_days=30, now=NOW).hour == "2026-11-24T09"


def test_the_argument_carries_visitors_and_fresh_flags_by_index() -> None:
    window = StatsWindow.of(0, retention_days=30, now=NOW)
    argument = json.loads(window.to_argument(3, [(2, ["v1", "v2"], True), (3, ["v3"], False)]))
    assert (argument["n"], argument["visitors"]) == (3, [[2, ["v1", "v2"], 1], [3, ["v3"], 0]])


def test_the_days_and_hours_asked_for_end_now() -> None:
    assert last_days(3, NOW) == ["2026-11-22", "2026-11-23", "2026-11-24"]
    hours = last_hours(NOW)
    assert (len(hours), hours[0], hours[-1]) == (48, "2026-11-22T10", "2026-11-24T09")


def test_a_page_is_flagged_until_a_batch_flagging_it_is_stored() -> None:
    fresh = FreshVisitors()
    assert fresh.fresh("2026-11-24", ["a", "b"]) == {"a", "b"}
    assert fresh.fresh("2026-11-24", ["a"]) == {"a"}, "not stored yet: flagged again"
    fresh.stored("2026-11-24", {"a"})
    assert fresh.fresh("2026-11-24", ["a", "b"]) == {"b"}
    assert fresh.fresh("2026-11-25", ["a"]) == {"a"}, "a new day: every page again"
    fresh.stored("2026-11-24", {"b"})  # a batch of a day that is over
    assert fresh.fresh("2026-11-25", ["b"]) == {"b"}


def test_a_topology_change_or_the_memory_bound_flags_every_page_again() -> None:
    fresh = FreshVisitors(max_remembered=2)
    fresh.fresh("d", ["a"])
    fresh.stored("d", {"a"})
    fresh.forget()
    assert fresh.fresh("d", ["a"]) == {"a"}
    fresh.stored("d", {"a", "b", "c"})
    assert fresh.fresh("d", ["a"]) == {"a"}, "over the bound: start over"
