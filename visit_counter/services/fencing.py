"""What this process knows of resets: the tags its increments carry (see batch.py).

Per page, the newest reset epoch heard of (from the events channel, its own
resets, or a node that dropped increments). Per node, its *floor*: the node's
reset count read right after subscribing to its events and before any of its
batches is sealed. Every reset at or below the floor happened before this
process accepted the visits it will tag with it, so such resets never drop
them; later resets arrive as events (issue 9).

After the write ring changes, each node's floor is read again before its next
batch (`mark_all_stale`): a moving page's epochs were copied to its new owner,
whose reset count the mover raised above them (visit_counter/topology/mover.py).
"""

from __future__ import annotations

from visit_counter.services.batch import UNKNOWN_TAG
from visit_counter.services.node_store import CountStore


class ResetFencing:
    def __init__(self, store: CountStore) -> None:
        self._store = store
        self._epochs: dict[str, int] = {}  # page -> newest reset epoch heard of
        self._floors: dict[str, int | None] = {}  # node -> floor (None: not read yet)
        self._stale: set[str] = set()  # nodes whose floor is read again before use

    def add_node(self, name: str) -> None:
        self._floors.setdefault(name, None)

    def forget_node(self, name: str) -> None:
        self._floors.pop(name, None)
        self._stale.discard(name)

    def mark_all_stale(self) -> None:
        self._stale.update(self._floors)

    def floor(self, name: str) -> int | None:
        return self._floors.get(name)

    def unknown_floors(self) -> list[str]:
        return [name for name, floor in self._floors.items() if floor is None]

    def needs_floor(self, name: str) -> bool:
        return self._floors.get(name) is None or name in self._stale

    async def learn_floor(self, name: str) -> bool:
        """Read the node's reset count when needed (raises NodeUnavailableError).

        A floor only grows; until it is read again, the one read before stays in
        use. True when this gave the node its first floor.
        """
        if not self.needs_floor(name):
            return False
        self._stale.discard(name)
        floor = await self._store.reset_count(name)
        known = self._floors.get(name)
        if known is not None:
            self._floors[name] = max(known, floor)
            return False
        if name not in self._floors:
            return False  # the node left meanwhile
        self._floors[name] = floor
        return True

    def tag(self, page_id: str, node: str) -> int:
        """The epoch that visits accepted now for `page_id` on `node` carry."""
        floor = self._floors.get(node)
        return max(self._epochs.get(page_id, UNKNOWN_TAG), UNKNOWN_TAG if floor is None else floor)

    def epoch(self, page_id: str) -> int:
        """The newest reset of the page heard of (0: none)."""
        return self._epochs.get(page_id, 0)

    def hear(self, page_id: str, epoch: int) -> bool:
        """A reset of the page: True when it is newer than any heard of before."""
        if epoch <= self._epochs.get(page_id, 0):
            return False
        self._epochs[page_id] = epoch
        return True
