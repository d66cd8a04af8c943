/*
 * redis_scripts.c - the Lua scripts of the Redis limiters, their SHA1s, and a
 * keyed hash for the lease table.
 *
 * One script per algorithm plus one for groups. Each script is assembled from
 * shared pieces: a prelude (clock, number formatting, TTLs), the algorithm's
 * three functions, and a dispatcher. The algorithm functions never touch
 * Redis in `decide`: state is loaded once, decided on as a Lua table, and
 * stored only when the call changed it. That is what lets the group script
 * evaluate every member against an overlay of pending writes and commit all
 * of them or none.
 *
 * Needs Redis >= 6 (KEEPTTL). Small state (a bucket) is one string value
 * written with SET ... PX: one call stores it and its TTL; window counters
 * are integers, one key per window (INCRBY).
 *
 * Units inside the scripts: time in microseconds (sent by the caller: Redis's
 * clock as the backend learned it, or the override of the tests; '' makes a
 * script call TIME), held in Lua doubles (exact up to 2^53 us, far
 * past any epoch). Fractional state (GCRA's theoretical arrival time, a
 * bucket's tokens) is stored with %.17g so it round-trips exactly; fractional
 * results (retry/reset times) are returned as text for the same reason
 * (Lua numbers would be truncated to integers on the way back).
 *
 * Keys: every key written gets a PEXPIRE covering exactly the time after
 * which its state equals "no state" (plus 1 ms); state that already equals
 * "no state" is deleted instead. The seconds-old partial state a crash could
 * leave behind therefore always expires.
 *
 * The decision is returned as one string (one reply object to build and
 * parse instead of an array of six: measurably cheaper on both sides):
 *   "allowed limit remaining retry_after_us reset_after_us granted"
 * the two times with %.17g (fractional, never truncated), retry_after_us -1
 * for never; granted is the number of permits taken (n, or up to the lease
 * batch). The group script returns {denied_by, decision string x m}.
 */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#include "prs_redis_internal.h"

/* ---- Lua ----------------------------------------------------------------- */

/* Lazy expiry for the bucket keys (GCRA, token bucket). Setting a TTL costs
 * the server more than the rest of such a decision, so a bucket's key does
 * not expire exactly when its state runs out (at `ideal`, in us on the
 * caller's clock) but at the end of the slack-long step holding ideal + 1 ms:
 * expiry(ideal, S) = (floor((ideal + 1000) / S) + 1) * S, S = slack(full),
 * a whole number of ms between 1 ms and 1 s (1/16 of the time a full bucket
 * needs to refill, clamped). The expiry is a function of the stored state,
 * so a write whose state maps to the same step as the state it replaces
 * keeps the TTL (SET ... KEEPTTL: the cheap write); any other write sets it
 * (SET ... PX). A key therefore lives at least until its state equals "no
 * state" plus 1 ms and at most S + 1 ms (<= 1.001 s) past that. */
#define LUA_EXPIRY_FNS                                                                   \
    "local function slack(full)\n"                                                      \
    "  local S = floor(full / 16000) * 1000\n"                                          \
    "  if S < 1000 then return 1000 elseif S > 1000000 then return 1000000 end\n"       \
    "  return S\n"                                                                      \
    "end\n"                                                                             \
    "local function expiry(ideal, S) return (floor((ideal + 1000) / S) + 1) * S end\n"   \
    "local function bucket_set(k, v, old, ideal, S, now)\n"                            \
    "  local e = expiry(ideal, S)\n"                                                    \
    "  if old and expiry(old, S) == e then redis.call('SET', k, v, 'KEEPTTL')\n"        \
    "  else redis.call('SET', k, v, 'PX', math.ceil((e - now) / 1000)) end\n"          \
    "end\n"

#define LUA_PRELUDE                                                                      \
    "local NEVER = -1\n"                                                                 \
    "local EPS = 1e-9\n"                                                                 \
    "local floor = math.floor\n"                                                         \
    "local function fmt(x) return string.format('%.17g', x) end\n"                       \
    "local function clock(ov)\n"                                                         \
    "  if ov ~= '' then return tonumber(ov) end\n"                                       \
    "  local t = redis.call('TIME')\n"                                                   \
    "  return tonumber(t[1]) * 1000000 + tonumber(t[2])\n"                               \
    "end\n"                                                                              \
    "local function ms(us)\n"                                                            \
    "  local m = math.ceil(us / 1000) + 1\n"                                             \
    "  if m < 1 then m = 1 end\n"                                                        \
    "  return m\n"                                                                       \
    "end\n"                                                                              \
    "local function nonneg(x) if x < 0 then return 0 end return x end\n"                 \
    "local OLD = {}\n"                                                                   \
    LUA_EXPIRY_FNS                                                                       \
    "local function lease_take(n, mode, want, left)\n"                                   \
    "  if mode ~= 'l' then return n end\n"                                               \
    "  if want < left then left = want end\n"                                            \
    "  if left > n then return left end\n"                                               \
    "  return n\n"                                                                       \
    "end\n"

/* GCRA: state {tat} in us; T = emission interval (us), burst. Capacity left
 * at now, in permits: burst - (tat - now)/T. The token bucket is the same
 * state (tat = the time its bucket is full again, T = 1/rate, burst =
 * capacity: tokens at now = burst - (tat - now)/T), so both algorithms run
 * this code; LUA_OLD_TB reads a token bucket key written before that change
 * ("tokens last", see there). */
/* A token bucket key written by an earlier version holds "tokens last" (two
 * %.17g numbers, tonumber() of the whole gives nil): its tat is the time that
 * bucket would be full, last + (burst - tokens) * T. Needs v, T, burst. */
#define LUA_OLD_TB(tat)                                                                  \
    "if v and not " tat " then\n"                                                        \
    "  local x, y = string.match(v, '^(%S+) (%S+)$')\n"                                  \
    "  x, y = tonumber(x), tonumber(y)\n"                                                \
    "  if x and y then " tat " = y + (burst - x) * T end\n"                              \
    "end\n"

/* A bucket's tat stored in quarter microseconds (an integer in [2^52,
 * 2^53): the check script's INCRBY form for a T that is not a whole number
 * of microseconds, see LUA_BUCKET_QUARTER_BODY) read as microseconds; no
 * microsecond time is that large (2^52 us is the year 2112). */
#define LUA_QUARTERS(tat)                                                                \
    "if " tat " and " tat " >= 4503599627370496 then " tat " = " tat " / 4 end\n"

