"""The one owner of the node set: the stored topology, a client per node, change events.

At start (`start`), each REDIS_NODES entry's server is asked who it is: two
entries that reach the same server and db, or a Redis Cluster node, stop the
start with one line (`TopologyError`). Then the topology stored on the nodes
is read, and the highest version wins. REDIS_NODES only *seeds* it:

- no node holds one: a fresh deployment, or nodes written by release 1. The
  first topology is the listed nodes, under their canonical labels, or, when
  the nodes already hold counts, under release 1's labels (the URLs as listed,
  password redacted), so an upgrade moves no page. It is stored on every node.
- a node holds one that lists other nodes: the process follows the stored
  topology and logs the difference once (WARNING). It never routes by a list
  the nodes disagree with. An entry that spells a stored node's host otherwise
  (it resolves to the same address) is that node, not a difference.

While it runs, a newer version reaches the process three ways: the topology
event the mover publishes on every node, a node refusing a batch or reset sent
at an older version, and the version each health check reads. `refresh` then
reads the document and tells every subscriber (`subscribe`) of the change
before anything is routed by it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import replace
from urllib.parse import urlsplit

from redis.asyncio import Redis

from visit_counter.core.config import Settings, redact_url
from visit_counter.core.errors import CounterError
from visit_counter.core.node_identity import NODE_KEY, TOPOLOGY_KEY
from visit_counter.core.redis_manager import RedisManager
from visit_counter.services.batch import APPLIED_KEY, EPOCHS_KEY, PAGE_KEY_PREFIX, RESETS_KEY
from visit_counter.topology.document import Topology
from visit_counter.topology.identity import ServerFacts, canonical_address, connect_url, refusal
from visit_counter.topology.store import read_topology, write_topology

logger = logging.getLogger(__name__)

# Told (old, new) before anything is routed by the new topology; must not block.
TopologyListener = Callable[[Topology, Topology], None]


class TopologyError(CounterError):
    """The listed nodes cannot be used as a ring (one line, the reason and the fix)."""

    status_code = 503
    code = "topology_error"


def canonical_label(url: str, default_db: int) -> str:
    """A node's ring label in a fresh deployment: its canonical address, `/0` left out."""
    address = canonical_address(url, default_db)
    return address.removesuffix("/0")


