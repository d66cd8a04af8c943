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

#include "prs_limiter.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct prs_token_bucket_config {
    double capacity;                 /* finite, > 0, <= 1e15 */
    double refill_rate;              /* tokens per second, finite, >= 0, <= 1e15 */
    const prs_allocator *allocator;  /* NULL: the default allocator */
} prs_token_bucket_config;

/* Defaults: capacity 1, refill_rate 1/s, default allocator. */
void prs_token_bucket_config_init(prs_token_bucket_config *cfg);

/* prs_token_bucket (a prs_limiter) and its functions, as prs_limiter.h
 * describes them:
 *   validate: PRS_EINVAL (capacity not finite or <= 0, rate not finite or
 *     < 0), PRS_ERANGE (capacity or rate above 1e15);
 *   check/peek: n > capacity, or a deficit with refill_rate 0: retry_after_ns
 *     == PRS_NEVER; a now_ns earlier than one already seen is taken as that one;
 *   available: tokens in [0, capacity];
 *   reconfigure: capacity and refill_rate change at now_ns; the tokens held at
 *     now_ns (refilled at the old rate up to now_ns, a never-used bucket
 *     counting as full at the old capacity) are kept, capped at the new
 *     capacity; from now_ns on they refill at the new rate. No token is ever
 *     added by a reconfiguration. */
PRS_LIMITER_TYPED_API(token_bucket)

double prs_token_bucket_capacity(const prs_token_bucket *tb);
double prs_token_bucket_refill_rate(const prs_token_bucket *tb);

#ifdef __cplusplus
}
#endif
#endif
