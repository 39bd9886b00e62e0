#!lua flags=allow-oom
-- write.lua for taking back part of a refused write (negative deltas): the
-- same keys, arguments and reply. It must run even when Redis is full
-- (allow-oom), or the call could not keep its promise that nothing of it
-- stays recorded.
-- include: write.lua
