-- Flush step 2: a batch's contents. Crash point after it: "read".
-- KEYS: a batch key. ARGV: none. Reply: its fields and values.
return redis.call('HGETALL', KEYS[1])
