"""The Redis store's one Lua script: read a budget, or write a batch's rows if
nobody wrote since the version the batch was computed from.

KEYS: the budget hash (``version``, ``config``, ``meta``), the scopes hash
(scope key -> record), the reservations hash (id -> record), the sorted set
of the batch ids applied (scored by the server's time, kept ten minutes), and
the line: the list of writers waiting for their turn.

ARGV: the version the batch was computed from (``none``: the budget must not
exist yet; ``read``: write nothing, answer the state; ``turn``: take a turn,
answer the state), the batch's id (``''``: none), the configuration to store
(``''``: keep it), ``1`` to replace every row, the meta record (``''``: nothing
to write, only check the version), the channel to announce a write on and the
message to publish there, the writer's id; then four groups, each a count
followed by its items: scopes to write (key, record), scopes to delete,
reservations to write (id, record), reservations to delete.

Answers ``{tag, version, seconds, microseconds}`` with the server's time, and
for ``state`` and ``stale`` the stored rows as well: ``config, meta, scopes
(flat key, record pairs), reservations (flat id, record pairs)``. Tags:
``ok`` (written), ``same`` (the version matched, nothing to write), ``done``
(this batch id was applied before: its answer was lost), ``stale`` (another
writer came first), ``state`` (a read, or a turn taken), ``wait`` (other
writers are in line first: nothing was written).

**The line.** Writers that meet contention take turns instead of racing: a
writer that comes back ``stale`` when nobody is in line takes the turn at
once (so its next attempt cannot be outrun); while the line holds anyone,
every other write is answered ``wait`` and its writer joins the end of the
line. When the writer whose turn it is writes (or finds nothing to write),
the turn passes to the next, and ``turn <writer>`` is published on the
channel. A turn lasts TURN_LEASE_MS: the line is dropped if its first writer
has not acted by then (a process gone, or stalled), and the others, waiting
no longer than that, try again.
"""

from __future__ import annotations

from typing import Final

TURN_LEASE_MS: Final = 500

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

local expected, batch, writer = ARGV[1], ARGV[2], ARGV[8]
if expected == 'read' then return rows('state') end

local head = redis.call('LINDEX', KEYS[5], 0)
local mine = (not head) or head == writer
local function take_turn()
  if not head then redis.call('RPUSH', KEYS[5], writer) end
  redis.call('PEXPIRE', KEYS[5], LEASE)
end
local function wait_in_line()
  if not redis.call('LPOS', KEYS[5], writer) then redis.call('RPUSH', KEYS[5], writer) end
  return answer('wait')
end
local function pass_turn()
  if head ~= writer then return end
  redis.call('LPOP', KEYS[5])
  local next = redis.call('LINDEX', KEYS[5], 0)
  if next then
    redis.call('PEXPIRE', KEYS[5], LEASE)
    redis.call('PUBLISH', ARGV[6], 'turn ' .. next)
  end
end

if batch ~= '' and redis.call('ZSCORE', KEYS[4], batch) then
  pass_turn()
  return answer('done')
end
if expected == 'turn' then
  if not mine then return wait_in_line() end
  take_turn()
  return rows('state')
end
if (version or 'none') ~= expected then
  if not mine then return wait_in_line() end
  if head then take_turn() end
  return rows('stale')
end
if ARGV[5] == '' then
  pass_turn()
  return answer('same')
end
if not mine then return wait_in_line() end

version = tostring((tonumber(version) or 0) + 1)
if ARGV[4] == '1' then redis.call('DEL', KEYS[2], KEYS[3]) end
redis.call('HSET', KEYS[1], 'version', version, 'meta', ARGV[5])
if ARGV[3] ~= '' then redis.call('HSET', KEYS[1], 'config', ARGV[3]) end
local at = 9
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
pass_turn()
redis.call('PUBLISH', ARGV[6], ARGV[7])
return answer('ok')
""".replace("LEASE", str(TURN_LEASE_MS))
