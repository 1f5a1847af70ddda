-- The counting part of a reservation (governor.Governor.decide), atomically, on the shared
-- state of one sender domain. Every key starts with KEYS[1], "relay:{d:<domain>}": they
-- share a hash tag, so the script stays valid on Redis Cluster.
--
--   <P>:win:<name>:<period>  HASH  slice end (seconds, "%.17g") -> units; "sum" -> total
--   <P>:winz:<name>:<period> ZSET  slice end, scored by it: what leaves the window first
--   <P>:first                HASH  provider ("" : the whole domain) -> first send
--   <P>:vol                  HASH  "<provider>|<UTC day>" -> recipients delivered
--   <P>:unhealthy            SET   UTC days that do not count toward the warm-up
--   <P>:flight               HASH  "<reservation>|<provider>" -> recipients in flight
--   <P>:res                  ZSET  reservation -> when it expires (a node that died with it)
--
--   <P>:pause                HASH  the operator's and the reputation rules' pauses
--
-- ARGV: now ("" : Redis TIME), reservation id, reservation lifetime (s), bulk share (0..1,
-- 1 for transactional mail), schedule ("50,100,..." or ""), max growth ("" : no spike
-- guard), spike floor, bulk (1/0), epoch grace (s), the epoch the node last saw ("" : none),
-- number of rate checks, then per check: name, count,
-- period (s); then per provider, in the message's order: name, asked.
-- A paused domain (all its mail, or bulk mail asking) returns {"paused", reason} only; a
-- domain in its epoch's grace {"epoch", epoch}; any other answer ends with the epoch.
-- Returns {granted per provider..., cap_reason, cap, cap_sent, cap_provider, rate_rest,
-- rate_until, rate_check, now}: a cap hold (reason "" when none), what a rate holds back and
-- until when one more fits every rate, which check binds (1-based), and the script's time
-- (times as "%.17g" strings).

local P = KEYS[1]
local now = script_now(ARGV[1])
local reservation, lifetime = ARGV[2], tonumber(ARGV[3])
local share = tonumber(ARGV[4])
local schedule = {}
for step in string.gmatch(ARGV[5], '[^,]+') do schedule[#schedule + 1] = tonumber(step) end
local growth, floor = tonumber(ARGV[6]), tonumber(ARGV[7])
local bulk = ARGV[8] == '1'
local grace, known_epoch = tonumber(ARGV[9]), ARGV[10]
local n_checks = tonumber(ARGV[11])
local DAY, GRANULARITY, SPIKE_DAYS, UNLIMITED = 86400, 1000, 7, 2 ^ 62

local function day_of(ts) return math.floor(ts / DAY) end
local today = day_of(now)

-- the domain's epoch: set when its keys are made, first or again after Redis lost them (a
-- restart empty: the asking node had seen an epoch); then, for `grace` seconds, the nodes
-- refill what they know, and nothing is granted
local epoch = tonumber(redis.call('GET', P .. ':epoch'))
if not epoch then
  epoch = now
  redis.call('SET', P .. ':epoch', fmt(now), 'EX', 400 * 86400)
  if known_epoch ~= '' and grace > 0 then        -- this node had seen them: Redis lost them
    redis.call('SET', P .. ':refilling', fmt(now + grace), 'PX', math.ceil(grace * 1000))
  end
end
local refilling = tonumber(redis.call('GET', P .. ':refilling'))
if refilling and now < refilling then return {'epoch', fmt(epoch)} end

-- a pause, read at each decision: one made on any node holds at once ------------------------
local pause = redis.call('HMGET', P .. ':pause', 'op_reason', 'policy_scope', 'policy_reason',
                         'op_since', 'policy_since')
if pause[1] or pause[2] == 'all' or (pause[2] == 'bulk' and bulk) then
  return {'paused', pause[1] or pause[3]}
end

-- the rate windows -----------------------------------------------------------------------
local checks = {}
for i = 1, n_checks do
  local base = 11 + (i - 1) * 3
  local name, count, period = ARGV[base + 1], tonumber(ARGV[base + 2]), tonumber(ARGV[base + 3])
  checks[i] = {count = count, period = period,
               h = P .. ':win:' .. name .. ':' .. fmt(period),
               z = P .. ':winz:' .. name .. ':' .. fmt(period)}
end

local function expire(c)
  local gone = redis.call('ZRANGEBYSCORE', c.z, '-inf', fmt(now - c.period))
  if #gone > 0 then
    local freed = 0
    for _, stamp in ipairs(gone) do
      freed = freed + tonumber(redis.call('HGET', c.h, stamp) or '0')
      redis.call('HDEL', c.h, stamp)
    end
    redis.call('ZREMRANGEBYSCORE', c.z, '-inf', fmt(now - c.period))
    redis.call('HINCRBY', c.h, 'sum', -freed)
  end
  return tonumber(redis.call('HGET', c.h, 'sum') or '0')
end

local room = UNLIMITED
for _, c in ipairs(checks) do
  c.total = expire(c)
  room = math.min(room, math.max(0, c.count - c.total))
end

