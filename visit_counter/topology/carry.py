"""Handing a removed node's analytics to the nodes that stay (`nodes remove`).

Analytics add up across nodes (visit_counter/analytics/reader.py reads every node), so a
move that adds a node leaves each page's history where it was written. A node that is
removed takes its keys with it when it is shut down, so before the mover reports it
drained, every analytics key on it is handed over: each day's hash split by the pages'
new owners, each page's visitors of a day to its new owner, the node's totals, its audit
log (visit_counter/admin/audit.py) and the imports it recorded to the first member.

Day hashes and totals are counts, added on the target once: each target gets its part of
a hash in chunks of the part's fields in sorted order (the same chunks on every run: the
source is written no more), and records each chunk as carried (`carried_key(move)`,
field `<source>|<key>|<chunk>`) in the script that adds it. The source key is deleted
once every chunk is in. A mover killed in between finds the marks and adds nothing
twice. Visitors are HyperLogLogs, merged with PFMERGE: merging twice is merging once, so
they need no mark; nor do the imports done (HSETNX). The audit log's entries are added to
the first member's in one script with a mark. A key keeps the later of its two TTLs.

Between a key's carry and its deletion on the source, a read sums both: analytics read in
that moment can count part of a removed node's history twice.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from visit_counter.admin.audit import AUDIT_KEY, MAX_ENTRIES
from visit_counter.admin.storage import IMPORTS_KEY
from visit_counter.analytics.keys import (
    DAY_PREFIX,
    TOTAL_VISITORS_PREFIX,
    TOTALS_DAILY_KEY,
    TOTALS_HOURLY_KEY,
    VISITORS_PREFIX,
)
from visit_counter.core.consistent_hash import ConsistentHashRing
from visit_counter.core.redis_manager import RedisManager
from visit_counter.topology.document import Topology
from visit_counter.topology.scripts import carried_key

SCAN_COUNT = 1000
DAY_LENGTH = len("YYYY-MM-DD")
_SCRATCH_KEY = "vc:carry:scratch"

# KEYS: [the move's carried marks, destination hash]
# ARGV: [mark field, TTL in ms (0: none), then field and value pairs]
CARRY_COUNTS_LUA = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then
  return 0
end
for i = 3, #ARGV, 2 do
  redis.call('HINCRBY', KEYS[2], ARGV[i], ARGV[i + 1])
end
local ttl = tonumber(ARGV[2])
if ttl > 0 and redis.call('PTTL', KEYS[2]) < ttl then
  redis.call('PEXPIRE', KEYS[2], ttl)
end
redis.call('HSET', KEYS[1], ARGV[1], 1)
return 1
"""

# KEYS: [the move's carried marks, the destination's audit log]
# ARGV: [mark field, max entries, then each entry's field and value pairs as a JSON array]
CARRY_AUDIT_LUA = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then
  return 0
end
for i = 3, #ARGV do
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', unpack(cjson.decode(ARGV[i])))
end
redis.call('HSET', KEYS[1], ARGV[1], 1)
return 1
"""

# KEYS: [destination HyperLogLog, a scratch key]; ARGV: [the raw HyperLogLog, TTL in ms]
CARRY_VISITORS_LUA = """
redis.call('SET', KEYS[2], ARGV[1])
redis.call('PFMERGE', KEYS[1], KEYS[2])
redis.call('DEL', KEYS[2])
local ttl = tonumber(ARGV[2])
if ttl > 0 and redis.call('PTTL', KEYS[1]) < ttl then
  redis.call('PEXPIRE', KEYS[1], ttl)
