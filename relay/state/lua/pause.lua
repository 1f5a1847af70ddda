-- The operator's pause and resume of one sender domain (health.lua first), on KEYS[1],
-- "relay:{d:<domain>}": <P>:pause (op_reason, op_since; policy_*; resumed), <P>:health.
-- ARGV: now ("" : Redis TIME), "pause" or "resume", reason, complaint limit, bounce limit.
-- pause: the reason is kept, the first `since` too. resume: every pause is lifted, the days
-- they held are marked, and `resumed` holds off the reputation rules until a newer
-- complaint or bounce. Returns 1 when something was paused or lifted, else 0.

local P = KEYS[1]
local now = script_now(ARGV[1])
local pause = P .. ':pause'
local c_limit, b_limit = tonumber(ARGV[4]), tonumber(ARGV[5])
if ARGV[2] == 'pause' then
  redis.call('HSETNX', pause, 'op_since', fmt(now))
  redis.call('HSET', pause, 'op_reason', ARGV[3])
  redis.call('PERSIST', pause)
  return 1
end
local lifted = 0
for _, which in ipairs({'op', 'policy'}) do
  local since = redis.call('HGET', pause, which .. '_since')
  if since then
    mark_paused(P, tonumber(since), now, c_limit, b_limit)
    lifted = 1
  end
end
redis.call('HDEL', pause, 'op_reason', 'op_since', 'policy_scope', 'policy_reason', 'policy_since')
redis.call('HSET', pause, 'resumed', fmt(now))
redis.call('EXPIRE', pause, 400 * 86400)
return lifted