#define LUA_GCRA                                                                         \
    "local GCRA = {nkeys = 1}\n"                                                         \
    "function GCRA.load(k, T, burst, now)\n"                                             \
    "  local v = redis.call('GET', k[1])\n"                                              \
    "  local tat = tonumber(v)\n"                                                        \
    LUA_QUARTERS("tat")                                                                  \
    LUA_OLD_TB("tat")                                                                    \
    "  OLD[k[1]] = tat\n"                                                                \
    "  return {tat = tat}\n"                                                             \
    "end\n"                                                                              \
    "function GCRA.decide(st, n, mode, want, give, T, burst, now)\n"                     \
    "  local tat = st.tat\n"                                                             \
    "  if tat == nil or tat < now then tat = now end\n"                                  \
    "  local dirty = false\n"                                                            \
    "  if give > 0 then tat = math.max(now, tat - give * T); dirty = true end\n"         \
    "  local fits = burst - (tat - now) / T\n"                                           \
    "  local left = nonneg(floor(fits + EPS))\n"                                         \
    "  if n > burst then return {0, burst, left, NEVER, tat - now, 0}, {tat = tat}, dirty end\n" \
    "  local take = lease_take(n, mode, want, left)\n"                                   \
    "  if take > fits + EPS then\n"                                                      \
    "    return {0, burst, left, nonneg((n - fits) * T), tat - now, 0}, {tat = tat}, dirty\n" \
    "  end\n"                                                                            \
    "  if mode == 'p' then return {1, burst, nonneg(floor(fits - n + EPS)), 0, tat - now, 0}, st, false end\n" \
    "  local nxt = tat + take * T\n"                                                     \
    "  return {1, burst, nonneg(floor(fits - take + EPS)), 0, nxt - now, take}, {tat = nxt}, true\n" \
    "end\n"                                                                              \
    "function GCRA.store(k, st, T, burst, now)\n"                                        \
    "  local ahead = st.tat - now\n"                                                     \
    "  if ahead <= 0 then redis.call('DEL', k[1])\n"                                     \
    "  else bucket_set(k[1], st.tat, OLD[k[1]], st.tat, slack(burst * T), now) end\n"    \
    "end\n"

/* Fixed window: one key per window (the caller names it), holding the count
 * as a 53-bit field that starts at 2^52 - 1 - limit (see redis_limiter.c:
 * the single decision is a BITFIELD increment that fails past the limit, no
 * script). The state here is {w = the window, c = count, new = no key yet}. */
#define LUA_FIXED_WINDOW                                                                 \
    "local FW = {nkeys = 1}\n"                                                           \
    "local FW_TOP = 4503599627370495\n"                                                  \
    "function FW.load(k, limit, W, now)\n"                                               \
    "  local st = {w = floor(now / W), c = 0, new = true}\n"                             \
    "  if redis.call('EXISTS', k[1]) == 1 then\n"                                        \
    "    st.c = redis.call('BITFIELD', k[1], 'GET', 'i53', 0)[1] - (FW_TOP - limit)\n"   \
    "    st.new = false\n"                                                               \
    "  end\n"                                                                            \
    "  return st\n"                                                                      \
    "end\n"                                                                              \
    "function FW.decide(st, n, mode, want, give, limit, W, now)\n"                       \
    "  local idx = floor(now / W)\n"                                                     \
    "  local c = 0\n"                                                                    \
    "  if st.w == idx and st.c then c = st.c end\n"                                      \
    "  local wend = (idx + 1) * W - now\n"                                               \
    "  local reset = 0\n"                                                                \
    "  if c > 0 then reset = wend end\n"                                                 \
    "  if n > limit then return {0, limit, nonneg(limit - c), NEVER, reset, 0}, st, false end\n" \
    "  if c + n > limit then return {0, limit, nonneg(limit - c), wend, reset, 0}, st, false end\n" \
    "  if mode == 'p' then return {1, limit, limit - c - n, 0, reset, 0}, st, false end\n" \
    "  return {1, limit, limit - c - n, 0, wend, n}, {w = idx, c = c + n, new = st.new}, true\n" \
    "end\n"                                                                              \
    "function FW.store(k, st, limit, W, now)\n"                                          \
    "  redis.call('BITFIELD', k[1], 'SET', 'i53', 0, FW_TOP - limit + st.c)\n"           \
    "  if st.new then redis.call('PEXPIRE', k[1], ms((st.w + 1) * W - now)) end\n"       \
    "end\n"

/* Sliding window counter: one integer counter per window, k[1] this
 * window's and k[2] the one before (the caller names them); state {w, c =
 * count in window w, p = count in w-1}; estimate = p * (W - elapsed) / W + c.
 * A counter lives until the end of the window after its own (it is the
 * previous one there). */
#define LUA_SLIDING_WINDOW_COUNTER                                                       \
    "local SWC = {nkeys = 2}\n"                                                          \
    "function SWC.load(k, limit, W, now)\n"                                              \
    "  return {w = floor(now / W), c = tonumber(redis.call('GET', k[1])) or 0,\n"        \
    "          p = tonumber(redis.call('GET', k[2])) or 0}\n"                            \
    "end\n"                                                                              \
    "function SWC.decide(st, n, mode, want, give, limit, W, now)\n"                      \
    "  local idx = floor(now / W)\n"                                                     \
    "  local s = idx * W\n"                                                              \
    "  local cur, prev = 0, 0\n"                                                         \
    "  if st.w == idx then cur = st.c or 0; prev = st.p or 0\n"                          \
    "  elseif st.w == idx - 1 then prev = st.c or 0 end\n"                               \
    "  local est = prev * (W - (now - s)) / W + cur\n"                                   \
    "  local function reset_of(c, p)\n"                                                  \
    "    if c > 0 then return s + 2 * W - now elseif p > 0 then return s + W - now end\n" \
    "    return 0\n"                                                                     \
    "  end\n"                                                                            \
    "  local function rem(x) return nonneg(floor(limit - x + EPS)) end\n"                \
    "  local nst = {w = idx, c = cur, p = prev}\n"                                       \
    "  if n > limit then return {0, limit, rem(est), NEVER, reset_of(cur, prev), 0}, nst, false end\n" \
    "  if est + n > limit + EPS then\n"                                                  \
    "    local retry\n"                                                                  \
    "    if cur + n <= limit then retry = s + W * (1 - (limit - n - cur) / prev) - now\n" \
    "    else retry = s + W + W * (1 - (limit - n) / cur) - now end\n"                    \
    "    return {0, limit, rem(est), nonneg(retry), reset_of(cur, prev), 0}, nst, false\n" \
    "  end\n"                                                                            \
    "  if mode == 'p' then return {1, limit, rem(est + n), 0, reset_of(cur, prev), 0}, nst, false end\n" \
    "  return {1, limit, rem(est + n), 0, reset_of(cur + n, prev), n}, {w = idx, c = cur + n, p = prev}, true\n" \
    "end\n"                                                                              \
    "function SWC.store(k, st, limit, W, now)\n"                                         \
    "  redis.call('SET', k[1], st.c, 'PX', ms((st.w + 2) * W - now))\n"                  \
    "end\n"

