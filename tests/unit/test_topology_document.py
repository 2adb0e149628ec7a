"""The stored topology: its versions through a move, routing at each, and its JSON."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from visit_counter.topology.document import Topology
from visit_counter.topology.identity import ServerFacts, canonical_address, connect_url, refusal
from visit_counter.topology.nodeset import canonical_label

A, B, C = "redis://10.0.0.1:6379", "redis://10.0.0.2:6379", "redis://10.0.0.3:6379"
ADDRESSES = {label: label + "/0" for label in (A, B, C)}
PAGES = [f"page-{number}" for number in range(2000)]


def first() -> Topology:
    return Topology.first([A, B], {A: ADDRESSES[A], B: ADDRESSES[B]}, virtual_nodes=50)


def test_a_move_goes_through_three_versions_with_their_floors() -> None:
    stable = first()
    preparing = stable.preparing([A, B, C], {C: ADDRESSES[C]})
    moving = preparing.moving()
    done = moving.stable()

    assert [t.version for t in (stable, preparing, moving, done)] == [1, 2, 3, 4]
    assert [t.state for t in (preparing, moving, done)] == ["preparing", "moving", "stable"]
    # Resets sent before the move are refused from preparing on; batches from moving on.
    assert (preparing.reset_floor, preparing.write_floor) == (2, 0)
    assert (moving.reset_floor, moving.write_floor) == (2, 3)
    assert (done.reset_floor, done.write_floor, done.previous) == (2, 3, None)
    assert done.members == (A, B, C)
    assert done.move == 2  # its bookkeeping keys stay until the next move


def test_routing_at_each_step_of_adding_a_node() -> None:
    stable = first()
    preparing = stable.preparing([A, B, C], {C: ADDRESSES[C]})
    moving = preparing.moving()
    old, new = stable.ring, moving.ring
    moved = [page for page in PAGES if old.owner(page) != new.owner(page)]

    assert moved
    assert all(new.owner(page) == C for page in moved)  # only to the new node
    for page in PAGES:
        assert preparing.write_ring.owner(page) == old.owner(page)
        assert moving.write_ring.owner(page) == new.owner(page)
        assert preparing.read_owners(page) == (old.owner(page), None)
    for page in moved:
        assert moving.read_owners(page) == (C, old.owner(page))
        assert preparing.reset_owners(page) == (old.owner(page), C)
        assert moving.stable().read_owners(page) == (C, None)
    assert moving.nodes == (A, B, C)


def test_removing_a_node_reads_both_and_talks_to_the_leaving_one() -> None:
    three = Topology.first([A, B, C], ADDRESSES, virtual_nodes=50)
    moving = three.preparing([A, C], {}).moving()
    assert moving.nodes == (A, C, B)
    leaving = [page for page in PAGES if three.ring.owner(page) == B]
    for page in leaving:
        owner, source = moving.read_owners(page)
        assert source == B
        assert owner in (A, C)
    done = moving.stable()
    assert B not in done.addresses
    assert done.nodes == (A, C)


def test_ring_at_gives_the_ring_increments_went_to_at_each_version() -> None:
    stable = first()
    moving = stable.preparing([A, B, C], {C: ADDRESSES[C]}).moving()
    done = moving.stable()
    for version in (-1, 0, 1, 2):
        assert done.ring_at(version).nodes == (A, B)
    for version in (3, 4, 99):
        assert done.ring_at(version).nodes == (A, B, C)


def test_the_document_survives_json() -> None:
    moving = first().preparing([A, B, C], {C: ADDRESSES[C]}).moving()
    again = Topology.from_json(moving.to_json())
    assert again == moving
    assert again.ring.owner("home") == moving.ring.owner("home")


@pytest.mark.parametrize("text", ["{}", '{"version": 1}', "[]", '{"state": "odd"}', "not json"])
def test_an_unreadable_document_is_a_value_error(text: str) -> None:
    with pytest.raises(ValueError, match="topology"):
        Topology.from_json(text)


# -- identity ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "label"),
    [
        ("redis://127.0.0.1:7400", "redis://127.0.0.1:7400"),
        ("redis://127.0.0.1:7400/0", "redis://127.0.0.1:7400"),
        ("redis://:secret@127.0.0.1:7400", "redis://127.0.0.1:7400"),
        ("redis://user:secret@Cache.Internal:6380/3", "redis://cache.internal:6380/3"),
        ("redis://LOCALHOST", "redis://localhost:6379"),
        ("rediss://h:1/2", "rediss://h:1/2"),
        ("redis://[::1]:7000", "redis://[::1]:7000"),
    ],
)
def test_a_label_is_the_canonical_address(url: str, label: str) -> None:
    assert canonical_label(url, default_db=0) == label


def test_the_db_setting_fills_in_a_url_without_one() -> None:
    assert canonical_address("redis://h:1", default_db=4) == "redis://h:1/4"
    assert canonical_address("redis://h:1/2", default_db=4) == "redis://h:1/2"


@given(st.sampled_from(["", ":pw@", "user:pw@"]), st.sampled_from(["", "/0"]))
def test_respelling_a_url_never_changes_its_label(credentials: str, db: str) -> None:
    assert (
        canonical_label(f"redis://{credentials}127.0.0.1:7400{db}", 0) == "redis://127.0.0.1:7400"
    )


def test_connect_url_takes_credentials_from_the_listed_entry() -> None:
    address = "redis://127.0.0.1:7400/0"
    assert connect_url(address, None) == address
    assert connect_url(address, "redis://127.0.0.1:7400") == address
    assert connect_url(address, "redis://:pw@localhost:7400") == "redis://:pw@127.0.0.1:7400/0"


def test_refusal_names_both_entries_of_one_server() -> None:
    entries = ["redis://127.0.0.1:7400", "redis://localhost:7400", "redis://127.0.0.1:7401"]
    facts = {0: ServerFacts("abc", 0, False), 1: ServerFacts("abc", 0, False)}
    line = refusal(entries, {**facts, 2: ServerFacts("def", 0, False)})
    assert line is not None
    assert "entries 1 (redis://127.0.0.1:7400) and 2 (redis://localhost:7400)" in line
    # One server, two dbs: two nodes.
    assert (
        refusal(entries, {0: ServerFacts("abc", 0, False), 1: ServerFacts("abc", 1, False)}) is None
    )


def test_refusal_points_a_cluster_node_to_cluster_mode() -> None:
    line = refusal(["redis://127.0.0.1:7000"], {0: ServerFacts("abc", 0, True)})
    assert line is not None
    assert "Redis Cluster" in line
    assert "cluster_enabled:1" in line
