"""Node identities: a node that lost its data is reported, a restarted one is not."""

from __future__ import annotations

import pytest

from visit_counter.core.node_identity import NEW_NODE_GRACE_SECONDS, NodeIdentities, NodeIdentity


def identity(node_id: str, created: int, created_now: bool = False) -> NodeIdentity:
    return NodeIdentity(id=node_id, created=created, created_now=created_now)


def test_the_same_identity_again_is_not_a_replacement() -> None:
    identities = NodeIdentities()
    identities.observe("a", identity("id-a", 1000))
    identities.observe("a", identity("id-a", 1000))  # e.g. after a restart with its AOF
    identities.compare_new_ones()
    assert identities.replaced == {}


def test_a_changed_identity_is_reported(caplog: pytest.LogCaptureFixture) -> None:
    identities = NodeIdentities()
    identities.observe("a", identity("id-a", 1000))
    identities.observe("a", identity("id-b", 5000, created_now=True))
    assert set(identities.replaced) == {"a"}
    assert "id-a" in identities.replaced["a"].reason
    assert any(r.levelname == "ERROR" and "lost its data" in r.message for r in caplog.records)


def test_a_node_much_younger_than_its_peers_is_reported_once() -> None:
    identities = NodeIdentities()
    identities.observe("a", identity("id-a", 1000))
    identities.observe("b", identity("id-b", 1000 + NEW_NODE_GRACE_SECONDS))
    identities.observe("c", identity("id-c", 1000 + NEW_NODE_GRACE_SECONDS + 1, True))
    identities.compare_new_ones()
    assert set(identities.replaced) == {"c"}
    first = identities.replaced["c"]
    identities.compare_new_ones()
    assert identities.replaced["c"] is first


def test_nodes_of_a_fresh_deployment_are_not_reported() -> None:
    identities = NodeIdentities()
    for name in "abc":
        identities.observe(name, identity(f"id-{name}", 1000, created_now=True))
    identities.compare_new_ones()
    assert identities.replaced == {}