/* Adds n entries at time t (a string: the score, and the stem of the
 * names) to the log k whose live count is base: names "t:<base+1>" ...
 * "t:<base+n>". Entries of one time are only ever removed together, so with
 * a clock that only moves forward the names are new; after a clock that
 * went back they may not be (ZADD then counts fewer new members), and the
 * missing ones are added under the next free numbers. Sets `added`. */
#define LUA_LOG_ADD_MANY(k, t, base, n)                                                                \
    "local args = {}\n"                                                                                \
    "for i = " base " + 1, " base " + " n " do\n"                                                      \
    "  args[#args + 1] = " t "; args[#args + 1] = " t " .. ':' .. i\n"                                 \
    "  if #args >= 1000 then added = added + redis.call('ZADD', " k ", unpack(args)); args = {} end\n" \
    "end\n"                                                                                            \
    "if #args > 0 then added = added + redis.call('ZADD', " k ", unpack(args)) end\n"

#define LUA_LOG_ADD_FIX(k, t, base, n)                                                                            \
    "local j = " base " + " n "\n"                                                                                \
    "while added < " n " do j = j + 1; added = added + redis.call('ZADD', " k ", " t ", " t " .. ':' .. j) end\n"

/* Sliding window log: k[1] a sorted set of admission times, one member per
 * permit; an entry at t counts while now - t < W. Members are named as
 * LUA_LOG_ADD_MANY says. Loading drops expired entries (a harmless write). */
#define LUA_SLIDING_WINDOW_LOG                                                           \
    "local LOG = {nkeys = 1}\n"                                                          \
    "function LOG.load(k, limit, W, now)\n"                                              \
    "  redis.call('ZREMRANGEBYSCORE', k[1], '-inf', fmt(now - W))\n"                     \
    "  return {n = redis.call('ZCARD', k[1]), add = 0, k = k}\n"                         \
    "end\n"                                                                              \
    "function LOG.decide(st, n, mode, want, give, limit, W, now)\n"                      \
    "  local cnt = st.n + st.add\n"                                                      \
    "  local function reset_of(adding)\n"                                                \
    "    if st.add > 0 or adding then return W end\n"                                    \
    "    if st.n == 0 then return 0 end\n"                                               \
    "    local r = redis.call('ZRANGE', st.k[1], -1, -1, 'WITHSCORES')\n"                \
    "    return nonneg(tonumber(r[2]) + W - now)\n"                                      \
    "  end\n"                                                                            \
    "  if n > limit then return {0, limit, nonneg(limit - cnt), NEVER, reset_of(false), 0}, st, false end\n" \
    "  if cnt + n > limit then\n"                                                        \
    "    local j = cnt + n - limit\n"                                                    \
    "    local retry = W\n"                                                              \
    "    if j <= st.n then\n"                                                            \
    "      local r = redis.call('ZRANGE', st.k[1], j - 1, j - 1, 'WITHSCORES')\n"        \
    "      retry = nonneg(tonumber(r[2]) + W - now)\n"                                   \
    "    end\n"                                                                          \
    "    return {0, limit, nonneg(limit - cnt), retry, reset_of(false), 0}, st, false\n" \
    "  end\n"                                                                            \
    "  if mode == 'p' then return {1, limit, limit - cnt - n, 0, reset_of(false), 0}, st, false end\n" \
    "  st.add = st.add + n\n"                                                            \
    "  return {1, limit, limit - cnt - n, 0, W, n}, st, true\n"                          \
    "end\n"                                                                              \
    "function LOG.store(k, st, limit, W, now)\n"                                         \
    "  if st.add <= 0 then return end\n"                                                 \
    "  local t, kk, added = fmt(now), k[1], 0\n"                                         \
    LUA_LOG_ADD_MANY("kk", "t", "st.n", "st.add")                                        \
    LUA_LOG_ADD_FIX("kk", "t", "st.n", "st.add")                                         \
    "  redis.call('PEXPIRE', kk, ms(W))\n"                                               \
    "  st.add = 0\n"                                                                     \
    "end\n"

#define LUA_ENCODE                                                                       \
    "local function encode(r)\n"                                                         \
    "  return string.format('%d %d %d %.17g %.17g %d', r[1], r[2], r[3], r[4], r[5], r[6])\n" \
    "end\n"

/* ---- the single-decision scripts ----------------------------------------
 *
 * One per algorithm, written straight through: no function or table is made
 * per call (a closure costs about as much as a redis.call), numbers go to
 * redis.call as numbers (Redis formats them with %.17g: exact), the caller
 * supplies the time (no TIME call), and a write whose TTL would not change
 * keeps it (KEEPTTL: SET ... PX is rewritten for propagation on every call).
 * They decide exactly as the algorithm functions above (the group script's),
 * on the same stored state.
 *
 * KEYS[1]: the key. ARGV: now (us; '' = Redis's TIME), mode ('c' check, 'p'
 * peek, 'l' lease), n, want (lease batch), give (permits given back), p1, p2.
 * Returns the decision string (see the top of the file). */
#define LUA_ARGS                                                                         \
    "local now, mode = ARGV[1], ARGV[2]\n"                                               \
    "if now == '' then local t = redis.call('TIME'); now = t[1] * 1000000 + t[2]\n"      \
    "else now = tonumber(now) end\n"                                                     \
    "local n, want, give = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])\n"    \
    "local k = KEYS[1]\n"                                                                \
    "local floor = math.floor\n"

/* take = n, or in lease mode min(want, left) when that is more */
#define LUA_TAKE(left)                                                                   \
    "  take = n\n"                                                                       \
    "  if mode == 'l' then local w = want; if w > " left " then w = " left " end\n"      \
    "    if w > n then take = w end end\n"

/* bucket_set of LUA_EXPIRY_FNS, inlined (no closure per call) */
#define LUA_BUCKET_SET(full, value, old, ideal)                                          \
    "    local S = floor((" full ") / 16000) * 1000\n"                                   \
    "    if S < 1000 then S = 1000 elseif S > 1000000 then S = 1000000 end\n"            \
    "    local e = (floor((" ideal " + 1000) / S) + 1) * S\n"                            \
    "    if " old " and (floor((" old " + 1000) / S) + 1) * S == e then\n"               \
    "      redis.call('SET', k, " value ", 'KEEPTTL')\n"                                 \
    "    else redis.call('SET', k, " value ", 'PX', math.ceil((e - now) / 1000)) end\n"

