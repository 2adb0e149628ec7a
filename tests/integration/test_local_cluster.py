"""The cluster harness (tests/support/cluster.py) builds a real cluster and injects real faults.

Every later cluster test trusts what this harness reports (who is primary, which slots a
node serves), so those claims are checked against the nodes here. Its faults (kill -9 and
SIGSTOP of a primary, waiting for the failover) are exercised, with counts checked, by
tests/fault/test_cluster_faults.py.
"""

from __future__ import annotations

import pytest
import redis
from redis.cluster import RedisCluster
from redis.crc import key_slot

from tests.conftest import ClusterFactory
from tests.support.cluster import CLUSTER_SLOTS, LocalCluster

pytestmark = [pytest.mark.integration, pytest.mark.cluster]


def cluster_client(cluster: LocalCluster) -> RedisCluster:
    """A client that learns the slot map from a node that can answer now."""
    port = cluster.live_ports()[0]
    return RedisCluster(host="127.0.0.1", port=port, decode_responses=True, socket_timeout=2.0)


def read_each(port: int, keys: list[str]) -> list[str | None]:
    """GET every key from one node (keys of several slots cannot share one MGET in a cluster)."""
    with (
        redis.Redis(port=port, decode_responses=True) as direct,
        direct.pipeline(transaction=False) as pipe,
    ):
        for key in keys:
            pipe.get(key)
        return list(pipe.execute())


def test_three_primaries_each_followed_by_one_replica_cover_every_slot(
    cluster: LocalCluster,
) -> None:
    primaries = cluster.primaries()
    replicas = cluster.replicas()
    assert len(primaries) == 3
    assert len(replicas) == 3
    followed = sorted(replica.primary_id or "" for replica in replicas)
    assert followed == sorted(primary.node_id for primary in primaries)
    slot_sets = [cluster.slots_of(primary.port) for primary in primaries]
    assert sum(len(slots) for slots in slot_sets) == CLUSTER_SLOTS
    assert frozenset().union(*slot_sets) == frozenset(range(CLUSTER_SLOTS))
    assert {node.port for node in primaries + replicas} == {node.port for node in cluster.nodes}
    assert cluster.startup_urls == [f"redis://127.0.0.1:{node.port}" for node in cluster.nodes]


def test_a_key_written_through_a_cluster_client_is_readable_on_its_primary(
    cluster: LocalCluster,
) -> None:
    with cluster_client(cluster) as client:
        client.set("page:harness", "42")
        assert client.get("page:harness") == "42"
    (owner,) = [p for p in cluster.primaries() if key_slot(b"page:harness") in p.slots]
    with redis.Redis(port=owner.port, decode_responses=True) as direct:
        assert direct.get("page:harness") == "42"


def test_reshard_moves_slots_and_their_keys(cluster_factory: ClusterFactory) -> None:
    cluster = cluster_factory()
    source, target, _ = (primary.port for primary in cluster.primaries())
    source_before, target_before = cluster.slots_of(source), cluster.slots_of(target)
    values = {f"page:{number}": str(number) for number in range(4000)}
    with cluster_client(cluster) as client:
        client.mset_nonatomic(values)

    cluster.reshard(source, target, 100)

    moved = source_before - cluster.slots_of(source)
    assert len(moved) == 100
    assert cluster.slots_of(target) == target_before | moved
    in_moved = [key for key in values if key_slot(key.encode()) in moved]
    assert in_moved, "no key fell in the moved slots: the test would prove nothing"
    assert read_each(target, in_moved) == [values[key] for key in in_moved]
    with cluster_client(cluster) as client:
        assert client.mget_nonatomic(list(values)) == list(values.values())
