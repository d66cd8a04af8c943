/*
 * prs_limiter.h - one limiter over any algorithm of the table (prs_algo.h).
 *
 *   prs_token_bucket_config cfg;
 *   prs_token_bucket_config_init(&cfg);
 *   cfg.capacity = 10; cfg.refill_rate = 5;
 *   prs_limiter *lim;
 *   prs_limiter_new(&prs_algo_token_bucket, &cfg, NULL, &lim, NULL);
 *   prs_limiter_check(lim, prs_monotonic_ns(), 1, &d);
 *   prs_limiter_acquire_blocking(lim, 1, prs_monotonic_ns() + PRS_NS_PER_SEC, NULL, &d);
 *
 * A limiter is an algorithm's descriptor, its params and one state, made safe
 * to share between threads: a spinlock held around the descriptor's decide,
 * or, for an algorithm with a lock-free decide (GCRA), a compare-and-swap on
 * its one-word state. The typed handles (prs_token_bucket, prs_gcra, ...) are
 * this object under another name: prs_<c>_limiter() converts, and the typed
 * functions (prs_<c>_new/check/peek/reset/available/reconfigure) are
 * PRS_LIMITER_TYPED_API below, the same code.
 *
 * Waiting: a limiter's decision says when a request would be admitted, so a
 * wait is a sequence of steps, each decided here: admitted (taken), sleep
 * until T, time out (admission lies beyond the deadline), or never (a request
 * above the limit, a budget that does not refill, an instant past 2^63 ns).
 * prs_wait_decide() makes one step from a decision, for any source of
 * decisions (a limiter, a key of a table, a group); prs_limiter_acquire_
 * blocking() loops over it, sleeping on a clock the caller may replace.
 */
#ifndef PRS_LIMITER_H
#define PRS_LIMITER_H

#include "prs_algo.h"
#include "prs_common.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct prs_limiter prs_limiter;

/* Makes a full limiter of `algo` from `config` (the algorithm's prs_<c>_config;
 * its allocator field is not read: pass `allocator`, NULL for the default).
 * On error *out is NULL and nothing is allocated: PRS_EINVAL/PRS_ERANGE with
 * *why (may be NULL) naming the field and the reason, PRS_ENOMEM. */
int prs_limiter_new(const prs_algo *algo, const void *config, const prs_allocator *allocator,
                    prs_limiter **out, prs_config_error *why);
void prs_limiter_free(prs_limiter *lim); /* NULL-safe */

/* Decides n (>= 1) at now_ns; when `consume`, takes n only when allowed.
 * Thread-safe. PRS_OK with *d filled, or PRS_EINVAL (n < 1, NULL). A request
 * above the limit is denied with retry_after_ns == PRS_NEVER. */
int prs_limiter_decide(prs_limiter *lim, int64_t now_ns, int64_t n, int consume, prs_decision *d);
int prs_limiter_check(prs_limiter *lim, int64_t now_ns, int64_t n, prs_decision *d);
int prs_limiter_peek(prs_limiter *lim, int64_t now_ns, int64_t n, prs_decision *d);
/* The consuming decision when only yes/no matters: 1 allowed (n taken), 0
 * refused, or a negative status as prs_limiter_decide. Counted like a check;
 * skips what only the decision's other fields need. */
int prs_limiter_allow(prs_limiter *lim, int64_t now_ns, int64_t n);
/* Back to the initial (full) state. */
void prs_limiter_reset(prs_limiter *lim);
/* Requests of weight 1 admissible at now_ns (a real number). */
double prs_limiter_available(prs_limiter *lim, int64_t now_ns);
/* Consuming decisions (check, and each step of a wait) that admitted /
 * refused, in this process, since creation (reset and reconfigure keep
 * them). Exact under threads; 0 for NULL. */
uint64_t prs_limiter_admitted(const prs_limiter *lim);
uint64_t prs_limiter_rejected(const prs_limiter *lim);
/* Changes the params of a live limiter at now_ns to those of `config` (its
 * allocator is not read). What the state keeps is each algorithm's
 * (documented at prs_<c>_reconfigure). Thread-safe: a concurrent decision
 * uses the old or the new params whole. PRS_OK, PRS_EINVAL/PRS_ERANGE with
 * *why (nothing changed), PRS_ENOMEM (a state of another size could not be
 * allocated: nothing changed). */
int prs_limiter_reconfigure(prs_limiter *lim, const void *config, int64_t now_ns,
                            prs_config_error *why);

const prs_algo *prs_limiter_algo(const prs_limiter *lim);
/* The live params (for a keyed table's template); valid while lim lives. */
const void *prs_limiter_params(const prs_limiter *lim);
/* The config (allocator NULL) that makes the params in force now. */
void prs_limiter_config(const prs_limiter *lim, void *config);

