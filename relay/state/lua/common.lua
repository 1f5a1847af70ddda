-- Prepended to every script (Redis scripts cannot import): the time a script decides at,
-- ARGV[1] when the caller gives one (tests, on a fake clock), else Redis's own TIME, the
-- same for every node; and times written as "%.17g", so that keys and fields match exactly.

local function script_now(given)
  local now = tonumber(given)
  if now then return now end
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1e6
end

local function fmt(x) return string.format('%.17g', x) end

