"""What the admin routes read and keep on the nodes: every page's count (export), the audit
log, and the imports done (so a retried import is not applied twice).

Ring nodes and a Redis Cluster keep them differently, hence two classes with one shape:

- counts: SCAN of the page keys, never KEYS, read in chunks (MGET on a ring node, one GET
  per key on a cluster, each sent to the key's primary);
- the audit log: each node's stream (`vc:audit`), on a cluster each bucket's
  (`vc:audit:{b<n>}`) plus the imports' (`vc:audit:{admin}`), merged newest first;
- imports: a hash `vc:imports` (import id -> summary) on the topology's first node, on a
  cluster in its own slot. Its summary entry in the audit log goes with it, in one script.

Every failure is `NodeUnavailableError`, as for the counting operations.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Sequence
from typing import Any, Protocol, TypeVar

from visit_counter.admin.audit import AUDIT_KEY, MAX_ENTRIES, AuditEntry
from visit_counter.cluster.buckets import BUCKETS, audit_key
from visit_counter.cluster.manager import ClusterManager
from visit_counter.core.errors import NodeUnavailableError
from visit_counter.core.redis_manager import RedisManager
from visit_counter.services.batch import PAGE_KEY_PREFIX

T = TypeVar("T")
IMPORTS_KEY = "vc:imports"
CLUSTER_ADMIN_TAG = "{admin}"
SCAN_COUNT = 1000

# KEYS: [imports hash, audit log]; ARGV: [import id, summary, max entries, entry fields...]
RECORD_IMPORT_LUA = """
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 1 then
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', unpack(ARGV, 4))
end
return 1
"""


class AdminStore(Protocol):
    def counts(self, nodes: Sequence[str]) -> AsyncIterator[list[tuple[str, int]]]:
        """Every page and its stored count, a chunk at a time."""
        ...

    async def audit(self, nodes: Sequence[str], limit: int) -> list[AuditEntry]:
        """The newest `limit` audit entries, newest first."""
        ...

    async def recall_import(self, first: str, import_id: str) -> str | None:
        """The summary of the import done under `import_id`, or None."""
        ...

    async def record_import(
        self, first: str, import_id: str, summary: str, entry: Sequence[str]
    ) -> None:
        """Keep the import's summary, and write its audit entry (field, value pairs)."""
        ...


class RingAdmin:
    def __init__(self, manager: RedisManager) -> None:
        self._manager = manager

    async def counts(self, nodes: Sequence[str]) -> AsyncIterator[list[tuple[str, int]]]:
        for node in nodes:
            client = self._manager.client(node)
            cursor = 0
            while True:
                cursor, keys = await self._call(
                    node, client.scan(cursor, match=PAGE_KEY_PREFIX + "*", count=SCAN_COUNT)
                )
                if keys:
                    values = await self._call(node, client.mget(keys))
                    yield _pairs(keys, values)
                if int(cursor) == 0:
                    break

    async def audit(self, nodes: Sequence[str], limit: int) -> list[AuditEntry]:
        async def read(node: str) -> list[Any]:
            client = self._manager.client(node)
            stream: Awaitable[Any] = client.xrevrange(AUDIT_KEY, count=limit)
            return list(await self._call(node, stream))

        streams = await asyncio.gather(*(read(node) for node in nodes))
        return _newest([entry for stream in streams for entry in stream], limit)

    async def recall_import(self, first: str, import_id: str) -> str | None:
        client = self._manager.client(first)
        return _text_or_none(await self._call(first, client.hget(IMPORTS_KEY, import_id)))

    async def record_import(
        self, first: str, import_id: str, summary: str, entry: Sequence[str]
    ) -> None:
        client = self._manager.client(first)
        keys = (IMPORTS_KEY, AUDIT_KEY)
        args: list[str | int] = [import_id, summary, MAX_ENTRIES, *entry]
        await self._call(first, client.eval(RECORD_IMPORT_LUA, 2, *keys, *args))

    async def _call(self, node: str, operation: Awaitable[T]) -> T:
        try:
            async with asyncio.timeout(self._manager.call_budget):
                return await operation
        except Exception as exc:
            self._manager.mark_down(node, exc)
            raise NodeUnavailableError(f"node {node} is unavailable: {exc!r}") from exc