class NodeSet:
    """See the module docstring."""

    def __init__(self, settings: Settings, manager: RedisManager) -> None:
        self.settings = self._settings = settings
        self.manager = manager
        self._topology: Topology | None = None
        self._listeners: list[TopologyListener] = []
        self._refresh_lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[object]] = set()  # refreshes, repairs, closing clients
        # REDIS_NODES entries by canonical label: their credentials are used for that node.
        self._seeds = {canonical_label(url, settings.redis_db): url for url in settings.redis_nodes}
        manager.on_topology_version = self.observe_version

    @property
    def topology(self) -> Topology:
        assert self._topology is not None, "NodeSet.start() first"
        return self._topology

    def subscribe(self, listener: TopologyListener) -> None:
        self._listeners.append(listener)

    def unsubscribe(self, listener: TopologyListener) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    # -- start -----------------------------------------------------------------

    async def start(self) -> None:
        """Check the listed servers, then read (or store) the topology; see the docstring.

        With no listed node reachable, the process starts on a *provisional*
        topology (version -1: REDIS_NODES under canonical labels), so it can
        accept and journal visits (G5). Every node refuses a batch routed at
        version -1, so once a node answers and the real topology is known
        (`refresh`), those batches are re-routed by it.
        """
        settled = await self._settle()
        if settled is None:
            settled = self._provisional()
            logger.warning(
                "no listed node answers: routing provisionally by REDIS_NODES until one does"
            )
        self._adopt(settled)

    @contextlib.asynccontextmanager
    async def listed_clients(self) -> AsyncIterator[list[Redis]]:
        """A short-lived client per REDIS_NODES entry, in order; all closed on the way out."""
        clients = [self.manager.connect(url) for url in self._settings.redis_nodes]
        try:
            yield clients
        finally:
            for client in clients:
                with contextlib.suppress(Exception):
                    await client.aclose()

    async def _settle(self) -> Topology | None:
        """The stored topology, or the first one stored now; None when no node answers."""
        entries = list(self._settings.redis_nodes)
        async with self.listed_clients() as clients:
            facts = await self._inspect(clients)
            problem = refusal([redact_url(url) for url in entries], facts)
            if problem is not None:
                raise TopologyError(problem)
            stored = await self._newest(clients)
            if stored is not None:
                await self._match_entries(stored)
                self._log_difference(stored)
                return stored
            if not facts:
                return None
            return await self._first_topology(entries, clients, facts)

    def _provisional(self) -> Topology:
        db = self._settings.redis_db
        labels = [canonical_label(url, db) for url in self._settings.redis_nodes]
        addresses = {
            label: canonical_address(url, db)
            for label, url in zip(labels, self._settings.redis_nodes, strict=True)
        }
        return Topology.first(labels, addresses, self._settings.virtual_nodes, version=-1)

    @property
    def provisional(self) -> bool:
        """No node has confirmed the topology yet (see `start`)."""
        return self.topology.version < 1

    async def _inspect(self, clients: list[Redis]) -> dict[int, ServerFacts]:
        """What each reachable entry's server says of itself (unreachable ones: nothing)."""

        async def ask(client: Redis) -> ServerFacts | None:
            try:
                async with asyncio.timeout(self.manager.call_budget):
                    server = await client.info("server")
                    cluster = await client.info("cluster")
                    db = int(client.connection_pool.connection_kwargs.get("db") or 0)
            except Exception as exc:
                logger.warning("cannot ask a node who it is (it is checked again later): %r", exc)
                return None
            return ServerFacts(
                run_id=str(server.get("run_id", "")),
                db=db,
                cluster_enabled=bool(int(cluster.get("cluster_enabled", 0))),
            )

        found = await asyncio.gather(*(ask(client) for client in clients))
        return {position: fact for position, fact in enumerate(found) if fact is not None}

    async def _newest(self, clients: list[Redis]) -> Topology | None:
        async def read(client: Redis) -> Topology | None:
            try:
                async with asyncio.timeout(self.manager.call_budget):
                    return await read_topology(client)
            except ValueError as exc:
                logger.error("a node holds a topology that cannot be read: %s", exc)
            except Exception:
                pass  # unreachable: the others decide
            return None

        found = [t for t in await asyncio.gather(*(read(c) for c in clients)) if t is not None]
        return max(found, key=lambda topology: topology.version, default=None)

    async def _first_topology(
        self, entries: list[str], clients: list[Redis], facts: dict[int, ServerFacts]
    ) -> Topology:
        """Store the listed nodes as version 1, under release 1's labels if they hold counts."""
        db = self._settings.redis_db
        legacy = await self._written_by_release_1(clients)
        labels = [redact_url(url) if legacy else canonical_label(url, db) for url in entries]
        addresses = {
            label: canonical_address(url, db) for label, url in zip(labels, entries, strict=True)
        }
        topology = Topology.first(labels, addresses, self._settings.virtual_nodes)
        held = []
        for client in clients:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(self.manager.call_budget):
                    held.append(await write_topology(client, topology))
        if not held:
            raise TopologyError("no listed node is reachable: the topology cannot be stored")
        if max(held) > topology.version or legacy:
            # Another process stored one first (or an upgrade): take what the nodes hold.
            newest = await self._newest(clients)
            if newest is not None:
                topology = newest
        logger.info(
            "stored topology version %d: %s%s",
            topology.version,
            ", ".join(topology.members),
            " (release 1's node names kept: no page moves)" if legacy else "",
        )
        return topology

    async def _written_by_release_1(self, clients: list[Redis]) -> bool:
        for client in clients:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(self.manager.call_budget):
                    if await client.exists(NODE_KEY, APPLIED_KEY, EPOCHS_KEY, RESETS_KEY):
                        return True
                    _, keys = await client.scan(0, match=PAGE_KEY_PREFIX + "*", count=1000)
                    if keys:
                        return True
        return False

    async def _match_entries(self, topology: Topology) -> None:
        """Match REDIS_NODES entries that name a stored node with another spelling of its
        host (`localhost` for `127.0.0.1`, a DNS alias) to that node: it takes their
        credentials (`url_of`), and they do not count as a different node set."""
        held = {canonical_label(address, 0): address for address in topology.addresses.values()}
        used = {self._seeds[label] for label in held if label in self._seeds}
        spare = [url for url in self._settings.redis_nodes if url not in used]
        for label, address in held.items():
            if label in self._seeds:
                continue
            for url in spare:
                if await _same_endpoint(address, self.address_of(url)):
                    self._seeds[label] = url
                    spare.remove(url)
                    break

    def _log_difference(self, stored: Topology) -> None:
        held = {canonical_label(address, 0) for address in stored.addresses.values()}
        named = {self._seeds[label] for label in held if label in self._seeds}
        if not held <= set(self._seeds) or named != set(self._settings.redis_nodes):
            logger.warning(
                "REDIS_NODES (%s) differs from the topology stored on the nodes (version %d: "
                "%s); following the stored topology. Change the node set with `python -m app "
                "nodes add|remove`, then update REDIS_NODES",
                ", ".join(redact_url(url) for url in self._settings.redis_nodes),
                stored.version,
                ", ".join(stored.members),
            )

    async def peek(self, *, ask_nodes: bool = True) -> Topology:
        """The stored topology, or the one a fresh start would store; writes nothing."""
        if ask_nodes:
            async with self.listed_clients() as clients:
                stored = await self._newest(clients)
            if stored is not None:
                return stored
        return replace(self._provisional(), version=1)

    # -- naming nodes ----------------------------------------------------------

    def address_of(self, url: str) -> str:
        return canonical_address(url, self._settings.redis_db)

    def label_of(self, url_or_label: str, topology: Topology) -> str | None:
        """The node of `topology` that a URL (however spelled) or a label names."""
        if url_or_label in topology.nodes:
            return url_or_label
        address = self.address_of(url_or_label)
        for label in topology.nodes:
            if topology.addresses.get(label) == address:
                return label
        return None

    def url_with_credentials(self, url: str) -> str:
        """`url` as given when it carries credentials, else with a listed entry's."""
        if "@" in url:
            return url
        address = self.address_of(url)
        return connect_url(address, self._seeds.get(canonical_label(address, 0)))

    async def check_candidate(self, label: str) -> str | None:
        """Why the node `label` (added to the manager) cannot join, or None when it can."""
        client = self.manager.client(label)
        facts = await self._inspect([client])
        if not facts:
            return f"{label} does not answer"
        if facts[0].cluster_enabled:
            return (
                f"{label} is a Redis Cluster node (cluster_enabled:1): ring mode needs "
                "standalone nodes"
            )
        members = [self.manager.client(name) for name in self.topology.nodes]
        known = await self._inspect(members)
        for position, fact in known.items():
            if (fact.run_id, fact.db) == (facts[0].run_id, facts[0].db):
                return (
                    f"{label} is the same server and db as node {self.topology.nodes[position]} "
                    f"(run_id {fact.run_id[:12]}, db {fact.db})"
                )
        _, keys = await client.scan(0, match=PAGE_KEY_PREFIX + "*", count=1000)
        if keys or await client.exists(TOPOLOGY_KEY):
            return (
                f"{label} already holds counts or another deployment's topology: add an "
                "empty node (or FLUSHDB it if its data is not needed)"
            )
        return None

    # -- following changes -----------------------------------------------------

    def url_of(self, label: str, topology: Topology | None = None) -> str:
        """How to connect to a node: its stored address, with a listed entry's credentials."""
        address = (topology or self.topology).addresses[label]
        return connect_url(address, self._seeds.get(canonical_label(address, 0)))

    def _adopt(self, new: Topology) -> None:
        old = self._topology
        for label in new.nodes:
            self.manager.add_node(label, self.url_of(label, new))
        first = set(new.history[0][1]) if new.history else set()
        self.manager.identities.joined.update(label for label in new.nodes if label not in first)
        self._topology = new
        if old is not None:
            logger.info(
                "topology version %d -> %d (%s): %s",
                old.version,
                new.version,
                new.state,
                ", ".join(new.nodes),
            )
            # A node that left keeps its client until its last batch is re-routed: the
            # counter removes it then (`VisitCounter._retire`).
            for listener in self._listeners:
                listener(old, new)

    def observe_version(self, node: str, version: int) -> None:
        """A node holds `version`: refresh in the background when it is newer."""
        current = self._topology
        if current is None:
            return
        if version > current.version:
            if not self._refresh_lock.locked():
                self._background(self.refresh())
        elif current.version > 0 and version < current.version and node in current.nodes:
            # A node that was down while a topology was stored: bring it up to date.
            self._background(self._repair(node, current))

    def _background(self, work: Coroutine[object, object, object]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _repair(self, node: str, topology: Topology) -> None:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(self.manager.call_budget):
                await write_topology(self.manager.client(node), topology)

    async def refresh(self) -> Topology:
        """Read the topology from the nodes; adopt it when it is newer. Never raises."""
        async with self._refresh_lock:
            if self.provisional:
                try:
                    newest = await self._settle()
                except TopologyError as exc:
                    logger.error("the listed nodes cannot be used: %s", exc)
                    newest = None
            else:
                clients = [self.manager.client(label) for label in self.topology.nodes]
                newest = await self._newest(clients)
            if newest is not None and newest.version > self.topology.version:
                await self._match_entries(newest)
                self._adopt(newest)
            return self.topology

    async def aclose(self) -> None:
        """Let refreshes and repairs finish (each is bounded by the node call budget), then
        cancel any left: a command cancelled mid-way can leave its connection unclosed."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=self.manager.call_budget)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


async def _same_endpoint(address: str, other: str) -> bool:
    """Whether two canonical addresses reach the same host, port and db (by resolving)."""
    a, b = urlsplit(address), urlsplit(other)
    if (a.scheme, a.port, a.path) != (b.scheme, b.port, b.path) or not a.hostname:
        return False
    if a.hostname == b.hostname:
        return True
    return bool(await _resolve(a.hostname, a.port) & await _resolve(b.hostname or "", b.port))


async def _resolve(host: str, port: int | None) -> set[str]:
    try:
        found = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError:
        return set()
    return {str(info[4][0]) for info in found}