-- the day's caps, per provider -------------------------------------------------------------
local unhealthy = {}
for _, d in ipairs(redis.call('SMEMBERS', P .. ':unhealthy')) do unhealthy[tonumber(d)] = true end
for _, since in ipairs({pause[4], pause[5]}) do          -- a pause still in effect (bulk's)
  if since then
    for d = day_of(tonumber(since)), today do unhealthy[d] = true end
  end
end

local function first_of(provider)
  local first = redis.call('HGET', P .. ':first', provider)
  if not first and provider ~= '' then first = redis.call('HGET', P .. ':first', '') end
  return tonumber(first)
end

local function sent_on(provider, day)
  local own = tonumber(redis.call('HGET', P .. ':vol', provider .. '|' .. day) or '0')
  if provider ~= '' then
    own = own + tonumber(redis.call('HGET', P .. ':vol', '|' .. day) or '0')
  end
  return own
end

-- reservations of nodes that died with them no longer count
for _, gone in ipairs(redis.call('ZRANGEBYSCORE', P .. ':res', '-inf', fmt(now))) do
  for _, field in ipairs(redis.call('HKEYS', P .. ':flight')) do
    if string.sub(field, 1, #gone + 1) == gone .. '|' then redis.call('HDEL', P .. ':flight', field) end
  end
  redis.call('ZREM', P .. ':res', gone)
end
local in_flight = {}
local flight = redis.call('HGETALL', P .. ':flight')
for i = 1, #flight, 2 do
  local provider = string.match(flight[i], '|(.*)$')
  in_flight[provider] = (in_flight[provider] or 0) + tonumber(flight[i + 1])
end

local function daily_cap(provider)
  local first = first_of(provider)
  local first_day = first and day_of(first) or nil
  local step = 0
  if first_day then
    step = today - first_day
    for d, _ in pairs(unhealthy) do
      if d >= first_day and d < today then step = step - 1 end
    end
    step = math.max(0, step)
  end
  if step < #schedule then return schedule[step + 1], 'warmup' end
  if not growth or not first_day or today - first_day < SPIKE_DAYS then return nil, 'spike' end
  local total = 0
  for i = 1, SPIKE_DAYS do total = total + sent_on(provider, today - i) end
  local average = total / SPIKE_DAYS
  if average <= 0 then return nil, 'spike' end
  return math.max(floor, math.floor(growth * average)), 'spike', math.floor(total / SPIKE_DAYS)
end

-- grant, in the message's order -----------------------------------------------------------
local out = {}
local cap_reason, cap_value, cap_sent, cap_provider = '', 0, 0, ''
local rate_rest, granted_total = 0, 0
local i = 11 + n_checks * 3
while i < #ARGV do
  local provider, n = ARGV[i + 1], tonumber(ARGV[i + 2])
  i = i + 2
  local cap, reason, average = daily_cap(provider)
  local cap_room, sent = UNLIMITED, 0
  if cap then
    sent = sent_on(provider, today) + (in_flight[provider] or 0)
    local mine = 0
    if cap > 0 then mine = math.max(1, math.floor(cap * share)) end
    -- warmup.bulk_share: of the spike guard's cap, bulk keeps at least the 7-day average
    if cap > 0 and reason == 'spike' and share < 1 then
      mine = math.max(mine, math.min(cap, average))
    end
    cap_room = math.max(0, mine - sent)
  end
  local granted = math.min(n, cap_room, room)
  if granted < n then
    if cap_room <= math.min(n, room) then
      if cap_reason == '' then
        cap_reason, cap_value, cap_sent, cap_provider = reason, cap, sent, provider
      end
    else
      rate_rest = rate_rest + n - granted
    end
  end
  room = room - granted
  if granted > 0 then
    redis.call('HINCRBY', P .. ':flight', reservation .. '|' .. provider, granted)
    granted_total = granted_total + granted
  end
  out[#out + 1] = granted
end

-- count the grant: in flight until its outcome, and in the windows ----------------------------
if granted_total > 0 then
  redis.call('ZADD', P .. ':res', fmt(now + lifetime), reservation)
  redis.call('PEXPIRE', P .. ':res', math.ceil((lifetime + DAY) * 1000))
  redis.call('PEXPIRE', P .. ':flight', math.ceil((lifetime + DAY) * 1000))
  for _, c in ipairs(checks) do
    local quantum = c.period / GRANULARITY
    local stamp = fmt(math.ceil(now / quantum) * quantum)
    redis.call('HINCRBY', c.h, stamp, granted_total)
    redis.call('HINCRBY', c.h, 'sum', granted_total)
    redis.call('ZADD', c.z, stamp, stamp)
    c.total = c.total + granted_total
    for _, key in ipairs({c.h, c.z}) do
      redis.call('PEXPIRE', key, math.ceil((c.period * 2 + 1) * 1000))
    end
  end
end

-- when one more fits every rate --------------------------------------------------------------
local rate_until, rate_check = now, 0
if rate_rest > 0 then
  for k, c in ipairs(checks) do
    local wait = now
    if c.total + 1 > c.count then
      local need = c.total + 1 - c.count
      local stamps = redis.call('ZRANGE', c.z, 0, -1)
      for _, stamp in ipairs(stamps) do
        need = need - tonumber(redis.call('HGET', c.h, stamp))
        wait = tonumber(stamp) + c.period
        if need <= 0 then break end
      end
    end
    if rate_check == 0 or wait > rate_until then rate_until, rate_check = wait, k end
  end
end

out[#out + 1] = cap_reason
out[#out + 1] = cap_value or 0
out[#out + 1] = cap_sent
out[#out + 1] = cap_provider
out[#out + 1] = rate_rest
out[#out + 1] = fmt(rate_until)
out[#out + 1] = rate_check
out[#out + 1] = fmt(now)
out[#out + 1] = fmt(epoch)
return out
