-- The state of one shard (project_stats_flush --stats, the metrics).
-- KEYS: live, batches, flushed. ARGV: [1] the batch key prefix.
-- Reply: {fields live, its first write (ms) or false, {id, claim time,
-- fields, ...}, the last flush's {at, seconds, rows} or {}}.
local claimed = {}
for _, pair in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1, 'WITHSCORES')) do
  claimed[#claimed + 1] = pair
end
local batches = {}
for i = 1, #claimed, 2 do
  batches[#batches + 1] = claimed[i]
  batches[#batches + 1] = claimed[i + 1]
  batches[#batches + 1] = redis.call('HLEN', ARGV[1] .. claimed[i])
end
return {redis.call('HLEN', KEYS[1]), redis.call('HGET', KEYS[1], '~t'), batches,
  redis.call('HMGET', KEYS[3], 'at', 'seconds', 'rows')}
