-- Included last by the read scripts: ``get`` (defined by each) applied to
-- the live hash and every claimed batch (ARGV[1] is the batch key prefix).
-- Reply: {live id, get(live), id1, get(batch1), id2, get(batch2), ...}.
local result = {redis.call('HGET', KEYS[1], '~id'), get(KEYS[1])}
for _, id in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
  result[#result + 1] = id
  result[#result + 1] = get(ARGV[1] .. id)
end
return result
