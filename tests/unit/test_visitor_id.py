"""Visitor ids: stable for a visitor within a UTC day, unlinkable across days, address-free."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from visit_counter.core.config import Settings, SettingsError, load_settings
from visit_counter.core.visitor_id import VisitorIds, visitor_ids_for

SECRET = "s3cret-s3cret-s3cret"
ADDRESS = "203.0.113.7"
USER_AGENT = "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0"
MORNING = datetime(2025, 3, 14, 0, 0, 1, tzinfo=UTC)
EVENING = datetime(2025, 3, 14, 23, 59, 59, tzinfo=UTC)
NEXT_DAY = datetime(2025, 3, 15, 0, 0, 0, tzinfo=UTC)


def test_an_id_is_16_hex_characters() -> None:
    assert re.fullmatch(r"[0-9a-f]{16}", VisitorIds(SECRET).visitor_id(ADDRESS, USER_AGENT))


def test_the_same_visitor_has_one_id_all_day() -> None:
    ids = VisitorIds(SECRET)
    assert ids.visitor_id(ADDRESS, USER_AGENT, MORNING) == ids.visitor_id(
        ADDRESS, USER_AGENT, EVENING
    )


def test_the_next_day_gives_another_id() -> None:
    ids = VisitorIds(SECRET)
    assert ids.visitor_id(ADDRESS, USER_AGENT, EVENING) != ids.visitor_id(
        ADDRESS, USER_AGENT, NEXT_DAY
    )


def test_the_day_is_the_utc_day() -> None:
    ids = VisitorIds(SECRET)
    tokyo = timezone(timedelta(hours=9))
    # 08:00 on the 15th in Tokyo is 23:00 on the 14th in UTC.
    assert ids.visitor_id(ADDRESS, USER_AGENT, datetime(2025, 3, 15, 8, tzinfo=tokyo)) == (
        ids.visitor_id(ADDRESS, USER_AGENT, MORNING)
    )


def test_a_naive_time_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        VisitorIds(SECRET).visitor_id(ADDRESS, USER_AGENT, datetime(2025, 3, 14, 12))


def test_another_address_or_user_agent_is_another_visitor() -> None:
    ids = VisitorIds(SECRET)
    visitor = ids.visitor_id(ADDRESS, USER_AGENT, MORNING)
    assert ids.visitor_id("203.0.113.8", USER_AGENT, MORNING) != visitor
    assert ids.visitor_id(ADDRESS, USER_AGENT + " ", MORNING) != visitor


def test_the_address_and_user_agent_cannot_trade_characters() -> None:
    ids = VisitorIds(SECRET)
    assert ids.visitor_id("10.0.0.1", "2abc", MORNING) != ids.visitor_id(
        "10.0.0.12", "abc", MORNING
    )


def test_the_address_is_kept_nowhere() -> None:
    ids = VisitorIds(SECRET)
    visitor = ids.visitor_id(ADDRESS, USER_AGENT, MORNING)
    assert ADDRESS not in visitor
    assert ADDRESS not in repr(ids)
    assert ADDRESS not in repr(vars(ids))  # every attribute, whatever its name


def test_the_repr_shows_no_secret() -> None:
    assert SECRET not in repr(VisitorIds(SECRET))
    assert repr(VisitorIds(SECRET)) == "VisitorIds(secret=configured)"
    assert repr(VisitorIds()) == "VisitorIds(secret=random per process)"


def test_instances_with_the_same_secret_agree() -> None:
    first, second = VisitorIds(SECRET), VisitorIds(SECRET)
    assert first.visitor_id(ADDRESS, USER_AGENT, MORNING) == second.visitor_id(
        ADDRESS, USER_AGENT, MORNING
    )
    assert first.shared_between_processes


def test_instances_with_different_secrets_disagree() -> None:
    assert VisitorIds(SECRET).visitor_id(ADDRESS, USER_AGENT, MORNING) != VisitorIds(
        SECRET + "x"
    ).visitor_id(ADDRESS, USER_AGENT, MORNING)


def test_without_a_secret_each_instance_draws_its_own() -> None:
    first, second = VisitorIds(), VisitorIds()
    assert first.visitor_id(ADDRESS, USER_AGENT, MORNING) != second.visitor_id(
        ADDRESS, USER_AGENT, MORNING
    )
    assert first.visitor_id(ADDRESS, USER_AGENT, MORNING) == first.visitor_id(
        ADDRESS, USER_AGENT, EVENING
    )
    assert not first.shared_between_processes


def test_going_back_a_day_gives_that_days_id_again() -> None:
    ids = VisitorIds(SECRET)
    yesterday = ids.visitor_id(ADDRESS, USER_AGENT, MORNING)
    ids.visitor_id(ADDRESS, USER_AGENT, NEXT_DAY)
    # The salt is derived, not stored: whoever holds the secret can recompute any day's.
    assert ids.visitor_id(ADDRESS, USER_AGENT, EVENING) == yesterday


visitor_text = st.tuples(st.text(max_size=45), st.text(max_size=200))


@settings(max_examples=200, deadline=None)
@given(first=visitor_text, second=visitor_text)
def test_any_two_visitors_get_two_ids(first: tuple[str, str], second: tuple[str, str]) -> None:
    ids = VisitorIds(SECRET)
    first_id, second_id = ids.visitor_id(*first, MORNING), ids.visitor_id(*second, MORNING)
    assert re.fullmatch(r"[0-9a-f]{16}", first_id)
    assert (first_id == second_id) == (first == second)  # 64 bits: a collision is ~2^-64


def test_visitor_ids_follow_the_setting() -> None:
    configured = Settings(_env_file=None, visitor_salt_secret=SECRET)
    assert visitor_ids_for(configured).visitor_id(ADDRESS, USER_AGENT, MORNING) == (
        VisitorIds(SECRET).visitor_id(ADDRESS, USER_AGENT, MORNING)
    )
    assert not visitor_ids_for(Settings(_env_file=None)).shared_between_processes


def test_a_short_secret_is_refused_without_echoing_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)  # no .env
    for key in Settings.model_fields:
        monkeypatch.delenv(key.upper(), raising=False)
    monkeypatch.setenv("VISITOR_SALT_SECRET", "short-secret")
    with pytest.raises(SettingsError, match="VISITOR_SALT_SECRET: must be at least 16") as error:
        load_settings()
    assert "short-secret" not in str(error.value)
