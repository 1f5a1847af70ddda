-- One DMARC aggregate report stored (State.record_dmarc_report), atomically, on the keys of
-- the domain it reports on (KEYS[1], "relay:{d:<domain>}"):
--
--   <P>:dmarc        HASH  report key -> the report's JSON
--   <P>:dmarc:end    ZSET  report key, by the end of its period (reads, retention)
--   <P>:dmarc:sum    HASH  report key -> "<aligned>|<failing>" (the metrics read only these)
--
-- A report key is the JSON of [org, report id] (`redis.py`'s _report_key). ARGV: now
-- ("" : Redis TIME), retention (s), report key, period end, "<aligned>|<failing>", body.
-- The domain's reports whose period ended more than the retention ago are forgotten first;
-- the keys expire when the newest report would be forgotten (a retention from now, when its
-- period has ended), so a domain no report comes for leaves nothing. Returns 1 when stored,
-- 0 for a duplicate (nothing changes but the forgetting).

local P = KEYS[1]
local now = script_now(ARGV[1])
local retention = tonumber(ARGV[2])
local key, ends, totals, body = ARGV[3], tonumber(ARGV[4]), ARGV[5], ARGV[6]
local bodies, by_end, sums = P .. ':dmarc', P .. ':dmarc:end', P .. ':dmarc:sum'

for _, old in ipairs(redis.call('ZRANGEBYSCORE', by_end, '-inf', '(' .. fmt(now - retention))) do
  redis.call('HDEL', bodies, old)
  redis.call('HDEL', sums, old)
  redis.call('ZREM', by_end, old)
end
if redis.call('HEXISTS', bodies, key) == 1 then
  return 0
end
redis.call('ZADD', by_end, fmt(ends), key)      -- first: a bad score stores no half report
redis.call('HSET', bodies, key, body)
redis.call('HSET', sums, key, totals)
-- a period said to end far ahead is not believed beyond one more retention
local newest = tonumber(redis.call('ZRANGE', by_end, -1, -1, 'WITHSCORES')[2])
local ttl = math.ceil(math.min(math.max(newest - now, 0), retention) + retention)
for _, name in ipairs({bodies, by_end, sums}) do redis.call('EXPIRE', name, ttl) end
return 1
