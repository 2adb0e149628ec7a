"""DELETE (and PUT's set) on a page's owners: one node, or both while the page moves (G3).

During a move the page is reset on its old owner first, then on its new one with at
least the old owner's new epoch; the new owner takes the value and writes the audit
entry, and every worker is told once both are done (visit_counter/topology/scripts.py).
A node that holds a newer topology than the one the reset was sent by refuses it; the
reset is sent again by the node's topology.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, replace

from visit_counter.admin.audit import NO_CHANGE, PageChange
from visit_counter.core.errors import NodeUnavailableError
from visit_counter.services.node_store import CountStore
from visit_counter.topology.nodeset import NodeSet

RESET_ATTEMPTS = 3  # a reset that keeps meeting newer topologies gives up after this many


@dataclass(frozen=True, slots=True)
class PageReset:
    old: int  # the count the page had, over its owners
    epoch: int  # its new epoch: what every worker holding older visits drops them by


class PageResetter:
    def __init__(self, nodes: NodeSet, store: CountStore) -> None:
        self._nodes = nodes
        self._store = store

    async def reset(self, page_id: str, change: PageChange) -> PageReset:
        """Set the page to `change.value` on its owner(s) (see the module docstring).

        Raises NodeUnavailableError when a node cannot answer, or the topology kept
        changing for RESET_ATTEMPTS tries.
        """
        for _ in range(RESET_ATTEMPTS):
            topology = self._nodes.topology
            owners = topology.reset_owners(page_id)
            least, old = 0, 0
            for number, name in enumerate(owners, 1):
                last = number == len(owners)
                result = await self._store.reset(
                    name,
                    page_id,
                    version=topology.version,
                    move=topology.move,
                    least=least,
                    publish=len(owners) == 1,
                    change=replace(change, earlier=old) if last else NO_CHANGE,
                )
                if result.epoch is None:
                    break
                least, old = result.epoch, old + result.old
            else:
                if len(owners) > 1:
                    await asyncio.gather(
                        *(self._store.publish_reset(name, page_id, least) for name in owners)
                    )
                return PageReset(old, least)
            await self._nodes.refresh()  # the reset went by an old topology: redo it
        raise NodeUnavailableError("the topology kept changing; retry the reset")
