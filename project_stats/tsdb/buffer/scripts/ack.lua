#!lua flags=allow-oom
-- Flush step 4, per batch, once the database committed it: delete the
-- batch and its id, renew the lease if still ours. Crash point after it: "acked".
-- KEYS: batch key, batches, lease.
-- ARGV: [1] batch id, [2] token, [3] lease ms.
-- Reply: 1.
redis.call('DEL', KEYS[1], KEYS[1] .. ':b')
redis.call('ZREM', KEYS[2], ARGV[1])
if redis.call('GET', KEYS[3]) == ARGV[2] then redis.call('PEXPIRE', KEYS[3], ARGV[3]) end
return 1
