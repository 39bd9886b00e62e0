-- Fields named one by one (environment markers) of every hash of a shard;
-- with none, just the claimed ids.
-- KEYS: live, batches. ARGV: [1] the batch key prefix, then the fields wanted.
-- Reply: {live id, live values, id1, values1, id2, values2, ...} (each_hash.lua);
-- HMGET in slices because Lua's unpack has a small stack.
local function get(key)
  local values = {}
  for i = 2, #ARGV, 500 do
    local part = redis.call('HMGET', key, unpack(ARGV, i, math.min(i + 499, #ARGV)))
    for j = 1, #part do values[#values + 1] = part[j] end
  end
  return values
end
-- include: each_hash.lua
