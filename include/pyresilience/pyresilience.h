/* pyresilience.h - the umbrella header of the C core: include this one.
 * It declares the core alone (libpyresilience.a); the Redis library has its own
 * umbrella, pyresilience_redis.h (libpyresilience_redis.a, needs hiredis). */
#ifndef PYRESILIENCE_H
#define PYRESILIENCE_H
#include "prs_common.h"
#include "prs_algo.h"
#include "prs_limiter.h"
#include "prs_gcra.h"
#include "prs_token_bucket.h"
#include "prs_leaky_bucket.h"
#include "prs_fixed_window.h"
#include "prs_sliding_log.h"
#include "prs_sliding_counter.h"
#include "prs_keyed.h"
#include "prs_group.h"
#include "prs_breaker.h"
#include "prs_retry.h"
#include "prs_bulkhead.h"
#include "prs_ring.h"
#include "prs_shm.h"
#include "prs_counters.h"
#include "prs_shm_kv.h"
/* more modules: one include line each */
#endif
