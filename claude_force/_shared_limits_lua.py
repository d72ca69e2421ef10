"""The Lua script that keeps the shared token buckets on the Redis server (see
:mod:`claude_force._shared_limits`): all their arithmetic, atomic, on the server's clock."""

from __future__ import annotations

__all__ = ["BUCKETS_LUA", "PREDICTED_REFILL"]

# Between reports the shared level refills at this share of what the learned shares say
# (see the script): a prediction that errs short costs little, one that errs long a 429.
PREDICTED_REFILL = 0.95

# KEYS[1]: the class's hash; KEYS[2]: its ledger of charges (a sorted set by the time each
# leaves, member "seq:r:i:o:t"), so that each `remaining` the service reports is compared
# with what it had been sent when it wrote it.
# ARGV[1]: op, ARGV[2]: TTL in ms, ARGV[3]: recovery seconds.
# take:   ARGV[4]: most seconds to book ahead; then per kind (r, i, o, t): cost, cost to wait
#         for, configured cap (0: none), capacity to create a missing bucket with (0: none).
#         Returns {verdict, wait, kinds charged, levels, ledger entry}: verdict "ok" (charged,
#         sleep wait), "wait" (nothing charged), "probe" (no limit known: send this one
#         uncharged, alone, to learn them) or "unknown" (another process is probing).
# update: ARGV[4]: cooldown seconds; then per kind: delta to add to the level, limit learned
#         (0: none), remaining share reported (-1: none), 1 to slow the refill; ARGV[21]: 1
#         when the probe is over; ARGV[22]: seconds since the answer arrived; ARGV[23]: this
#         process's attempts in flight; ARGV[24]: the attempt's ledger entry ('' none);
#         ARGV[25]: 'count' (the service counted it: the entry takes its corrected costs
#         and real send time) or 'drop' (a 429 or never sent); ARGV[26]: seconds since the
#         attempt left (-1: unknown).
# sent:   ARGV[4]: a ledger entry, ARGV[5]: seconds since its attempt left.
#         Returns levels: per kind, limit, level, refill factor, unseen share.
# Numbers travel as strings: Redis would truncate a Lua number returned to an integer.
BUCKETS_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local key, ledger = KEYS[1], KEYS[2]
local op = ARGV[1]
local ttl = tonumber(ARGV[2])
local recovery = tonumber(ARGV[3])
local kinds = {'r', 'i', 'o', 't'}
local PROBE_S = 30
-- The ledger keeps a minute of charges: older reports are not compared with anything.
-- A charge is entered as leaving UNSENT_S after its booking falls due, which counts it as
-- not yet seen by the service in every report, until its process says when it left (or,
-- should that process die, until then).
local LEDGER_S, UNSENT_S = 60, 30
-- As in _admission: the share of the refill a workload we cannot see takes is learned by an
-- integral controller whose time constant is at least UNSEEN_S, and at least the refill time
-- of UNSEEN_REQUESTS typical requests plus one per attempt in flight.
local UNSEEN_S, UNSEEN_REQUESTS, UNSEEN_BOUND, MAX_UNSEEN = 5.0, 20, 1.0, 0.9
local MIN_REFILL = 0.05
-- A 429 slows the refill by a quarter (recovering over the recovery time), not by half as in
-- one process: the learned share already absorbs a steady unseen workload, and halving the
-- refill for half a minute on one stray 429 costs several percent of the allowance.
local SLOW_429 = 0.75
-- Between reports the level refills at this share of the refill factor: a prediction that
-- errs short costs only the time to the next report (which sets the level), one that errs
-- long sends a request before its tokens are there (a 429, and a retry that doubles its time).
local PREDICT = PREDICTED_REFILL

local function fmt(x) return string.format('%.17g', x) end
local function slowed(b, at) return math.min(1.0, b.sf + (at - b.sa) / recovery) end
local function share(b) return math.min(MAX_UNSEEN, math.max(0.0, b.u)) end
-- The refill speed used for admission, as a share of the limit: what others are seen to
-- leave, slowed for a while after a 429.
local function factor(b, at) return math.max(MIN_REFILL, slowed(b, at) * (1.0 - share(b))) end
local function rate(b, at) return b.cap / 60 * factor(b, at) * PREDICT end

