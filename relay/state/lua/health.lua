-- Shared by the scripts that judge a day's health (prepended to them: Redis scripts cannot
-- import). A day does not count toward the warm-up when a pause held it ("<day>|p"), or its
-- complaints or hard bounces ("<day>|c", "<day>|b" in <P>:health) went over the limit
-- against what it delivered (<P>:voltotal): governor/reputation.py's day_verdict.

local HEALTH_KEPT = 400 * 86400

local function judge_day(P, day, c_limit, b_limit)
  local h = P .. ':health'
  local sent = tonumber(redis.call('HGET', P .. ':voltotal', day) or '0')
  local c = tonumber(redis.call('HGET', h, day .. '|c') or '0')
  local b = tonumber(redis.call('HGET', h, day .. '|b') or '0')
  if redis.call('HGET', h, day .. '|p') or c > c_limit * sent or b > b_limit * sent then
    redis.call('SADD', P .. ':unhealthy', day)
  else
    redis.call('SREM', P .. ':unhealthy', day)
  end
  redis.call('EXPIRE', h, HEALTH_KEPT)
  redis.call('EXPIRE', P .. ':unhealthy', HEALTH_KEPT)
end

local function mark_paused(P, since, now, c_limit, b_limit)
  for day = math.floor(since / 86400), math.floor(now / 86400) do
    redis.call('HSET', P .. ':health', day .. '|p', 1)
    judge_day(P, day, c_limit, b_limit)
  end
end