#define LUA_RETURN(limit)                                                                \
    "return string.format('%d %d %d %.17g %.17g %d', a, " limit ", rem, retry, reset, take)\n"

static const char script_gcra[] =
    LUA_ARGS
    "local T, burst = tonumber(ARGV[6]), tonumber(ARGV[7])\n"
    "local v = redis.call('GET', k)\n"
    "local old = tonumber(v)\n"
    LUA_QUARTERS("old")
    LUA_OLD_TB("old")
    "local tat = old\n"
    "if tat == nil or tat < now then tat = now end\n"
    "local dirty = false\n"
    "if give > 0 then tat = math.max(now, tat - give * T); dirty = true end\n"
    "local fits = burst - (tat - now) / T\n"
    "local left = floor(fits + 1e-9)\n"
    "if left < 0 then left = 0 end\n"
    "local a, rem, retry, reset, take = 0, left, 0, tat - now, 0\n"
    "if n > burst then retry = -1\n"
    "else\n"
    LUA_TAKE("left")
    "  if take > fits + 1e-9 then\n"
    "    take = 0; retry = (n - fits) * T\n"
    "    if retry < 0 then retry = 0 end\n"
    "  elseif mode == 'p' then\n"
    "    a = 1; take = 0; rem = floor(fits - n + 1e-9)\n"
    "    if rem < 0 then rem = 0 end\n"
    "  else\n"
    "    a = 1; tat = tat + take * T; reset = tat - now; dirty = true\n"
    "    rem = floor(fits - take + 1e-9)\n"
    "    if rem < 0 then rem = 0 end\n"
    "  end\n"
    "end\n"
    "if dirty and mode ~= 'p' then\n"
    "  local ahead = tat - now\n"
    "  if ahead <= 0 then redis.call('DEL', k)\n"
    "  else\n"
    LUA_BUCKET_SET("burst * T", "tat", "old", "tat")
    "  end\n"
    "end\n"
    LUA_RETURN("burst");

/* The fixed window's single decision needs no script (redis_limiter.c); its
 * slot holds the empty script. */
static const char script_fw[] = "return 0";

/* Sliding window counter: this window's counter is incremented first
 * (INCRBY: no read-modify-write of a string) and put back when the estimate
 * refuses; a new counter gets its TTL, a refused new one is deleted. */
static const char script_swc[] =
    LUA_ARGS
    "local limit, W = tonumber(ARGV[6]), tonumber(ARGV[7])\n"
    "local idx = floor(now / W)\n"
    "local s = idx * W\n"
    "local prev = tonumber(redis.call('GET', KEYS[2])) or 0\n"
    "local cur, added = 0, false\n"
    "if mode ~= 'p' and n <= limit then cur = redis.call('INCRBY', k, n) - n; added = true\n"
    "else cur = tonumber(redis.call('GET', k)) or 0 end\n"
    "local est = prev * (W - (now - s)) / W + cur\n"
    "local reset = 0\n"
    "if cur > 0 then reset = s + 2 * W - now elseif prev > 0 then reset = s + W - now end\n"
    "local a, rem, retry, take = 0, floor(limit - est + 1e-9), 0, 0\n"
    "if n > limit then retry = -1\n"
    "elseif est + n > limit + 1e-9 then\n"
    "  if cur + n <= limit then retry = s + W * (1 - (limit - n - cur) / prev) - now\n"
    "  else retry = s + W + W * (1 - (limit - n) / cur) - now end\n"
    "  if retry < 0 then retry = 0 end\n"
    "  if added then\n"
    "    if cur == 0 then redis.call('DEL', k) else redis.call('DECRBY', k, n) end\n"
    "  end\n"
    "else\n"
    "  a = 1; rem = floor(limit - est - n + 1e-9)\n"
    "  if added then\n"
    "    take = n; reset = s + 2 * W - now\n"
    "    if cur == 0 then redis.call('PEXPIRE', k, math.ceil(((idx + 2) * W - now) / 1000) + 1) end\n"
    "  end\n"
    "end\n"
    "if rem < 0 then rem = 0 end\n"
    LUA_RETURN("limit");

/* Sliding window log: see LOG above (the same entries and names). */
static const char script_log[] =
    LUA_ARGS
    "local limit, W = tonumber(ARGV[6]), tonumber(ARGV[7])\n"
    "redis.call('ZREMRANGEBYSCORE', k, '-inf', now - W)\n"
    "local cnt = redis.call('ZCARD', k)\n"
    "local a, rem, retry, reset, take = 0, limit - cnt, 0, -2, 0\n"
    "if rem < 0 then rem = 0 end\n"
    "if n > limit then retry = -1\n"
    "elseif cnt + n > limit then\n"
    "  local j = cnt + n - limit\n"
    "  retry = W\n"
    "  if j <= cnt then\n"
    "    retry = redis.call('ZRANGE', k, j - 1, j - 1, 'WITHSCORES')[2] + W - now\n"
    "    if retry < 0 then retry = 0 end\n"
    "  end\n"
    "elseif mode == 'p' then a = 1; rem = limit - cnt - n\n"
    "else\n"
    "  a = 1; rem = limit - cnt - n; reset = W; take = n\n"
    "  local t, added = string.format('%.17g', now), 0\n"
    LUA_LOG_ADD_MANY("k", "t", "cnt", "n")
    LUA_LOG_ADD_FIX("k", "t", "cnt", "n")
    "  redis.call('PEXPIRE', k, math.ceil(W / 1000) + 1)\n"
    "end\n"
    "if reset == -2 then\n"
    "  reset = 0\n"
    "  if cnt > 0 then\n"
    "    reset = redis.call('ZRANGE', k, -1, -1, 'WITHSCORES')[2] + W - now\n"
    "    if reset < 0 then reset = 0 end\n"
    "  end\n"
    "end\n"
    LUA_RETURN("limit");

