"""The connection to a Redis Cluster, and what is known of its health.

The engine sees the cluster as one node, `CLUSTER_NODE` (see store.py): it is up
while the cluster says `cluster_state:ok` and the last call on it worked. The
health checks also read `CLUSTER NODES`, so `/status` can show every node of
the cluster with its role, the primary a replica follows and its slot count;
and they decide, when REDIS_MIN_REPLICAS_ACK is unset, how many replicas must
acknowledge a batch: 1 as soon as the cluster has a replica, else 0.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster

from visit_counter.cluster import CLUSTER_NODE
from visit_counter.core.config import Settings
from visit_counter.core.redis_manager import NodeHealth, RedisManager

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ClusterMember:
    """One node of the cluster as `CLUSTER NODES` describes it."""

    address: str  # host:port
    role: str  # "primary" or "replica"
    primary: str | None  # for a replica: the address of the primary it follows
    slots: int
    connected: bool
    failing: bool  # flagged fail or pfail by the node that answered


class ClusterManager(RedisManager):
    """RedisManager for cluster mode: one RedisCluster client instead of a client per node."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        first = urlsplit(settings.redis_nodes[0])
        self.cluster = RedisCluster(
            startup_nodes=[
                ClusterNode(urlsplit(url).hostname or "127.0.0.1", urlsplit(url).port or 6379)
                for url in settings.redis_nodes
            ],
            password=settings.redis_password or unquote(first.password or "") or None,
            username=unquote(first.username) if first.username else None,
            socket_timeout=settings.redis_timeout,
            socket_connect_timeout=settings.redis_connect_timeout,
            max_connections=settings.redis_pool_size,
            require_full_coverage=False,
            driver_info=None,
        )
        self._configured_ack = settings.redis_min_replicas_ack
        self.min_replicas_ack = settings.redis_min_replicas_ack or 0
        self.members: list[ClusterMember] = []
        self.state = "unknown"
        self.redirections = 0  # MOVED, ASK and TRYAGAIN answers followed (store.py)

    def add_node(self, name: str, url: str) -> None:
        """The logical node only: the cluster client reaches every real one."""
        self._health.setdefault(name, NodeHealth(name=name, port=urlsplit(url).port or 6379))

    @property
    def names(self) -> list[str]:
        return list(self._health)

    def events_source(self, name: str) -> Redis | RedisCluster:
        return self.cluster

    async def check_all(self) -> dict[str, bool]:
        """Ask the cluster for its state and its nodes; the logical node is up when ok."""
        try:
            async with asyncio.timeout(self.call_budget):
                await self.cluster.initialize()
                info = await self.cluster.cluster_info()
                nodes = await self.cluster.cluster_nodes()
        except Exception as exc:
            self.mark_down(CLUSTER_NODE, exc)
            return {CLUSTER_NODE: False}
        self.state = str(info.get("cluster_state", "unknown"))
        self.members = _members(nodes)
        if self._configured_ack is None:
            self.min_replicas_ack = 1 if any(m.role == "replica" for m in self.members) else 0
        if self.state == "ok":
            self.mark_up(CLUSTER_NODE)
        else:
            self.mark_down(CLUSTER_NODE, f"cluster_state:{self.state}")
        return {CLUSTER_NODE: self.state == "ok"}

    async def check(self, name: str) -> bool:
        return (await self.check_all()).get(name, False)

    async def aclose(self) -> None:
        await super().aclose()
        try:
            await self.cluster.aclose()
        except Exception:
            logger.exception("closing the cluster client failed")


def _members(nodes: Mapping[str, Mapping[str, object]]) -> list[ClusterMember]:
    """`CLUSTER NODES` as redis-py parses it (address -> fields), as members."""
    by_id = {str(fields.get("node_id")): address for address, fields in nodes.items()}
    members = []
    for address, fields in sorted(nodes.items()):
        flags = str(fields.get("flags", ""))
        replica = "slave" in flags or "replica" in flags
        slots = fields.get("slots") or []
        members.append(
            ClusterMember(
                address=address.split("@")[0],
                role="replica" if replica else "primary",
                primary=by_id.get(str(fields.get("master_id"))) if replica else None,
                slots=sum(int(end) - int(start) + 1 for start, end in _ranges(slots)),
                connected=bool(fields.get("connected", False)),
                failing="fail" in flags,
            )
        )
    return members


def _ranges(slots: object) -> list[tuple[str, str]]:
    """redis-py gives slots as [start, end] pairs (end omitted for a single slot)."""
    found: list[tuple[str, str]] = []
    if not isinstance(slots, list):
        return found
    for item in slots:
        if isinstance(item, list | tuple) and item:
            found.append((str(item[0]), str(item[-1])))
    return found
