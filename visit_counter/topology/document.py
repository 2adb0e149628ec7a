"""The stored topology: which nodes hold the counts, and the move in progress if any.

Every node keeps the current document (hash `vc:topology`, see `scripts.py`),
so any process can learn it from any node, and a process never routes by a
REDIS_NODES list that disagrees with the nodes (docs/design.md section 8).

A change of the node set is a *move* through three versions, each a new
document written to every node involved before the next step starts:

- `preparing` (version p): routing is still the old ring, but resets now go to
  both the old and the new owner of a page whose owner changes, and a reset
  sent at a version below p is refused by the node (`reset_floor`). The mover
  copies reset epochs to the new owners meanwhile.
- `moving` (p + 1): increments go to the new owners, and a node refuses a batch
  sealed at a version below p + 1 (`write_floor`): the writer re-routes it.
  Reads add the old owner's count (and what the mover took from it) to the new
  owner's (less what it received). The mover transfers every page.
- `stable` (p + 2): the new ring alone; the move's bookkeeping stays on the
  nodes until the next move starts, for processes still reading at p + 1.

`history` keeps the ring of every version that changed where increments go, so
a journal written long ago is routed as its writer routed it (`ring_at`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any, Literal

from visit_counter.core.consistent_hash import ConsistentHashRing

State = Literal["stable", "preparing", "moving"]


@dataclass(frozen=True)
class Topology:
    version: int
    members: tuple[str, ...]  # ring labels, in order (the new set during a move)
    addresses: dict[str, str]  # label -> canonical address (see identity.py)
    virtual_nodes: int
    state: State = "stable"
    previous: tuple[str, ...] | None = None  # the old set during a move
    write_floor: int = 0
    reset_floor: int = 0
    move: int | None = None  # the version that names the current or last move's keys
    history: tuple[tuple[int, tuple[str, ...]], ...] = field(default=())

    @classmethod
    def first(
        cls,
        labels: Sequence[str],
        addresses: dict[str, str],
        virtual_nodes: int,
        version: int = 1,
    ) -> Topology:
        """The first topology of a deployment (version -1: provisional, see nodeset.py)."""
        members = tuple(labels)
        return cls(
            version=version,
            members=members,
            addresses=dict(addresses),
            virtual_nodes=virtual_nodes,
            history=((0, members),),
        )

    # -- rings -----------------------------------------------------------------

    @cached_property
    def ring(self) -> ConsistentHashRing:
        """The ring of `members`."""
        return ConsistentHashRing(self.members, self.virtual_nodes)

    @cached_property
    def previous_ring(self) -> ConsistentHashRing | None:
        if self.previous is None:
            return None
        return ConsistentHashRing(self.previous, self.virtual_nodes)

    @property
    def write_ring(self) -> ConsistentHashRing:
        """Where increments go: the old ring while preparing, else the new one."""
        if self.state == "preparing":
            assert self.previous_ring is not None
            return self.previous_ring
        return self.ring

    def read_owners(self, page_id: str) -> tuple[str, str | None]:
        """(owner, source): while moving, the source is the old owner when it differs."""
        if self.state == "preparing":
            assert self.previous_ring is not None
            return self.previous_ring.owner(page_id), None
        owner = self.ring.owner(page_id)
        if self.state == "moving":
            assert self.previous_ring is not None
            source = self.previous_ring.owner(page_id)
            if source != owner:
                return owner, source
        return owner, None

    def reset_owners(self, page_id: str) -> tuple[str, ...]:
        """Where a reset goes: the old owner first, then the new one if it differs."""
        owner = self.ring.owner(page_id)
        if self.previous_ring is None:
            return (owner,)
        source = self.previous_ring.owner(page_id)
        return (owner,) if source == owner else (source, owner)

    @property
    def nodes(self) -> tuple[str, ...]:
        """Every node a process talks to: the new set, then any old-only node."""
        previous = self.previous or ()
        return self.members + tuple(label for label in previous if label not in self.members)

    def ring_at(self, version: int) -> ConsistentHashRing:
        """The ring increments went to at `version` (0 and below: the first one)."""
        members = self.history[0][1]
        for since, labels in self.history:
            if since <= version:
                members = labels
        if members == self.members:
            return self.ring
        return ConsistentHashRing(members, self.virtual_nodes)

    # -- the move's steps ------------------------------------------------------

    def preparing(self, members: Sequence[str], addresses: dict[str, str]) -> Topology:
        version = self.version + 1
        return replace(
            self,
            version=version,
            members=tuple(members),
            addresses={**self.addresses, **addresses},
            state="preparing",
            previous=self.members,
            reset_floor=version,
            move=version,
        )

    def moving(self) -> Topology:
        assert self.state == "preparing"
        version = self.version + 1
        return replace(
            self,
            version=version,
            state="moving",
            write_floor=version,
            history=(*self.history, (version, self.members)),
        )

    def stable(self) -> Topology:
        assert self.state == "moving"
        kept = {label: self.addresses[label] for label in self.members}
        return replace(
            self, version=self.version + 1, state="stable", previous=None, addresses=kept
        )

    # -- storage ---------------------------------------------------------------

    def to_json(self) -> str:
        return json.dumps(
            {
                "version": self.version,
                "members": list(self.members),
                "addresses": self.addresses,
                "virtual_nodes": self.virtual_nodes,
                "state": self.state,
                "previous": None if self.previous is None else list(self.previous),
                "write_floor": self.write_floor,
                "reset_floor": self.reset_floor,
                "move": self.move,
                "history": [[since, list(labels)] for since, labels in self.history],
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> Topology:
        """The stored document; ValueError when it cannot be read."""
        try:
            raw: dict[str, Any] = json.loads(text)
            state = raw["state"]
            if state not in ("stable", "preparing", "moving"):
                raise ValueError(f"unknown state {state!r}")
            previous = raw.get("previous")
            return cls(
                version=int(raw["version"]),
                members=tuple(str(label) for label in raw["members"]),
                addresses={str(k): str(v) for k, v in raw["addresses"].items()},
                virtual_nodes=int(raw["virtual_nodes"]),
                state=state,
                previous=None if previous is None else tuple(str(x) for x in previous),
                write_floor=int(raw["write_floor"]),
                reset_floor=int(raw["reset_floor"]),
                move=None if raw.get("move") is None else int(raw["move"]),
                history=tuple(
                    (int(since), tuple(str(x) for x in labels)) for since, labels in raw["history"]
                ),
            )
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            raise ValueError(f"topology document cannot be read: {exc!r}") from None
