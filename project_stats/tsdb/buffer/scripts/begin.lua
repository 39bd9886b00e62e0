#!lua flags=allow-oom
-- Flush step 1, per shard: take the lease, close the live hash, list the
-- claimed batches. Crash point after it: "claimed".
-- KEYS: lease, live, batches.
-- ARGV: [1] the flusher's token, [2] lease ms, [3] the batch key prefix.
-- Reply: false when another flusher holds the lease; else every claimed
-- batch id (older ones too: a flusher that died left them, a write closed them).
-- The batch keeps the id the live hash got when it was created, which reads
-- have seen already: a read that found these deltas live knows them by it.
-- The flush's scripts may run when Redis is full (allow-oom): flushing is
-- what frees its memory.
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then return false end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
local id = redis.call('HGET', KEYS[2], '~id')
if id then
  local clock = redis.call('TIME')
  local now = string.format('%d', clock[1] * 1000 + math.floor(clock[2] / 1000))
  redis.call('RENAME', KEYS[2], ARGV[3] .. id)
  if redis.call('EXISTS', KEYS[2] .. ':b') == 1 then
    redis.call('RENAME', KEYS[2] .. ':b', ARGV[3] .. id .. ':b')
  end
  redis.call('ZADD', KEYS[3], now, id)
end
local ids = redis.call('ZRANGE', KEYS[3], 0, -1)
if #ids == 0 then redis.call('DEL', KEYS[1]) end
return ids
