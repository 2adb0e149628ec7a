"""The node set in cluster mode: the cluster is one fixed node of the engine.

At start each REDIS_NODES entry's server is asked whether it is a cluster
node; a standalone server stops the start with one line (`TopologyError`), as a
cluster node does in ring mode. The topology is never stored or moved: the
cluster places its slots itself, and `python -m app nodes add|remove` refuses.
"""

from __future__ import annotations

import logging

from visit_counter.cluster import CLUSTER_NODE, CLUSTER_TOPOLOGY_VERSION
from visit_counter.core.config import redact_url
from visit_counter.topology.document import Topology
from visit_counter.topology.identity import canonical_address, cluster_refusal
from visit_counter.topology.nodeset import NodeSet, TopologyError

logger = logging.getLogger(__name__)


class ClusterNodeSet(NodeSet):
    async def start(self) -> None:
        entries = list(self.settings.redis_nodes)
        async with self.listed_clients() as clients:
            facts = await self._inspect(clients)
        problem = cluster_refusal([redact_url(url) for url in entries], facts)
        if problem is not None:
            raise TopologyError(problem)
        if not facts:
            logger.warning("no listed cluster node answers: visits are kept until one does")
        address = canonical_address(entries[0], 0)
        self._adopt(
            Topology.first(
                [CLUSTER_NODE],
                {CLUSTER_NODE: address},
                self.settings.virtual_nodes,
                version=CLUSTER_TOPOLOGY_VERSION,
            )
        )

    def observe_version(self, node: str, version: int) -> None:
        """Cluster nodes hold no topology of this service."""

    async def refresh(self) -> Topology:
        return self.topology
