/*
 * prs_retry.h - retries: exponential backoff with jitter, the decision "sleep
 * this long, or give up" for one failed attempt, and a retry budget shared by
 * many callers.
 *
 *   prs_retry          a backoff policy (max_attempts, base_delay, max_delay,
 *                      exponential_base, jitter) plus its random generator.
 *                      Holds no per-call state: one policy serves any number of
 *                      concurrent retry loops, each keeping its own attempt
 *                      number and previous delay.
 *   prs_retry_budget   "retries stay within ratio x first attempts over the
 *                      last `window` seconds, plus a floor per second" (the
 *                      retry budgets of Finagle, gRPC and tower).
 *
 * Delays are double seconds: the reference formula is a float formula, and
 * prs_retry_base_delay() reproduces `min(base_delay * exponential_base **
 * attempt, max_delay)` bit for bit. Every delay is finite and >= 0 for every
 * attempt up to INT64_MAX (no overflow: an exponent that overflows a double
 * is simply capped at max_delay).
 */
#ifndef PRS_RETRY_H
#define PRS_RETRY_H

#include "prs_common.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- jitter strategies ------------------------------------------------- *
 * d is the capped exponential delay of the attempt, u uniform in [0, 1).   */
typedef enum prs_jitter {
    PRS_JITTER_NONE = 0,      /* d */
    PRS_JITTER_FULL,          /* u * d                      in [0, d)        */
    PRS_JITTER_EQUAL,         /* d/2 + u * d/2              in [d/2, d)      */
    PRS_JITTER_DECORRELATED,  /* min(max_delay, base + u * (3*prev - base)),
                                 prev = the previous delay of this retry loop
                                 (base_delay for the first); ignores d       */
    PRS_JITTER_PROPORTIONAL,  /* d + (u - 1/2) * d          in [d/2, 3d/2)
                                 (the reference's jitter=True; may pass
                                 max_delay by up to half of it)              */
    PRS__JITTER_COUNT
} prs_jitter;

/* "none", "full", "equal", "decorrelated", "proportional"; NULL if unknown. */
const char *prs_jitter_name(int jitter);
/* The strategy named `name` (the names above). PRS_OK, or PRS_EINVAL. */
int prs_jitter_parse(const char *name, prs_jitter *out);

/* ---- the generator ----------------------------------------------------- *
 * SplitMix64: a 64-bit Weyl sequence (state += golden gamma) through an
 * avalanche mix. Passes BigCrush; a step is one add and a few multiplies.
 * Thread-safe inside prs_retry (the add is one atomic fetch_add), and
 * reproducible: the same seed gives the same sequence of draws.            */
uint64_t prs_splitmix64_next(uint64_t *state);
/* The top 53 bits of x as a double in [0, 1). */
static inline double prs_unit_from_u64(uint64_t x) { return (double)(x >> 11) * 0x1.0p-53; }
/* A seed that differs between calls and processes (getrandom when there is
 * one; else the clock, a counter and an address, mixed). */
uint64_t prs_random_seed(void);

/* ---- the backoff policy ------------------------------------------------- */

typedef struct prs_retry prs_retry;

typedef struct prs_retry_config {
    int64_t max_attempts;       /* >= 1: attempts in all, the first included */
    double base_delay;          /* seconds, finite, >= 0 */
    double max_delay;           /* seconds, finite, >= base_delay */
    double exponential_base;    /* finite, >= 0 (0: base_delay then 0s; 1: constant) */
    int jitter;                 /* a prs_jitter */
    double max_retry_after;     /* seconds, >= 0 (+inf: no limit): a server's
                                   Retry-After beyond it gives up at once */
    int has_seed;               /* 0: a random seed (prs_random_seed()) */
    uint64_t seed;              /* the generator's seed when has_seed */
    const prs_allocator *allocator; /* NULL: the default allocator */
} prs_retry_config;

