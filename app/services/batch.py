"""A sealed batch of increments for one node, and the Lua scripts that apply it once.

Idempotency (DESIGN.md section 4, guarantee G1): every process has a unique
`writer` id and numbers its batches with a strictly increasing `seq`. A node
keeps, per writer, the highest seq it has applied (hash `vc:batches`). A batch
whose seq is not above that mark is a retry of something already stored and
adds nothing. This needs each writer to send its batches for one node in seq
order, one at a time, which the outbox guarantees.

Resets (G3): a DELETE bumps the page's epoch on its owner (hash `vc:epochs`).
Each increment carries the epoch its writer knew when it sealed the batch; the
node drops increments tagged with an older epoch, so visits accepted before a
reset can never reappear, however late their batch arrives.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

PAGE_KEY_PREFIX = "visits:"
APPLIED_KEY = "vc:batches"
EPOCHS_KEY = "vc:epochs"
EVENTS_CHANNEL = "vc:events"


def page_key(page_id: str) -> str:
    return PAGE_KEY_PREFIX + page_id


@dataclass(frozen=True, slots=True)
class Batch:
    """Increments for one node. Immutable once sealed: a retry resends it unchanged."""

    writer: str
    seq: int
    node: str
    increments: Mapping[str, tuple[int, int]]  # page -> (count, epoch)

    @property
    def visits(self) -> int:
        return sum(count for count, _ in self.increments.values())

    def to_json(self) -> str:
        return json.dumps(
            {
                "writer": self.writer,
                "seq": self.seq,
                "node": self.node,
                "inc": {page: list(pair) for page, pair in self.increments.items()},
            },
            separators=(",", ":"),
        )

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
        )


# KEYS: [applied hash, epochs hash, page keys...]
# ARGV: [writer, seq, channel, then count and epoch for each page key, in order]
# Returns [1 = applied | 0 = already applied, then per page: new count or -1, epoch].
APPLY_BATCH_LUA = """
local last = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
local seq = tonumber(ARGV[2])
if seq <= last then
  return {0}
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
local prefix_len = string.len('__PAGE_KEY_PREFIX__')
local pages = {}
for i = 3, #KEYS do
  pages[i - 2] = string.sub(KEYS[i], prefix_len + 1)
end
-- HMGET in chunks: Lua's unpack() refuses a few thousand values at once.
local epochs = {}
for first = 1, #pages, 1000 do
  local last_index = math.min(first + 999, #pages)
  local chunk = redis.call('HMGET', KEYS[2], unpack(pages, first, last_index))
  for j = 1, #chunk do
    epochs[first + j - 1] = chunk[j]
  end
end
local out = {1}
local stored = {}
for i = 1, #pages do
  local current = tonumber(epochs[i] or '0')
  if current == tonumber(ARGV[3 + 2 * i]) then
    local value = redis.call('INCRBY', KEYS[i + 2], ARGV[2 + 2 * i])
    stored[pages[i]] = value
    out[#out + 1] = value
  else
    out[#out + 1] = -1
  end
  out[#out + 1] = current
end
if next(stored) ~= nil then
  redis.call('PUBLISH', ARGV[3], cjson.encode({type = 'stored', writer = ARGV[1], values = stored}))
end
return out
""".replace("__PAGE_KEY_PREFIX__", PAGE_KEY_PREFIX)

# KEYS: [page key, epochs hash]; ARGV: [page id, channel]. Returns the new epoch.
RESET_PAGE_LUA = """
redis.call('DEL', KEYS[1])
local epoch = redis.call('HINCRBY', KEYS[2], ARGV[1], 1)
redis.call('PUBLISH', ARGV[2], cjson.encode({type = 'reset', page = ARGV[1], epoch = epoch}))
return epoch
"""

# KEYS: [page key, applied hash]; ARGV: [writer]. Returns [stored count, writer's applied seq].
READ_PAGE_LUA = """
local value = tonumber(redis.call('GET', KEYS[1]) or '0')
local applied = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0')
return {value, applied}
"""
