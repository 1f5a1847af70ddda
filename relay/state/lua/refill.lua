-- A node refills one sender domain's keys (KEYS[1], "relay:{d:<domain>}") with what it knows,
-- after Redis lost them (restarted empty: a new epoch), during the epoch's grace. Every node
-- adds its own share: its grants still in the rate windows, what it delivered on the days
-- the caps look at, the first sends, and the suppressions and pauses it has seen. Writes as
-- outcome.lua, decide.lua and feedback.lua do, with the same TTLs.
--
-- ARGV: now, then counts and entries: windows (name, period, stamp, units), volumes
-- (provider, day, recipients), first sends (provider, time), suppressions (recipient,
-- "reason|since"), pauses (field, value of <P>:pause). Returns the epoch.

local P = KEYS[1]
local now = tonumber(ARGV[1])
local c_limit, b_limit, horizon = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local HISTORY = 400 * 86400
if not redis.call('GET', P .. ':epoch') then
  redis.call('SET', P .. ':epoch', fmt(now), 'EX', HISTORY)
end
local i = 5
local function take(n)
  local out = {}
  for k = 1, n do out[k] = ARGV[i + k - 1] end
  i = i + n
  return out
end

for _ = 1, tonumber(take(1)[1]) do
  local e = take(4)
  local name, period, stamp, units = e[1], tonumber(e[2]), e[3], tonumber(e[4])
  if tonumber(stamp) > now - period then
    local h, z = P .. ':win:' .. name .. ':' .. fmt(period), P .. ':winz:' .. name .. ':' .. fmt(period)
    redis.call('HINCRBY', h, stamp, units)
    redis.call('HINCRBY', h, 'sum', units)
    redis.call('ZADD', z, stamp, stamp)
    for _, key in ipairs({h, z}) do redis.call('PEXPIRE', key, math.ceil((period * 2 + 1) * 1000)) end
  end
end
for _ = 1, tonumber(take(1)[1]) do
  local e = take(3)
  redis.call('HINCRBY', P .. ':vol', e[1] .. '|' .. e[2], e[3])
  redis.call('HINCRBY', P .. ':voltotal', e[2], e[3])
end
for _ = 1, tonumber(take(1)[1]) do
  local e = take(2)
  local first = tonumber(redis.call('HGET', P .. ':first', e[1]) or '')
  if not first or tonumber(e[2]) < first then redis.call('HSET', P .. ':first', e[1], e[2]) end
end
for _, name in ipairs({':vol', ':voltotal', ':first'}) do redis.call('EXPIRE', P .. name, HISTORY) end
for _ = 1, tonumber(take(1)[1]) do
  local e = take(2)
  redis.call('HSETNX', P .. ':supp', e[1], e[2])
end
for _ = 1, tonumber(take(1)[1]) do
  local e = take(2)
  redis.call('HSETNX', P .. ':pause', e[1], e[2])
end
for _ = 1, tonumber(take(1)[1]) do
  local e = take(4)
  local day = e[1]
  redis.call('HINCRBY', P .. ':health', day .. '|c', e[2])
  redis.call('HINCRBY', P .. ':health', day .. '|b', e[3])
  if e[4] == '1' then redis.call('HSET', P .. ':health', day .. '|p', 1) end
  judge_day(P, day, c_limit, b_limit)
end
for _ = 1, tonumber(take(1)[1]) do
  local e = take(4)
  local key, kind, recipient, at = e[1], e[2], e[3], e[4]
  if tonumber(at) > now - horizon and redis.call('SET', P .. ':fbseen:' .. key, '1', 'NX', 'EX',
                                                math.ceil(horizon)) then
    local z = (kind == 'bounced_soft') and (P .. ':soft:' .. recipient) or (P .. ':fb:' .. kind)
    if kind == 'bounced_soft' or kind == 'complained' or kind == 'bounced_hard' then
      redis.call('ZADD', z, at, key)
      redis.call('EXPIRE', z, math.ceil(horizon))
    end
  end
end
return redis.call('GET', P .. ':epoch')
