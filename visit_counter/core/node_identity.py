"""Who a node is: an identity stored on the node itself, so a replaced node is noticed.

Each node holds a hash `vc:node` with a random `id` and the node's own clock
time (`created`) of the moment the first service process met it. The health
check reads it in one script call (creating it when missing), which also serves
as the PING. Two things give a node's loss of data away (issue 9):

- its `id` changes while this process runs: the server at that address was
  replaced by an empty one, or its data was wiped (FLUSHALL, a lost volume);
- its identity was *created* much later than its peers': it is either a new
  node (added by restarting with a longer REDIS_NODES) or an empty replacement;
  either way, pages the ring now places on it lost the counts they had.

Both are reported loudly (ERROR log, `/status` `redis_status.replaced_nodes`,
Prometheus `pagevisits_node_replaced`) for the life of the process. A node's
restart with its data (AOF) keeps its identity and is not reported.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime

from redis.asyncio import Redis

logger = logging.getLogger(__name__)

NODE_KEY = "vc:node"
# A node whose identity is younger than its oldest peer's by more than this is suspect.
NEW_NODE_GRACE_SECONDS = 300

TOPOLOGY_KEY = "vc:topology"  # the stored topology (visit_counter/topology/document.py)

# KEYS: [node hash, topology hash]; ARGV: [new id].
# Returns [id, created (node clock, s), 1 if created now, the topology version it holds].
IDENTITY_LUA = """
local version = tonumber(redis.call('HGET', KEYS[2], 'version') or '0')
local found = redis.call('HMGET', KEYS[1], 'id', 'created')
if found[1] then
  return {found[1], tonumber(found[2] or '0'), 0, version}
end
local now = tonumber(redis.call('TIME')[1])
redis.call('HSET', KEYS[1], 'id', ARGV[1], 'created', now)
return {ARGV[1], now, 1, version}
"""


@dataclass(frozen=True, slots=True)
class NodeIdentity:
    id: str
    created: int  # seconds, on the node's clock
    created_now: bool  # this very call gave the node its identity
    topology_version: int = 0  # of the topology the node holds (0: none)


@dataclass(frozen=True, slots=True)
class ReplacedNode:
    """Why a node is believed to have lost the counts it held."""

    reason: str
    seen_at: datetime


class NodeIdentities:
    """The identity each node showed this process, and the nodes found replaced."""

    def __init__(self) -> None:
        self._known: dict[str, NodeIdentity] = {}
        self._compared: set[str] = set()
        self.replaced: dict[str, ReplacedNode] = {}
        # Nodes that joined through `nodes add`: young by design, their pages were moved in.
        self.joined: set[str] = set()

    async def read(self, client: Redis) -> NodeIdentity:
        """The node's identity, given one if it has none yet (one script call)."""
        reply = await client.eval(IDENTITY_LUA, 2, NODE_KEY, TOPOLOGY_KEY, secrets.token_hex(8))
        node_id = reply[0].decode() if isinstance(reply[0], bytes) else str(reply[0])
        return NodeIdentity(
            id=node_id,
            created=int(reply[1]),
            created_now=bool(int(reply[2])),
            topology_version=int(reply[3]),
        )

    def observe(self, name: str, identity: NodeIdentity) -> None:
        previous = self._known.get(name)
        self._known[name] = identity
        if previous is not None and previous.id != identity.id:
            self._report(
                name,
                f"its identity changed from {previous.id} to {identity.id}: the server at this "
                "address was replaced by an empty one or its data was wiped; the counts it "
                "held are gone",
            )

    def compare_new_ones(self) -> None:
        """Report nodes first met long after their peers (see the module docstring).

        Each node is compared once, the first time it and a peer are both known.
        """
        if len(self._known) < 2:
            return
        oldest = min(identity.created for identity in self._known.values())
        for name, identity in self._known.items():
            if name in self._compared or name in self.joined:
                continue
            self._compared.add(name)
            if identity.created - oldest > NEW_NODE_GRACE_SECONDS:
                self._report(
                    name,
                    f"it was first met {identity.created - oldest} s after its oldest peer: it "
                    "is a new node or an empty replacement; pages placed on it lost the "
                    "counts they had before",
                )

    def _report(self, name: str, reason: str) -> None:
        logger.error("redis node %s lost its data? %s", name, reason)
        self.replaced[name] = ReplacedNode(reason=reason, seen_at=datetime.now(UTC))
