"""Reading counts straight off a local cluster, and the cluster store on its own."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from redis.cluster import ClusterNode, RedisCluster

from tests.support.cluster import LocalCluster
from visit_counter.cluster import CLUSTER_NODE
from visit_counter.cluster.buckets import page_key
from visit_counter.cluster.manager import ClusterManager
from visit_counter.cluster.store import ClusterStore
from visit_counter.core.config import Settings


def cluster_client(cluster: LocalCluster) -> RedisCluster:
    """A plain redis-py cluster client on the nodes that answer now (close it after use)."""
    return RedisCluster(
        startup_nodes=[ClusterNode("127.0.0.1", port) for port in cluster.live_ports()],
        socket_timeout=2.0,
    )


def cluster_counts(cluster: LocalCluster, pages: list[str]) -> Counter[str]:
    """Each page's count as the cluster holds it (pages without a key left out)."""
    with cluster_client(cluster) as client:
        values = client.mget_nonatomic([page_key(page) for page in pages])
    return Counter(
        {page: int(value) for page, value in zip(pages, values, strict=True) if value is not None}
    )


def primary_port_of(cluster: LocalCluster, slot: int) -> int:
    return next(node.port for node in cluster.primaries() if slot in node.slots)


@asynccontextmanager
async def cluster_store(settings: Settings) -> AsyncIterator[ClusterStore]:
    """The store of cluster mode on its own: its manager checked once, closed on the way out."""
    manager = ClusterManager(settings)
    manager.add_node(CLUSTER_NODE, settings.redis_nodes[0])
    try:
        await manager.check_all()
        yield ClusterStore(manager)
    finally:
        await manager.aclose()