end
return 1
"""

Retry = Callable[..., Awaitable[Any]]


CHUNK = 1000  # fields per carry script call


def page_of_visitors_key(key: str) -> str:
    """The page of `vc:uv:<day>:<page>`."""
    return key.removeprefix(VISITORS_PREFIX)[DAY_LENGTH + 1 :]


class AnalyticsCarrier:
    """Carries analytics keys, and the admin keys (the audit log, the imports done) that
    live on the node too, to the first member."""

    def __init__(self, manager: RedisManager, retry: Retry) -> None:
        """`retry(label, operation, *args)`: the mover's wait-for-the-node call."""
        self._manager = manager
        self._retry = retry

    async def carry(self, topology: Topology, source: str) -> int:
        """Hand every analytics key of `source` (leaving `topology`) over; returns how many."""
        carried = 0
        for pattern in (
            DAY_PREFIX + "*",
            VISITORS_PREFIX + "*",
            TOTALS_DAILY_KEY,
            TOTALS_HOURLY_KEY,
            TOTAL_VISITORS_PREFIX + "*",
            AUDIT_KEY,
            IMPORTS_KEY,
        ):
            cursor = 0
            while True:
                cursor, found = await self._retry(
                    source, self._manager.client(source).scan, cursor, pattern, SCAN_COUNT
                )
                for key in (key.decode() if isinstance(key, bytes) else key for key in found):
                    await self._carry_key(topology, source, key)
                    carried += 1
                if int(cursor) == 0:
                    break
        return carried

    async def _carry_key(self, topology: Topology, source: str, key: str) -> None:
        client = self._manager.client(source)
        ring: ConsistentHashRing = topology.ring
        first = topology.members[0]
        ttl = max(int(await self._retry(source, client.pttl, key)), 0)
        if key in (AUDIT_KEY, IMPORTS_KEY):
            await self._carry_admin(topology, source, key)
        elif key.startswith((VISITORS_PREFIX, TOTAL_VISITORS_PREFIX)):
            raw = await self._retry(source, client.get, key)
            if raw:
                target = (
                    ring.owner(page_of_visitors_key(key))
                    if key.startswith(VISITORS_PREFIX)
                    else first
                )
                await self._retry(
                    target,
                    self._manager.client(target).eval,
                    CARRY_VISITORS_LUA,
                    2,
                    key,
                    _SCRATCH_KEY,
                    raw,
                    ttl,
                )
        else:
            fields: dict[bytes, bytes] = await self._retry(source, client.hgetall, key)
            by_target: dict[str, list[tuple[str, bytes]]] = {}
            for name, value in fields.items():
                text = name.decode()
                target = ring.owner(text) if key.startswith(DAY_PREFIX) else first
                by_target.setdefault(target, []).append((text, value))
            marks = carried_key(topology.move or 0)
            for target, entries in by_target.items():
                entries.sort()
                for chunk in range(0, len(entries), CHUNK):
                    pairs = [item for pair in entries[chunk : chunk + CHUNK] for item in pair]
                    await self._retry(
                        target,
                        self._manager.client(target).eval,
                        CARRY_COUNTS_LUA,
                        2,
                        marks,
                        key,
                        f"{source}|{key}|{chunk // CHUNK}",
                        ttl,
                        *pairs,
                    )
        await self._retry(source, client.delete, key)

    async def _carry_admin(self, topology: Topology, source: str, key: str) -> None:
        """The audit log's entries, added once (a mark), or the imports done (HSETNX:
        adding one twice changes nothing), to the first member."""
        client = self._manager.client(source)
        first = topology.members[0]
        target = self._manager.client(first)
        if key == IMPORTS_KEY:
            done: dict[bytes, bytes] = await self._retry(source, client.hgetall, key)
            for import_id, summary in done.items():
                await self._retry(first, target.hsetnx, key, import_id, summary)
            return
        entries = await self._retry(source, client.xrange, key)
        serialized = [
            json.dumps([item.decode() for pair in fields.items() for item in pair])
            for _, fields in entries
        ]
        mark = f"{source}|{key}|0"
        marks = carried_key(topology.move or 0)
        await self._retry(
            first, target.eval, CARRY_AUDIT_LUA, 2, marks, key, mark, MAX_ENTRIES, *serialized
        )
