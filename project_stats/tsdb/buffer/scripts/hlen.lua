-- Before flush step 2: a batch's size, so a transaction takes whole batches.
-- KEYS: a batch key. ARGV: none. Reply: its number of fields.
return redis.call('HLEN', KEYS[1])
