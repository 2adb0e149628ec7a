"""The storage a counter runs on, by REDIS_MODE: a ring of nodes, or a Redis Cluster."""

from __future__ import annotations

from dataclasses import dataclass

from app.cluster.manager import ClusterManager
from app.cluster.nodeset import ClusterNodeSet
from app.cluster.store import ClusterStore
from app.core.config import Settings
from app.core.redis_manager import RedisManager
from app.services.node_store import CountStore, NodeStore
from app.topology.nodeset import NodeSet


@dataclass(frozen=True, slots=True)
class Storage:
    manager: RedisManager  # connections and health
    nodes: NodeSet  # the node set the engine routes by
    store: CountStore  # the counting operations


def open_storage(settings: Settings) -> Storage:
    """Nothing is connected yet: `nodes.start()` and `manager.start()` do that."""
    window = settings.idempotency_window_seconds
    if settings.redis_mode == "cluster":
        cluster = ClusterManager(settings)
        return Storage(cluster, ClusterNodeSet(settings, cluster), ClusterStore(cluster, window))
    manager = RedisManager(settings)
    return Storage(manager, NodeSet(settings, manager), NodeStore(manager, window))
