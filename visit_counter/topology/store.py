"""Reading and writing the stored topology on one node, and telling processes it changed."""

from __future__ import annotations

import json

from redis.asyncio import Redis

from visit_counter.core.node_identity import TOPOLOGY_KEY
from visit_counter.services.batch import EVENTS_CHANNEL
from visit_counter.topology.document import Topology
from visit_counter.topology.scripts import SET_TOPOLOGY_LUA


async def read_topology(client: Redis) -> Topology | None:
    """The document the node holds; None when it holds none (ValueError if unreadable)."""
    raw = await client.hget(TOPOLOGY_KEY, "doc")
    if raw is None:
        return None
    return Topology.from_json(raw)


async def write_topology(client: Redis, topology: Topology) -> int:
    """Store `topology` unless the node holds it or a newer one; the version it then holds.

    Tells the node's subscribers (every service process) the new version.
    """
    held = int(
        await client.eval(
            SET_TOPOLOGY_LUA,
            1,
            TOPOLOGY_KEY,
            topology.version,
            topology.write_floor,
            topology.reset_floor,
            topology.to_json(),
        )
    )
    if held == topology.version:
        event = json.dumps({"type": "topology", "version": topology.version})
        await client.publish(EVENTS_CHANNEL, event)
    return held
