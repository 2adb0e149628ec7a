"""A sealed batch of increments for one node (its scripts: `node_scripts.py`).

Idempotency (docs/design.md section 4, guarantee G1): every process has a unique
`writer` id and numbers its batches with a strictly increasing `seq`. A node
keeps, per writer, the highest seq it has applied (hash `vc:batches`). A batch
whose seq is not above that mark is a retry of something already stored and
adds nothing. This needs each writer to send its batches for one node in seq
order, one at a time, which the outbox guarantees.

Resets (G3): a DELETE gives the page a new epoch on its owner (hash `vc:epochs`),
drawn from the node's reset count (`vc:resets`), which is never below any epoch
the node holds. Each increment carries a *tag*: the newest epoch its writer knew
for the page, but never less than the node's reset count as the writer read it
before it began counting (its *floor*, see `VisitCounter`). The node drops an
increment whose page epoch is above its tag: a reset the writer had not heard
of when it sealed the batch came after those visits, so they never reappear,
however late their batch arrives. Resets older than the writer itself are at
or below its floor, so they never cost a visit it acknowledged (issue 9).

A tag of `UNKNOWN_TAG` (-1) means the writer had not read the node's reset count
yet (the node was unreachable when it started); it is resolved to the floor of
whichever writer sends the batch, when it sends it (`Batch.with_floor`).

The node raises its reset count to the highest tag it is sent, so an empty
node that replaced a lost one still hands out epochs above every tag in use.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from visit_counter.analytics.periods import StatsWindow
from visit_counter.core.node_identity import TOPOLOGY_KEY as TOPOLOGY_KEY

PAGE_KEY_PREFIX = "visits:"
APPLIED_KEY = "vc:batches"
EPOCHS_KEY = "vc:epochs"
RESETS_KEY = "vc:resets"
# Each page's stored count as the score of a sorted set per node, kept by every script that
# changes a count: the top pages of the node in one ZREVRANGE (`GET …/counter/top`).
TOP_KEY = "vc:top"
TOP_BUILT_KEY = "vc:top:built"  # set once the pages stored before TOP_KEY existed are in it

UNKNOWN_TAG = -1
EVENTS_CHANNEL = "vc:events"
IDEMPOTENCY_KEY_PREFIX = "vc:idem:"

# Idempotency keys of visits held in memory: page -> the key members of its keyed visits.
PendingKeys = dict[str, set[str]]
# Visitor ids of visits held in memory: page -> the ids of its visitors.
PendingVisitors = dict[str, set[str]]
# A key member is the client's key for one visit, or `<key>\x1f<count>` for `count` visits
# of the page sent under one key (batch ingest): a key never holds the separator.
_AMOUNT_SEPARATOR = "\x1f"


def applied_mark(writer: str, node: str) -> str:
    """The field of a node's applied hash for `writer`'s batches routed to ring node `node`:
    per writer *and* ring node, so one ring node's batch never passes for another's retry
    on a shared server."""
    return f"{writer}|{node}"


def page_key(page_id: str) -> str:
    return PAGE_KEY_PREFIX + page_id


def key_member(key: str, count: int) -> str:
    """The member that stands for `count` visits of a page sent under `key`."""
    return key if count == 1 else f"{key}{_AMOUNT_SEPARATOR}{count}"


def key_amount(member: str) -> int:
    """How many visits a key member stands for."""
    _, separator, count = member.rpartition(_AMOUNT_SEPARATOR)
    return int(count) if separator else 1


def keyed_visits(members: set[str]) -> int:
    return sum(key_amount(member) for member in members)


def merge_pending(
    counts: dict[str, int],
    held: PendingKeys,
    increments: Mapping[str, int],
    keys: PendingKeys | None,
) -> None:
    """Add increments, and the key members of their keyed visits, to a queue in memory (the
    buffer, an outbox): a member the queue holds already is a visit counted already."""
    for page_id, count in increments.items():
        counts[page_id] = counts.get(page_id, 0) + count
    for page_id, members in (keys or {}).items():
        page_held = held.setdefault(page_id, set())
        counts[page_id] -= keyed_visits(page_held & members)
        page_held |= members


def merge_visitors(held: PendingVisitors, visitors: Mapping[str, set[str]] | None) -> None:
    """Add visitor ids to a queue's: a set per page, so a visitor held twice is held once."""
    for page_id, ids in (visitors or {}).items():
        held.setdefault(page_id, set()).update(ids)


def idempotency_set_key(page_id: str) -> str:
    """The page's sorted set of idempotency keys seen (score: when, in ms)."""
    return IDEMPOTENCY_KEY_PREFIX + page_id


