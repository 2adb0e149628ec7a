"""The Lua both apply scripts (the ring's, services/node_scripts.py; the cluster's,
cluster/scripts.py) run to file a batch's visits by day and hour, and its visitors, in the
same call that adds them to the counts: so the analytics are written exactly when the
counts are, once per batch.

Only what the batch *added* is filed: visits a reset fenced off and repeated idempotency
keys are not (they are not in the counts either). The batch's day, hour and visitor ids
come in its last ARGV, a JSON object (`analytics/periods.py` `StatsWindow.to_argument`).

Commands per page of a batch: one HINCRBY for its day, and one PFADD when it brought
visitor ids (plus one EXPIREAT the first time a writer sends the page's visitors in a
day). Per batch: one HINCRBY each for the node's totals by day and by hour, and a PFADD
and EXPIREAT for the node's visitors of the day; the day's hash gets its EXPIREAT once a
day. Redis commands per 1,000 visits stay within issue 13's 4,000 (docs/benchmarks.md).
"""

from __future__ import annotations

STATS_LUA = """
local stats = cjson.decode(ARGV[#ARGV])
local filing = stats.day ~= ''  -- false: the batch is older than the days kept
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
-- drops the ones that fell out of the window. True when the field is new.
local function count_period(hash, field, amount, oldest, keep)
  if field ~= '' and tonumber(redis.call('HINCRBY', hash, field, amount)) == amount then
    drop_older(hash, oldest, keep)
    return true
  end
  return false
end

local function add_ids(hll, ids)
  for first = 1, #ids, 1000 do
    redis.call('PFADD', hll, unpack(ids, first, math.min(first + 999, #ids)))
  end
end

-- Page index -> {its visitors key, its visitor ids, whether fresh}: `stats.visitors` holds
-- [index, ids, fresh (1/0)] for each page that brought ids, in page order, and their keys
-- follow one another from KEYS[first + 1].
local function visitors_of_pages(first)
  local by_index = {}
  for j, entry in ipairs(stats.visitors) do
    by_index[entry[1]] = {KEYS[first + j], entry[2], entry[3] == 1}
  end
  return by_index
end

-- Page `i`: the `filed` visits the batch added to it into the day's hash, and its visitors
-- (`visitors_of_pages`) into its day's HyperLogLog, which gets the day's expiry when the
-- writer sends the page's visitors the first time today. A page's visitors are filed even
-- when none of its visits were added (a reset fenced them, or a repeated key): they came.
local function file_page(i, page, filed, day_hash, page_visitors)
  if not filing then
    return
  end
  if filed > 0 then
    redis.call('HINCRBY', day_hash, page, filed)
  end
  local visitors = page_visitors[i]
  if visitors then
    add_ids(visitors[1], visitors[2])
    if visitors[3] then
      redis.call('EXPIREAT', visitors[1], stats.day_expires)
    end
    for _, id in ipairs(visitors[2]) do
      batch_visitors[#batch_visitors + 1] = id
    end
  end
end

-- The batch's `total` added visits into the node's (bucket's) totals by day and hour, and
-- its visitors into the node's visitors of the day (`hll`; nil in cluster mode, where
-- they are one key for the whole cluster). The day's hash gets its expiry from the batch
-- that begins the day's totals, which is the batch that created the hash: once per node
-- (bucket) and day, not per page or per batch.
local function totals_stats(total, day_hash, daily, hourly, hll)
  if total > 0 then
    if count_period(daily, stats.day, total, stats.oldest_day, stats.days_kept) then
      redis.call('EXPIREAT', day_hash, stats.day_expires)
    end
    count_period(hourly, stats.hour, total, stats.oldest_hour, stats.hours_kept)
  end
  if hll ~= nil and stats.day ~= '' and #batch_visitors > 0 then
    add_ids(hll, batch_visitors)
    redis.call('EXPIREAT', hll, stats.day_expires)
  end
end
"""

# KEYS: [the cluster's visitors of the day]; ARGV: [when the day's keys expire (Unix
# seconds, `StatsWindow.day_expires`), visitor ids...]. PFADD needs no applied mark: adding
# an id twice changes nothing; nor EXPIREAT, absolute: the same for every writer.
TOTAL_VISITORS_LUA = """
for first = 2, #ARGV, 1000 do
  redis.call('PFADD', KEYS[1], unpack(ARGV, first, math.min(first + 999, #ARGV)))
end
redis.call('EXPIREAT', KEYS[1], ARGV[1])
return 1
"""

# Lua shared by the two reads below: per day key, PFCOUNT (0: no sketch), then one PFCOUNT
# over them all (a visitor of several days once), and the raw sketches when asked for.
_VISITORS_READ_LUA = """
local function read_visitors(first, last, with_raws)
  local counts, raws = {}, {}
  for i = first, last do
    counts[#counts + 1] = redis.call('PFCOUNT', KEYS[i])
    if with_raws then
      raws[#raws + 1] = redis.call('GET', KEYS[i])
    end
  end
  return counts, redis.call('PFCOUNT', unpack(KEYS, first, last)), raws
end
"""

# KEYS: [the day hash of each day asked for, then the page's visitors key of each]
# ARGV: [page id, with raw sketches (1/0)]
# Returns [visits per day, visitors per day, visitors over the days, raw sketch per day
# (only with raws; nil: none)]: the page's part on this node. Sketches on one node are
# counted here; only a page whose days sit on several nodes needs the raws merged.
READ_PAGE_DAYS_LUA = (
    _VISITORS_READ_LUA
    + """
local days = #KEYS / 2
local visits = {}
for i = 1, days do
  visits[i] = redis.call('HGET', KEYS[i], ARGV[1])
end
local counts, overall, raws = read_visitors(days + 1, #KEYS, ARGV[2] == '1')
return {visits, counts, overall, raws}
"""
)

# KEYS: [totals by day, totals by hour, then the visitors key of each day asked for]
# ARGV: [with raw sketches (1/0), the days..., then the hours...]
# Returns [visits per day, visits per hour, visitors per day, visitors over the days, raw
# sketch per day (only with raws)]: the node's (or bucket's) totals over its pages.
READ_TOTALS_LUA = (
    _VISITORS_READ_LUA
    + """
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
local counts, overall, raws = read_visitors(3, #KEYS, ARGV[1] == '1')
return {hmget(KEYS[1], 2, days + 1), hmget(KEYS[2], days + 2, #ARGV), counts, overall, raws}
"""
)
