"""The Lua scripts a ring node runs to apply a batch once, reset a page, read a count.

Each is one atomic call on its node; `batch.py` describes the rules they keep (applied
marks, reset epochs and floors, idempotency keys) and `node_store.py` calls them.
"""

from __future__ import annotations

from visit_counter.admin.audit import SET_AND_AUDIT_LUA
from visit_counter.analytics.scripts import STATS_LUA
from visit_counter.services.batch import PAGE_KEY_PREFIX, TOP_KEY

# KEYS: page keys..., then the top set. Each page's stored count becomes its score there
# (GET and ZADD in one script, so a batch landing meanwhile cannot be overwritten by an
# older value). Pages without a count are left out. Returns how many were added.
TOP_BACKFILL_LUA = """
local top = KEYS[#KEYS]
local added = 0
for i = 1, #KEYS - 1 do
  local value = redis.call('GET', KEYS[i])
  if value then
    redis.call('ZADD', top, tonumber(value), ARGV[i])
    added = added + 1
  end
end
return added
"""

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

# Idempotency keys (G10), shared with the cluster's script. Call with the page's key set,
# the range of ARGV that holds the key members and the window in ms; returns the visits
# of the members the set held already (repeats, not to be counted; see `key_amount`).
# Scores are the node's own clock (TIME), so keys expire by one clock however many
# writers send them.
IDEMPOTENCY_LUA = """
local function record_keys(set, first, last, window)
  local time = redis.call('TIME')
  local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
  redis.call('ZREMRANGEBYSCORE', set, '-inf', now - window)
  local seen = 0
  for k = first, last do
    if redis.call('ZSCORE', set, ARGV[k]) then
      seen = seen + (tonumber(string.match(ARGV[k], '\\031(%d+)$')) or 1)
    else
      redis.call('ZADD', set, now, ARGV[k])
    end
  end
  redis.call('PEXPIRE', set, window)
  return seen
end

-- Every keyed page of a batch: the first keyed page's set is KEYS[first_set]; from ARGV[at],
-- per keyed page, its index among the pages, how many members, the members. Returns the
-- repeats per page index, and their total.
local function record_batch_keys(keyed, first_set, at, window)
  local repeats, repeated = {}, 0
  for j = 0, keyed - 1 do
    local index, n = tonumber(ARGV[at]), tonumber(ARGV[at + 1])
    local seen = record_keys(KEYS[first_set + j], at + 2, at + 1 + n, window)
    repeats[index] = seen
    repeated = repeated + seen
    at = at + 2 + n
  end
  return repeats, repeated
end

-- An apply script's reply ends with the total of repeats, then, per page with repeats,
-- its index among the pages and how many (the sinks mirror what was added).
local function with_repeats(out, repeats, repeated)
  out[#out + 1] = repeated
  for i, seen in pairs(repeats) do
    if seen > 0 then
      out[#out + 1] = i
      out[#out + 1] = seen
    end
  end
  return out
end
"""

# KEYS: [applied hash, epochs hash, resets count, topology hash, page keys...,
#        then the idempotency key set of each keyed page, then the visitors of the day of
#        each page that brought visitor ids, then the day's hash, the node's totals by
#        day and by hour and its visitors of the day (visit_counter/analytics/keys.py)]
# ARGV: [writer, seq, channel, mark field, topology version, release 1's mark field (the
#        writer alone; "" when the batch is sent to another node than its own),
#        keyed pages, key window in ms, then count and tag per page, then per keyed
#        page: its index among the pages, how many keys, the keys, and last the
#        batch's analytics window (visit_counter/analytics/scripts.py)]
# Returns [1 = applied, then per page: new count or -1, epoch, then the repeats, then
#          per page with repeats: its index (1-based) and how many]
# | [0] (applied before) | [2, write floor] (sealed at a topology version whose routing
# is gone: re-route it). The applied check comes first: a batch stored before a move is
# a duplicate, not stale. A repeated key's visit is not added (its page's count is
# returned as it stands); keys are recorded even for increments a reset drops.
APPLY_BATCH_LUA = (
    _RESET_COUNT_LUA
    + IDEMPOTENCY_LUA
    + STATS_LUA
    + """
local last = tonumber(redis.call('HGET', KEYS[1], ARGV[4]) or '0')
-- Release 1 kept the mark under the writer alone; its journals may still replay.
local legacy = tonumber(redis.call('HGET', KEYS[1], ARGV[6]) or '0')
local seq = tonumber(ARGV[2])
if seq <= last or seq <= legacy then
  return {0}
end
local write_floor = tonumber(redis.call('HGET', KEYS[4], 'write_floor') or '0')
if tonumber(ARGV[5]) < write_floor then
  return {2, write_floor}
end
redis.call('HSET', KEYS[1], ARGV[4], ARGV[2])
local keyed = tonumber(ARGV[7])
local count = stats.n
local page_visitors = visitors_of_pages(4 + count + keyed)
local day_hash = KEYS[#KEYS - 3]
local prefix_len = string.len('__PAGE_KEY_PREFIX__')
local pages = {}
for i = 1, count do
  pages[i] = string.sub(KEYS[i + 4], prefix_len + 1)
end
local repeats, repeated = record_batch_keys(keyed, 5 + count, 9 + 2 * count, tonumber(ARGV[8]))
-- HMGET in chunks: Lua's unpack() refuses a few thousand values at once.
local epochs = {}
for first = 1, count, 1000 do
  local last_index = math.min(first + 999, count)
  local chunk = redis.call('HMGET', KEYS[2], unpack(pages, first, last_index))
  for j = 1, #chunk do
    epochs[first + j - 1] = chunk[j]
  end
end
local out = {1}
local stored = {}
local scored = {}  -- new count, page: for the top set, a ZADD per 1,000 pages
local highest_tag = 0
local added = 0
for i = 1, count do
  local current = tonumber(epochs[i] or '0')
  local tag = tonumber(ARGV[8 + 2 * i])
  highest_tag = math.max(highest_tag, tag)
  local filed = 0
  if current <= tag then
    local amount = tonumber(ARGV[7 + 2 * i]) - (repeats[i] or 0)
    local value
    if amount > 0 then
      value = redis.call('INCRBY', KEYS[i + 4], amount)
      scored[#scored + 1] = value
      scored[#scored + 1] = pages[i]
      stored[pages[i]] = value
      filed = amount
      added = added + amount
    else
      value = tonumber(redis.call('GET', KEYS[i + 4]) or '0')
    end
    out[#out + 1] = value
  else
    out[#out + 1] = -1
  end
  out[#out + 1] = current
  file_page(i, pages[i], filed, day_hash, page_visitors)
end
for first = 1, #scored, 2000 do
  redis.call('ZADD', '__TOP_KEY__', unpack(scored, first, math.min(first + 1999, #scored)))
end
totals_stats(added, day_hash, KEYS[#KEYS - 2], KEYS[#KEYS - 1], KEYS[#KEYS])
if highest_tag > reset_count(KEYS[2], KEYS[3]) then
  redis.call('SET', KEYS[3], highest_tag)
end
if next(stored) ~= nil then
  redis.call('PUBLISH', ARGV[3], cjson.encode({type = 'stored', writer = ARGV[1], values = stored}))
end
return with_repeats(out, repeats, repeated)
""".replace("__PAGE_KEY_PREFIX__", PAGE_KEY_PREFIX).replace("__TOP_KEY__", TOP_KEY)
)

