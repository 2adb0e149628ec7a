"""The move's operations on the nodes, each one Lua script (so each is atomic on its node).

A page moves from its old owner (the *source*) to its new one (the *target*)
in two steps, each idempotent, so the mover can die anywhere and run again:

- TAKE on the source: the page's count is deleted and added, in the same
  script, to the move's `taken` total (kept for good, it makes the next step
  idempotent) and to `out` (cleared when the page is reset). It returns the
  `taken` total and the page's epoch.
- RECEIVE on the target, with that total and epoch: the target adds what it
  has not received yet (`taken` minus its `got`), records the new `got`, and
  adds the same to `in` (cleared by a reset). The epoch is imported, so a stale
  batch the source would have refused is refused here too (see batch.py).

A count is thus deleted at the source once (TAKE moves it into `taken`) and
added at the target once (`got` remembers). Between the two, a read still
finds it: the page's count is (source count + out) + (target count - in),
which neither step changes (READ_PAGE_LUA in services/node_scripts.py).

A reset during the move runs on the source, then on the target with the
source's new epoch as its *cutoff*: an amount taken before the reset (its
epoch is below the cutoff) is recorded as received but not added.

Idempotency keys (G10) travel too: TAKE returns the page's key set, which it
leaves in place (it expires by itself), so a mover killed between the steps
finds it again; RECEIVE adds the keys the target lacks, with their scores. A
key the target holds with another score is a visit retried after the switch:
the source counted its first copy and the target the retry, so RECEIVE adds
that key's visits once fewer. The same key with the same score is a copy from
an earlier move (the page moved back), not a repeat.
"""

from __future__ import annotations

from visit_counter.services.batch import IDEMPOTENCY_KEY_PREFIX, PAGE_KEY_PREFIX, TOP_KEY


def move_keys(move: int | None) -> tuple[str, str, str, str, str]:
    """The move's hashes: (taken, out, got, in, cutoff); any names when no move ran yet."""
    prefix = f"vc:move:{move or 0}:"
    return (
        prefix + "taken",
        prefix + "out",
        prefix + "got",
        prefix + "in",
        prefix + "cutoff",
    )


def carried_key(move: int) -> str:
    """The hash of a removed node's analytics keys the move has handed over (topology/carry.py)."""
    return f"vc:move:{move}:carried"


# KEYS: [topology hash]; ARGV: [version, write floor, reset floor, document].
# Stores the document unless the node holds this version or a newer one; returns
# the version the node holds afterwards.
SET_TOPOLOGY_LUA = """
local held = tonumber(redis.call('HGET', KEYS[1], 'version') or '0')
if held >= tonumber(ARGV[1]) then
  return held
end
redis.call('HSET', KEYS[1], 'version', ARGV[1], 'write_floor', ARGV[2],
           'reset_floor', ARGV[3], 'doc', ARGV[4])
return tonumber(ARGV[1])
"""

# KEYS: [epochs hash, resets count]; ARGV: [least]. Raises the node's reset count to at
# least `least`, so epochs it hands out from now on are above every floor read before.
RAISE_RESETS_LUA = """
local count = tonumber(redis.call('GET', KEYS[2]) or '0')
for _, epoch in ipairs(redis.call('HVALS', KEYS[1])) do
  count = math.max(count, tonumber(epoch))
end
count = math.max(count, tonumber(ARGV[1]))
redis.call('SET', KEYS[2], count)
return count
"""

