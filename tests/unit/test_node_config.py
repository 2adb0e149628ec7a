"""The rule for node settings that silently lose counts (pure; live nodes in integration)."""

from __future__ import annotations

import pytest

from visit_counter.core.node_config import UNKNOWN, config_warnings

RDB_DEFAULT = "3600 1 300 100 60 10000"


@pytest.mark.parametrize("policy", ["noeviction", "volatile-lru", "volatile-lfu", "volatile-ttl"])
@pytest.mark.parametrize(("aof", "save"), [(True, ""), (False, RDB_DEFAULT), (True, RDB_DEFAULT)])
def test_policies_that_never_evict_our_keys_with_persistence_pass(
    policy: str, aof: bool, save: str
) -> None:
    assert config_warnings(policy, aof, save) == []


@pytest.mark.parametrize("policy", ["allkeys-lru", "allkeys-lfu", "allkeys-random"])
def test_a_policy_that_evicts_any_key_is_reported(policy: str) -> None:
    (warning,) = config_warnings(policy, True, "")
    assert policy in warning
    assert "evict" in warning


def test_neither_aof_nor_rdb_is_reported() -> None:
    (warning,) = config_warnings("noeviction", False, "")
    assert "no persistence" in warning


def test_both_problems_are_reported_together() -> None:
    assert len(config_warnings("allkeys-lru", False, "  ")) == 2


def test_config_unavailable_is_unknown_not_a_guess() -> None:
    # INFO still says AOF is on, so persistence is known; the policy is not.
    (warning,) = config_warnings(None, True, None)
    assert warning.startswith(UNKNOWN)
    assert "maxmemory-policy" in warning


@pytest.mark.parametrize("aof", [False, None])
def test_persistence_unknown_when_aof_is_not_on_and_save_cannot_be_read(
    aof: bool | None,
) -> None:
    warnings = config_warnings("noeviction", aof, None)
    assert len(warnings) == 1
    assert warnings[0].startswith(UNKNOWN)


def test_rdb_alone_is_enough_even_when_info_is_unavailable() -> None:
    assert config_warnings("noeviction", None, RDB_DEFAULT) == []
