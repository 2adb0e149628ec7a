"""Running a move in-process (the same code `python -m app nodes add|remove` runs)."""

from __future__ import annotations

from visit_counter.core.config import Settings
from visit_counter.core.redis_manager import RedisManager
from visit_counter.topology.mover import Mover, MoveSummary
from visit_counter.topology.nodeset import NodeSet


async def move(settings: Settings, action: str, url: str, timeout: float = 30.0) -> MoveSummary:
    """`nodes add URL` or `nodes remove URL` against the nodes of `settings`."""
    manager = RedisManager(settings)
    nodes = NodeSet(settings, manager)
    try:
        await nodes.start()
        mover = Mover(nodes, timeout=timeout)
        if action == "add":
            if (await mover.current()).state == "stable":
                await mover.check_new_node(url)
            members, addresses = await mover.target_for_add(url)
        else:
            members, addresses = await mover.target_for_remove(url), {}
        return await mover.run(members, addresses)
    finally:
        await nodes.aclose()
        await manager.aclose()