/* ---- the check scripts ----------------------------------------------------
 *
 * A plain check (no peek, lease or give-back) of the bucket algorithms and
 * of the sliding log runs one of these: fewer arguments, and an admitted
 * decision answered with one integer (no reply string to format: the
 * caller derives the rest of the decision from its parameters). Every other
 * outcome is the decision string of the scripts above, and every decision is
 * the one those scripts make on the same state. Their arguments are read
 * with `+ 0` (the caller sends decimal numbers): cheaper than tonumber, a
 * global of the scripts' guarded environment.
 *
 * Each limiter runs its own copy, specialised with its parameters as Lua
 * constants (prs_redis__check_script: ARGV carries only the time and n, and
 * the script computes nothing from its configuration per call); a generic
 * copy that reads them from ARGV serves when the table of specialised
 * scripts is full. Redis's script cache holds one script per configuration
 * in use.
 *
 * Bucket (GCRA, token bucket): KEYS[1]; ARGV now (us), n[, T, burst]. An
 * admitted check answers q = 4 * reset_after_us (the state's new tat - now:
 * a whole number of quarter microseconds whenever now >= 2^50 us, i.e. on
 * any real clock since 2005) when that is exact and the caller's
 * remaining, floor(burst - (q / 4) / T + 1e-9), is the script's; the
 * decision string otherwise. The new tat is written as "<whole>[.25|.5|.75]"
 * when it is such a number (a cheap %d instead of %.17g; tonumber reads both
 * forms to the same double). */
/* The bucket check after its head has set now, n, T, burst and S (the
 * expiry step of LUA_EXPIRY_FNS for burst * T). */
#define LUA_BUCKET_CHECK_BODY LUA_BUCKET_CHECK_BODY_Q("false")
/* ... writing a tat in [2^50, 2^51) us in quarter microseconds when
 * `quarters` (Lua text: true or false) */
#define LUA_BUCKET_CHECK_BODY_Q(quarters)                                                \
    "local floor = math.floor\n"                                                         \
    "local k = KEYS[1]\n"                                                                \
    "local v = redis.call('GET', k)\n"                                                   \
    "local old = tonumber(v)\n"                                                          \
    LUA_QUARTERS("old")                                                                  \
    LUA_OLD_TB("old")                                                                    \
    "local tat = old\n"                                                                  \
    "if tat == nil or tat < now then tat = now end\n"                                    \
    "local fits = burst - (tat - now) / T\n"                                             \
    "if n > burst or n > fits + 1e-9 then\n"                                             \
    "  local left = floor(fits + 1e-9)\n"                                                \
    "  if left < 0 then left = 0 end\n"                                                  \
    "  local retry = -1\n"                                                               \
    "  if n <= burst then retry = (n - fits) * T; if retry < 0 then retry = 0 end end\n" \
    "  return string.format('%d %d %d %.17g %.17g %d', 0, burst, left, retry, tat - now, 0)\n" \
    "end\n"                                                                              \
    "local rem = floor(fits - n + 1e-9)\n"                                               \
    "if rem < 0 then rem = 0 end\n"                                                      \
    "tat = tat + n * T\n"                                                                \
    "local reset = tat - now\n"                                                          \
    "if reset <= 0 then redis.call('DEL', k)\n"                                          \
    "else\n"                                                                             \
    "  local w = floor(tat)\n"                                                           \
    "  local f, s = tat - w\n"                                                           \
    "  if " quarters " and tat >= 1125899906842624 and tat < 2251799813685248 then\n"      \
    "    s = string.format('%d', tat * 4)\n"                                              \
    "  elseif tat < 0 then s = string.format('%.17g', tat)\n"                            \
    "  elseif f == 0 then s = string.format('%d', w)\n"                                  \
    "  elseif f == 0.5 then s = string.format('%d.5', w)\n"                              \
    "  elseif f == 0.25 then s = string.format('%d.25', w)\n"                            \
    "  elseif f == 0.75 then s = string.format('%d.75', w)\n"                            \
    "  else s = string.format('%.17g', tat) end\n"                                       \
    "  local e = (floor((tat + 1000) / S) + 1) * S\n"                                    \
    "  if old and (floor((old + 1000) / S) + 1) * S == e then\n"                         \
    "    redis.call('SET', k, s, 'KEEPTTL')\n"                                           \
    "  else redis.call('SET', k, s, 'PX', math.ceil((e - now) / 1000)) end\n"            \
    "end\n"                                                                              \
    "local q = reset * 4\n"                                                              \
    "if q == floor(q) and q >= 0 and q < 1125899906842624 then\n"                        \
    "  local r2 = floor(burst - reset / T + 1e-9)\n"                                     \
    "  if r2 < 0 then r2 = 0 end\n"                                                      \
    "  if r2 == rem then return q end\n"                                                 \
    "end\n"                                                                              \
    "return string.format('%d %d %d %.17g %.17g %d', 1, burst, rem, 0, reset, n)\n"

/* The INCRBY bodies' decision on tat, their state before this check: a
 * denial takes the increment (the Lua expression `undo`) back, or deletes a
 * state the INCRBY created (old nil), and returns it; else rem, the permits
 * left after n. Needs T, burst, now, n, k, floor, old. */
#define LUA_BUCKET_INCR_DECIDE(undo)                                                     \
    "  if tat < now then tat = now end\n"                                                \
    "  local fits = burst - (tat - now) / T\n"                                           \
    "  if n > burst or n > fits + 1e-9 then\n"                                           \
    "    if old then redis.call('DECRBY', k, " undo ") else redis.call('DEL', k) end\n" \
    "    local left = floor(fits + 1e-9)\n"                                              \
    "    if left < 0 then left = 0 end\n"                                                \
    "    local retry = -1\n"                                                             \
    "    if n <= burst then retry = (n - fits) * T; if retry < 0 then retry = 0 end end\n" \
    "    return string.format('%d %d %d %.17g %.17g %d', 0, burst, left, retry, tat - now, 0)\n" \
    "  end\n"                                                                            \
    "  local rem = floor(fits - n + 1e-9)\n"                                             \
    "  if rem < 0 then rem = 0 end\n"

/* The bucket check when T is a whole number of microseconds (and burst * T
 * < 2^52): every tat is then an integer, stored as one, and a busy bucket's
 * admitted check is one INCRBY of n * T (ARGV[3], the caller's decimal: no
 * read, no number to format, the TTL kept) checked afterwards: a denial
 * takes it back (DECRBY), a spent or absent state (tat < now) is written as
 * now + n * T, and a value INCRBY refuses (a fractional tat or an old token
 * bucket value) goes to LUA_BUCKET_CHECK_BODY. The same decisions as that
 * body. Needs T, burst, S, now, n. */
