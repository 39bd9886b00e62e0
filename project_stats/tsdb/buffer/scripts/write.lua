#!lua
-- The write: adds a call's deltas for one shard, atomically.
-- KEYS: live, batches.
-- ARGV: [1] an id for the live hash should this write create it, [2] the most
-- fields a hash takes before it is closed, [3] the batch key prefix, [4] the
-- number of fields given, [5] "rollup:epoch" index entries joined by ";",
-- [6] "field NUL delta NUL field NUL delta..." as one argument (the client
-- packs one string instead of thousands; environment markers, delta 0, come
-- last), [7] the Redis-only rollups' "rollup:epoch:group NUL field NUL delta"
-- triplets, [8] "rollup=ttl_ms" per Redis-only rollup joined by ";".
-- Reply: the id of the live hash written to ('' when none).
-- Guards: a write half-done. The shebang makes Redis 7 check its memory
-- before the script runs: a full Redis (maxmemory, noeviction) refuses the
-- whole script with OOM, so a write is refused untouched or runs to its end.
-- Times are Redis's own (TIME), never the writer's: app servers' clocks
-- disagree, and one running ahead would trim the others' buckets from the index.
--
-- A live hash is closed (renamed to a claimed batch, as the flush's BEGIN
-- would) before this write when it is full, or when it was written by
-- another incarnation of the server (INFO's run_id): Redis restored from a
-- snapshot or failed over to a replica brings back a live hash whose id a
-- flush may already have applied, and deltas added to it now would be
-- skipped with it. Closed, it is applied once, or skipped if it was.
--
-- A bucket that would pass 2**63 - 1 makes HINCRBY fail: the deltas written
-- so far are taken back and the hash left as it was, so the whole script
-- records nothing (Redis does not undo a failed script's writes itself); the
-- reply is then the error "PSOVERFLOW <field>". Any other refusal of an
-- HINCRBY is taken back the same way and answered as Redis's own error.
local live, batches = KEYS[1], KEYS[2]
local fresh, prefix = ARGV[1], ARGV[3]
local cap, count = tonumber(ARGV[2]), tonumber(ARGV[4])
local clock = redis.call('TIME')
local now = string.format('%d', clock[1] * 1000 + math.floor(clock[2] / 1000))
local short_prefix = string.sub(live, 1, #live - 4) .. 'r:'
local run = string.match(redis.call('INFO', 'server'), 'run_id:(%x+)')
local id = redis.call('HGET', live, '~id')
if id and (redis.call('HGET', live, '~inc') ~= run or redis.call('HLEN', live) + count > cap) then
  redis.call('RENAME', live, prefix .. id)
  if redis.call('EXISTS', live .. ':b') == 1 then
    redis.call('RENAME', live .. ':b', prefix .. id .. ':b')
  end
  redis.call('ZADD', batches, now, id)
  id = false
end
if not id and count > 0 then
  redis.call('HSET', live, '~id', fresh, '~t', now, '~inc', run)
  id = fresh
end
-- Every HINCRBY of the call, in order: {key, field, delta}, to take back.
local done = {}
local function undo()
  for k = #done, 1, -3 do
    local key, field, delta = done[k - 2], done[k - 1], done[k]
    if delta ~= '0' and redis.call('HINCRBY', key, field, '-' .. delta) == 0 then
      redis.call('HDEL', key, field)
    end
  end
  if id == fresh then redis.call('DEL', live) end
end
-- Nil when added; else the error reply to return, everything taken back.
local function add(key, field, delta)
  local reply = redis.pcall('HINCRBY', key, field, delta)
  if type(reply) == 'table' and reply.err then
    undo()
    if string.find(reply.err, 'overflow', 1, true) then
      return redis.error_reply('PSOVERFLOW ' .. field)
    end
    return reply
  end
  done[#done + 1] = key
  done[#done + 1] = field
  done[#done + 1] = delta
  return nil
end
local packed = ARGV[6]
local position, length = 1, #packed
while position <= length do
  local gap = string.find(packed, '\0', position, true)
  local stop = string.find(packed, '\0', gap + 1, true) or length + 1
  local field = string.sub(packed, position, gap - 1)
  local refused = add(live, field, string.sub(packed, gap + 1, stop - 1))
  if refused then return refused end
  position = stop + 1
end
-- Redis-only rollups: "rollup:epoch:group NUL field NUL delta" triplets,
-- each bucket and group of projects a hash of its own that expires its
-- rollup's retention after its last write; a zset per rollup lists the
-- buckets (score: their expiry).
local ttls = {}
for rollup, ttl in string.gmatch(ARGV[8], '(%d+)=(%d+)') do ttls[rollup] = tonumber(ttl) end
local buckets = {}
packed, position, length = ARGV[7], 1, #ARGV[7]
while position <= length do
  local first = string.find(packed, '\0', position, true)
  local second = string.find(packed, '\0', first + 1, true)
  local stop = string.find(packed, '\0', second + 1, true) or length + 1
  local bucket = string.sub(packed, position, first - 1)
  local field = string.sub(packed, first + 1, second - 1)
  local refused = add(short_prefix .. bucket, field, string.sub(packed, second + 1, stop - 1))
  if refused then return refused end
  buckets[bucket] = true
  position = stop + 1
end
-- The indexes once per rollup, however many buckets the call touched (the
-- work grows with the keys written, not with the spread of the events):
-- one ZADD of every bucket (in slices: Lua's unpack has a small stack), then
-- the expired ones trimmed and the index's expiry renewed.
local function zadd(key, members)
  for i = 1, #members, 1000 do
    redis.call('ZADD', key, unpack(members, i, math.min(i + 999, #members)))
  end
end
local indexed = {}
for bucket in pairs(buckets) do
  local rollup, epoch = string.match(bucket, '^(%d+):([^:]+):')
  redis.call('PEXPIRE', short_prefix .. bucket, ttls[rollup])
  indexed[rollup] = indexed[rollup] or {}
  indexed[rollup][epoch] = true
end
for rollup, epochs in pairs(indexed) do
  local ttl, index, members = ttls[rollup], short_prefix .. rollup, {}
  for epoch in pairs(epochs) do
    members[#members + 1] = tonumber(now) + ttl
    members[#members + 1] = epoch
  end
  zadd(index, members)
  redis.call('ZREMRANGEBYSCORE', index, '-inf', now)
  redis.call('PEXPIRE', index, ttl)
end
local members = {}
for entry in string.gmatch(ARGV[5], '[^;]+') do
  members[#members + 1] = string.match(entry, ':(.*)')
  members[#members + 1] = entry
end
zadd(live .. ':b', members)
return id or ''
