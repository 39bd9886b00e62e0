-- Included by the read scripts: found(key, fields, out) appends to ``out``
-- the fields of ``fields`` that ``key`` holds, each followed by its value
-- (HMGET in slices: Lua's unpack has a small stack).
local function found(key, fields, out)
  for i = 1, #fields, 500 do
    local part = redis.call('HMGET', key, unpack(fields, i, math.min(i + 499, #fields)))
    for j = 1, #part do
      if part[j] then
        out[#out + 1] = fields[i + j - 1]
        out[#out + 1] = part[j]
      end
    end
  end
end
