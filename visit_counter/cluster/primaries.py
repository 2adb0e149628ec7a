"""Script calls and commands on a Redis Cluster's primaries, each sent to its slot's owner.

The commands bound for one primary go out as one pipeline on one connection, with
`WAIT n` at its end when replicas must acknowledge (REDIS_MIN_REPLICAS_ACK, guarantee
G9): a command counts as done only when its node answered and enough replicas have it.
Every primary's pipeline is in flight at once, so a flush costs one round trip per
primary, not one per bucket.

Redirections are followed with the same commands: MOVED (the slot has a new owner: the
slot map is corrected and the command resent), ASK (the slot is being migrated: the
command goes to the importing node behind ASKING), TRYAGAIN (the slot's keys are split
between the two nodes for a moment: resent after a short pause), CLUSTERDOWN and
connection errors (the slot map is read again). The callers' scripts are idempotent
(a bucket's group that applied before is a no-op by its mark), so resending is always
safe. Whatever is still not done when the call budget runs out raises
NodeUnavailableError.

A primary's pipelines share its connection pool (REDIS_POOL_SIZE): past that many at
once, a pipeline waits for a free connection, within the call budget, as a ring node's
pool does. redis-py's cluster client would refuse it instead (MaxConnectionsError).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from typing import Any, TypeVar

from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.connection import Connection
from redis.exceptions import (
    AskError,
    ClusterDownError,
    MaxConnectionsError,
    MovedError,
    NoScriptError,
    ResponseError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from visit_counter.cluster import CLUSTER_NODE
from visit_counter.cluster.manager import ClusterManager
from visit_counter.core.errors import NodeUnavailableError
from visit_counter.core.resp import pack_command

logger = logging.getLogger(__name__)

T = TypeVar("T")

_PAUSE_S = 0.05  # before resending after TRYAGAIN, CLUSTERDOWN or a lost connection


@dataclass(frozen=True, slots=True)
class Script:
    body: str
    sha: str

    @classmethod
    def of(cls, body: str) -> Script:
        return cls(body, hashlib.sha1(body.encode()).hexdigest())


@dataclass(frozen=True, slots=True)
class Call:
    """One script call: its keys share one hash slot."""

    slot: int
    keys: list[str]
    args: list[Any]


@dataclass(frozen=True, slots=True)
class Answer:
    reply: Any
    port: int


class Primaries:
    """Runs commands on the primaries that own their slots (see the module docstring)."""

    def __init__(self, manager: ClusterManager) -> None:
        self._manager = manager
        self._cluster: RedisCluster = manager.cluster
        self._short_of_replicas: set[str] = set()  # primaries whose WAIT fell short
        self._pools: dict[str, asyncio.Semaphore] = {}  # per primary: pipelines in flight

    async def guarded(self, operation: Awaitable[T]) -> T:
        try:
            async with asyncio.timeout(self._manager.call_budget):
                result = await operation
        except NodeUnavailableError:
            self._manager.mark_down(CLUSTER_NODE, "bucket groups not done within the call budget")
            raise
        except TimeoutError as exc:
            budget = self._manager.call_budget
            self._manager.mark_down(CLUSTER_NODE, f"no answer within {budget:g} s")
            raise NodeUnavailableError(f"the cluster did not answer within {budget:g} s") from exc
        except Exception as exc:
            self._manager.mark_down(CLUSTER_NODE, exc)
            raise NodeUnavailableError(f"the cluster is unavailable: {exc!r}") from exc
        self._manager.mark_up(CLUSTER_NODE)
        return result

    def call(self, keys: list[str], args: list[Any]) -> Call:
        return Call(self._cluster.keyslot(keys[0]), keys, args)

    async def run(self, script: Script, calls: list[Call], durable: bool = True) -> list[Answer]:
        commands = [
            (call.slot, ("EVALSHA", script.sha, len(call.keys), *call.keys, *call.args))
            for call in calls
        ]
        return await self.run_commands(commands, script=script, durable=durable)

    async def run_commands(
        self,
        commands: list[tuple[int, tuple[Any, ...]]],
        *,
        script: Script | None = None,
        durable: bool = True,
    ) -> list[Answer]:
        """Each (slot, command) answered by its slot's primary, redirections followed.

        Raises NodeUnavailableError when some are still not done by the deadline.
        """
        answers: dict[int, Answer] = {}
        asking: dict[int, ClusterNode] = {}  # command index -> the node importing its slot
        todo = list(range(len(commands)))
        with_body: set[int] = set()  # commands whose node lacked the script: sent as EVAL
        deadline = time.monotonic() + self._manager.call_budget
        wait_for = self._manager.min_replicas_ack if durable else 0
        while todo:
            by_node: dict[ClusterNode, list[int]] = {}
            for index in todo:
                node = asking.get(index) or self._cluster.nodes_manager.get_node_from_slot(
                    commands[index][0]
                )
                by_node.setdefault(node, []).append(index)
            outcomes = await asyncio.gather(
                *(
                    self._on_node(
                        node,
                        [_sendable(commands[i][1], script, i in with_body) for i in indexes],
                        indexes,
                        asking,
                        wait_for,
                    )
                    for node, indexes in by_node.items()
                ),
                return_exceptions=True,
            )
            todo, pause = [], False
            for (node, indexes), outcome in zip(by_node.items(), outcomes, strict=True):
                if isinstance(outcome, BaseException):
                    if not isinstance(outcome, Exception):
                        raise outcome
                    logger.debug("cluster node %s: %r", node.name, outcome)
                    await self._refresh_slots()
                    todo.extend(indexes)
                    pause = True
                    continue
                replies, replicas = outcome
                short = wait_for > 0 and replicas < wait_for
                self._note_replicas(node.name, short, replicas, wait_for)
                for index, reply in zip(indexes, replies, strict=True):
                    asking.pop(index, None)
                    if not isinstance(reply, Exception) and not short:
                        answers[index] = Answer(reply, int(node.port))
                        continue
                    todo.append(index)
                    pause |= await self._follow(reply, index, asking, script, with_body)
            if todo:
                if time.monotonic() >= deadline:
                    raise NodeUnavailableError(
                        f"{len(todo)} of {len(commands)} commands not done in time"
                    )
                if pause:
                    await asyncio.sleep(_PAUSE_S)
        return [answers[index] for index in range(len(commands))]

    async def _on_node(
        self,
        node: ClusterNode,
        commands: list[tuple[Any, ...]],
        indexes: list[int],
        asking: dict[int, ClusterNode],
        wait_for: int,
    ) -> tuple[list[Any], int]:
        """One pipeline on one connection: the commands, then WAIT; their replies.

        Packed here rather than by redis-py's pipeline, which spends more time
        encoding a 10,000-page flush than the nodes spend running it.
        """
        packed: list[bytes] = []
        positions: list[int] = []
        for index, command in zip(indexes, commands, strict=True):
            if index in asking:
                packed.append(_ASKING)
            positions.append(len(packed))
            packed.append(pack_command(command))
        if wait_for > 0:
            # Within the socket's read timeout, or a short count would look like a dead node.
            timeout_ms = max(1, int(self._manager.redis_timeout * 500))
            packed.append(pack_command(("WAIT", wait_for, timeout_ms)))
        results: list[Any] = []
        async with self._connection(node) as connection:
            await connection.send_packed_command(b"".join(packed))
            for _ in packed:
                try:
                    results.append(await connection.read_response())
                except ResponseError as exc:
                    results.append(exc)
        replies = [results[position] for position in positions]
        replicas = results[-1] if wait_for > 0 else 0
        return replies, 0 if isinstance(replicas, Exception) else int(replicas)

    @contextlib.asynccontextmanager
    async def _connection(self, node: ClusterNode) -> AsyncIterator[Connection]:
        """One of the primary's pooled connections, waiting for one while all are in use
        (the caller's budget bounds the wait). A connection whose reply was not read to
        the end is closed by redis-py before it goes back to the pool."""
        pool = self._pools.get(node.name)
        if pool is None:
            pool = self._pools[node.name] = asyncio.Semaphore(node.max_connections)
        async with pool:
            while True:
                try:
                    connection = node.acquire_connection()
                    break
                except MaxConnectionsError:  # the client's own commands hold the rest
                    await asyncio.sleep(_PAUSE_S)
            try:
                yield connection
            finally:
                node.release(connection)

    def _note_replicas(self, node: str, short: bool, replicas: int, wanted: int) -> None:
        """Log once when a primary cannot get its writes to enough replicas, once when it can."""
        if short and node not in self._short_of_replicas:
            self._short_of_replicas.add(node)
            logger.warning(
                "cluster primary %s: %d of %d replicas acknowledged (REDIS_MIN_REPLICAS_ACK); "
                "its batches wait until enough replicas are back",
                node,
                replicas,
                wanted,
            )
        elif not short and node in self._short_of_replicas:
            self._short_of_replicas.discard(node)
            logger.info("cluster primary %s: its replicas acknowledge again", node)

    async def _follow(
        self,
        reply: Any,
        index: int,
        asking: dict[int, ClusterNode],
        script: Script | None,
        with_body: set[int],
    ) -> bool:
        """Prepare the resend of a command; True when it should wait a moment first."""
        if not isinstance(reply, Exception):
            return True  # done, but too few replicas have it yet
        self._manager.redirections += 1
        manager = self._cluster.nodes_manager
        if isinstance(reply, MovedError):
            await manager.move_slot(reply)
            return False
        if isinstance(reply, AskError):
            target = manager.get_node(host=reply.host, port=reply.port)
            if target is None:
                await self._refresh_slots()
                return True
            asking[index] = target
            return False
        if isinstance(reply, NoScriptError) and script is not None:
            # A primary that never ran it (new, failed over, restarted): EVAL loads it there.
            with_body.add(index)
            return False
        if isinstance(reply, TryAgainError | ClusterDownError):
            if isinstance(reply, ClusterDownError):
                await self._refresh_slots()
            return True
        if isinstance(reply, RedisConnectionError | RedisTimeoutError):
            await self._refresh_slots()
            return True
        if isinstance(reply, ResponseError):
            raise reply  # not a redirection: a script or configuration error
        raise reply

    async def _refresh_slots(self) -> None:
        """Read the slot map again (a failover, a lost node); errors wait for the next try."""
        try:
            await self._cluster.nodes_manager.initialize()
        except Exception as exc:
            logger.debug("reading the cluster's slot map failed: %r", exc)


def _sendable(command: tuple[Any, ...], script: Script | None, with_body: bool) -> tuple[Any, ...]:
    """The command as sent: an EVALSHA as EVAL with the script's body when `with_body`."""
    if not with_body or script is None:
        return command
    return ("EVAL", script.body, *command[2:])


_ASKING = pack_command(("ASKING",))
