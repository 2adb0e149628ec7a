"""Connections to the Redis nodes: one pool per node, timeouts, health checks.

The manager knows nothing of counting. It owns a `redis.asyncio.Redis` client per
node, pings every node on an interval, and keeps the up/down map that `/status`
shows. Callers report failures they see (`mark_down`) so a dead node is known
before the next health check.

Timeouts (issue 9). A call may have to open a connection first, so its budget is
REDIS_CONNECT_TIMEOUT (TCP connect and handshake) plus REDIS_TIMEOUT (the
command's reply): `call_budget`. The handshake is one round trip at most (AUTH
when a password is set; no CLIENT SETINFO), so a node that answers slowly but
within REDIS_TIMEOUT stays usable after its connections are reset.

Each node's pool holds at most REDIS_POOL_SIZE connections, which the
open-file budget reserves (`connection_limits.py`). A call finding them all busy
waits up to REDIS_TIMEOUT for one: redis-py's default pool fails it at once, and
600 concurrent reads marked every node down.

A node that leaves the node set may still have calls in flight, and a call that
was opening its connection when the pool was closed finishes with an open
socket. So a removed node's client is retired, not dropped: its idle
connections are closed again by each health check until no call that began
before the removal can still be running, and once more when the manager closes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import urlsplit

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff

from visit_counter.core import node_config
from visit_counter.core.config import Settings
from visit_counter.core.node_identity import NodeIdentities
from visit_counter.core.resp import one_pass
from visit_counter.core.tasks import PeriodicTask

logger = logging.getLogger(__name__)


@dataclass
class NodeHealth:
    """What is known of one node. `name` is its ring label (visit_counter/topology/identity.py)."""

    name: str
    port: int
    healthy: bool | None = None  # None until the first check
    last_error: str | None = None
    changed_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    # What in its configuration can lose counts (see node_config.py); None until read.
    config_warnings: list[str] | None = None


class RedisManager:
    """One async client (and connection pool) per node of the node set.

    Which nodes those are is decided by the node set (`visit_counter/topology/nodeset.py`),
    which adds and removes them here as the stored topology changes.
    """

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self.redis_timeout = settings.redis_timeout
        self.call_budget = settings.redis_connect_timeout + settings.redis_timeout
        self._clients: dict[str, Redis] = {}
        self._health: dict[str, NodeHealth] = {}
        # Clients of nodes that left the node set, with when their last call must have ended.
        self._retired: dict[Redis, float] = {}
        # One call, every retry included, with a free connection to wait for first.
        self._longest_call = settings.redis_timeout + self.call_budget * (
            settings.redis_retry_attempts + 1
        )
        self.identities = NodeIdentities()
        # Told of the topology version each health check finds on a node (the node set).
        self.on_topology_version: Callable[[str, int], None] | None = None
        self._checker = PeriodicTask(
            "redis-health-checks", self.check_all, settings.health_check_interval_seconds
        )

    def connect(self, url: str) -> Redis:
        """A client for `url` with the service's timeouts, pool size and retries."""
        settings = self._settings
        pool = BlockingConnectionPool.from_url(
            url,
            max_connections=settings.redis_pool_size,
            timeout=settings.redis_timeout,  # waiting for a free connection
            password=settings.redis_password or None,
            db=settings.redis_db,
            socket_timeout=settings.redis_timeout,
            socket_connect_timeout=settings.redis_connect_timeout,
            retry=Retry(ExponentialBackoff(cap=1.0, base=0.05), settings.redis_retry_attempts),
            # A pooled connection the peer reset surfaces from uvloop as a RuntimeError
            # ("the handler is closed"): drop that connection and retry on a new one.
            retry_on_error=[RuntimeError],
            health_check_interval=0,
            driver_info=None,  # no CLIENT SETINFO: one round trip less per new connection
        )
        pool.connection_class = one_pass(pool.connection_class)  # a flush packs faster
        return Redis.from_pool(pool)

    def add_node(self, name: str, url: str) -> None:
        """Start using the node at `url` as ring node `name` (no I/O until first used)."""
        if name in self._clients:
            return
        self._clients[name] = self.connect(url)
        self._health[name] = NodeHealth(name=name, port=urlsplit(url).port or 6379)

    async def remove_node(self, name: str) -> None:
        """Stop using a node that left the node set; close its pool and retire its client."""
        client = self._clients.pop(name, None)
        self._health.pop(name, None)
        if client is not None:
            self._retired[client] = time.monotonic() + self._longest_call
            await _close(client, name)

    async def _sweep_retired(self) -> None:
        """Close what calls in flight at a removal have since put back in the retired pools."""
        now = time.monotonic()
        for client, calls_end_by in list(self._retired.items()):
            await _close(client, "a removed node", in_use=False)
            if now > calls_end_by:
                del self._retired[client]

    @property
    def names(self) -> list[str]:
        return list(self._clients)

    def client(self, name: str) -> Redis:
        return self._clients[name]

    def events_source(self, name: str) -> Redis | RedisCluster:
        """Where to subscribe to the events of node `name` (the cluster's client in cluster
        mode, where PUBLISH reaches every node)."""
        return self._clients[name]

    def port(self, name: str) -> int:
        return self._health[name].port

    def is_healthy(self, name: str) -> bool:
        return self._health[name].healthy is True

    def health(self) -> dict[str, NodeHealth]:
        return dict(self._health)

    def node_status(self) -> dict[str, bool]:
        return {name: state.healthy is True for name, state in self._health.items()}

    def mark_up(self, name: str) -> None:
        state = self._health.get(name)
        if state is None:
            return  # the node left the node set while the call that reports it ran
        if state.healthy is not True:
            logger.info("redis node up: %s", name)
            state.healthy, state.last_error = True, None
            state.changed_at = datetime.now(UTC)

    def mark_down(self, name: str, error: BaseException | str) -> None:
        state = self._health.get(name)
        if state is None:
            return  # the node left the node set while the call that reports it ran
        reason = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
        state.last_error = reason
        if state.healthy is not False:
            logger.warning("redis node down: %s (%s)", name, reason)
            state.healthy = False
            state.changed_at = datetime.now(UTC)

    async def check(self, name: str) -> bool:
        """Ask one node who it is (one round trip) within the budget; update its health.

        Any error but cancellation marks it down: a peer reset can surface from
        uvloop as a RuntimeError, and a health check must never die of it.
        """
        client = self._clients.get(name)
        if client is None:
            return False  # left the node set meanwhile
        try:
            async with asyncio.timeout(self.call_budget):
                identity = await self.identities.read(client)
        except Exception as exc:
            if name in self._health:
                self.mark_down(name, exc)
            return False
        if name not in self._health:
            return False
        self.mark_up(name)
        self.identities.observe(name, identity)
        if self.on_topology_version is not None:
            self.on_topology_version(name, identity.topology_version)
        await self._check_config(name)
        return True

    async def _check_config(self, name: str) -> None:
        """Read the settings that can lose counts; log a warning once per node per change.

        CONFIG disabled, renamed or forbidden (a ResponseError) is reported as
        "configuration unknown", never as a failure; a connection error leaves
        the last result in place (PING decides up and down).
        """
        try:
            async with (
                asyncio.timeout(self.call_budget),
                self._clients[name].pipeline(transaction=False) as pipe,
            ):
                pipe.config_get("maxmemory-policy")
                pipe.config_get("save")
                pipe.info("persistence")
                policy, save, persistence = await pipe.execute(raise_on_error=False)
        except Exception as exc:
            logger.debug("reading the configuration of %s failed: %s", name, exc)
            return
        aof = persistence.get("aof_enabled") if isinstance(persistence, dict) else None
        warnings = node_config.config_warnings(
            _config_value(policy, "maxmemory-policy"),
            None if aof is None else bool(int(aof)),
            _config_value(save, "save"),
        )
        state = self._health[name]
        if warnings != state.config_warnings:
            if warnings:
                logger.warning(
                    "redis node %s configuration may lose counts: %s", name, "; ".join(warnings)
                )
            elif state.config_warnings is not None:
                logger.info("redis node %s configuration no longer loses counts", name)
            state.config_warnings = warnings

    def config_warnings(self) -> dict[str, list[str]]:
        """Nodes whose configuration can lose counts (or cannot be read), with the reasons."""
        return {
            name: list(state.config_warnings)
            for name, state in self._health.items()
            if state.config_warnings
        }

    async def check_all(self) -> dict[str, bool]:
        await self._sweep_retired()
        names = list(self._clients)
        results = await asyncio.gather(*(self.check(name) for name in names))
        self.identities.compare_new_ones()
        return dict(zip(names, results, strict=True))

    async def start(self) -> None:
        """Check every node once, then keep checking in the background."""
        await self.check_all()
        self._checker.start()

    async def aclose(self) -> None:
        """Stop health checks and close every pool; one failure never skips the rest."""
        await self._checker.aclose()
        for name in list(self._clients):
            await self.remove_node(name)
        for client in list(self._retired):
            await _close(client, "a removed node")
        self._retired.clear()


async def _close(client: Redis, name: str, *, in_use: bool = True) -> None:
    """Close a client's connections (idle ones only unless `in_use`); log, never raise."""
    try:
        await client.connection_pool.disconnect(inuse_connections=in_use)
    except Exception:
        logger.exception("closing the connections of %s failed", name)


def _config_value(reply: object, key: str) -> str | None:
    """One value from a CONFIG GET reply; None when the node refused (an error object)."""
    if not isinstance(reply, dict):
        return None
    value = reply.get(key, reply.get(key.encode()))
    if isinstance(value, bytes):
        return value.decode()
    return value if isinstance(value, str) else None
