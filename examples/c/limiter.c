/*
 * limiter.c - the pyresilience C core on its own: no Python, only the public
 * header and the static library.
 *
 *   make                    # builds build/c/libpyresilience.a and this program
 *   build/c/example_limiter
 *
 * Build by hand (after `make lib`):
 *   cc -std=c11 -Iinclude/pyresilience examples/c/limiter.c build/c/libpyresilience.a -lm -pthread
 *
 * Time is passed in explicitly (int64 nanoseconds of a monotonic clock), so
 * the schedule below is replayed exactly, the same way on every run. A real
 * program would pass prs_monotonic_ns().
 */
#include "pyresilience.h"

#include <inttypes.h>
#include <stdio.h>

/* One step of the schedule: at `at_ms`, ask for `n`. */
typedef struct step {
    int64_t at_ms;
    int64_t n;
} step;

static void print_decision(const char *who, int64_t at_ms, int64_t n, const prs_decision *d) {
    printf("  t=%5" PRId64 " ms  %-12s n=%" PRId64 "  %-7s remaining=%" PRId64, at_ms, who, n,
           d->allowed ? "allowed" : "denied", d->remaining);
    if (!d->allowed) {
        if (d->retry_after_ns == PRS_NEVER) printf("  retry_after=never");
        else printf("  retry_after=%.3f ms", (double)d->retry_after_ns / (double)PRS_NS_PER_MS);
    }
    printf("\n");
}

static int fail(const char *what, int status) {
    fprintf(stderr, "%s: %s (%s)\n", what, prs_strerror(status), prs_err_name(status));
    return 1;
}

int main(void) {
    /* A GCRA: 10 requests per second, 3 at once. */
    prs_gcra_config gcfg;
    prs_gcra_config_init(&gcfg);
    gcfg.rate = 10.0;
    gcfg.burst = 3;
    prs_gcra *gcra = NULL;
    int rc = prs_gcra_new(&gcfg, &gcra);
    if (rc != PRS_OK) return fail("prs_gcra_new", rc);

    /* A token bucket: 5 tokens, refilled at 2 per second; starts full. */
    prs_token_bucket_config tcfg;
    prs_token_bucket_config_init(&tcfg);
    tcfg.capacity = 5.0;
    tcfg.refill_rate = 2.0;
    prs_token_bucket *bucket = NULL;
    rc = prs_token_bucket_new(&tcfg, &bucket);
    if (rc != PRS_OK) {
        prs_gcra_free(gcra);
        return fail("prs_token_bucket_new", rc);
    }

    /* A bad configuration is an error code, not a crash. */
    tcfg.capacity = -1.0;
    printf("token bucket with capacity -1: %s\n",
           prs_err_name(prs_token_bucket_config_validate(&tcfg)));

    static const step schedule[] = {
        {0, 1}, {0, 1}, {0, 1}, {0, 1},  /* a burst at t=0 */
        {50, 1},                         /* half an interval later */
        {100, 1}, {100, 1},              /* one interval later: one more */
        {250, 2},
        {600, 3},
        {700, 10},                       /* more than either limiter holds */
        {3000, 3},
    };
    const int64_t t0 = prs_monotonic_ns(); /* any origin works: only differences matter */
    int admitted_gcra = 0, admitted_bucket = 0;

    printf("GCRA rate=%g/s burst=%" PRId64 "; token bucket capacity=%g refill=%g/s\n",
           prs_gcra_rate(gcra), prs_gcra_burst(gcra), prs_token_bucket_capacity(bucket),
           prs_token_bucket_refill_rate(bucket));
    for (size_t i = 0; i < sizeof schedule / sizeof schedule[0]; i++) {
        const int64_t now = t0 + schedule[i].at_ms * PRS_NS_PER_MS;
        prs_decision d;
        if ((rc = prs_gcra_check(gcra, now, schedule[i].n, &d)) != PRS_OK) break;
        print_decision("gcra", schedule[i].at_ms, schedule[i].n, &d);
        admitted_gcra += d.allowed;
        if ((rc = prs_token_bucket_check(bucket, now, schedule[i].n, &d)) != PRS_OK) break;
        print_decision("token_bucket", schedule[i].at_ms, schedule[i].n, &d);
        admitted_bucket += d.allowed;
    }
    if (rc == PRS_OK) {
        /* A denial says exactly when to come back: peek there (it consumes nothing). */
        const int64_t now = t0 + 3000 * PRS_NS_PER_MS;
        prs_decision d, later;
        prs_gcra_check(gcra, now, 3, &d);
        prs_gcra_peek(gcra, now + d.retry_after_ns, 3, &later);
        printf("gcra denied 3 at t=3000 ms; retry_after=%.0f ms; at that instant: %s\n",
               (double)d.retry_after_ns / (double)PRS_NS_PER_MS, later.allowed ? "allowed" : "denied");
        printf("admitted: gcra %d, token bucket %d of %zu requests\n", admitted_gcra, admitted_bucket,
               sizeof schedule / sizeof schedule[0]);
    }

    prs_token_bucket_free(bucket);
    prs_gcra_free(gcra);
    if (rc != PRS_OK) return fail("check", rc);
    return 0;
}
