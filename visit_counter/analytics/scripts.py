"""The Lua both apply scripts (the ring's, services/node_scripts.py; the cluster's,
cluster/scripts.py) run to file a batch's visits by day and hour, and its visitors, in the
same call that adds them to the counts: so the analytics are written exactly when the
counts are, once per batch.

Only what the batch *added* is filed: visits a reset fenced off and repeated idempotency
keys are not (they are not in the counts either). The batch's day, hour and visitor ids
come in its last ARGV, a JSON object (`analytics/periods.py` `StatsWindow.to_argument`).

Commands per page of a batch: one HINCRBY for its day, and one PFADD when it brought
visitor ids (plus one EXPIREAT the first time a writer sends the page's visitors in a
day). Per batch: one HINCRBY each for the node's totals by day and by hour, an EXPIREAT
for the day's hash, and a PFADD and EXPIREAT for the node's visitors of the day. Redis
Commands per 1,000 visits stay within issue 13's 4,000 (see docs/benchmarks.md).
"""

from __future__ import annotations

STATS_LUA = """
local stats = cjson.decode(ARGV[#ARGV])
local batch_visitors = {}

-- Drops the fields of `hash` below `oldest` (names sort as days and hours do), when it holds
-- more than `keep`.
local function drop_older(hash, oldest, keep)
  if redis.call('HLEN', hash) <= keep then
    return
  end
  local old = {}
  for _, field in ipairs(redis.call('HKEYS', hash)) do
    if field < oldest then
      old[#old + 1] = field
    end
  end
  for first = 1, #old, 1000 do
    redis.call('HDEL', hash, unpack(old, first, math.min(first + 999, #old)))
  end
end

-- Adds `amount` to `field` of a totals hash (nothing when the field is ""); a new field
-- drops the ones that fell out of the window.
local function count_period(hash, field, amount, oldest, keep)
  if field ~= '' and tonumber(redis.call('HINCRBY', hash, field, amount)) == amount then
    drop_older(hash, oldest, keep)
  end
end

local function add_ids(hll, ids)
  for first = 1, #ids, 1000 do
    redis.call('PFADD', hll, unpack(ids, first, math.min(first + 999, #ids)))
  end
end

-- Page `i`: the `amount` visits the batch added to it (0: none; its visitors are filed all
-- the same: they came) into the day's hash, and its visitors into its day's HyperLogLog,
-- which gets the day's expiry when the writer sends the page's visitors the first time
-- today (`fresh`).
local function page_stats(i, page, amount, day_hash, hll)
  if stats.day == '' then
    return
  end
  if amount > 0 then
    redis.call('HINCRBY', day_hash, page, amount)
  end
  local ids = stats.visitors[tostring(i)]
  if ids then
    add_ids(hll, ids)
    if stats.fresh[tostring(i)] then
      redis.call('EXPIREAT', hll, stats.day_expires)
    end
    for _, id in ipairs(ids) do
      batch_visitors[#batch_visitors + 1] = id
    end
  end
end

-- The batch's `total` added visits into the node's (bucket's) totals by day and hour, and
-- its visitors into the node's visitors of the day (`hll`; nil in cluster mode, where
-- they are one key for the whole cluster). The day's hash gets its expiry here, once per
-- batch rather than per page.
local function totals_stats(total, day_hash, daily, hourly, hll)
  if total > 0 then
    count_period(daily, stats.day, total, stats.oldest_day, stats.days_kept)
    count_period(hourly, stats.hour, total, stats.oldest_hour, stats.hours_kept)
    if stats.day ~= '' then
      redis.call('EXPIREAT', day_hash, stats.day_expires)
    end
  end
  if hll ~= nil and stats.day ~= '' and #batch_visitors > 0 then
    add_ids(hll, batch_visitors)
    redis.call('EXPIREAT', hll, stats.day_expires)
  end
end
"""

# KEYS: [the cluster's visitors of the day]; ARGV: [TTL in seconds, visitor ids...].
# PFADD needs no applied mark: adding an id twice changes nothing.
TOTAL_VISITORS_LUA = """
local created = redis.call('EXISTS', KEYS[1]) == 0
for first = 2, #ARGV, 1000 do
  redis.call('PFADD', KEYS[1], unpack(ARGV, first, math.min(first + 999, #ARGV)))
end
if created then
  redis.call('EXPIRE', KEYS[1], tonumber(ARGV[1]))
end
return 1
"""

# KEYS: [the day hash of each day asked for, then the page's visitors key of each]
# ARGV: [page id]
# Returns [visits per day, raw HyperLogLog per day (nil: none)]: the page's part on this node.
READ_PAGE_DAYS_LUA = """
local days = #KEYS / 2
local visits, visitors = {}, {}
for i = 1, days do
  visits[i] = redis.call('HGET', KEYS[i], ARGV[1])
  visitors[i] = redis.call('GET', KEYS[days + i])
end
return {visits, visitors}
"""

# KEYS: [totals by day, totals by hour, then the visitors key of each day asked for]
# ARGV: [the days..., then the hours...]
# Returns [visits per day, visits per hour, raw HyperLogLog per day (nil: none)]: the
# node's (or bucket's) totals over its pages.
READ_TOTALS_LUA = """
local days = #KEYS - 2
local function hmget(hash, first, last)
  local values = {}
  for from = first, last, 1000 do
    local chunk = redis.call('HMGET', hash, unpack(ARGV, from, math.min(from + 999, last)))
    for j = 1, #chunk do
      values[#values + 1] = chunk[j]
    end
  end
  return values
end
local visitors = {}
for i = 1, days do
  visitors[i] = redis.call('GET', KEYS[i + 2])
end
return {hmget(KEYS[1], 1, days), hmget(KEYS[2], days + 1, #ARGV), visitors}
"""
