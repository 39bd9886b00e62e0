-- Deletes deleted projects' fields from every bucket of the Redis-only rollups.
-- KEYS: live (for the shard's slot).
-- ARGV: [1] the Redis-only rollups joined by ";", then per group of
-- projects "group=pk,pk,...".
-- Reply: how many fields went.
local base = string.sub(KEYS[1], 1, #KEYS[1] - 4) .. 'r:'
local groups = {}
for i = 2, #ARGV do
  local group, ids = string.match(ARGV[i], '^([^=]+)=(.*)$')
  local wanted = {}
  for pk in string.gmatch(ids, '[^,]+') do wanted[pk] = true end
  groups[group] = wanted
end
local gone = 0
for rollup in string.gmatch(ARGV[1], '[^;]+') do
  for _, epoch in ipairs(redis.call('ZRANGE', base .. rollup, 0, -1)) do
    for group, wanted in pairs(groups) do
      local key = base .. rollup .. ':' .. epoch .. ':' .. group
      for _, field in ipairs(redis.call('HKEYS', key)) do
        if wanted[string.match(field, '^(%d+):')] then
          gone = gone + redis.call('HDEL', key, field)
        end
      end
    end
  end
end
return gone