@dataclass(frozen=True, slots=True)
class Batch:
    """Increments for one node. Immutable once sealed: a retry resends it unchanged."""

    writer: str
    seq: int
    node: str
    increments: Mapping[str, tuple[int, int]]  # page -> (count, tag)
    # The topology version it was routed at (visit_counter/topology/document.py); 0: release 1.
    version: int = 0
    # page -> the idempotency keys of its keyed visits (visit_counter/core/idempotency.py); each is
    # one of the page's counted visits, dropped by the node if it has seen the key.
    keys: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    # The UTC hour it was sealed in (hours since the epoch; 0: unknown, filed as the hour it
    # is applied in): the day and hour its visits are filed under (analytics/periods.py).
    sealed_hour: int = 0
    # page -> visitor ids of its visits (visit_counter/core/visitor_id.py), for the day's
    # HyperLogLog; adding one twice changes nothing, so they need no mark of their own.
    visitors: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    # Pages whose visitors this writer sends the first time today (analytics/fresh.py).
    fresh_visitors: frozenset[str] = frozenset()

    @property
    def visits(self) -> int:
        return sum(count for count, _ in self.increments.values())

    @property
    def mark(self) -> str:
        """The field of the node's applied hash for this batch (`applied_mark`)."""
        return applied_mark(self.writer, self.node)

    def rerouted(self, owner_of: Callable[[str], str], version: int) -> list[Batch]:
        """This batch split by today's owners, after a node refused its stale routing.

        Deterministic: the parts take the writer `<writer>><node>` and the same seq,
        so rerouting the same batch again (a retry, a journal replayed twice) gives
        the same batches, which the new owners' applied marks store once. Tags are
        kept: the new owner holds the page's epochs (the mover copied them).
        """
        parts: dict[str, dict[str, tuple[int, int]]] = {}
        for page_id, count_tag in self.increments.items():
            parts.setdefault(owner_of(page_id), {})[page_id] = count_tag
        writer = f"{self.writer}>{self.node}"
        return [
            Batch(
                writer=writer,
                seq=self.seq,
                node=node,
                increments=incs,
                version=version,
                keys={page: self.keys[page] for page in incs if page in self.keys},
                sealed_hour=self.sealed_hour,
                visitors={page: self.visitors[page] for page in incs if page in self.visitors},
                fresh_visitors=frozenset(page for page in incs if page in self.fresh_visitors),
            )
            for node, incs in parts.items()
        ]

    def with_floor(self, floor: int) -> Batch:
        """This batch with every `UNKNOWN_TAG` resolved to `floor` (itself when none is)."""
        increments = self.increments
        if all(tag != UNKNOWN_TAG for _, tag in increments.values()):
            return self
        resolved = {
            page: (count, floor if tag == UNKNOWN_TAG else tag)
            for page, (count, tag) in increments.items()
        }
        return replace(self, increments=resolved)

    def pending_keys(self) -> PendingKeys:
        """The keys as the in-memory queues hold them (to put the batch back in a queue)."""
        return {page: set(keys) for page, keys in self.keys.items()}

    def stats_argument(self, pages: list[str], window: StatsWindow) -> str:
        """The apply scripts' last ARGV for `pages` (in their order among the script's):
        `window`, with the visitor ids and fresh flags of the pages that have some."""
        visitors = [
            (index, list(self.visitors[page]), page in self.fresh_visitors)
            for index, page in enumerate(pages, 1)
            if page in self.visitors
        ]
        return window.to_argument(len(pages), visitors)

    def visitor_pages(self, pages: list[str]) -> list[str]:
        """Of `pages`, in their order, those with visitor ids (whose keys the scripts get)."""
        visitors = self.visitors
        return [page for page in pages if page in visitors] if visitors else []

    def pending_visitors(self) -> PendingVisitors:
        """The visitor ids as the in-memory queues hold them."""
        return {page: set(ids) for page, ids in self.visitors.items()}

    def to_json(self) -> str:
        record: dict[str, Any] = {
            "writer": self.writer,
            "seq": self.seq,
            "node": self.node,
            "inc": {page: list(pair) for page, pair in self.increments.items()},
            "tv": self.version,
        }
        if self.keys:
            record["keys"] = {page: list(keys) for page, keys in self.keys.items()}
        if self.sealed_hour:
            record["hr"] = self.sealed_hour
        if self.visitors:
            record["vis"] = {page: list(ids) for page, ids in self.visitors.items()}
        if self.fresh_visitors:
            record["vf"] = sorted(self.fresh_visitors)
        return json.dumps(record, separators=(",", ":"))

    @classmethod
    def from_json(cls, line: str) -> Batch:
        return cls.from_record(json.loads(line))

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Batch:
        """A batch from the parsed JSON of `to_json`; KeyError, TypeError or ValueError if not."""
        return cls(
            writer=str(record["writer"]),
            seq=int(record["seq"]),
            node=str(record["node"]),
            increments={
                str(page): (int(count), int(epoch))
                for page, (count, epoch) in record["inc"].items()
            },
            version=int(record.get("tv", 0)),
            keys={
                str(page): tuple(str(key) for key in keys)
                for page, keys in record.get("keys", {}).items()
            },
            sealed_hour=int(record.get("hr", 0)),
            visitors={
                str(page): tuple(str(visitor) for visitor in ids)
                for page, ids in record.get("vis", {}).items()
            },
            fresh_visitors=frozenset(str(page) for page in record.get("vf", ())),
        )
