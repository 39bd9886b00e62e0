-- A Redis-only rollup's counts of one slice of a shard's projects.
-- KEYS: live (for the shard's slot).
-- ARGV: [1] rollup, [2] and [3] first and last bucket start, [4] the stat
-- codes joined by ";", [5] ":environment", then per group of projects
-- "group=pk,pk,...".
-- Reply: {epoch, {field, value, ...}, ...}: the buckets the rollup's index
-- lists in the range, and in each the fields of these series.
-- include: found.lua
local prefix = string.sub(KEYS[1], 1, #KEYS[1] - 4) .. 'r:' .. ARGV[1] .. ':'
local first, last = tonumber(ARGV[2]), tonumber(ARGV[3])
local stats = {}
for stat in string.gmatch(ARGV[4], '[^;]+') do stats[#stats + 1] = stat end
local groups = {}
for i = 6, #ARGV do
  local group, ids = string.match(ARGV[i], '^([^=]+)=(.*)$')
  local fields = {}
  for pk in string.gmatch(ids, '[^,]+') do
    for _, stat in ipairs(stats) do fields[#fields + 1] = pk .. ':' .. stat .. ARGV[5] end
  end
  groups[#groups + 1] = {':' .. group, fields}
end
local index = string.sub(KEYS[1], 1, #KEYS[1] - 4) .. 'r:' .. ARGV[1]
local result = {}
for _, epoch in ipairs(redis.call('ZRANGE', index, 0, -1)) do
  local e = tonumber(epoch)
  if e >= first and e <= last then
    local out = {}
    for _, group in ipairs(groups) do found(prefix .. epoch .. group[1], group[2], out) end
    if #out > 0 then
      result[#result + 1] = epoch
      result[#result + 1] = out
    end
  end
end
return result