-- A bucket: the admission level (lvl) and, beside it, mb: a model of the service's level
-- less every charge it has not counted yet, refilled at the limit less the unseen share (u)
-- and drained by every take; each report resets it. ty: a request's usual cost.
local function load(k)
  local v = redis.call('HMGET', key, k..'.cap', k..'.lvl', k..'.t', k..'.sf', k..'.sa',
                       k..'.u', k..'.mb', k..'.ty')
  if not v[1] then return nil end
  local b = {cap = tonumber(v[1]), lvl = tonumber(v[2]), t = tonumber(v[3]),
             sf = tonumber(v[4]), sa = tonumber(v[5]), u = tonumber(v[6] or '0'),
             mb = tonumber(v[7] or v[2]), ty = tonumber(v[8] or '0')}
  if now > b.t then
    local speed = (factor(b, b.t) + factor(b, now)) / 2 * PREDICT
    b.lvl = math.min(b.cap, b.lvl + (now - b.t) * b.cap / 60 * speed)
    b.mb = math.min(b.cap, b.mb + (now - b.t) * b.cap / 60 * (1.0 - b.u))
    b.t = now
  end
  return b
end

local function new(cap, lvl)
  local l = math.min(lvl, cap)
  return {cap = cap, lvl = l, t = now, sf = 1, sa = 0, u = 0, mb = l, ty = 0}
end

local function save(k, b)
  redis.call('HSET', key, k..'.cap', fmt(b.cap), k..'.lvl', fmt(b.lvl), k..'.t', fmt(b.t),
             k..'.sf', fmt(b.sf), k..'.sa', fmt(b.sa), k..'.u', fmt(b.u),
             k..'.mb', fmt(b.mb), k..'.ty', fmt(b.ty))
end

