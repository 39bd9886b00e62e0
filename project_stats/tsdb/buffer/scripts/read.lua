-- A read's deltas of one slice of a shard's projects, with the ids of the
-- hashes holding them, atomically (so the database says once which ids are
-- applied, and each delta counts once whatever a flush does meanwhile).
-- KEYS: live, batches.
-- ARGV: [1] batch key prefix, [2] rollup, [3] and [4] first and last bucket
-- start, [5] the stat codes joined by ";", [6] ":environment", then project ids.
-- Reply: {live id, {field, value, ...}, id1, {...}, ...} with only the
-- fields that hold a delta: each hash's index names the buckets it has in
-- the range, so the work grows with what is buffered, not with the series
-- asked for. A hash without an index (written by an earlier version) is
-- asked for every bucket.
-- include: found.lua
local prefix, rollup, first, last = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local stats = {}
for stat in string.gmatch(ARGV[5], '[^;]+') do stats[#stats + 1] = stat end
local function get(key)
  local epochs = {}
  if redis.call('EXISTS', key .. ':b') == 1 then
    for _, entry in ipairs(redis.call('ZRANGEBYSCORE', key .. ':b', first, last)) do
      local r, e = string.match(entry, '^(%d+):(.*)$')
      if r == rollup then epochs[#epochs + 1] = e end
    end
  elseif redis.call('EXISTS', key) == 1 then
    for e = first, last, tonumber(rollup) do epochs[#epochs + 1] = string.format('%d', e) end
  end
  local out, fields = {}, {}
  for i = 7, #ARGV do
    for _, stat in ipairs(stats) do
      for _, e in ipairs(epochs) do
        fields[#fields + 1] = ARGV[i] .. ':' .. stat .. ':' .. rollup .. ':' .. e .. ARGV[6]
      end
    end
  end
  found(key, fields, out)
  return out
end
-- include: each_hash.lua
