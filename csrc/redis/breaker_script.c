/*
 * breaker_script.c - the Lua script of the distributed circuit breaker
 * (pyresilience.redis_breaker): one hash per breaker name holds the shared
 * state, and every transition is one atomic run of this script, on Redis's
 * own clock.
 *
 * KEYS[1]: the hash. ARGV: mode, failure_threshold, success_threshold,
 * timeout (us), half_open_max_calls, now (us: Redis's clock as the caller's
 * backend learned it, prs_redis_backend_now_us; the script reads no TIME),
 * then the mode's arguments:
 *   flush  had_success (0/1), trailing failures: a process's closed-path
 *          outcomes since its last flush; a success resets the shared
 *          consecutive count to the trailing failures, else they add up;
 *          reaching failure_threshold opens.
 *   trip   a process saw failure_threshold consecutive failures: open.
 *   trial  take a half-open trial slot ("granted"), or none ("full").
 *   result s/f/i: a trial's outcome; frees its slot; a failure re-opens,
 *          success_threshold successes close.
 *   open, close, read.
 * An open whose time is up reads as half-open with no trial yet. When no
 * slot was granted for a timeout while some are held, those are presumed
 * lost (their process died mid-trial) and freed.
 * Returns {state, retry_after_us, mode or "granted"/"full"}. The hash lives
 * one day after its last use.
 */
#include <string.h>

#include "prs_redis_internal.h"
#include "prs_redis_ops.h"

static const char breaker_lua[] =
    "local k = KEYS[1]\n"
    "local mode = ARGV[1]\n"
    "local ft, st, to, hmax = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])\n"
    "local now = tonumber(ARGV[6])\n"
    "local h = redis.call('HMGET', k, 'state', 'fails', 'until', 'inflight', 'succ', 'since')\n"
    "local state = h[1] or 'closed'\n"
    "local fails, untl = tonumber(h[2] or '0'), tonumber(h[3] or '0')\n"
    "local inflight, succ, since = tonumber(h[4] or '0'), tonumber(h[5] or '0'), tonumber(h[6] or '0')\n"
    "if state == 'open' and now >= untl then state = 'half_open'; inflight = 0; succ = 0; since = now end\n"
    "if state == 'half_open' and inflight > 0 and now - since > to then inflight = 0; since = now end\n"
    "local function open() state = 'open'; untl = now + to; fails = 0; inflight = 0; succ = 0 end\n"
    "local out = mode\n"
    "if mode == 'flush' then\n"
    "  if state == 'closed' then\n"
    "    if ARGV[7] == '1' then fails = tonumber(ARGV[8]) else fails = fails + tonumber(ARGV[8]) end\n"
    "    if fails >= ft then open() end\n"
    "  end\n"
    "elseif mode == 'trip' then\n"
    "  if state == 'closed' then open() end\n"
    "elseif mode == 'trial' then\n"
    "  out = 'full'\n"
    "  if state == 'half_open' and inflight < hmax then\n"
    "    inflight = inflight + 1; out = 'granted'; since = now\n"
    "  end\n"
    "elseif mode == 'result' then\n"
    "  if state == 'half_open' then\n"
    "    if inflight > 0 then inflight = inflight - 1 end\n"
    "    if ARGV[7] == 'f' then open()\n"
    "    elseif ARGV[7] == 's' then\n"
    "      succ = succ + 1\n"
    "      if succ >= st then state = 'closed'; fails = 0; succ = 0; inflight = 0 end\n"
    "    end\n"
    "  end\n"
    "elseif mode == 'open' then open()\n"
    "elseif mode == 'close' then state = 'closed'; fails = 0; succ = 0; inflight = 0\n"
    "end\n"
    "redis.call('HSET', k, 'state', state, 'fails', fails, 'until', untl, 'inflight', inflight, 'succ', succ,"
    " 'since', since)\n"
    "redis.call('PEXPIRE', k, 86400000 + math.floor(to / 1000))\n"
    "local left = 0\n"
    "if state == 'open' then left = untl - now end\n"
    "return {state, left, out}\n";

const char *prs_redis_breaker_script(size_t *len) {
    if (len) *len = sizeof breaker_lua - 1;
    return breaker_lua;
}

int64_t prs_redis_backend_now_us(prs_redis_backend *b) { return prs_redis__now_us(b); }
