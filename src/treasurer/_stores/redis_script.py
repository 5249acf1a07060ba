"""The Redis store's one Lua script: read a budget, or write a batch's rows if
nobody wrote since the version the batch was computed from.

KEYS: the budget hash (``version``, ``config``, ``meta``), the scopes hash
(scope key -> record), the reservations hash (id -> record), and the sorted set
of the batch ids applied (scored by the server's time, kept ten minutes).

ARGV: the version the batch was computed from (``none``: the budget must not
exist yet; ``read``: write nothing, answer the state), the batch's id (``''``:
none), the configuration to store (``''``: keep it), ``1`` to replace every
row, the meta record (``''``: nothing to write, only check the version), the
channel to announce a write on and the message to publish there; then four groups, each
a count followed by its items: scopes to write (key, record), scopes to
delete, reservations to write (id, record), reservations to delete.

Answers ``{tag, version, seconds, microseconds}`` with the server's time, and
for ``state`` and ``stale`` the stored rows as well: ``config, meta, scopes
(flat key, record pairs), reservations (flat id, record pairs)``. Tags:
``ok`` (written), ``same`` (the version matched, nothing to write), ``done``
(this batch id was applied before: its answer was lost), ``stale`` (another
writer came first), ``state`` (a read).
"""

from __future__ import annotations

from typing import Final

SCRIPT: Final = """
local now = redis.call('TIME')
local version = redis.call('HGET', KEYS[1], 'version')
local function answer(tag)
  return {tag, version, now[1], now[2]}
end
local function rows(tag)
  local budget = redis.call('HMGET', KEYS[1], 'config', 'meta')
  return {tag, version, now[1], now[2], budget[1], budget[2],
          redis.call('HGETALL', KEYS[2]), redis.call('HGETALL', KEYS[3])}
end
local function each(command, key, from, count, width)
  local last = from + count * width - 1
  for first = from, last, 1000 * width do
    redis.call(command, key, unpack(ARGV, first, math.min(first + 1000 * width - 1, last)))
  end
  return last + 1
end

local expected, batch = ARGV[1], ARGV[2]
if expected == 'read' then return rows('state') end
if batch ~= '' and redis.call('ZSCORE', KEYS[4], batch) then return answer('done') end
if (version or 'none') ~= expected then return rows('stale') end
if ARGV[5] == '' then return answer('same') end

version = tostring((tonumber(version) or 0) + 1)
if ARGV[4] == '1' then redis.call('DEL', KEYS[2], KEYS[3]) end
redis.call('HSET', KEYS[1], 'version', version, 'meta', ARGV[5])
if ARGV[3] ~= '' then redis.call('HSET', KEYS[1], 'config', ARGV[3]) end
local at = 8
local count = tonumber(ARGV[at])
at = each('HSET', KEYS[2], at + 1, count, 2)
count = tonumber(ARGV[at])
at = each('HDEL', KEYS[2], at + 1, count, 1)
count = tonumber(ARGV[at])
at = each('HSET', KEYS[3], at + 1, count, 2)
count = tonumber(ARGV[at])
each('HDEL', KEYS[3], at + 1, count, 1)
if batch ~= '' then
  local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
  redis.call('ZADD', KEYS[4], ms, batch)
  redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', ms - 600000)
end
redis.call('PUBLISH', ARGV[6], ARGV[7])
return answer('ok')
"""
