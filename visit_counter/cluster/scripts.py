"""The Lua scripts of cluster mode: each touches the keys of one bucket (one hash slot).

They keep the ring's rules (visit_counter/services/batch.py) with per-bucket keys
(`buckets.py`): a batch's bucket group is applied at most once per bucket, and an
increment is dropped when a reset the writer had not heard of came after it.

Reset epochs are drawn from one cluster-wide counter, `vc:resets`, which the
reset increments (and has replicated) before it runs `RESET_LUA` in the page's
bucket. A writer's floor is that counter read at its start, so every reset begun
after it gets a higher epoch, in any bucket, and every reset done before it a
lower or equal one (see fencing.py).
"""

from __future__ import annotations

from visit_counter.admin.audit import SET_AND_AUDIT_LUA
from visit_counter.analytics.scripts import STATS_LUA
from visit_counter.services.node_scripts import IDEMPOTENCY_LUA

RESETS_COUNTER_KEY = "vc:resets"

# KEYS: [applied marks of the bucket, epochs of the bucket, page keys..., then the
#        idempotency key set of each keyed page, then the bucket's top set, then the
#        visitors of the day of each page that brought visitor ids, then the bucket's
#        day hash and its totals by day and by hour (visit_counter/analytics/keys.py)]
# ARGV: [seq, mark field, keyed pages, key window in ms, then page id, count and tag per
#        page, then per keyed page: its index among the pages, how many keys, the keys,
#        and last the batch's analytics window (visit_counter/analytics/scripts.py)]
# Returns [1, then per page: new count or -1, epoch, then the repeats] | [0] (this group
# applied before). A retry writes its mark again, unchanged: the WAIT that follows on
# the same connection then also covers the first, possibly unreplicated, application.
# Keys are handled as in the ring's script (IDEMPOTENCY_LUA, services/node_scripts.py).
APPLY_LUA = (
    IDEMPOTENCY_LUA
    + STATS_LUA
    + """
local last = tonumber(redis.call('HGET', KEYS[1], ARGV[2]) or '0')
local seq = tonumber(ARGV[1])
if seq <= last then
  redis.call('HSET', KEYS[1], ARGV[2], last)
  return {0}
end
redis.call('HSET', KEYS[1], ARGV[2], ARGV[1])
local keyed = tonumber(ARGV[3])
local count = stats.n
local top = KEYS[3 + count + keyed]
local page_visitors = visitors_of_pages(3 + count + keyed)
local day_hash = KEYS[#KEYS - 2]
local pages = {}
for i = 1, count do
  pages[i] = ARGV[3 * i + 2]
end
local repeats, repeated = record_batch_keys(keyed, 3 + count, 5 + 3 * count, tonumber(ARGV[4]))
-- HMGET in chunks: Lua's unpack() refuses a few thousand values at once.
local epochs = {}
for first = 1, count, 1000 do
  local chunk = redis.call('HMGET', KEYS[2], unpack(pages, first, math.min(first + 999, count)))
  for j = 1, #chunk do
    epochs[first + j - 1] = chunk[j]
  end
end
local out = {1}
local added = 0
for i = 1, count do
  local current = tonumber(epochs[i] or '0')
  local filed = 0
  if current <= tonumber(ARGV[3 * i + 4]) then
    local amount = tonumber(ARGV[3 * i + 3]) - (repeats[i] or 0)
    if amount > 0 then
      local value = redis.call('INCRBY', KEYS[i + 2], amount)
      redis.call('ZADD', top, value, pages[i])
      filed = amount
      added = added + amount
      out[#out + 1] = value
    else
      out[#out + 1] = tonumber(redis.call('GET', KEYS[i + 2]) or '0')
    end
  else
    out[#out + 1] = -1
  end
  out[#out + 1] = current
  file_page(i, pages[i], filed, day_hash, page_visitors)
end
totals_stats(added, day_hash, KEYS[#KEYS - 1], KEYS[#KEYS], nil)
return with_repeats(out, repeats, repeated)
"""
)

# KEYS: [page key, applied marks of its bucket]   ARGV: [mark field]
# Returns [stored count, the writer's applied seq in this bucket].
READ_LUA = """
local value = tonumber(redis.call('GET', KEYS[1]) or '0')
local applied = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0')
return {value, applied}
"""

# KEYS: [page key, epochs of its bucket, top set of its bucket, audit log of its bucket]
# ARGV: [page id, channel, least epoch (the counter's new value), publish (1/0), then the
#        page's new value and its audit entry (visit_counter/admin/audit.py)]
# Returns [the page's new epoch, the count deleted].
RESET_LUA = (
    SET_AND_AUDIT_LUA
    + """
local current = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0')
local epoch = math.max(current + 1, tonumber(ARGV[3]))
redis.call('HSET', KEYS[2], ARGV[1], epoch)
local old = tonumber(redis.call('GET', KEYS[1]) or '0')
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[3], ARGV[1])
set_and_audit(KEYS[1], KEYS[3], KEYS[4], ARGV[1], old, 5)
if ARGV[4] == '1' then
  redis.call('PUBLISH', ARGV[2], cjson.encode({type = 'reset', page = ARGV[1], epoch = epoch}))
end
return {epoch, old}
"""
)
