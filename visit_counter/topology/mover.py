"""Changing the node set while the service runs: `nodes add` and `nodes remove`.

A move goes through the three topology versions of `document.py`; every step
is idempotent, so the mover can be killed anywhere (`kill -9` included) and
run again with the same argument: it reads the version the nodes hold and goes
on from there. A node that does not answer is waited for (the move pauses,
and `timeout` ends the wait: run the command again to resume).

1. preparing: stored on every node (old and new); then every node's reset
   count is raised to the highest of them, and each moving page's reset epoch
   is copied to its new owner, so the fencing of batch.py holds there too.
2. moving: stored on every node; then each old owner's pages that move are
   transferred with TAKE and RECEIVE (`scripts.py`), and a second scan checks
   that none is left. First, the pages a killed mover took but had not handed
   over are handed over (they are in the move's `out` hash, no longer keys).
3. stable: stored on every node. A removed node holds nothing any more.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from redis.asyncio import Redis
from redis.exceptions import DataError, ResponseError

from visit_counter.core.node_identity import TOPOLOGY_KEY
from visit_counter.services.batch import (
    APPLIED_KEY,
    EPOCHS_KEY,
    PAGE_KEY_PREFIX,
    RESETS_KEY,
    TOP_KEY,
)
from visit_counter.topology.carry import AnalyticsCarrier
from visit_counter.topology.document import Topology
from visit_counter.topology.nodeset import NodeSet, canonical_label
from visit_counter.topology.scripts import (
    IMPORT_EPOCHS_LUA,
    RAISE_RESETS_LUA,
    RECEIVE_LUA,
    TAKE_LUA,
    carried_key,
    move_keys,
)
from visit_counter.topology.store import write_topology

logger = logging.getLogger(__name__)

T = TypeVar("T")
CHUNK = 1000  # pages per script call
SCAN_COUNT = 2000

# Told (pages done, pages to do (an estimate), final) as the transfer goes.
Progress = Callable[[int, int, bool], None]


class MoveError(Exception):
    """The move cannot start: the message says why and what to do (exit status 2)."""


class MovePaused(Exception):
    """A node did not answer within the timeout; running the command again resumes."""


@dataclass
class MoveSummary:
    version: int
    pages: int = 0
    visits: int = 0
    seconds: float = 0.0
    analytics_keys: int = 0  # a removed node's analytics keys handed over (carry.py)
    flows: dict[tuple[str, str], list[int]] = field(default_factory=dict)  # -> [pages, visits]

    def add(self, source: str, target: str, pages: int, visits: int) -> None:
        flow = self.flows.setdefault((source, target), [0, 0])
        flow[0] += pages
        flow[1] += visits
        self.pages += pages
        self.visits += visits


class Mover:
    """Runs one move on the nodes of `nodes` (a started NodeSet)."""

    def __init__(
        self,
        nodes: NodeSet,
        *,
        timeout: float,
        progress: Progress | None = None,
        max_rate: float = 0.0,
    ):
        """`max_rate`: pages per second at most (0: as fast as the nodes go), to leave a
        busy machine's nodes more time for the service's own flushes."""
        self._nodes = nodes
        self._manager = nodes.manager
        self._timeout = timeout
        self._progress = progress
        self._max_rate = max_rate
        self._key_window_ms = nodes.settings.idempotency_window_seconds * 1000
        self._deadline = 0.0
        self._paced_since = 0.0  # when the pages counted in `_paced` began to move
        self._paced = 0
        self._carrier = AnalyticsCarrier(self._manager, self._retry)

    # -- what to move --------------------------------------------------------

    async def current(self) -> Topology:
        """The newest topology any node holds (the mover's own start may be stale)."""
        topology = await self._nodes.refresh()
        if self._nodes.provisional:
            raise MoveError("no listed node answers: the stored topology cannot be read")
        return topology

    async def target_for_add(self, url: str) -> tuple[list[str], dict[str, str]]:
        topology = await self.current()
        label = canonical_label(url, self._nodes.settings.redis_db)
        joining = label in topology.members and label not in (topology.previous or ())
        if topology.state != "stable" and joining:
            return list(topology.members), {}  # the move adding it is under way: resume it
        if label in topology.members:
            raise MoveError(f"{label} is a node already (topology version {topology.version})")
        address = self._nodes.address_of(url)
        return [*topology.members, label], {label: address}

    async def target_for_remove(self, url: str) -> list[str]:
        topology = await self.current()
        label = self._nodes.label_of(url, topology)
        if label is None:
            raise MoveError(f"{url} is not a node of topology version {topology.version}")
        members = [member for member in topology.members if member != label]
        if not members:
            raise MoveError("refusing to remove the last node: the counts would have nowhere to go")
        return members

    async def check_new_node(self, url: str) -> None:
        """Refuse a node that is a cluster node, a member already, or holds counts."""
        label = canonical_label(url, self._nodes.settings.redis_db)
        self._manager.add_node(label, self._nodes.url_with_credentials(url))
        problem = await self._nodes.check_candidate(label)
        if problem is not None:
            raise MoveError(problem)

    async def plan(self, members: Sequence[str], addresses: dict[str, str]) -> MoveSummary:
        """What a move to `members` would transfer, by source and target (reads only)."""
        topology = await self.current()
        target = topology.preparing(members, addresses).ring
        summary = MoveSummary(version=topology.version)
        for source in topology.members:
            client = self._manager.client(source)
            async for pages in self._scan_pages(source):
                moving = [page for page in pages if target.owner(page) != source]
                if not moving:
                    continue
                counts = await client.mget([PAGE_KEY_PREFIX + page for page in moving])
                for page, count in zip(moving, counts, strict=True):
                    summary.add(source, target.owner(page), 1, int(count or 0))
        return summary

    # -- the move ------------------------------------------------------------

    async def run(self, members: Sequence[str], addresses: dict[str, str]) -> MoveSummary:
        """Move to `members`, or resume the move to them that is under way."""
        started = time.perf_counter()
        self._deadline = time.monotonic() + self._timeout
        for label, address in addresses.items():
            self._manager.add_node(label, self._nodes.url_with_credentials(address))
        topology = await self.current()
        if topology.state == "stable":
            if list(topology.members) == list(members):
                return MoveSummary(version=topology.version)
            topology = topology.preparing(members, addresses)
            await self._on_every_node(topology, self._forget_last_move)
            await self._publish(topology)
        elif list(topology.members) != list(members):
            raise MoveError(
                f"a move to {', '.join(topology.members)} is under way (version "
                f"{topology.version}, {topology.state}): finish it first by running the "
                "command that started it again"
            )
        if topology.state == "preparing":
            await self._raise_reset_counts(topology)
            await self._copy_epochs(topology)
            topology = topology.moving()
            await self._publish(topology)
        summary = MoveSummary(version=topology.version)
        if topology.state == "moving":
            await self._copy_applied_marks(topology)
            # Pages a mover killed (or paused) between TAKE and RECEIVE took from a source:
            # their keys are gone, so the scans below would never find them.
            for source in topology.previous or ():
                pages = await self._in_flight(topology, source)
                await self._move_pages(topology, source, pages, summary)
            await self._transfer(topology, summary)
            await self._transfer(topology, summary)  # a second scan: nothing may be left
            for source in topology.previous or ():
                if source not in topology.members:
                    summary.analytics_keys += await self._carrier.carry(topology, source)
            topology = topology.stable()
            await self._publish(topology)
        summary.version = topology.version
        summary.seconds = time.perf_counter() - started
        return summary

    async def _publish(self, topology: Topology) -> None:
        """Store `topology` on every node it names; a node that holds newer wins."""

        async def store(label: str) -> None:
            client = self._manager.client(label)
            held = await self._retry(label, write_topology, client, topology)
            if held > topology.version:
                raise MoveError(
                    f"{label} holds topology version {held}, newer than {topology.version}: "
                    "another mover is running"
                )

        # The old members first: a mover killed in between leaves the new version where
        # the next run reads it (it reads the old members), never on an added node alone,
        # which would then be refused as "holding another deployment's topology".
        old = [label for label in topology.nodes if label in (topology.previous or ())]
        await asyncio.gather(*(store(label) for label in old))
        await asyncio.gather(*(store(label) for label in topology.nodes if label not in old))
        logger.info(
            "topology version %d (%s) stored on every node", topology.version, topology.state
        )

    async def _forget_last_move(self, label: str, client: Redis, topology: Topology) -> None:
        """Delete the bookkeeping of the move before this one (readers are past it now)."""
        held = await client.hget(TOPOLOGY_KEY, "doc")
        if held is None:
            return
        last = Topology.from_json(held).move
        if last is not None and last != topology.move:
            await client.delete(*move_keys(last), carried_key(last))

    async def _raise_reset_counts(self, topology: Topology) -> None:
        async def count(label: str, least: int) -> int:
            client = self._manager.client(label)
            raised = await self._retry(
                label, client.eval, RAISE_RESETS_LUA, 2, EPOCHS_KEY, RESETS_KEY, least
            )
            return int(raised)

        highest = max(await asyncio.gather(*(count(label, 0) for label in topology.nodes)))
        await asyncio.gather(*(count(label, highest) for label in topology.nodes))

    async def _copy_epochs(self, topology: Topology) -> None:
        ring = topology.ring
        for source in topology.previous or ():
            client = self._manager.client(source)
            cursor = 0
            while True:
                cursor, found = await self._retry(
                    source, client.hscan, EPOCHS_KEY, cursor, None, SCAN_COUNT
                )
                by_target: dict[str, list[object]] = {}
                assert isinstance(found, dict)
                for raw_page, epoch in found.items():
                    page = _text(raw_page)
                    target = ring.owner(page)
                    if target != source:
                        by_target.setdefault(target, []).extend((page, int(epoch)))
                for target, pairs in by_target.items():
                    target_client = self._manager.client(target)
                    await self._retry(
                        target,
                        target_client.eval,
                        IMPORT_EPOCHS_LUA,
                        2,
                        *(EPOCHS_KEY, RESETS_KEY, *pairs),
                    )
                if cursor == 0:
                    break

    async def _copy_applied_marks(self, topology: Topology) -> None:
        """Copy a removed node's applied marks to every node that stays.

        A journal replayed after the node is gone sends its batches to a node that
        stayed (`NodeStore.apply(via=...)`), which then knows whether the removed
        node had applied them. The marks no longer change once the node refuses
        every batch (the moving version was stored on it first).
        """
        for removed in topology.previous or ():
            if removed in topology.members:
                continue
            client = self._manager.client(removed)
            cursor = 0
            while True:
                cursor, found = await self._retry(
                    removed, client.hscan, APPLIED_KEY, cursor, None, SCAN_COUNT
                )
                assert isinstance(found, dict)
                # Release 1 kept a mark under the writer alone: name its node, as now.
                marks = {
                    field if "|" in _text(field) else f"{_text(field)}|{removed}": seq
                    for field, seq in found.items()
                }
                for member in topology.members if marks else ():
                    target = self._manager.client(member)
                    await self._retry(member, target.hset, APPLIED_KEY, None, None, marks)
                if cursor == 0:
                    break

    async def _transfer(self, topology: Topology, summary: MoveSummary) -> None:
        ring = topology.ring
        sources = list(topology.previous or ())
        estimate = 0
        for source in sources:
            # Pages with a count are the top set's members (other keys are not pages).
            client = self._manager.client(source)
            scored = int(await self._retry(source, client.zcard, TOP_KEY))
            estimate += scored or int(await self._retry(source, client.dbsize))
        done = 0
        for source in sources:
            async for pages in self._scan_pages(source):
                done += len(pages)
                moving = [page for page in pages if ring.owner(page) != source]
                await self._move_pages(topology, source, moving, summary)
                if self._progress is not None:
                    self._progress(done, max(estimate, done), False)
        if self._progress is not None:
            self._progress(done, max(estimate, done), True)

    async def _move_pages(
        self, topology: Topology, source: str, pages: list[str], summary: MoveSummary
    ) -> None:
        """TAKE `pages` from `source`, then RECEIVE them on their new owners."""
        ring = topology.ring
        taken_key, out_key, got_key, in_key, cutoff_key = move_keys(topology.move)
        client = self._manager.client(source)
        for first in range(0, len(pages), CHUNK):
            chunk = pages[first : first + CHUNK]
            await self._pace(len(chunk))
            reply = await self._retry(
                source, client.eval, TAKE_LUA, 3, taken_key, out_key, EPOCHS_KEY, *chunk
            )
            by_target: dict[str, list[object]] = {}
            pages_to: dict[str, int] = {}
            owner = ring.owner
            at = 0
            for page in chunk:
                # taken total, epoch, number of idempotency keys, then key and score pairs
                end = at + 3 + 2 * int(reply[at + 2])
                target = owner(page)
                by_target.setdefault(target, []).extend((page, *reply[at:end]))
                pages_to[target] = pages_to.get(target, 0) + 1
                at = end
            for target, entries in by_target.items():
                added = await self._retry(
                    target,
                    self._manager.client(target).eval,
                    RECEIVE_LUA,
                    5,
                    *(got_key, in_key, cutoff_key, EPOCHS_KEY, RESETS_KEY),
                    self._key_window_ms,
                    *entries,
                )
                summary.add(source, target, pages_to[target], int(added))

    async def _pace(self, pages: int) -> None:
        """Wait before moving `pages` more so the move stays under `max_rate` pages/s."""
        if self._max_rate <= 0:
            return
        now = time.monotonic()
        if not self._paced_since:
            self._paced_since = now
        due = self._paced_since + self._paced / self._max_rate
        self._paced += pages
        if due > now:
            await asyncio.sleep(due - now)

    async def _in_flight(self, topology: Topology, source: str) -> list[str]:
        """Pages taken from `source` that their new owner has not received in full.

        Read from the move's `out` hash: a page reset since it was taken is no
        longer there, and must not be handed over (the reset wiped what was taken).
        Its epoch has not changed since the take, so TAKE (which finds no key and
        takes nothing) returns what the killed mover would have sent.
        """
        ring = topology.ring
        taken_key, out_key, got_key, _, _ = move_keys(topology.move)
        client = self._manager.client(source)
        found: list[str] = []
        cursor = 0
        while True:
            cursor, entries = await self._retry(
                source, client.hscan, out_key, cursor, None, SCAN_COUNT
            )
            assert isinstance(entries, dict)
            by_target: dict[str, list[str]] = {}
            for raw_page in entries:
                page = _text(raw_page)
                if ring.owner(page) != source:
                    by_target.setdefault(ring.owner(page), []).append(page)
            for target, pages in by_target.items():
                taken = await self._retry(source, client.hmget, taken_key, pages)
                target_client = self._manager.client(target)
                got = await self._retry(target, target_client.hmget, got_key, pages)
                found.extend(
                    page
                    for page, total, received in zip(pages, taken, got, strict=True)
                    if int(total or 0) > int(received or 0)
                )
            if cursor == 0:
                return found

    # -- reading nodes, waiting for them ---------------------------------------

    async def _on_every_node(
        self,
        topology: Topology,
        step: Callable[[str, Redis, Topology], Awaitable[None]],
    ) -> None:
        for label in topology.nodes:
            await self._retry(label, step, label, self._manager.client(label), topology)

    async def _scan_pages(self, label: str) -> AsyncIterator[list[str]]:
        """Page ids on a node, a SCAN batch at a time (waiting for the node if need be)."""
        client = self._manager.client(label)
        cursor = 0
        while True:
            cursor, keys = await self._retry(
                label, client.scan, cursor, PAGE_KEY_PREFIX + "*", SCAN_COUNT
            )
            pages = [_text(key).removeprefix(PAGE_KEY_PREFIX) for key in keys]
            if pages:
                yield pages
            if cursor == 0:
                break

    async def _retry(self, label: str, operation: Callable[..., Awaitable[T]], *args: Any) -> T:
        """`operation(*args)` on node `label`, waiting for the node while it does not answer."""
        warned = False
        while True:
            try:
                async with asyncio.timeout(self._manager.call_budget):
                    return await operation(*args)
            except MoveError:
                raise
            except (ResponseError, DataError) as exc:  # refused: waiting will not help
                raise MoveError(f"node {label} refused the move's command: {exc!r}") from exc
            except Exception as exc:
                if time.monotonic() > self._deadline:
                    raise MovePaused(
                        f"node {label} did not answer ({exc!r}); the move is paused where it "
                        "was: run the same command again to resume it"
                    ) from exc
                if not warned:
                    logger.warning("waiting for node %s: %r", label, exc)
                    warned = True
                await asyncio.sleep(0.5)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
