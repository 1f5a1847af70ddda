-- The end of a reservation (State.record_outcome), atomically, on one sender domain's keys
-- (KEYS[1], "relay:{d:<domain>}", as in decide.lua):
--
--   <P>:outcome:<key>   STRING  set once per outcome key: a retried call counts nothing more
--   <P>:vol             HASH    "<provider>|<UTC day>" -> recipients delivered
--   <P>:voltotal        HASH    "<UTC day>" -> recipients delivered, every provider
--   <P>:first           HASH    provider -> first send (a provider's new ramp continues the
--                               whole domain's, "", when there is one)
--   <P>:health          HASH    "<day>|c", "<day>|b" -> complaints, hard bounces of that day
--   <P>:unhealthy       SET     days that do not count toward the warm-up (re-judged here:
--                               more deliveries lower that day's rates)
--
-- ARGV: now ("" : Redis TIME), outcome key, reservation, complaint limit, bounce limit,
-- then per provider: name, attempted, delivered. Returns 1 when counted, 0 when it was
-- counted before.

local P = KEYS[1]
local now = script_now(ARGV[1])
local key, reservation = ARGV[2], ARGV[3]
local complaint_limit, bounce_limit = tonumber(ARGV[4]), tonumber(ARGV[5])
local DAY, KEEP, HISTORY = 86400, 2 * 86400, 400 * 86400
local day = math.floor(now / DAY)

-- the reservation ends: nothing of it is in flight any more
local i = 5
while i < #ARGV do
  redis.call('HDEL', P .. ':flight', reservation .. '|' .. ARGV[i + 1])
  i = i + 3
end
redis.call('ZREM', P .. ':res', reservation)

if not redis.call('SET', P .. ':outcome:' .. key, '1', 'NX', 'EX', KEEP) then
  return 0
end
local total = 0
i = 5
while i < #ARGV do
  local provider, delivered = ARGV[i + 1], tonumber(ARGV[i + 3])
  if delivered > 0 then
    redis.call('HINCRBY', P .. ':vol', provider .. '|' .. day, delivered)
    total = total + delivered
    if redis.call('HEXISTS', P .. ':first', provider) == 0 then
      local whole = redis.call('HGET', P .. ':first', '')
      local first = now
      if whole and provider ~= '' then first = math.min(now, tonumber(whole)) end
      redis.call('HSET', P .. ':first', provider, fmt(first))
    end
  end
  i = i + 3
end
if total > 0 then
  for _, name in ipairs({':vol', ':voltotal', ':first'}) do
    redis.call('EXPIRE', P .. name, HISTORY)          -- a domain silent for a year starts over
  end
  local sent = redis.call('HINCRBY', P .. ':voltotal', day, total)
  local complaints = tonumber(redis.call('HGET', P .. ':health', day .. '|c') or '0')
  local bounces = tonumber(redis.call('HGET', P .. ':health', day .. '|b') or '0')
  local paused = redis.call('HGET', P .. ':health', day .. '|p')
  if not paused and complaints <= complaint_limit * sent and bounces <= bounce_limit * sent then
    redis.call('SREM', P .. ':unhealthy', day)
  end
end
return 1
