-- Feedback for one sender domain (State.record_feedback), atomically (health.lua first): store each new event,
-- suppress, count it against its day's health, then judge the domain's pause -- the rules of
-- relay/state/sqlite.py's _Feedback, on the domain's keys (KEYS[1], "relay:{d:<domain>}"):
--
--   <P>:fbseen:<dedupe key>  STRING  an event seen (dedupe), for the horizon
--   <P>:fb:<kind>            ZSET    complaints and hard bounces, by their time (the rates)
--   <P>:soft:<recipient>     ZSET    a recipient's soft bounces, by their time
--   <P>:supp                 HASH    recipient -> "<reason>|<since>" (the first reason stays)
--   <P>:health, :unhealthy, :voltotal   as in outcome.lua; "<day>|p": a pause held that day
--   <P>:pause                HASH    op_reason, op_since (the operator's); policy_scope,
--                                    policy_reason, policy_since (the reputation rules');
--                                    resumed (the operator's last resume); newest_negative
--
-- ARGV: now ("" : Redis TIME), trusted (1/0), horizon (s), window (s), min_volume,
-- complaint limit, complaint stop, bounce limit, bounce stop, on_limit, on_stop,
-- soft count, soft within (s), then per event: dedupe key, kind, recipient, at. Without
-- events the domain is judged again only (rates move with time too).
-- Returns {new (1/0 per event)..., suppressed as "index|reason"..., "", action, scope, reason}:
-- action "paused", "lifted", "alert" or "".

local P = KEYS[1]
local now = script_now(ARGV[1])
local trusted = ARGV[2] == '1'
local horizon, window, min_volume = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local c_limit, c_stop, b_limit, b_stop = tonumber(ARGV[6]), tonumber(ARGV[7]),
                                         tonumber(ARGV[8]), tonumber(ARGV[9])
local on_limit, on_stop = ARGV[10], ARGV[11]
local soft_count, soft_within = tonumber(ARGV[12]), tonumber(ARGV[13])
local DAY = 86400
local SUPPRESS = {bounced_hard = 'hard_bounce', complained = 'complaint',
                  unsubscribed = 'unsubscribed'}
local HEALTH = {complained = 'c', bounced_hard = 'b'}
local function day_of(ts) return math.floor(ts / DAY) end

local out, suppressed = {}, {}
local function suppress(index, recipient, reason)
  if redis.call('HSETNX', P .. ':supp', recipient, reason .. '|' .. fmt(now)) == 1 then
    suppressed[#suppressed + 1] = index .. '|' .. reason
  end
end

local n_events = (#ARGV - 13) / 4
for e = 1, n_events do
  local base = 13 + (e - 1) * 4
  local key, kind, recipient, at = ARGV[base + 1], ARGV[base + 2], ARGV[base + 3], tonumber(ARGV[base + 4])
  if redis.call('SET', P .. ':fbseen:' .. key, '1', 'NX', 'EX', math.ceil(horizon)) then
    out[#out + 1] = 1
    if HEALTH[kind] then
      local z = P .. ':fb:' .. kind
      redis.call('ZADD', z, fmt(at), key)
      redis.call('ZREMRANGEBYSCORE', z, '-inf', '(' .. fmt(now - horizon))
      redis.call('EXPIRE', z, math.ceil(horizon))
      redis.call('HSET', P .. ':pause', 'newest_negative', fmt(now))
      if redis.call('HEXISTS', P .. ':pause', 'op_since') == 0 then   -- an operator's pause
        redis.call('EXPIRE', P .. ':pause', HEALTH_KEPT)               -- never expires
      end
      -- an untrusted report dates itself: its day's health counts it on the day received
      local day = day_of(trusted and at or now)
      redis.call('HINCRBY', P .. ':health', day .. '|' .. HEALTH[kind], 1)
      judge_day(P, day, c_limit, b_limit)
    end
    local reason = SUPPRESS[kind]
    if kind == 'bounced_soft' then
      local z = P .. ':soft:' .. recipient
      redis.call('ZADD', z, fmt(at), key)
      redis.call('EXPIRE', z, math.ceil(math.max(soft_within, horizon)))
      if redis.call('ZCOUNT', z, fmt(now - soft_within), '+inf') >= soft_count then
        reason = 'soft_bounces'
      end
    end
    if reason then suppress(e, recipient, reason) end
  else
    out[#out + 1] = 0
  end
end
local any_new = false
for _, flag in ipairs(out) do any_new = any_new or flag == 1 end
for _, s in ipairs(suppressed) do out[#out + 1] = s end
out[#out + 1] = ''
if n_events > 0 and not any_new then return out end   -- nothing new: nothing to judge again

-- judge the domain (governor/reputation.py's judge) -------------------------------------------
local pause = P .. ':pause'
local delivered = 0
for day = day_of(now - window), day_of(now) do
  delivered = delivered + tonumber(redis.call('HGET', P .. ':voltotal', day) or '0')
end
local complaints = redis.call('ZCOUNT', P .. ':fb:complained', fmt(now - window), '+inf')
local bounces = redis.call('ZCOUNT', P .. ':fb:bounced_hard', fmt(now - window), '+inf')
local action, reason = nil, nil
if delivered >= math.max(min_volume, 1) then
  local c_rate, b_rate = complaints / delivered, bounces / delivered
  local described = string.format('complaint rate %.2f%%, bounce rate %.2f%% over %d delivered',
                                  c_rate * 100, b_rate * 100, delivered)
  if c_rate > c_stop or b_rate > b_stop then
    action, reason = on_stop, described .. ' (above stop)'
  elseif c_rate > c_limit or b_rate > b_limit then
    action, reason = on_limit, described .. ' (above limit)'
  else
    reason = described
  end
end
if delivered < min_volume then return out end     -- too little volume to judge: neither
local scope = ({pause_bulk = 'bulk', pause_all = 'all'})[action or '']
local current = redis.call('HGET', pause, 'policy_scope')
if scope then
  local resumed = tonumber(redis.call('HGET', pause, 'resumed') or '')
  local newest = tonumber(redis.call('HGET', pause, 'newest_negative') or '0')
  if resumed and newest <= resumed then return out end   -- the operator resumed it: that holds
  if current ~= scope then
    local since = tonumber(redis.call('HGET', pause, 'policy_since') or '')
    if since then mark_paused(P, since, now, c_limit, b_limit) end
    redis.call('HSET', pause, 'policy_scope', scope, 'policy_reason', reason,
               'policy_since', fmt(now))
    mark_paused(P, now, now, c_limit, b_limit)
    out[#out + 1], out[#out + 2], out[#out + 3] = 'paused', scope, reason
  end
elseif action == 'alert' then
  out[#out + 1], out[#out + 2], out[#out + 3] = 'alert', '', reason
elseif current then
  mark_paused(P, tonumber(redis.call('HGET', pause, 'policy_since')), now, c_limit, b_limit)
  redis.call('HDEL', pause, 'policy_scope', 'policy_reason', 'policy_since')
  out[#out + 1], out[#out + 2], out[#out + 3] = 'lifted', '', reason
end
return out
