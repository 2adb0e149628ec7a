"""A sealed batch of increments for one node, and the Lua scripts that apply it once.

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
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

PAGE_KEY_PREFIX = "visits:"
APPLIED_KEY = "vc:batches"
EPOCHS_KEY = "vc:epochs"
RESETS_KEY = "vc:resets"
UNKNOWN_TAG = -1
EVENTS_CHANNEL = "vc:events"


def page_key(page_id: str) -> str:
    return PAGE_KEY_PREFIX + page_id


@dataclass(frozen=True, slots=True)
class Batch:
    """Increments for one node. Immutable once sealed: a retry resends it unchanged."""

    writer: str
    seq: int
    node: str
    increments: Mapping[str, tuple[int, int]]  # page -> (count, tag)

    @property
    def visits(self) -> int:
        return sum(count for count, _ in self.increments.values())

    def with_floor(self, floor: int) -> Batch:
        """This batch with every `UNKNOWN_TAG` resolved to `floor` (itself when none is)."""
        increments = self.increments
        if all(tag != UNKNOWN_TAG for _, tag in increments.values()):
            return self
        resolved = {
            page: (count, floor if tag == UNKNOWN_TAG else tag)
            for page, (count, tag) in increments.items()
        }
        return Batch(writer=self.writer, seq=self.seq, node=self.node, increments=resolved)

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


# The node's reset count, set on first use to the highest epoch it holds (nodes
# written before the count existed keep per-page epochs only).
_RESET_COUNT_LUA = """
local function reset_count(epochs_key, resets_key)
  local value = redis.call('GET', resets_key)
  if value then
    return tonumber(value)
  end
  local highest = 0
  for _, epoch in ipairs(redis.call('HVALS', epochs_key)) do
    highest = math.max(highest, tonumber(epoch))
  end
  redis.call('SET', resets_key, highest)
  return highest
end
"""

# KEYS: [applied hash, epochs hash, resets count, page keys...]
# ARGV: [writer, seq, channel, then count and tag for each page key, in order]
# Returns [1 = applied | 0 = already applied, then per page: new count or -1, epoch].
APPLY_BATCH_LUA = (
    _RESET_COUNT_LUA
    + """
local last = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
local seq = tonumber(ARGV[2])
if seq <= last then
  return {0}
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
local prefix_len = string.len('__PAGE_KEY_PREFIX__')
local pages = {}
for i = 4, #KEYS do
  pages[i - 3] = string.sub(KEYS[i], prefix_len + 1)
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
local highest_tag = 0
for i = 1, #pages do
  local current = tonumber(epochs[i] or '0')
  local tag = tonumber(ARGV[3 + 2 * i])
  highest_tag = math.max(highest_tag, tag)
  if current <= tag then
    local value = redis.call('INCRBY', KEYS[i + 3], ARGV[2 + 2 * i])
    stored[pages[i]] = value
    out[#out + 1] = value
  else
    out[#out + 1] = -1
  end
  out[#out + 1] = current
end
if highest_tag > reset_count(KEYS[2], KEYS[3]) then
  redis.call('SET', KEYS[3], highest_tag)
end
if next(stored) ~= nil then
  redis.call('PUBLISH', ARGV[3], cjson.encode({type = 'stored', writer = ARGV[1], values = stored}))
end
return out
""".replace("__PAGE_KEY_PREFIX__", PAGE_KEY_PREFIX)
)

# KEYS: [page key, epochs hash, resets count]; ARGV: [page id, channel]. Returns the new epoch.
RESET_PAGE_LUA = (
    _RESET_COUNT_LUA
    + """
local current = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0')
local epoch = math.max(reset_count(KEYS[2], KEYS[3]), current) + 1
redis.call('SET', KEYS[3], epoch)
redis.call('HSET', KEYS[2], ARGV[1], epoch)
redis.call('DEL', KEYS[1])
redis.call('PUBLISH', ARGV[2], cjson.encode({type = 'reset', page = ARGV[1], epoch = epoch}))
return epoch
"""
)

# KEYS: [epochs hash, resets count]. Returns the node's reset count (a writer's floor).
RESET_COUNT_LUA = _RESET_COUNT_LUA + "return reset_count(KEYS[1], KEYS[2])\n"

# KEYS: [page key, applied hash]; ARGV: [writer]. Returns [stored count, writer's applied seq].
READ_PAGE_LUA = """
local value = tonumber(redis.call('GET', KEYS[1]) or '0')
local applied = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0')
return {value, applied}
"""
