"""Consistent-hash ring with virtual nodes. Pure: no I/O, no Redis imports.

Placement depends only on the node names, the virtual-node count and MurmurHash3
(guarantee G7): never on Python's randomised `hash()`, process or start order.
Adding one node to N moves about 1/(N+1) of the keys, all of them to the new node.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Sequence

import mmh3


def _point(label: str) -> int:
    """Unsigned 32-bit MurmurHash3 (seed 0) of `label`'s UTF-8 bytes."""
    return mmh3.hash(label, 0, signed=False)


class ConsistentHashRing:
    """Maps keys to node names.

    Each node owns `virtual_nodes` points on a 32-bit circle (the hash of
    "<node>#<i>"); a key belongs to the first point clockwise from its own hash.
    Lookup is a binary search over the sorted points: O(log(nodes * virtual_nodes)).
    Points that collide are resolved by node name so placement stays deterministic.
    """

    def __init__(self, nodes: Iterable[str], virtual_nodes: int = 100) -> None:
        self._nodes: tuple[str, ...] = tuple(nodes)
        if not self._nodes:
            raise ValueError("a ring needs at least one node")
        if len(set(self._nodes)) != len(self._nodes):
            raise ValueError("node names must be unique")
        if virtual_nodes < 1:
            raise ValueError("virtual_nodes must be at least 1")
        self.virtual_nodes = virtual_nodes
        points = sorted(
            (_point(f"{node}#{replica}"), node)
            for node in self._nodes
            for replica in range(virtual_nodes)
        )
        self._hashes: list[int] = []
        self._owners: list[str] = []
        for point, node in points:
            if self._hashes and self._hashes[-1] == point:
                continue  # collision: the smaller node name (sorted first) keeps the point
            self._hashes.append(point)
            self._owners.append(node)

    @property
    def nodes(self) -> Sequence[str]:
        return self._nodes

    def owner(self, key: str) -> str:
        """The node responsible for `key`."""
        index = bisect_right(self._hashes, _point(key))
        if index == len(self._hashes):
            index = 0
        return self._owners[index]

    def distribution(self, keys: Iterable[str]) -> dict[str, int]:
        """How many of `keys` each node owns (every node listed, zeros included)."""
        counts = dict.fromkeys(self._nodes, 0)
        for key in keys:
            counts[self.owner(key)] += 1
        return counts
