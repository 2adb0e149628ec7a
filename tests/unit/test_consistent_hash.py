"""The ring (G7): placement depends only on node names, virtual-node count and mmh3."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import mmh3
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from visit_counter.core.consistent_hash import ConsistentHashRing

ROOT = Path(__file__).resolve().parents[2]

COMPOSE_NODES = ["redis://redis1:6379", "redis://redis2:6379", "redis://redis3:6379"]
EMBEDDED_NODES = ["redis://127.0.0.1:7070", "redis://127.0.0.1:7071", "redis://127.0.0.1:7072"]
NODE_LISTS = pytest.mark.parametrize(
    ("nodes", "fourth"),
    [
        pytest.param(COMPOSE_NODES, "redis://redis4:6379", id="compose"),
        pytest.param(EMBEDDED_NODES, "redis://127.0.0.1:7073", id="embedded"),
    ],
)

PAGES = [f"page{i}" for i in range(100_000)]

DETERMINISTIC = settings(derandomize=True, database=None, deadline=None, max_examples=60)

node_names = st.text(min_size=1, max_size=20)
node_lists = st.lists(node_names, min_size=1, max_size=6, unique=True)
keys = st.lists(st.text(max_size=30), min_size=1, max_size=40)
virtual_node_counts = st.integers(min_value=1, max_value=40)

PLACEMENT_SCRIPT = """
import json, sys
from visit_counter.core.consistent_hash import ConsistentHashRing
ring = ConsistentHashRing(sys.argv[1].split(","), virtual_nodes=100)
print(json.dumps({
    "hash_probe": hash("visit-counter"),
    "owners": {f"page{i}": ring.owner(f"page{i}") for i in range(1000)},
}))
"""


def placement_in_child(nodes: list[str], hash_seed: str) -> dict[str, object]:
    env = {**os.environ, "PYTHONHASHSEED": hash_seed, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-c", PLACEMENT_SCRIPT, ",".join(nodes)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return json.loads(result.stdout)


def reference_owner(nodes: list[str], virtual_nodes: int, key: str) -> str:
    """The spec, by brute force: the first point clockwise (strictly after the key's hash),
    wrapping at 2**32; points that collide go to the smaller node name."""
    points = [
        (mmh3.hash(f"{node}#{replica}", 0, signed=False), node)
        for node in nodes
        for replica in range(virtual_nodes)
    ]
    key_point = mmh3.hash(key, 0, signed=False)
    after = [point for point in points if point[0] > key_point]
    return min(after or points)[1]


@NODE_LISTS
def test_placement_is_identical_across_processes_with_different_hash_seeds(
    nodes: list[str], fourth: str
) -> None:
    first = placement_in_child(nodes, "1")
    second = placement_in_child(nodes, "4242")

    # The children really did disagree on hash(); the ring must not care.
    assert first["hash_probe"] != second["hash_probe"]
    assert first["owners"] == second["owners"]
    ring = ConsistentHashRing(nodes)
    assert first["owners"] == {f"page{i}": ring.owner(f"page{i}") for i in range(1000)}


@NODE_LISTS
def test_placement_does_not_depend_on_node_order(nodes: list[str], fourth: str) -> None:
    rings = [
        ConsistentHashRing(order) for order in (nodes, list(reversed(nodes)), nodes[1:] + nodes[:1])
    ]
    for page in PAGES[:1000]:
        owners = {ring.owner(page) for ring in rings}
        assert len(owners) == 1, (page, owners)


@NODE_LISTS
def test_adding_a_fourth_node_moves_about_a_quarter_all_to_the_new_node(
    nodes: list[str], fourth: str
) -> None:
    before = ConsistentHashRing(nodes, virtual_nodes=100)
    after = ConsistentHashRing([*nodes, fourth], virtual_nodes=100)

    moved = [page for page in PAGES if before.owner(page) != after.owner(page)]

    assert 0.20 <= len(moved) / len(PAGES) <= 0.30
    assert {after.owner(page) for page in moved} == {fourth}


@NODE_LISTS
def test_hundred_virtual_nodes_keep_the_busiest_node_within_15_percent_of_the_mean(
    nodes: list[str], fourth: str
) -> None:
    counts = ConsistentHashRing(nodes, virtual_nodes=100).distribution(PAGES)

    mean = len(PAGES) / len(nodes)
    assert sum(counts.values()) == len(PAGES)
    assert max(counts.values()) <= 1.15 * mean, counts


@DETERMINISTIC
@given(nodes=node_lists, virtual_nodes=virtual_node_counts, keys=keys)
def test_owner_is_always_a_configured_node(
    nodes: list[str], virtual_nodes: int, keys: list[str]
) -> None:
    ring = ConsistentHashRing(nodes, virtual_nodes=virtual_nodes)
    for key in keys:
        assert ring.owner(key) in nodes


@DETERMINISTIC
@given(nodes=node_lists, virtual_nodes=virtual_node_counts, keys=keys)
def test_owner_matches_the_brute_force_reference(
    nodes: list[str], virtual_nodes: int, keys: list[str]
) -> None:
    ring = ConsistentHashRing(nodes, virtual_nodes=virtual_nodes)
    for key in keys:
        assert ring.owner(key) == reference_owner(nodes, virtual_nodes, key)


@DETERMINISTIC
@given(
    nodes=st.lists(node_names, min_size=2, max_size=6, unique=True),
    virtual_nodes=virtual_node_counts,
    keys=keys,
    data=st.data(),
)
def test_removing_a_node_moves_only_that_nodes_keys(
    nodes: list[str], virtual_nodes: int, keys: list[str], data: st.DataObject
) -> None:
    removed = data.draw(st.sampled_from(nodes))
    before = ConsistentHashRing(nodes, virtual_nodes=virtual_nodes)
    after = ConsistentHashRing([n for n in nodes if n != removed], virtual_nodes=virtual_nodes)

    for key in keys:
        if before.owner(key) == removed:
            assert after.owner(key) != removed
        else:
            assert after.owner(key) == before.owner(key)


@DETERMINISTIC
@given(nodes=node_lists, virtual_nodes=virtual_node_counts, keys=keys, data=st.data())
def test_lookup_is_stable_across_ring_rebuilds(
    nodes: list[str], virtual_nodes: int, keys: list[str], data: st.DataObject
) -> None:
    shuffled = data.draw(st.permutations(nodes))
    first = ConsistentHashRing(nodes, virtual_nodes=virtual_nodes)
    rebuilt = ConsistentHashRing(iter(shuffled), virtual_nodes=virtual_nodes)

    assert [first.owner(key) for key in keys] == [rebuilt.owner(key) for key in keys]


def colliding_node_names() -> tuple[str, str]:
    """Two node names whose single virtual node lands on the very same 32-bit point."""
    seen: dict[int, str] = {}
    for i in range(1_000_000):
        name = f"n{i}"
        point = mmh3.hash(f"{name}#0", 0, signed=False)
        if point in seen:
            return seen[point], name
        seen[point] = name
    raise AssertionError("no collision found")  # pragma: no cover


def test_a_shared_point_goes_to_the_smaller_node_name_whatever_the_order() -> None:
    first, second = colliding_node_names()
    smaller = min(first, second)

    for order in ([first, second], [second, first]):
        ring = ConsistentHashRing(order, virtual_nodes=1)
        # One point on the whole circle: its owner owns every key.
        assert ring.distribution(PAGES[:500])[smaller] == 500


@pytest.mark.parametrize(
    ("nodes", "virtual_nodes", "message"),
    [
        pytest.param([], 100, "at least one node", id="empty"),
        pytest.param(iter(()), 100, "at least one node", id="empty-iterator"),
        pytest.param(["a", "b", "a"], 100, "unique", id="duplicate"),
        pytest.param(["a"], 0, "virtual_nodes", id="zero-virtual-nodes"),
        pytest.param(["a"], -5, "virtual_nodes", id="negative-virtual-nodes"),
    ],
)
def test_constructor_rejects_bad_arguments(nodes: object, virtual_nodes: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ConsistentHashRing(nodes, virtual_nodes=virtual_nodes)  # type: ignore[arg-type]


@pytest.mark.parametrize("nodes", [COMPOSE_NODES, EMBEDDED_NODES], ids=["compose", "embedded"])
def test_distribution_lists_every_node_even_without_keys(nodes: list[str]) -> None:
    ring = ConsistentHashRing(nodes)

    assert ring.distribution([]) == dict.fromkeys(nodes, 0)
    one = ring.distribution(["home"])
    assert set(one) == set(nodes)
    assert one[ring.owner("home")] == 1
    assert sum(one.values()) == 1


@DETERMINISTIC
@given(nodes=node_lists, virtual_nodes=virtual_node_counts, keys=keys)
def test_distribution_agrees_with_owner(
    nodes: list[str], virtual_nodes: int, keys: list[str]
) -> None:
    ring = ConsistentHashRing(nodes, virtual_nodes=virtual_nodes)
    expected = dict.fromkeys(nodes, 0)
    for key in keys:
        expected[ring.owner(key)] += 1

    assert ring.distribution(keys) == expected
    assert list(ring.nodes) == nodes