#define LUA_BUCKET_INCR_BODY                                                             \
    "local r = redis.pcall('INCRBY', KEYS[1], ARGV[3])\n"                               \
    "if type(r) == 'number' then\n"                                                      \
    "  local k, floor = KEYS[1], math.floor\n"                                           \
    "  local inc = n * T\n"                                                              \
    "  local tat, old = r - inc, nil\n"                                                  \
    "  if r ~= inc then old = tat end\n"                                                 \
    LUA_BUCKET_INCR_DECIDE("ARGV[3]")                                                    \
    "  local nxt = tat + inc\n"                                                          \
    "  local e = (floor((nxt + 1000) / S) + 1) * S\n"                                    \
    "  local same = old and (floor((old + 1000) / S) + 1) * S == e\n"                    \
    "  if nxt <= now then redis.call('DEL', k)\n"                                        \
    "  elseif nxt ~= r then\n"                                                           \
    "    if same then redis.call('SET', k, string.format('%d', nxt), 'KEEPTTL')\n"       \
    "    else redis.call('SET', k, string.format('%d', nxt), 'PX', math.ceil((e - now) / 1000)) end\n" \
    "  elseif not same then redis.call('PEXPIRE', k, math.ceil((e - now) / 1000)) end\n" \
    "  local reset = nxt - now\n"                                                        \
    "  local q = reset * 4\n"                                                            \
    "  if q < 1125899906842624 then\n"                                                   \
    "    local r2 = floor(burst - reset / T + 1e-9)\n"                                   \
    "    if r2 < 0 then r2 = 0 end\n"                                                    \
    "    if r2 == rem then return q end\n"                                               \
    "  end\n"                                                                            \
    "  return string.format('%d %d %d %.17g %.17g %d', 1, burst, rem, 0, reset, n)\n"   \
    "else\n"                                                                             \
    LUA_BUCKET_CHECK_BODY                                                                \
    "end\n"

/* The bucket check when T is not a whole number of microseconds. On a real
 * clock (2^50 <= now < 2^51 us, 2005 to 2041) every double is a whole number
 * of quarter microseconds, so the state the other scripts keep (tat, a
 * double) is one too: this script stores a tat in [2^50, 2^51) us as the
 * integer tat * 4, in [2^52, 2^53) (exact in a Lua number; every reader
 * tells it from microseconds by its size, LUA_QUARTERS), and the caller
 * sends ARGV[3] = q, n * T in quarters rounded to a whole number (only
 * when now is in that range and n <= burst). A busy bucket's admitted check
 * is then one INCRBY of q (no read, no number to format, the TTL kept)
 * checked afterwards: tat = (r - q) / 4 exactly, the decision is the one
 * LUA_BUCKET_CHECK_BODY makes on that tat in the same doubles, and the new
 * state is that body's tat + n * T, which is tat + q / 4 except at a
 * rounding tie: written with SET when it differs (a tie, a spent or absent
 * state, a tat at or past 2^51 us: then in microseconds). A denial takes
 * the increment back (DECRBY). A value not in quarters (microseconds from
 * the other scripts: taken back first; a fraction or an old token bucket
 * value: INCRBY refuses) or no ARGV[3] goes to the GET + SET body, which
 * writes quarters too. Needs T, burst, S, now, n. */
#define LUA_BUCKET_QUARTER_BODY                                                          \
    "local q = ARGV[3]\n"                                                                \
    "local r = q and redis.pcall('INCRBY', KEYS[1], q)\n"                               \
    "local old\n"                                                                        \
    "if type(r) == 'number' then\n"                                                      \
    "  local b = r - q\n"                                                                \
    "  if b ~= 0 then\n"                                                                 \
    "    if b < 4503599627370496 or r >= 9007199254740992 then\n"                        \
    "      redis.call('DECRBY', KEYS[1], q); r = nil\n"                                  \
    "    else old = b / 4 end\n"                                                         \
    "  end\n"                                                                            \
    "else r = nil end\n"                                                                 \
    "if r then\n"                                                                        \
    "  local k, floor = KEYS[1], math.floor\n"                                           \
    "  local tat = old or 0\n"                                                           \
    LUA_BUCKET_INCR_DECIDE("q")                                                          \
    "  local nxt = tat + n * T\n"                                                        \
    "  local e = (floor((nxt + 1000) / S) + 1) * S\n"                                    \
    "  local same = old and (floor((old + 1000) / S) + 1) * S == e\n"                    \
    "  if nxt <= now then redis.call('DEL', k)\n"                                        \
    "  elseif nxt * 4 ~= r then\n"                                                       \
    "    local s\n"                                                                      \
    "    if nxt < 2251799813685248 then s = string.format('%d', nxt * 4)\n"              \
    "    else s = string.format('%.17g', nxt) end\n"                                     \
    "    if same then redis.call('SET', k, s, 'KEEPTTL')\n"                              \
    "    else redis.call('SET', k, s, 'PX', math.ceil((e - now) / 1000)) end\n"          \
    "  elseif not same then redis.call('PEXPIRE', k, math.ceil((e - now) / 1000)) end\n" \
    "  local reset = nxt - now\n"                                                        \
    "  local q4 = reset * 4\n"                                                           \
    "  if q4 == floor(q4) and q4 >= 0 and q4 < 1125899906842624 then\n"                  \
    "    local r2 = floor(burst - reset / T + 1e-9)\n"                                   \
    "    if r2 < 0 then r2 = 0 end\n"                                                    \
    "    if r2 == rem then return q4 end\n"                                              \
    "  end\n"                                                                            \
    "  return string.format('%d %d %d %.17g %.17g %d', 1, burst, rem, 0, reset, n)\n"   \
    "else\n"                                                                             \
    LUA_BUCKET_CHECK_BODY_Q("true")                                                      \
    "end\n"

/* The generic one: ARGV now, n, T, burst. */
static const char script_bucket_check[] =
    "local now, n, T, burst = ARGV[1] + 0, ARGV[2] + 0, ARGV[3] + 0, ARGV[4] + 0\n"
    "local S = math.floor((burst * T) / 16000) * 1000\n"
    "if S < 1000 then S = 1000 elseif S > 1000000 then S = 1000000 end\n"
    LUA_BUCKET_CHECK_BODY;

/* Sliding log: KEYS[1]; ARGV now (us, an integer: the entries' score and
 * name stem as sent), n, now - W (%.17g, the caller's: the expiry cutoff),
 * then limit, W and the key's TTL in ms (ceil(W / 1000) + 1) unless the
 * script has them. An admitted check answers its remaining
 * (limit - count - n >= 0); reset_after is W. The body needs limit, TTL
 * and W (a number or its decimal string). */