/* Defaults (the reference's): 3 attempts, base 1 s, max 60 s, base 2,
 * proportional jitter, random seed, default allocator; max_retry_after
 * PRS_RETRY_DEFAULT_MAX_RETRY_AFTER (300 s). */
#define PRS_RETRY_DEFAULT_MAX_RETRY_AFTER 300.0
void prs_retry_config_init(prs_retry_config *cfg);
/* PRS_OK, or PRS_EINVAL: NULL cfg, max_attempts < 1, a delay or the base NaN,
 * infinite or negative, max_delay < base_delay, unknown jitter, max_retry_after
 * NaN or negative. */
int prs_retry_config_validate(const prs_retry_config *cfg);
/* The same, telling in *why (when not NULL) which field failed and why. */
int prs_retry_config_check(const prs_retry_config *cfg, prs_config_error *why);

/* Makes a policy in *out. On error *out is NULL and nothing is allocated
 * (PRS_EINVAL as validate, PRS_ENOMEM). */
int prs_retry_new(const prs_retry_config *cfg, prs_retry **out);
void prs_retry_free(prs_retry *r); /* NULL-safe */

/* A copy of the configuration the policy was made with (allocator NULL). */
void prs_retry_get_config(const prs_retry *r, prs_retry_config *cfg);

/* min(base_delay * exponential_base ** attempt, max_delay): the reference
 * formula without jitter, exactly. attempt < 0 is taken as 0. Pure. */
double prs_retry_base_delay(const prs_retry *r, int64_t attempt);

/* The delay after failed attempt `attempt` (0-based) with the policy's jitter.
 * `previous` is the delay this retry loop slept last (<= 0 or NaN: none yet;
 * only decorrelated jitter reads it). Finite and >= 0. Thread-safe: draws from
 * the policy's generator with one atomic add. */
double prs_retry_delay(prs_retry *r, int64_t attempt, double previous);

/* Draws from the policy's generator (thread-safe), and reseeds it. */
uint64_t prs_retry_next_u64(prs_retry *r);
double prs_retry_uniform(prs_retry *r); /* in [0, 1) */
void prs_retry_seed(prs_retry *r, uint64_t seed);

/* What to do after a failed attempt. */
typedef enum prs_retry_verdict {
    PRS_RETRY_SLEEP = 0,          /* sleep `delay`, then make attempt + 1 */
    PRS_RETRY_GIVE_UP_ATTEMPTS,   /* that was attempt max_attempts - 1 */
    PRS_RETRY_GIVE_UP_DEADLINE,   /* the delay would reach the deadline */
    PRS_RETRY_GIVE_UP_RETRY_AFTER,/* the server's Retry-After passes the deadline
                                     (or is PRS_NEVER) */
    PRS_RETRY_GIVE_UP_RETRY_AFTER_LIMIT /* the server's Retry-After is longer than
                                           max_retry_after */
} prs_retry_verdict;

typedef struct prs_retry_step {
    int verdict;        /* a prs_retry_verdict */
    double delay;       /* seconds to sleep when PRS_RETRY_SLEEP, else 0 */
    int64_t delay_ns;   /* the same in ns (rounded to nearest, saturated) */
} prs_retry_step;

/* Decides after failed attempt `attempt` (0-based):
 *   - attempt + 1 >= max_attempts: GIVE_UP_ATTEMPTS (no draw).
 *   - delay = prs_retry_delay(r, attempt, previous).
 *   - retry_after_ns >= 0 (the failure carried a Retry-After): PRS_NEVER or
 *     more than remaining_ns -> GIVE_UP_RETRY_AFTER; more than max_retry_after
 *     -> GIVE_UP_RETRY_AFTER_LIMIT; else delay = max(delay, retry_after): the
 *     server's Retry-After is a floor that max_delay never shortens (delay_ns
 *     is then at least retry_after_ns exactly). Negative: no Retry-After.
 *   - remaining_ns: what is left of the deadline (PRS_NEVER: no deadline). A
 *     delay that would reach it (delay_ns >= remaining_ns) -> GIVE_UP_DEADLINE:
 *     the loop never sleeps past its deadline.
 * PRS_OK with *out filled, or PRS_EINVAL (NULL arguments). Thread-safe. */
