#!lua flags=allow-oom
-- Takes back one write whose hash is still live.
-- KEYS: live.
-- ARGV: [1] the id the write returned ('' when it wrote no live hash), [2]
-- its packed fields and deltas, [3] its packed Redis-only triplets.
-- Reply: 1 when taken back (fields it created are removed); 0, touching
-- nothing, when a flush claimed the hash meanwhile (the caller then writes
-- the negative deltas with write_back.lua).
-- Allowed to run when Redis is full: it only lowers what a write just added.
if ARGV[1] ~= '' and redis.call('HGET', KEYS[1], '~id') ~= ARGV[1] then return 0 end
local function take(key, field, delta)
  if delta ~= '0' and redis.call('HINCRBY', key, field, '-' .. delta) == 0 then
    redis.call('HDEL', key, field)
  end
end
local packed = ARGV[2]
local position, length = 1, #packed
while position <= length do
  local gap = string.find(packed, '\0', position, true)
  local stop = string.find(packed, '\0', gap + 1, true) or length + 1
  take(KEYS[1], string.sub(packed, position, gap - 1), string.sub(packed, gap + 1, stop - 1))
  position = stop + 1
end
local short_prefix = string.sub(KEYS[1], 1, #KEYS[1] - 4) .. 'r:'
packed, position, length = ARGV[3], 1, #ARGV[3]
while position <= length do
  local first = string.find(packed, '\0', position, true)
  local second = string.find(packed, '\0', first + 1, true)
  local stop = string.find(packed, '\0', second + 1, true) or length + 1
  take(short_prefix .. string.sub(packed, position, first - 1),
    string.sub(packed, first + 1, second - 1), string.sub(packed, second + 1, stop - 1))
  position = stop + 1
end
return 1