#define LUA_LOG_CHECK_BODY                                                               \
    "local k = KEYS[1]\n"                                                                \
    "local n = ARGV[2] + 0\n"                                                            \
    "redis.call('ZREMRANGEBYSCORE', k, '-inf', ARGV[3])\n"                               \
    "local cnt = redis.call('ZCARD', k)\n"                                               \
    "if n <= limit and cnt + n <= limit then\n"                                          \
    "  local t, added = ARGV[1], 0\n"                                                    \
    "  if n == 1 then added = redis.call('ZADD', k, t, t .. ':' .. (cnt + 1))\n"         \
    "  else\n"                                                                           \
    LUA_LOG_ADD_MANY("k", "t", "cnt", "n")                                               \
    "  end\n"                                                                            \
    LUA_LOG_ADD_FIX("k", "t", "cnt", "n")                                                \
    "  redis.call('PEXPIRE', k, TTL)\n"                                                  \
    "  return limit - cnt - n\n"                                                         \
    "end\n"                                                                              \
    "local now = ARGV[1] + 0\n"                                                          \
    "local rem = limit - cnt\n"                                                          \
    "if rem < 0 then rem = 0 end\n"                                                      \
    "local retry, reset = -1, 0\n"                                                       \
    "if n <= limit then\n"                                                               \
    "  retry = W + 0\n"                                                                  \
    "  local j = cnt + n - limit\n"                                                      \
    "  if j <= cnt then\n"                                                               \
    "    retry = redis.call('ZRANGE', k, j - 1, j - 1, 'WITHSCORES')[2] + W - now\n"     \
    "    if retry < 0 then retry = 0 end\n"                                              \
    "  end\n"                                                                            \
    "end\n"                                                                              \
    "if cnt > 0 then\n"                                                                  \
    "  reset = redis.call('ZRANGE', k, -1, -1, 'WITHSCORES')[2] + W - now\n"             \
    "  if reset < 0 then reset = 0 end\n"                                                \
    "end\n"                                                                              \
    "return string.format('%d %d %d %.17g %.17g %d', 0, limit, rem, retry, reset, 0)\n"

/* The generic one: ARGV[4..6] limit, W, TTL. */
static const char script_log_check[] =
    "local limit, W, TTL = ARGV[4] + 0, ARGV[5], ARGV[6]\n"
    LUA_LOG_CHECK_BODY;

/* KEYS: each member's keys in order. ARGV: now override, member count m, then
 * per member: algorithm number, n, p1, p2. Every member decides against the
 * overlay of the earlier members' pending writes; all are stored only when
 * all admit. Returns {denied_by (0-based, -1 when admitted), decision x m}. */
#define LUA_GROUP                                                                        \
    LUA_ENCODE                                                                           \
    "local ALGOS = {[0] = GCRA, [1] = GCRA, [2] = FW, [3] = SWC, [4] = LOG}\n"             \
    "local now = clock(ARGV[1])\n"                                                       \
    "local m = tonumber(ARGV[2])\n"                                                      \
    "local overlay, members, out = {}, {}, {-1}\n"                                       \
    "local ki = 1\n"                                                                     \
    "for i = 1, m do\n"                                                                  \
    "  local base = 3 + (i - 1) * 4\n"                                                   \
    "  local A = ALGOS[tonumber(ARGV[base])]\n"                                          \
    "  local n, p1, p2 = tonumber(ARGV[base + 1]), tonumber(ARGV[base + 2]), tonumber(ARGV[base + 3])\n" \
    "  local keys = {}\n"                                                                \
    "  for j = 1, A.nkeys do keys[j] = KEYS[ki]; ki = ki + 1 end\n"                      \
    "  local st = overlay[keys[1]]\n"                                                    \
    "  if st == nil then st = A.load(keys, p1, p2, now) end\n"                           \
    "  local r, nst, dirty = A.decide(st, n, 'c', 0, 0, p1, p2, now)\n"                  \
    "  if r[1] == 1 then overlay[keys[1]] = nst\n"                                       \
    "  elseif out[1] < 0 then out[1] = i - 1 end\n"                                      \
    "  members[i] = {A, keys, p1, p2}\n"                                                 \
    "  out[#out + 1] = encode(r)\n"                                                      \
    "end\n"                                                                              \
    "if out[1] < 0 then\n"                                                               \
    "  local done = {}\n"                                                                \
    "  for i = 1, m do\n"                                                                \
    "    local A, keys = members[i][1], members[i][2]\n"                                 \
    "    if not done[keys[1]] then\n"                                                    \
    "      done[keys[1]] = true\n"                                                       \
    "      A.store(keys, overlay[keys[1]], members[i][3], members[i][4], now)\n"         \
    "    end\n"                                                                          \
    "  end\n"                                                                            \
    "end\n"                                                                              \
    "return out\n"

static const char script_group[] = LUA_PRELUDE LUA_GCRA LUA_FIXED_WINDOW
    LUA_SLIDING_WINDOW_COUNTER LUA_SLIDING_WINDOW_LOG LUA_GROUP;
static const char script_noop[] = "return 0";

/* The static scripts, then up to DYN_MAX specialised check scripts
 * (registered once, kept for the process's life: a slot handed out never
 * changes, so readers index it without a lock). */
#define DYN_MAX 1024
static prs_redis__script scripts[PRS_REDIS__NSCRIPTS + DYN_MAX] = {
    {script_gcra, sizeof script_gcra - 1, ""},
    {script_gcra, sizeof script_gcra - 1, ""}, /* the token bucket is GCRA's state */
    {script_fw, sizeof script_fw - 1, ""},
    {script_swc, sizeof script_swc - 1, ""},
    {script_log, sizeof script_log - 1, ""},
    {script_group, sizeof script_group - 1, ""},
    {script_noop, sizeof script_noop - 1, ""},
    {script_bucket_check, sizeof script_bucket_check - 1, ""},
    {script_log_check, sizeof script_log_check - 1, ""},
};

static pthread_once_t scripts_once = PTHREAD_ONCE_INIT;

static void scripts_init(void) {
    for (int i = 0; i < PRS_REDIS__NSCRIPTS; i++)
        prs_redis__sha1_hex(scripts[i].body, scripts[i].len, scripts[i].sha);
}

const prs_redis__script *prs_redis__scripts(void) {
    pthread_once(&scripts_once, scripts_init);
    return scripts;
}

static pthread_mutex_t dyn_mu = PTHREAD_MUTEX_INITIALIZER;
static int ndyn;

/* A fork while another thread registers: the child gets the lock free. */
static void dyn_lock(void) { pthread_mutex_lock(&dyn_mu); }
static void dyn_unlock(void) { pthread_mutex_unlock(&dyn_mu); }
static pthread_once_t dyn_once = PTHREAD_ONCE_INIT;
static void dyn_init(void) { pthread_atfork(dyn_lock, dyn_unlock, dyn_unlock); }

/* The slot of the script with this body (registered on first use), or -1
 * when the table is full or memory is short. */