int prs_retry_next(prs_retry *r, int64_t attempt, double previous, int64_t retry_after_ns,
                   int64_t remaining_ns, prs_retry_step *out);

int64_t prs_retry_max_attempts(const prs_retry *r);

/* ---- the retry budget --------------------------------------------------- *
 * Callers deposit one token per first attempt and withdraw one per retry. A
 * withdrawal is allowed while
 *     retries_in_window + 1 <= ratio * first_attempts_in_window
 *                              + min_retries_per_second * window
 * Counts live in ceil(window) buckets of window/ceil(window) seconds (<= 1 s
 * each); the window slides one bucket at a time. Thread-safe (a spinlock held
 * around the arithmetic); a now_ns earlier than one already seen is taken as
 * that one. */

typedef struct prs_retry_budget prs_retry_budget;

typedef struct prs_retry_budget_config {
    double ratio;                  /* retries per first attempt, finite, in [0, 1e6] */
    double min_retries_per_second; /* the floor, finite, in [0, 1e9] */
    double window;                 /* seconds, finite, in (0, 3600], >= 1 ms */
    const prs_allocator *allocator;
} prs_retry_budget_config;

typedef struct prs_retry_budget_metrics {
    int64_t attempts;          /* first attempts deposited (lifetime) */
    int64_t retries_allowed;   /* withdrawals allowed (lifetime) */
    int64_t retries_denied;    /* withdrawals denied (lifetime) */
    int64_t window_attempts;   /* first attempts in the current window */
    int64_t window_retries;    /* retries allowed in the current window */
    double available;          /* retries a withdrawal could take now, >= 0 */
} prs_retry_budget_metrics;

/* Defaults (the issue's): ratio 0.1, 10 retries per second, window 10 s. */
void prs_retry_budget_config_init(prs_retry_budget_config *cfg);
/* PRS_OK, or PRS_EINVAL (NaN, infinite or negative values, window <= 0),
 * PRS_ERANGE (beyond the bounds above). */
int prs_retry_budget_config_validate(const prs_retry_budget_config *cfg);
/* The same, telling in *why (when not NULL) which field failed and why. */
int prs_retry_budget_config_check(const prs_retry_budget_config *cfg, prs_config_error *why);
/* On error *out is NULL and nothing is allocated (validate's codes, PRS_ENOMEM). */
int prs_retry_budget_new(const prs_retry_budget_config *cfg, prs_retry_budget **out);
void prs_retry_budget_free(prs_retry_budget *b); /* NULL-safe */

/* Records a first attempt at now_ns. PRS_OK or PRS_EINVAL (NULL). */
int prs_retry_budget_deposit(prs_retry_budget *b, int64_t now_ns);
/* Asks for one retry at now_ns: *allowed = 1 (counted) or 0 (denied, counted
 * in retries_denied). PRS_OK or PRS_EINVAL (NULL). */
int prs_retry_budget_withdraw(prs_retry_budget *b, int64_t now_ns, int *allowed);
/* Counters as of now_ns (moves the window, changes no count). */
int prs_retry_budget_metrics_get(prs_retry_budget *b, int64_t now_ns, prs_retry_budget_metrics *m);
/* Empties the window and zeroes every counter. */
void prs_retry_budget_reset(prs_retry_budget *b);

double prs_retry_budget_ratio(const prs_retry_budget *b);
double prs_retry_budget_min_per_second(const prs_retry_budget *b);
double prs_retry_budget_window(const prs_retry_budget *b);
int64_t prs_retry_budget_buckets(const prs_retry_budget *b);

#ifdef __cplusplus
}
#endif
#endif /* PRS_RETRY_H */