/* ---- waiting ---------------------------------------------------------- */

typedef enum prs_wait_verdict {
    PRS_WAIT_ADMITTED = 0, /* the decision admitted (and took) the request */
    PRS_WAIT_SLEEP = 1,    /* sleep until *wake_ns, then decide again */
    PRS_WAIT_TIMEOUT = 2,  /* admission lies beyond the deadline: give up now */
    PRS_WAIT_NEVER = 3     /* no instant admits it: fail now, whatever the deadline */
} prs_wait_verdict;

/* One step of a wait, from the decision `d` made at now_ns, against an
 * absolute deadline_ns on the same clock (PRS_NEVER: none). *wake_ns gets the
 * instant of admission when the verdict is PRS_WAIT_SLEEP. */
prs_wait_verdict prs_wait_decide(const prs_decision *d, int64_t now_ns, int64_t deadline_ns,
                                 int64_t *wake_ns);
/* Checks n at now_ns (taking it when allowed) and decides the step: the
 * verdict, or a negative status (PRS_EINVAL). *d is the decision. */
int prs_limiter_wait_step(prs_limiter *lim, int64_t now_ns, int64_t n, int64_t deadline_ns,
                          prs_decision *d, int64_t *wake_ns);

/* A clock for blocking waits: now_ns() reads it, sleep_until() returns at or
 * after wake_ns (or earlier: the wait decides again). */
typedef struct prs_clock {
    int64_t (*now_ns)(void *ctx);
    void (*sleep_until)(void *ctx, int64_t wake_ns);
    void *ctx;
} prs_clock;

/* Blocks until n is admitted, then returns PRS_OK (n taken). deadline_ns is
 * absolute on `clock` (NULL: prs_monotonic_ns() and prs_sleep_ns()), PRS_NEVER
 * for none. PRS_ETIMEDOUT when admission lies beyond the deadline (returned
 * at once, without sleeping in vain), PRS_ENEVER when no instant can admit n;
 * then nothing is taken. *d (may be NULL) is the last decision. */
int prs_limiter_acquire_blocking(prs_limiter *lim, int64_t n, int64_t deadline_ns,
                                 const prs_clock *clock, prs_decision *d);

/* ---- the typed API of each algorithm ------------------------------------ *
 * PRS_LIMITER_TYPED_API(c) declares, for the table row c, the opaque handle
 * prs_<c> (a prs_limiter) and:
 *   int  prs_<c>_config_validate(const prs_<c>_config *cfg);
 *   int  prs_<c>_config_validate_why(const prs_<c>_config *cfg, prs_config_error *why);
 *   int  prs_<c>_new(const prs_<c>_config *cfg, prs_<c> **out);   (cfg->allocator)
 *   void prs_<c>_free(prs_<c> *x);
 *   int  prs_<c>_check / prs_<c>_peek(prs_<c> *x, int64_t now_ns, int64_t n, prs_decision *d);
 *   void prs_<c>_reset(prs_<c> *x);
 *   double prs_<c>_available(prs_<c> *x, int64_t now_ns);
 *   int  prs_<c>_reconfigure(prs_<c> *x, const prs_<c>_config *cfg, int64_t now_ns);
 *   const void *prs_<c>_params(const prs_<c> *x);
 *   prs_limiter *prs_<c>_limiter(prs_<c> *x);
 * with prs_limiter_*'s contracts. limiter.c defines them from the table. */
#define PRS_LIMITER_TYPED_API(c)                                                              \
    typedef struct prs_##c prs_##c;                                                           \
    int prs_##c##_config_validate(const prs_##c##_config *cfg);                               \
    int prs_##c##_config_validate_why(const prs_##c##_config *cfg, prs_config_error *why);    \
    int prs_##c##_new(const prs_##c##_config *cfg, prs_##c **out);                            \
    void prs_##c##_free(prs_##c *x);                                                          \
    int prs_##c##_check(prs_##c *x, int64_t now_ns, int64_t n, prs_decision *d);              \
    int prs_##c##_peek(prs_##c *x, int64_t now_ns, int64_t n, prs_decision *d);               \
    void prs_##c##_reset(prs_##c *x);                                                         \
    double prs_##c##_available(prs_##c *x, int64_t now_ns);                                   \
    int prs_##c##_reconfigure(prs_##c *x, const prs_##c##_config *cfg, int64_t now_ns);       \
    const void *prs_##c##_params(const prs_##c *x);                                           \
    prs_limiter *prs_##c##_limiter(prs_##c *x);

#ifdef __cplusplus
}
#endif
#endif /* PRS_LIMITER_H */
