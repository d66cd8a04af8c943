/*
 * prs_token_bucket.h - a token bucket: holds up to `capacity` tokens, refilled
 * continuously at `refill_rate` tokens per second, starts full. A request of
 * weight n takes n tokens. refill_rate 0 is a fixed budget.
 *
 * Exactness: a request denied at t with retry_after r is denied at every t' in
 * [t, t + r) and admitted at t + r (with no other request in between): both
 * the decision and r come from the same integer "nanoseconds needed" value.
 */
#ifndef PRS_TOKEN_BUCKET_H
#define PRS_TOKEN_BUCKET_H

#include "prs_common.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct prs_token_bucket prs_token_bucket;

typedef struct prs_token_bucket_config {
    double capacity;                 /* finite, > 0, <= 1e15 */
    double refill_rate;              /* tokens per second, finite, >= 0, <= 1e15 */
    const prs_allocator *allocator;  /* NULL: the default allocator */
} prs_token_bucket_config;

/* Defaults: capacity 1, refill_rate 1/s, default allocator. */
void prs_token_bucket_config_init(prs_token_bucket_config *cfg);
/* PRS_OK or PRS_EINVAL (capacity not finite or <= 0, rate not finite or < 0),
 * PRS_ERANGE (capacity or rate above 1e15). */
int prs_token_bucket_config_validate(const prs_token_bucket_config *cfg);

/* Makes a full bucket in *out; on error *out is NULL and nothing is allocated. */
int prs_token_bucket_new(const prs_token_bucket_config *cfg, prs_token_bucket **out);
void prs_token_bucket_free(prs_token_bucket *tb); /* NULL-safe */

/* Asks for n (>= 1) tokens at now_ns; consumes only when allowed. Thread-safe.
 * n > capacity, or a deficit with refill_rate 0: retry_after_ns == PRS_NEVER.
 * A now_ns earlier than one already seen is taken as that one. */
int prs_token_bucket_check(prs_token_bucket *tb, int64_t now_ns, int64_t n, prs_decision *d);
int prs_token_bucket_peek(prs_token_bucket *tb, int64_t now_ns, int64_t n, prs_decision *d);
void prs_token_bucket_reset(prs_token_bucket *tb);
/* Tokens available at now_ns, in [0, capacity]. */
double prs_token_bucket_available(prs_token_bucket *tb, int64_t now_ns);

/* Changes capacity and refill_rate of a live bucket at now_ns (the allocator
 * field of cfg is ignored). Thread-safe: a concurrent decision sees the old or
 * the new params, never a mix. What is kept: the tokens the bucket holds at
 * now_ns (refilled at the old rate up to now_ns, a never-used bucket counting
 * as full at the old capacity), capped at the new capacity; from now_ns on
 * they refill at the new rate. No token is ever added by a reconfiguration.
 * PRS_OK, or the error prs_token_bucket_config_validate gives (PRS_EINVAL,
 * PRS_ERANGE; also PRS_EINVAL for a NULL tb): then nothing changed. */
int prs_token_bucket_reconfigure(prs_token_bucket *tb, const prs_token_bucket_config *cfg,
                                 int64_t now_ns);

double prs_token_bucket_capacity(const prs_token_bucket *tb);
double prs_token_bucket_refill_rate(const prs_token_bucket *tb);
/* This bucket's params for prs_algo_token_bucket (prs_algo.h); valid while tb lives. */
const void *prs_token_bucket_params(const prs_token_bucket *tb);

#ifdef __cplusplus
}
#endif
#endif
