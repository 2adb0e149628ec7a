"""The storage a counter runs on, by REDIS_MODE: a ring of nodes, or a Redis Cluster."""

from __future__ import annotations

from dataclasses import dataclass

from visit_counter.cluster.manager import ClusterManager
from visit_counter.cluster.nodeset import ClusterNodeSet
from visit_counter.cluster.store import ClusterStore
from visit_counter.core.config import Settings
from visit_counter.core.redis_manager import RedisManager
from visit_counter.services.node_store import CountStore, NodeStore
from visit_counter.topology.nodeset import NodeSet


@dataclass(frozen=True, slots=True)
class Storage:
    manager: RedisManager  # connections and health
    nodes: NodeSet  # the node set the engine routes by
    store: CountStore  # the counting operations


def open_storage(settings: Settings) -> Storage:
    """Nothing is connected yet: `nodes.start()` and `manager.start()` do that."""
    window, retention = settings.idempotency_window_seconds, settings.stats_retention_days
    if settings.redis_mode == "cluster":
        cluster = ClusterManager(settings)
        store = ClusterStore(cluster, window, retention)
        return Storage(cluster, ClusterNodeSet(settings, cluster), store)
    manager = RedisManager(settings)
    return Storage(manager, NodeSet(settings, manager), NodeStore(manager, window, retention))
