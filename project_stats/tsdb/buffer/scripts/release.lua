#!lua flags=allow-oom
-- Flush step 5, per shard: record the flush, drop the lease if still ours.
-- KEYS: lease, flushed.
-- ARGV: [1] token, then what this flush did to the shard: [2] when (ms),
-- [3] seconds, [4] rows (kept for project_stats_flush --stats).
-- Reply: 1 when the lease was dropped, 0 when it was no longer ours.
redis.call('HSET', KEYS[2], 'at', ARGV[2], 'seconds', ARGV[3], 'rows', ARGV[4])
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