class ClusterAdmin:
    def __init__(self, manager: ClusterManager) -> None:
        self._manager = manager
        self._cluster = manager.cluster

    async def counts(self, nodes: Sequence[str]) -> AsyncIterator[list[tuple[str, int]]]:
        keys: list[bytes] = []
        scan = self._cluster.scan_iter(match=f"{PAGE_KEY_PREFIX}{{b*", count=SCAN_COUNT)
        while True:
            try:
                async with asyncio.timeout(self._manager.call_budget):
                    key = await anext(scan)
            except StopAsyncIteration:
                break
            except Exception as exc:
                raise self._unavailable(exc) from exc
            keys.append(key)
            if len(keys) >= SCAN_COUNT:
                yield await self._chunk(keys)
                keys = []
        if keys:
            yield await self._chunk(keys)

    async def audit(self, nodes: Sequence[str], limit: int) -> list[AuditEntry]:
        pipe = self._cluster.pipeline()
        for key in (*(audit_key(bucket) for bucket in range(BUCKETS)), self._admin_audit):
            pipe.xrevrange(key, count=limit)
        streams = await self._call(pipe.execute())
        return _newest([entry for stream in streams for entry in stream], limit)

    async def recall_import(self, first: str, import_id: str) -> str | None:
        return _text_or_none(await self._call(self._cluster.hget(self._imports, import_id)))

    async def record_import(
        self, first: str, import_id: str, summary: str, entry: Sequence[str]
    ) -> None:
        args: list[str | int] = [import_id, summary, MAX_ENTRIES, *entry]
        keys = (self._imports, self._admin_audit)
        await self._call(self._cluster.eval(RECORD_IMPORT_LUA, 2, *keys, *args))

    @property
    def _imports(self) -> str:
        return f"{IMPORTS_KEY}:{CLUSTER_ADMIN_TAG}"

    @property
    def _admin_audit(self) -> str:
        return f"{AUDIT_KEY}:{CLUSTER_ADMIN_TAG}"

    async def _chunk(self, keys: list[bytes]) -> list[tuple[str, int]]:
        pipe = self._cluster.pipeline()
        for key in keys:
            pipe.get(key)
        values = await self._call(pipe.execute())
        return [
            (_text(key).split("}:", 1)[1], int(value))
            for key, value in zip(keys, values, strict=True)
            if value is not None
        ]

    async def _call(self, operation: Awaitable[T]) -> T:
        try:
            async with asyncio.timeout(self._manager.call_budget):
                return await operation
        except Exception as exc:
            raise self._unavailable(exc) from exc

    def _unavailable(self, exc: BaseException) -> NodeUnavailableError:
        return NodeUnavailableError(f"the cluster is unavailable: {exc!r}")


def admin_store(manager: RedisManager) -> AdminStore:
    return ClusterAdmin(manager) if isinstance(manager, ClusterManager) else RingAdmin(manager)


def _pairs(keys: list[Any], values: list[Any]) -> list[tuple[str, int]]:
    return [
        (_text(key).removeprefix(PAGE_KEY_PREFIX), int(value))
        for key, value in zip(keys, values, strict=True)
        if value is not None
    ]


def _newest(entries: list[Any], limit: int) -> list[AuditEntry]:
    """Stream entries ([id, fields]) as AuditEntry, newest first by their time."""
    parsed = [AuditEntry.of(fields) for _, fields in entries]
    parsed.sort(key=lambda entry: entry.at, reverse=True)
    return parsed[:limit]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _text_or_none(value: bytes | str | None) -> str | None:
    return None if value is None else _text(value)