# KEYS: [page key, epochs hash, resets count, topology hash, move's out, in and cutoff hashes,
#        the node's audit log]
# ARGV: [page id, channel, topology version, least epoch, publish (1/0), cutoff, then the
#        page's new value and its audit entry (visit_counter/admin/audit.py)]
# Returns [1, new epoch, the count deleted] | [0, reset floor] (sent at a version whose
# owners are gone).
# During a move a page is reset on its old owner, then on its new one with the old
# owner's epoch as least epoch and cutoff (see visit_counter/topology/scripts.py); the amounts
# the mover took (out) or handed in (in) for the page are cleared with its count.
RESET_PAGE_LUA = (
    _RESET_COUNT_LUA
    + SET_AND_AUDIT_LUA
    + """
local reset_floor = tonumber(redis.call('HGET', KEYS[4], 'reset_floor') or '0')
if tonumber(ARGV[3]) < reset_floor then
  return {0, reset_floor}
end
local current = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0')
local epoch = math.max(reset_count(KEYS[2], KEYS[3]), current) + 1
epoch = math.max(epoch, tonumber(ARGV[4]))
redis.call('SET', KEYS[3], epoch)
redis.call('HSET', KEYS[2], ARGV[1], epoch)
local old = tonumber(redis.call('GET', KEYS[1]) or '0')
redis.call('DEL', KEYS[1])
redis.call('ZREM', '__TOP_KEY__', ARGV[1])
set_and_audit(KEYS[1], '__TOP_KEY__', KEYS[8], ARGV[1], old, 7)
redis.call('HDEL', KEYS[5], ARGV[1])
redis.call('HDEL', KEYS[6], ARGV[1])
local cutoff = tonumber(ARGV[6])
if cutoff > tonumber(redis.call('HGET', KEYS[7], ARGV[1]) or '0') then
  redis.call('HSET', KEYS[7], ARGV[1], cutoff)
end
if ARGV[5] == '1' then
  redis.call('PUBLISH', ARGV[2], cjson.encode({type = 'reset', page = ARGV[1], epoch = epoch}))
end
return {1, epoch, old}
""".replace("__TOP_KEY__", TOP_KEY)
)

# KEYS: [epochs hash, resets count]. Returns the node's reset count (a writer's floor).
RESET_COUNT_LUA = _RESET_COUNT_LUA + "return reset_count(KEYS[1], KEYS[2])\n"

# KEYS: [page key, applied hash, topology hash, move's out or in hash (or any name)]
# ARGV: [mark field, page id, role: 1 = the move's source, -1 = its target, 0]
# Returns [stored count, the writer's applied seq, the node's topology version]. While a
# page moves, its count is (source count + out) + (target count - in): see scripts.py.
READ_PAGE_LUA = """
local value = tonumber(redis.call('GET', KEYS[1]) or '0')
local role = tonumber(ARGV[3])
if role ~= 0 then
  value = value + role * tonumber(redis.call('HGET', KEYS[4], ARGV[2]) or '0')
end
local applied = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0')
local version = tonumber(redis.call('HGET', KEYS[3], 'version') or '0')
return {value, applied, version}
"""