static int dyn_register(const char *body, size_t len) {
    (void)prs_redis__scripts();
    pthread_once(&dyn_once, dyn_init);
    int slot = -1;
    pthread_mutex_lock(&dyn_mu);
    for (int i = PRS_REDIS__NSCRIPTS; i < PRS_REDIS__NSCRIPTS + ndyn; i++)
        if (scripts[i].len == len && !memcmp(scripts[i].body, body, len)) { slot = i; break; }
    if (slot < 0 && ndyn < DYN_MAX) {
        char *copy = malloc(len + 1);
        if (copy) {
            memcpy(copy, body, len + 1);
            slot = PRS_REDIS__NSCRIPTS + ndyn;
            prs_redis__sha1_hex(copy, len, scripts[slot].sha);
            scripts[slot].body = copy;
            scripts[slot].len = len;
            ndyn++;
        }
    }
    pthread_mutex_unlock(&dyn_mu);
    return slot;
}

int prs_redis__bucket_incr(double T, int64_t burst) {
    return T == floor(T) && T >= 1 && (double)burst * T < 4503599627370496.0;
}

int prs_redis__check_script(int algorithm, double p1, int64_t p2, int64_t ttl_ms) {
    char head[160];
    const char *body;
    if (algorithm == PRS_REDIS_SLIDING_WINDOW_LOG) {
        snprintf(head, sizeof head, "local limit, W, TTL = %lld, %.17g, '%lld'\n", (long long)p2, p1,
                 (long long)ttl_ms);
        body = LUA_LOG_CHECK_BODY;
    } else {
        /* S as script_bucket_check computes it, in the same doubles */
        double S = floor(((double)p2 * p1) / 16000) * 1000;
        if (S < 1000) S = 1000; else if (S > 1000000) S = 1000000;
        snprintf(head, sizeof head, "local T, burst, S = %.17g, %lld, %.17g\n"
                 "local now, n = ARGV[1] + 0, ARGV[2] + 0\n", p1, (long long)p2, S);
        body = prs_redis__bucket_incr(p1, p2) ? LUA_BUCKET_INCR_BODY : LUA_BUCKET_QUARTER_BODY;
    }
    size_t hl = strlen(head), bl = strlen(body);
    char *text = malloc(hl + bl + 1);
    if (!text) return -1;
    memcpy(text, head, hl);
    memcpy(text + hl, body, bl + 1);
    int slot = dyn_register(text, hl + bl);
    free(text);
    return slot;
}

/* ---- SHA1 (FIPS 180-4), for EVALSHA -------------------------------------- */

static uint32_t rol32(uint32_t x, int k) { return (x << k) | (x >> (32 - k)); }

static void sha1_block(uint32_t h[5], const unsigned char *p) {
    uint32_t w[80];
    for (int i = 0; i < 16; i++)
        w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 | (uint32_t)p[4 * i + 2] << 8 |
               (uint32_t)p[4 * i + 3];
    for (int i = 16; i < 80; i++) w[i] = rol32(w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16], 1);
    uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4];
    for (int i = 0; i < 80; i++) {
        uint32_t f, k;
        if (i < 20) { f = (b & c) | (~b & d); k = 0x5A827999u; }
        else if (i < 40) { f = b ^ c ^ d; k = 0x6ED9EBA1u; }
        else if (i < 60) { f = (b & c) | (b & d) | (c & d); k = 0x8F1BBCDCu; }
        else { f = b ^ c ^ d; k = 0xCA62C1D6u; }
        uint32_t t = rol32(a, 5) + f + e + k + w[i];
        e = d; d = c; c = rol32(b, 30); b = a; a = t;
    }
    h[0] += a; h[1] += b; h[2] += c; h[3] += d; h[4] += e;
}

void prs_redis__sha1_hex(const void *data, size_t len, char out[41]) {
    uint32_t h[5] = {0x67452301u, 0xEFCDAB89u, 0x98BADCFEu, 0x10325476u, 0xC3D2E1F0u};
    const unsigned char *p = data;
    size_t full = len / 64;
    for (size_t i = 0; i < full; i++) sha1_block(h, p + 64 * i);
    unsigned char tail[128];
    size_t rem = len % 64;
    memcpy(tail, p + 64 * full, rem);
    tail[rem] = 0x80;
    size_t tlen = rem + 1 + 8 <= 64 ? 64 : 128;
    memset(tail + rem + 1, 0, tlen - rem - 1);
    uint64_t bits = (uint64_t)len * 8;
    for (int i = 0; i < 8; i++) tail[tlen - 1 - i] = (unsigned char)(bits >> (8 * i));
    for (size_t off = 0; off < tlen; off += 64) sha1_block(h, tail + off);
    static const char hex[] = "0123456789abcdef";
    for (int i = 0; i < 20; i++) {
        unsigned char byte = (unsigned char)(h[i / 4] >> (24 - 8 * (i % 4)));
        out[2 * i] = hex[byte >> 4];
        out[2 * i + 1] = hex[byte & 15];
    }
    out[40] = '\0';
}

/* ---- SipHash-2-4 (Aumasson & Bernstein) ----------------------------------- */

#define SIPROUND                                                                         \
    do {                                                                                 \
        v0 += v1; v1 = (v1 << 13) | (v1 >> 51); v1 ^= v0; v0 = (v0 << 32) | (v0 >> 32); \
        v2 += v3; v3 = (v3 << 16) | (v3 >> 48); v3 ^= v2;                                \
        v0 += v3; v3 = (v3 << 21) | (v3 >> 43); v3 ^= v0;                                \
        v2 += v1; v1 = (v1 << 17) | (v1 >> 47); v1 ^= v2; v2 = (v2 << 32) | (v2 >> 32); \
    } while (0)

uint64_t prs_redis__siphash(const void *data, size_t len, uint64_t k0, uint64_t k1) {
    uint64_t v0 = k0 ^ 0x736f6d6570736575ull, v1 = k1 ^ 0x646f72616e646f6dull;
    uint64_t v2 = k0 ^ 0x6c7967656e657261ull, v3 = k1 ^ 0x7465646279746573ull;
    const unsigned char *p = data;
    size_t blocks = len / 8;
    for (size_t i = 0; i < blocks; i++) {
        uint64_t m = 0;
        for (int j = 0; j < 8; j++) m |= (uint64_t)p[8 * i + j] << (8 * j);
        v3 ^= m;
        SIPROUND; SIPROUND;
        v0 ^= m;
    }
    uint64_t last = (uint64_t)len << 56;
    for (size_t j = 0; j < len % 8; j++) last |= (uint64_t)p[8 * blocks + j] << (8 * j);
    v3 ^= last;
    SIPROUND; SIPROUND;
    v0 ^= last;
    v2 ^= 0xff;
    SIPROUND; SIPROUND; SIPROUND; SIPROUND;
    return v0 ^ v1 ^ v2 ^ v3;
}
