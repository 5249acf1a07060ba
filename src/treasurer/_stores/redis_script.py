"""The Redis store's one Lua script: read a budget; write a batch's rows if
nobody wrote since the version the batch was computed from; or merge a
batch's additions into counters others moved, if what it assumed holds.

KEYS: the budget hash (``version``, ``config``, ``meta``, ``next``: the next
reservation id), the scopes hash (scope key -> record without its counters,
see :mod:`.redis_rows`), the reservations hash (id -> record), the sorted set
of the batch ids applied (scored by the server's time, kept ten minutes),
the line: the list of writers waiting for their turn, the counts hash
(integer counters), and the deadlines (reservation ids scored by deadline, ms).

ARGV: the mode: the version the batch was computed from (``none``: the budget
must not exist yet), ``read`` (write nothing, answer the state), ``turn``
(take a turn, answer the state) or ``merge``; the batch's id (``''``: none),
the configuration to store (``''``: keep it; for a merge, the one its copy was
computed under, which must be the stored one), ``1`` to replace every row (for
a merge: to join the line if it must wait), the
meta record (``''``: nothing to write, only check the version; for a merge,
the version of the writer's copy), the channel to announce a write on and the
message to publish there (``''``: none), the writer's id, the next reservation id its copy
would issue. Then groups, each a count followed by its items. A write:
scopes to write (key, shape), scopes to delete, reservations to write (id,
record), reservations to delete, deadlines to add (ms, id), counts to set
(field, value), counts to delete. A merge (after the batch's time in ms): the
scopes it read (key, shape: each must be stored as it is), the scopes it
rolled over (key; shape before; shape after; the indexes of the windows that
began a new period, comma-separated; the indexes of its events about the
scope in the message published, comma-separated: stored as before, the scope
is rolled over now and those windows' count fields go; stored as after,
another writer rolled it over alike, its conditions count what that writer
stored in the new periods, and the message goes out with ``"unsaid"``, the
indexes of those events, which that writer told already), the scopes it
made (key, shape: each must be absent, then it is stored, or stored as it
is), the tail of the meta record from ``"resets"`` on (the
resets and the tenant caps set at run time: ``''``, no matter; else the stored
one must end so), the reservations it ends (id, token: each must be open, its
record beginning with its token unless that is ``0``), the conditions
(each a count of count fields, the fields, and the most their stored sum may
be; a field of a period the batch ends counts as zero), the additions
(field, amount), the first id it issued and the reservations it made (id,
record), their deadlines (ms, id). A merge is refused (``stale``) if a
reservation is past its deadline: that batch is computed on every row,
which ends it.

Answers ``{tag, version, seconds, microseconds}`` with the server's time, and
for ``state`` and ``stale`` the stored rows as well: ``config, meta, scopes
(flat key, shape pairs), reservations (flat id, record pairs), counts (flat
field, value pairs), next``. Tags: ``ok`` (written; for a merge, nobody wrote
since the writer's copy), ``merged`` (a merge others' writes preceded), ``same``
(the version matched, nothing to write), ``done`` (this batch id was applied
before: its answer was lost; the answer goes on with the offset the ids of a
merge moved by), ``stale`` (another writer came first, or what
a merge assumed no longer holds), ``state`` (a read, or a turn taken),
``wait`` (other writers are in line first: nothing was written). A merge's
answer goes on with the offset its ids moved by (past ids others issued),
the earliest deadline stored (``''``: none), the stored value of each
counter it added to, and the keys of the scopes it found rolled over alike.

**The line.** Writers of compare-and-set batches that meet contention take
turns instead of racing: one asks for a turn (``turn``) after its batch came
back ``stale`` twice. While the line holds anyone, every other write is
answered ``wait``; a compare-and-set writer joins the end of the line, a
merge does not (it is sent again as it is once the turn passes: its
conditions are checked on the rows then stored, so merges do not queue
behind each other) until it has waited a turn's lease: then it joins. When
the writer whose turn it is writes (or finds nothing to write), the turn
passes to the next, and ``turn <writer>`` (``turn `` if the line is empty)
is published on the channel. A turn lasts TURN_LEASE_MS: the line is dropped
if its first writer has not acted by then (a process gone, or stalled), and
the others, waiting no longer than that, try again.
"""

from __future__ import annotations

from typing import Final

from .redis_rows import CAPS_PART

TURN_LEASE_MS: Final = 500