local function levels(bs)
  local out = {}
  for _, k in ipairs(kinds) do
    local b = bs[k]
    if b then
      out[#out + 1] = k..':'..fmt(b.cap)..':'..fmt(b.lvl)..':'..fmt(factor(b, now))..':'..
                      fmt(share(b))
    end
  end
  return table.concat(out, ';')
end

-- A ledger entry's costs by kind.
local function parse(member)
  local out, n = {}, 0
  for part in string.gmatch(member, '[^:]+') do
    n = n + 1
    if n > 1 then out[kinds[n - 1]] = tonumber(part) end
  end
  return out
end

-- Per kind, what the entries that left after `since` cost (but `own`): charges the
-- service had not counted when it reported for an attempt that left at `since`.
local function uncounted(since, own)
  local sums = {r = 0, i = 0, o = 0, t = 0}
  for _, member in ipairs(redis.call('ZRANGEBYSCORE', ledger, '('..fmt(since), '+inf')) do
    if member ~= own then
      for k, v in pairs(parse(member)) do sums[k] = sums[k] + v end
    end
  end
  return sums
end

-- The service reported `left` for an attempt that left at `sent` and was answered at
-- `answered`. It had counted every charge that left before `sent` and none after it left
-- ... as far as we can tell: an entry that left while the attempt was on the wire counts
-- as not counted, and the refill only from the answer on, so the estimate errs low by about
-- one service time of traffic, never high. The admission level becomes that estimate, up or
-- down: a level that only went down kept every shortfall (a report read late, a refill
-- slowed too much) until the end of the run. The model's difference to it corrects the
-- unseen share, unless the service's bucket is full (its refill then goes nowhere).
local function sync(b, left, answered, gone, in_flight)
  local r = b.cap / 60
  local filled = math.min(b.cap, left + r * (1.0 - share(b)) * math.max(0, now - answered))
  local est = filled - gone
  if filled < b.cap then
    local horizon = math.max(UNSEEN_S, (UNSEEN_REQUESTS + in_flight) * b.ty / r)
    b.u = math.max(-UNSEEN_BOUND, math.min(UNSEEN_BOUND, b.u + (b.mb - est) / (r * horizon)))
  end
  b.mb, b.lvl = est, est
end

local bs = {}
if op == 'take' then
  local ahead = tonumber(ARGV[4])
  local wait, known, costs = 0, false, {}
  for n, k in ipairs(kinds) do
    local base = 4 + (n - 1) * 4
    local cost, want = tonumber(ARGV[base + 1]), tonumber(ARGV[base + 2])
    local cap, init = tonumber(ARGV[base + 3]), tonumber(ARGV[base + 4])
    local b = load(k)
    if not b and init > 0 then b = new(init, init) end
    if b then
      if cap > 0 and cap < b.cap then b.cap = cap; b.lvl = math.min(b.lvl, cap) end
      known = true
      bs[k] = b
      costs[k] = cost
      local missing = math.min(want, b.cap) - b.lvl
      if missing > 0.000001 then
        wait = math.max(wait, missing / rate(b, now))
      end
    end
  end
  if not known then
    -- One request at a time learns the limits: the level its answer reports then covers
    -- everything the service was sent (several uncharged requests would not be counted).
    if tonumber(redis.call('HGET', key, 'probe') or '0') > now then
      return {'unknown', '0', '', '', ''}
    end
    redis.call('HSET', key, 'probe', fmt(now + PROBE_S))
    redis.call('PEXPIRE', key, ttl)
    return {'probe', '0', '', '', ''}
  end
  if wait > ahead then return {'wait', fmt(wait), '', levels(bs), ''} end
  local charged = ''
  local entry = {tostring(redis.call('HINCRBY', key, 'seq', 1))}
  for _, k in ipairs(kinds) do
    local b = bs[k]
    entry[#entry + 1] = fmt(b and costs[k] or 0)
    if b then
      b.lvl = b.lvl - costs[k]
      b.mb = b.mb - costs[k]
      b.ty = b.ty + 0.1 * (costs[k] - b.ty)
      save(k, b)
      charged = charged..k
    end
  end
  local member = table.concat(entry, ':')
  redis.call('ZREMRANGEBYSCORE', ledger, '-inf', fmt(now - LEDGER_S))
  redis.call('ZADD', ledger, now + wait + UNSENT_S, member)
  redis.call('PEXPIRE', ledger, ttl)
  redis.call('PEXPIRE', key, ttl)
  return {'ok', fmt(wait), charged, levels(bs), member}
elseif op == 'update' then
  local cooldown = tonumber(ARGV[4])
  local answered = now - math.max(0, tonumber(ARGV[22] or '0'))
  local in_flight = tonumber(ARGV[23] or '0')
  local own, action = ARGV[24] or '', ARGV[25] or ''
  local sent_ago = tonumber(ARGV[26] or '-1')
  local sent = answered
  if sent_ago >= 0 then sent = math.min(answered, now - sent_ago) end
  local deltas = {}
  for n, k in ipairs(kinds) do deltas[k] = tonumber(ARGV[4 + (n - 1) * 4 + 1]) end
  if own ~= '' and redis.call('ZSCORE', ledger, own) then
    redis.call('ZREM', ledger, own)
    if action == 'count' then
      -- What the service counted, from when it left: older reports compare with it.
      local entry, costs = {string.match(own, '^[^:]+')}, parse(own)
      for _, k in ipairs(kinds) do entry[#entry + 1] = fmt((costs[k] or 0) - deltas[k]) end
      redis.call('ZADD', ledger, sent, table.concat(entry, ':'))
    end
  end
  local gone = uncounted(sent, own)
  for n, k in ipairs(kinds) do
    local base = 4 + (n - 1) * 4
    local delta, limit = deltas[k], tonumber(ARGV[base + 2])
    local left, slow = tonumber(ARGV[base + 3]), ARGV[base + 4] == '1'
    local b = load(k)
    local created = false
    if limit > 0 then
      if b then b.cap = limit; b.lvl = math.min(b.lvl, limit)
      else b = new(limit, (left >= 0 and left or limit) - gone[k]); created = true end
    end
    if b then
      -- A correction from usage, or what a refused or unsent attempt gives back.
      b.lvl = math.min(b.cap, b.lvl + delta)
      b.mb = math.min(b.cap, b.mb + delta)
      if left >= 0 and not created then sync(b, left, answered, gone[k], in_flight) end
      if slow and now - b.sa >= cooldown then
        b.sf = math.max(0.1, slowed(b, now) * SLOW_429)
        b.sa = now
      end
      save(k, b)
      bs[k] = b
    end
  end
  if ARGV[21] == '1' then redis.call('HDEL', key, 'probe') end
  if next(bs) then redis.call('PEXPIRE', key, ttl) end
  return {'ok', '0', '', levels(bs)}
elseif op == 'sent' then
  -- ARGV[4]: a ledger entry, ARGV[5]: seconds since it left (nothing if already settled).
  redis.call('ZADD', ledger, 'XX', now - math.max(0, tonumber(ARGV[5])), ARGV[4])
  return {'ok', '0', '', ''}
end
return redis.error_reply('unknown op '..tostring(op))
""".replace("PREDICTED_REFILL", repr(PREDICTED_REFILL))