# KEYS: [taken, out, epochs]; ARGV: page ids. Returns per page: taken total, epoch, the
# number of idempotency keys, then each key and its score.
TAKE_LUA = """
local prefix = '__PREFIX__'
local top = '__TOP_KEY__'
local keys_prefix = '__KEYS_PREFIX__'
local reply = {}
for i = 1, #ARGV do
  local page = ARGV[i]
  local key = prefix .. page
  local count = tonumber(redis.call('GET', key) or '0')
  local taken
  if count ~= 0 then
    redis.call('DEL', key)
    redis.call('ZREM', top, page)
    taken = redis.call('HINCRBY', KEYS[1], page, count)
    redis.call('HINCRBY', KEYS[2], page, count)
  else
    taken = tonumber(redis.call('HGET', KEYS[1], page) or '0')
  end
  reply[#reply + 1] = taken
  reply[#reply + 1] = tonumber(redis.call('HGET', KEYS[3], page) or '0')
  local entries = redis.call('ZRANGE', keys_prefix .. page, 0, -1, 'WITHSCORES')
  reply[#reply + 1] = #entries / 2
  for j = 1, #entries do
    reply[#reply + 1] = entries[j]
  end
end
return reply
""".replace("__PREFIX__", PAGE_KEY_PREFIX).replace("__KEYS_PREFIX__", IDEMPOTENCY_KEY_PREFIX)
TAKE_LUA = TAKE_LUA.replace("__TOP_KEY__", TOP_KEY)

# KEYS: [got, in, cutoff, epochs, resets]
# ARGV: [key window in ms, then for each page: page, taken total, epoch, number of keys,
#        then each key and its score (as TAKE returned them)]
# Returns the visits added here by this call.
RECEIVE_LUA = """
local prefix = '__PREFIX__'
local top = '__TOP_KEY__'
local keys_prefix = '__KEYS_PREFIX__'
local window = tonumber(ARGV[1])
local added = 0
local highest = 0
local i = 2
while i <= #ARGV do
  local page, taken, epoch = ARGV[i], tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2])
  local first, last = i + 4, i + 3 + 2 * tonumber(ARGV[i + 3])
  i = last + 1
  local repeats = 0
  if last >= first then
    local set = keys_prefix .. page
    for k = first, last, 2 do
      local here = redis.call('ZSCORE', set, ARGV[k])
      if not here then
        redis.call('ZADD', set, ARGV[k + 1], ARGV[k])
      elseif tonumber(here) ~= tonumber(ARGV[k + 1]) then
        repeats = repeats + (tonumber(string.match(ARGV[k], '\\031(%d+)$')) or 1)
      end
    end
    if redis.call('PTTL', set) < window then
      redis.call('PEXPIRE', set, window)
    end
  end
  local got = tonumber(redis.call('HGET', KEYS[1], page) or '0')
  if taken > got then
    redis.call('HSET', KEYS[1], page, taken)
    if epoch >= tonumber(redis.call('HGET', KEYS[3], page) or '0') then
      local amount = math.max(taken - got - repeats, 0)
      if amount > 0 then
        redis.call('ZADD', top, redis.call('INCRBY', prefix .. page, amount), page)
      end
      redis.call('HINCRBY', KEYS[2], page, taken - got)
      added = added + amount
    end
  end
  if epoch > tonumber(redis.call('HGET', KEYS[4], page) or '0') then
    redis.call('HSET', KEYS[4], page, epoch)
  end
  highest = math.max(highest, epoch)
end
if highest > tonumber(redis.call('GET', KEYS[5]) or '0') then
  redis.call('SET', KEYS[5], highest)
end
return added
""".replace("__PREFIX__", PAGE_KEY_PREFIX).replace("__KEYS_PREFIX__", IDEMPOTENCY_KEY_PREFIX)
RECEIVE_LUA = RECEIVE_LUA.replace("__TOP_KEY__", TOP_KEY)

# KEYS: [epochs hash, resets count]; ARGV: page, epoch pairs. Imports epochs (keeps the higher).
IMPORT_EPOCHS_LUA = """
local highest = 0
for i = 1, #ARGV, 2 do
  local epoch = tonumber(ARGV[i + 1])
  if epoch > tonumber(redis.call('HGET', KEYS[1], ARGV[i]) or '0') then
    redis.call('HSET', KEYS[1], ARGV[i], epoch)
  end
  highest = math.max(highest, epoch)
end
if highest > tonumber(redis.call('GET', KEYS[2]) or '0') then
  redis.call('SET', KEYS[2], highest)
end
return highest
"""