SCRIPT: Final = """
local now = redis.call('TIME')
local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local budget_hash = redis.call('HMGET', KEYS[1], 'version', 'next', 'config')
local version = budget_hash[1]
local function answer(tag)
  return {tag, version, now[1], now[2]}
end
local function rows(tag)
  local budget = redis.call('HMGET', KEYS[1], 'config', 'meta', 'next')
  return {tag, version, now[1], now[2], budget[1], budget[2],
          redis.call('HGETALL', KEYS[2]), redis.call('HGETALL', KEYS[3]),
          redis.call('HGETALL', KEYS[6]), budget[3] or '0'}
end
local function each(command, key, from, count, width)
  local last = from + count * width - 1
  for first = from, last, 1000 * width do
    redis.call(command, key, unpack(ARGV, first, math.min(first + 1000 * width - 1, last)))
  end
  return last + 1
end
local function group(command, key, at, width)
  return each(command, key, at + 1, tonumber(ARGV[at]), width)
end
-- One command for many items (a thousand at a time: unpack's stack is
-- limited); the replies, if any, in one list.
local function all(command, key, items)
  local replies = {}
  for first = 1, #items, 1000 do
    local part = redis.call(command, key, unpack(items, first, math.min(first + 999, #items)))
    if type(part) == 'table' then
      for _, reply in ipairs(part) do replies[#replies + 1] = reply end
    end
  end
  return replies
end

local expected, batch, writer, said = ARGV[1], ARGV[2], ARGV[8], ARGV[7]
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
local function pass_turn()  -- announced to the next in line, and to merges waiting
  if head ~= writer then return end
  redis.call('LPOP', KEYS[5])
  local next = redis.call('LINDEX', KEYS[5], 0)
  if next then redis.call('PEXPIRE', KEYS[5], LEASE) end
  redis.call('PUBLISH', ARGV[6], 'turn ' .. (next or ''))
end
local function stale()
  if head then take_turn() end
  return rows('stale')
end
-- Fields of the budget hash to set with the version; a merge's offset is kept
-- with its batch id (a member "<id>+<offset>" of the same score), for ``done``.
-- A version is the count of writes, the server's time and the writer: a count
-- alone repeats when a failover loses the last writes (replication is
-- asynchronous), and a copy computed before the loss would pass for the rows.
local function written(fields, offset)
  local count = tonumber(string.match(version or '', '^%d+')) or 0
  version = string.format('%d:%s.%s:%s', count + 1, now[1], now[2], writer)
  redis.call('HSET', KEYS[1], 'version', version, unpack(fields))
  if batch ~= '' then
    redis.call('ZADD', KEYS[4], ms, batch)
    if offset then redis.call('ZADD', KEYS[4], ms, batch .. '+' .. string.format('%d', offset)) end
    redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', ms - 600000)
  end
  pass_turn()
  if said ~= '' then redis.call('PUBLISH', ARGV[6], said) end
end

local applied_at = batch ~= '' and redis.call('ZSCORE', KEYS[4], batch)
if applied_at then
  pass_turn()
  local offset = 0  -- (the ids a merge issued moved by it)
  for _, member in ipairs(redis.call('ZRANGEBYSCORE', KEYS[4], applied_at, applied_at)) do
    if string.sub(member, 1, #batch + 1) == batch .. '+' then
      offset = tonumber(string.sub(member, #batch + 2))
    end
  end
  local done = answer('done')
  done[5] = offset
  return done
end
if expected == 'turn' then
  if not mine then return wait_in_line() end
  take_turn()
  return rows('state')
end

if expected == 'merge' then
  if not mine then  -- sent again once the turn passes; after a lease, it joins
    if ARGV[4] == '1' then return wait_in_line() end
    return answer('wait')
  end
  local stored_next = tonumber(budget_hash[2])
  if not version or not stored_next then return stale() end
  -- computed under the stored configuration (else its opener learns it was reconfigured)
  if budget_hash[3] ~= ARGV[3] then return stale() end
  local at = 11
  local function take()
    at = at + 1
    return ARGV[at - 1]
  end
  local function items(width)  -- the next group's items, and its first item of each width
    local taken, firsts = {}, {}
    for _ = 1, tonumber(take()) do
      firsts[#firsts + 1] = ARGV[at]
      for _ = 1, width do taken[#taken + 1] = take() end
    end
    return taken, firsts
  end
  local shapes, keys = items(2)  -- each scope's record is the one the batch read
  local stored = all('HMGET', KEYS[2], keys)
  for i = 1, #keys do
    if stored[i] ~= shapes[2 * i] then return stale() end
  end
  -- What it rolled over is stored as it read it (it rolls it over now), or as
  -- it made it: another writer rolled it over alike, and told its events.
  local rolls, rolled_keys = items(5)
  local windows, rolled_shapes, alike, unsaid = {}, {}, {}, {}
  for i, record in ipairs(all('HMGET', KEYS[2], rolled_keys)) do
    if record == rolls[5 * i - 3] then
      local names = {}
      for index in string.gmatch(rolls[5 * i - 1], '%d+') do names['w' .. index .. '.'] = true end
      windows[rolled_keys[i]] = names
      rolled_shapes[#rolled_shapes + 1] = rolled_keys[i]
      rolled_shapes[#rolled_shapes + 1] = rolls[5 * i - 2]
    elseif record == rolls[5 * i - 2] then
      alike[#alike + 1] = rolled_keys[i]
      for index in string.gmatch(rolls[5 * i], '%d+') do unsaid[#unsaid + 1] = index end
    else
      return stale()
    end
  end
  local function rolling(field)  -- a count of a period that this batch ends
    local tab = string.find(field, '\t', 1, true)
    local names = windows[string.sub(field, 1, tab - 1)]
    return names ~= nil and names[string.match(field, '^w%d+%.', tab + 1) or ''] ~= nil
  end
  local made_shapes, made_keys = items(2)  -- what it made is new, or made alike meanwhile
  -- (the resets and the run-time tenant caps it saw are the stored ones)
  local caps = take()
  if caps ~= '' then
    local meta = redis.call('HGET', KEYS[1], 'meta') or ''
    local from = string.find(meta, CAPS_PART, 1, true)
    if not from or string.sub(meta, from) ~= caps then return stale() end
  end
  local absent = {}
  for i, record in ipairs(all('HMGET', KEYS[2], made_keys)) do
    if not record then
      absent[#absent + 1] = made_keys[i]
      absent[#absent + 1] = made_shapes[2 * i]
    elseif record ~= made_shapes[2 * i] then
      return stale()
    end
  end
  local held, ended = items(2)  -- what it ends is still open, as the one it held
  for i, record in ipairs(all('HMGET', KEYS[3], ended)) do
    if not record then return stale() end
    local token = held[2 * i]
    local begins = '{"token": ' .. token .. ','
    if token ~= '0' and string.sub(record, 1, #begins) ~= begins then return stale() end
  end
  -- Reservations past their deadline end in a batch computed on every row.
  local due = redis.call('ZRANGEBYSCORE', KEYS[7], '-inf', ARGV[10], 'LIMIT', 0, 1)
  if #due > 0 then return stale() end
  for _ = 1, tonumber(take()) do  -- each decision had room enough for what others did
    local sum, fields = 0, items(1)
    for i, value in ipairs(all('HMGET', KEYS[6], fields)) do
      if not rolling(fields[i]) then sum = sum + (tonumber(value) or 0) end
    end
    if sum > tonumber(take()) then return stale() end
  end
  local exact = version == ARGV[5]
  all('HSET', KEYS[2], absent)
  if #rolled_shapes > 0 then  -- the fields of the windows' last periods go
    all('HSET', KEYS[2], rolled_shapes)
    local gone = {}
    for _, field in ipairs(redis.call('HKEYS', KEYS[6])) do
      if rolling(field) then gone[#gone + 1] = field end
    end
    all('HDEL', KEYS[6], gone)
  end
  local values = {}
  for _ = 1, tonumber(take()) do
    local field = take()
    values[#values + 1] = redis.call('HINCRBY', KEYS[6], field, take())
  end
  all('HDEL', KEYS[3], ended)
  all('ZREM', KEYS[7], ended)
  -- The ids it issued move past those others issued meanwhile.
  local offset = math.max(0, stored_next - tonumber(take()))
  local made = items(2)
  for i = 1, #made, 2 do made[i] = string.format('%d', tonumber(made[i]) + offset) end
  all('HSET', KEYS[3], made)
  local deadlines = items(2)
  for i = 2, #deadlines, 2 do
    deadlines[i] = string.format('%d', tonumber(deadlines[i]) + offset)
  end
  all('ZADD', KEYS[7], deadlines)
  local mine_next = tonumber(ARGV[9]) + offset
  if #unsaid > 0 and said ~= '' then  -- (a JSON object: its first member goes first)
    said = '{"unsaid": [' .. table.concat(unsaid, ', ') .. '], ' .. string.sub(said, 2)
  end
  written({'next', string.format('%d', math.max(stored_next, mine_next))}, offset)
  local due = redis.call('ZRANGE', KEYS[7], 0, 0, 'WITHSCORES')[2] or ''
  return {exact and 'ok' or 'merged', version, now[1], now[2], offset, due, values, alike}
end

if (version or 'none') ~= expected then
  if not mine then return wait_in_line() end
  return stale()
end
if ARGV[5] == '' then
  pass_turn()
  return answer('same')
end
if not mine then return wait_in_line() end

if ARGV[4] == '1' then redis.call('DEL', KEYS[2], KEYS[3], KEYS[6], KEYS[7]) end
local fields = {'meta', ARGV[5]}
if ARGV[3] ~= '' then fields[#fields + 1] = 'config'; fields[#fields + 1] = ARGV[3] end
if ARGV[9] ~= '' then fields[#fields + 1] = 'next'; fields[#fields + 1] = ARGV[9] end
local at = group('HSET', KEYS[2], 10, 2)
at = group('HDEL', KEYS[2], at, 1)
at = group('HSET', KEYS[3], at, 2)
group('ZREM', KEYS[7], at, 1)
at = group('HDEL', KEYS[3], at, 1)
at = group('ZADD', KEYS[7], at, 2)
at = group('HSET', KEYS[6], at, 2)
group('HDEL', KEYS[6], at, 1)
written(fields)
return answer('ok')
""".replace("LEASE", str(TURN_LEASE_MS)).replace("CAPS_PART", repr(CAPS_PART))
