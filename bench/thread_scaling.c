/*
 * thread_scaling.c - how every core object holds up when threads share it.
 *
 * One shared object per row, every thread calling it as fast as it can for a
 * fixed time; the table is aggregate millions of operations per second at
 * 1, 2, 4, ... threads. Two reference rows are measured in the same run:
 *
 *   atomic_inc     one contended atomic fetch-add: the hardware's rate for a
 *                  single contended cache line, the ceiling of any shared write
 *   mutex_bucket   a naive token bucket behind a pthread mutex: the floor a
 *                  shared writing path must stay above
 *
 * Time: each thread reads the monotonic clock once every 64 operations and
 * passes that value as now_ns (the core never reads a clock), so a row measures
 * the core's own cost, as a binding that reads its clock per call would add the
 * same ~20 ns to every row alike. Admitting rows are configured so they never
 * deny during a run (huge capacities and rates); "gcra_deny" is a spent GCRA.
 *
 * Pure C: links the core library only. Build: `make bench-threads`; a static
 * binary for another machine: `make bench-threads-static`.
 *
 *   thread_scaling [--ms N] [--threads 1,2,4] [--rows name,name] [--csv]
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "pyresilience.h"

#define MAX_THREADS 256
#define KEYS_SPREAD 100000

typedef struct row row;
struct row {
    const char *name;
    const char *what;
    void *(*setup)(void);
    /* one operation by thread `tid` (its i-th), at now */
    void (*op)(void *obj, int tid, uint64_t i, int64_t now);
    void (*teardown)(void *obj);
};

static void die(const char *what, int rc) {
    fprintf(stderr, "thread_scaling: %s failed: %s\n", what, rc < 0 ? prs_strerror(rc) : "?");
    exit(2);
}
#define CHECK(call) do { int rc_ = (call); if (rc_ < 0) die(#call, rc_); } while (0)

/* ---- limiters ------------------------------------------------------------ */

static void *tb_setup(void) {
    prs_token_bucket_config c;
    prs_token_bucket_config_init(&c);
    c.capacity = 1e15;
    c.refill_rate = 1e15;
    prs_token_bucket *tb;
    CHECK(prs_token_bucket_new(&c, &tb));
    return tb;
}
static void tb_op(void *o, int tid, uint64_t i, int64_t now) {
    prs_decision d;
    prs_token_bucket_check(o, now, 1, &d);
}
static void tb_free(void *o) { prs_token_bucket_free(o); }

static void *gcra_setup(void) {
    prs_gcra_config c;
    prs_gcra_config_init(&c);
    c.rate = 1e9;
    c.burst = INT64_C(1) << 50;
    prs_gcra *g;
    CHECK(prs_gcra_new(&c, &g));
    return g;
}
static void *gcra_spent_setup(void) {
    prs_gcra_config c;
    prs_gcra_config_init(&c);
    c.rate = 1e-3;
    c.burst = 1;
    prs_gcra *g;
    CHECK(prs_gcra_new(&c, &g));
    prs_decision d;
    prs_gcra_check(g, prs_monotonic_ns(), 1, &d);
    return g;
}
static void gcra_op(void *o, int tid, uint64_t i, int64_t now) {
    prs_decision d;
    prs_gcra_check(o, now, 1, &d);
}
static void gcra_free(void *o) { prs_gcra_free(o); }

static void *lb_setup(void) {
    prs_leaky_bucket_config c;
    prs_leaky_bucket_config_init(&c);
    c.capacity = 1e15;
    c.leak_rate = 1e15;
    prs_leaky_bucket *lb;
    CHECK(prs_leaky_bucket_new(&c, &lb));
    return lb;
}
static void lb_op(void *o, int tid, uint64_t i, int64_t now) {
    prs_decision d;
    prs_leaky_bucket_check(o, now, 1, &d);
}
static void lb_free(void *o) { prs_leaky_bucket_free(o); }

static void *fw_setup(void) {
    prs_fixed_window_config c;
    prs_fixed_window_config_init(&c);
    c.limit = INT64_C(1) << 50;
    c.window_ns = 1000000000;
    prs_fixed_window *fw;
    CHECK(prs_fixed_window_new(&c, &fw));
    return fw;
}
static void fw_op(void *o, int tid, uint64_t i, int64_t now) {
    prs_decision d;
    prs_fixed_window_check(o, now, 1, &d);
}
static void fw_free(void *o) { prs_fixed_window_free(o); }

/* The log keeps one timestamp per unit: a 1 ms window with room for 2^22 units
 * admits everything up to 4e9 ops/s and costs 32 MB. */
static void *sl_setup(void) {
    prs_sliding_log_config c;
    prs_sliding_log_config_init(&c);
    c.limit = INT64_C(1) << 22;
    c.window_ns = 1000000;
    prs_sliding_log *sl;
    CHECK(prs_sliding_log_new(&c, &sl));
    return sl;
}
static void sl_op(void *o, int tid, uint64_t i, int64_t now) {
    prs_decision d;
    prs_sliding_log_check(o, now, 1, &d);
}
static void sl_free(void *o) { prs_sliding_log_free(o); }

static void *sc_setup(void) {
    prs_sliding_counter_config c;
    prs_sliding_counter_config_init(&c);
    c.limit = INT64_C(1) << 50;
    c.window_ns = 1000000000;
    prs_sliding_counter *sc;
    CHECK(prs_sliding_counter_new(&c, &sc));
    return sc;
}
static void sc_op(void *o, int tid, uint64_t i, int64_t now) {
    prs_decision d;
    prs_sliding_counter_check(o, now, 1, &d);
}
static void sc_free(void *o) { prs_sliding_counter_free(o); }

/* ---- keyed --------------------------------------------------------------- */

typedef struct keyed_ctx {
    prs_token_bucket *tmpl;
    prs_keyed *t;
    char keys[KEYS_SPREAD][8];
} keyed_ctx;

static void *keyed_setup(void) {
    keyed_ctx *k = calloc(1, sizeof *k);
    if (!k) die("calloc", PRS_ENOMEM);
    k->tmpl = tb_setup();
    prs_keyed_config c;
    prs_keyed_config_init(&c);
    c.algo = &prs_algo_token_bucket;
    c.params = prs_token_bucket_params(k->tmpl);
    c.max_keys = 2 * KEYS_SPREAD;
    CHECK(prs_keyed_new(&c, &k->t));
    for (int i = 0; i < KEYS_SPREAD; i++) snprintf(k->keys[i], sizeof k->keys[i], "k%06d", i);
    return k;
}
static void keyed_own_op(void *o, int tid, uint64_t i, int64_t now) {
    keyed_ctx *k = o;
    prs_decision d;
    prs_keyed_check(k->t, k->keys[tid], 7, now, 1, &d);
}
static void keyed_hot_op(void *o, int tid, uint64_t i, int64_t now) {
    keyed_ctx *k = o;
    prs_decision d;
    prs_keyed_check(k->t, "hot", 3, now, 1, &d);
}
static void keyed_spread_op(void *o, int tid, uint64_t i, int64_t now) {
    keyed_ctx *k = o;
    prs_decision d;
    /* each thread walks the keys with its own odd stride: spread, not lockstep */
    uint64_t idx = (i * (2 * (uint64_t)tid + 1) * 2654435761u) % KEYS_SPREAD;
    prs_keyed_check(k->t, k->keys[idx], 7, now, 1, &d);
}
static void keyed_free(void *o) {
    keyed_ctx *k = o;
    prs_keyed_free(k->t);
    prs_token_bucket_free(k->tmpl);
    free(k);
}

/* ---- group ---------------------------------------------------------------- */

typedef struct group_ctx {
    prs_token_bucket *tb;
    prs_gcra *g;
    prs_group *grp;
} group_ctx;

static void *group_setup(void) {
    group_ctx *c = calloc(1, sizeof *c);
    if (!c) die("calloc", PRS_ENOMEM);
    c->tb = tb_setup();
    c->g = gcra_setup();
    prs_group_member m[2];
    prs_group_member_token_bucket(&m[0], c->tb);
    prs_group_member_gcra(&m[1], c->g);
    CHECK(prs_group_new(m, 2, NULL, &c->grp));
    return c;
}
static void group_op(void *o, int tid, uint64_t i, int64_t now) {
    group_ctx *c = o;
    prs_decision d;
    int denied_by;
    prs_group_check(c->grp, now, 1, &d, &denied_by);
}
static void group_free(void *o) {
    group_ctx *c = o;
    prs_group_free(c->grp);
    prs_gcra_free(c->g);
    prs_token_bucket_free(c->tb);
    free(c);
}

/* ---- breaker --------------------------------------------------------------- */

static void *breaker_consecutive_setup(void) {
    prs_breaker_config c;
    prs_breaker_config_init(&c);
    prs_breaker *b;
    CHECK(prs_breaker_new(&c, &b));
    return b;
}
/* The closed fast path as the binding runs it: no clock on success. */
static void breaker_consecutive_op(void *o, int tid, uint64_t i, int64_t now) {
    prs_breaker_permit p;
    if (!prs_breaker_try_acquire_closed(o, &p)) {
        prs_breaker_decision d;
        prs_breaker_acquire(o, now, &d);
        p = d.permit;
    }
    prs_breaker_record(o, INT64_MIN, p, PRS_BREAKER_SUCCESS, 0, NULL);
}
static void *breaker_rate_setup(void) {
    prs_breaker_config c;
    prs_breaker_config_init(&c);
    c.failure_rate_threshold = 0.5;
    c.window_type = PRS_BREAKER_WINDOW_COUNT;
    c.window_size = 100;
    c.minimum_calls = 10;
    prs_breaker *b;
    CHECK(prs_breaker_new(&c, &b));
    return b;
}
static void breaker_rate_op(void *o, int tid, uint64_t i, int64_t now) {
    prs_breaker_permit p;
    if (!prs_breaker_try_acquire_closed(o, &p)) {
        prs_breaker_decision d;
        prs_breaker_acquire(o, now, &d);
        p = d.permit;
    }
    prs_breaker_record(o, now, p, PRS_BREAKER_SUCCESS, 0, NULL);
}
static void breaker_free(void *o) { prs_breaker_free(o); }

/* ---- bulkhead and ring ------------------------------------------------------ */

static void *bulkhead_setup(void) {
    prs_bulkhead_config c;
    prs_bulkhead_config_init(&c);
    c.max_concurrent = 1 << 20;
    prs_bulkhead *b;
    CHECK(prs_bulkhead_new(&c, &b));
    return b;
}
static void bulkhead_op(void *o, int tid, uint64_t i, int64_t now) {
    int acquired = 0;
    prs_bulkhead_try_acquire(o, now, 0, &acquired);
    if (acquired) {
        prs_bulkhead_waiter *woken = NULL;
        prs_bulkhead_release(o, now, &woken);
    }
}
static void bulkhead_free(void *o) { prs_bulkhead_free(o); }

static void *ring_setup(void) {
    prs_ring_config c;
    prs_ring_config_init(&c);
    c.capacity = 1 << 16;
    c.strategy = PRS_RING_BLOCK;
    prs_ring *r;
    CHECK(prs_ring_new(&c, &r));
    return r;
}
static void ring_op(void *o, int tid, uint64_t i, int64_t now) {
    prs_ring_result res;
    void *item = NULL;
    if (prs_ring_try_put(o, (void *)(uintptr_t)(i + 1), &res) == PRS_OK)
        prs_ring_get(o, NULL, &item, &res);
}
static void ring_free(void *o) { prs_ring_free(o); }

/* ---- references ------------------------------------------------------------- */

typedef struct { _Alignas(64) _Atomic uint64_t n; } atomic_ctx;
static void *atomic_setup(void) {
    atomic_ctx *a = aligned_alloc(64, sizeof *a);
    if (!a) die("aligned_alloc", PRS_ENOMEM);
    atomic_init(&a->n, 0);
    return a;
}
static void atomic_op(void *o, int tid, uint64_t i, int64_t now) {
    atomic_fetch_add_explicit(&((atomic_ctx *)o)->n, 1, memory_order_relaxed);
}

typedef struct {
    pthread_mutex_t mu;
    double tokens, capacity, rate;
    int64_t last;
} mutex_bucket;
static void *mutex_setup(void) {
    mutex_bucket *m = calloc(1, sizeof *m);
    if (!m) die("calloc", PRS_ENOMEM);
    pthread_mutex_init(&m->mu, NULL);
    m->capacity = m->tokens = 1e15;
    m->rate = 1e15 / 1e9;
    m->last = prs_monotonic_ns();
    return m;
}
static void mutex_op(void *o, int tid, uint64_t i, int64_t now) {
    mutex_bucket *m = o;
    pthread_mutex_lock(&m->mu);
    if (now > m->last) {
        m->tokens += (double)(now - m->last) * m->rate;
        if (m->tokens > m->capacity) m->tokens = m->capacity;
        m->last = now;
    }
    if (m->tokens >= 1.0) m->tokens -= 1.0;
    pthread_mutex_unlock(&m->mu);
}
static void mutex_free(void *o) {
    pthread_mutex_destroy(&((mutex_bucket *)o)->mu);
    free(o);
}

static const row ROWS[] = {
    {"atomic_inc", "reference: one contended atomic fetch-add", atomic_setup, atomic_op, free},
    {"mutex_bucket", "reference: token bucket behind a pthread mutex", mutex_setup, mutex_op, mutex_free},
    {"token_bucket", "TokenBucket admitting", tb_setup, tb_op, tb_free},
    {"gcra", "GCRA admitting", gcra_setup, gcra_op, gcra_free},
    {"gcra_deny", "GCRA denying (spent)", gcra_spent_setup, gcra_op, gcra_free},
    {"leaky_bucket", "LeakyBucket admitting", lb_setup, lb_op, lb_free},
    {"fixed_window", "FixedWindow admitting", fw_setup, fw_op, fw_free},
    {"sliding_log", "SlidingWindowLog admitting", sl_setup, sl_op, sl_free},
    {"sliding_counter", "SlidingWindowCounter admitting", sc_setup, sc_op, sc_free},
    {"keyed_own", "KeyedLimiter, a key per thread", keyed_setup, keyed_own_op, keyed_free},
    {"keyed_hot", "KeyedLimiter, one hot key", keyed_setup, keyed_hot_op, keyed_free},
    {"keyed_spread", "KeyedLimiter, 100k keys spread", keyed_setup, keyed_spread_op, keyed_free},
    {"group", "LimiterGroup of TokenBucket + GCRA", group_setup, group_op, group_free},
    {"breaker_closed", "CircuitBreaker closed, consecutive mode, success", breaker_consecutive_setup,
     breaker_consecutive_op, breaker_free},
    {"breaker_rate", "CircuitBreaker closed, failure-rate window, success", breaker_rate_setup,
     breaker_rate_op, breaker_free},
    {"bulkhead", "Bulkhead try_acquire + release", bulkhead_setup, bulkhead_op, bulkhead_free},
    {"ring", "ring try_put + get", ring_setup, ring_op, ring_free},
};
#define NROWS (sizeof ROWS / sizeof ROWS[0])

/* ---- the runner -------------------------------------------------------------- */

typedef struct worker {
    pthread_t th;
    int tid;
    const row *r;
    void *obj;
    _Atomic int *go;
    _Atomic int *stop;
    _Atomic int *ready;
    uint64_t ops;
    char pad[64];
} worker;

static void *work(void *arg) {
    worker *w = arg;
    atomic_fetch_add(w->ready, 1);
    while (!atomic_load_explicit(w->go, memory_order_acquire)) {}
    uint64_t i = 0;
    void (*op)(void *, int, uint64_t, int64_t) = w->r->op;
    while (!atomic_load_explicit(w->stop, memory_order_relaxed)) {
        int64_t now = prs_monotonic_ns();
        for (int k = 0; k < 64; k++, i++) op(w->obj, w->tid, i, now);
    }
    w->ops = i;
    return NULL;
}

static double run_cell(const row *r, int nthreads, int ms) {
    static worker ws[MAX_THREADS];
    _Atomic int go = 0, stop = 0, ready = 0;
    void *obj = r->setup();
    for (int t = 0; t < nthreads; t++) {
        ws[t] = (worker){.tid = t, .r = r, .obj = obj, .go = &go, .stop = &stop, .ready = &ready};
        if (pthread_create(&ws[t].th, NULL, work, &ws[t]) != 0) die("pthread_create", -1);
    }
    while (atomic_load(&ready) < nthreads) {}
    int64_t t0 = prs_monotonic_ns();
    atomic_store_explicit(&go, 1, memory_order_release);
    prs_sleep_ns((int64_t)ms * 1000000);
    atomic_store(&stop, 1);
    uint64_t total = 0;
    for (int t = 0; t < nthreads; t++) {
        pthread_join(ws[t].th, NULL);
        total += ws[t].ops;
    }
    int64_t dt = prs_monotonic_ns() - t0;
    r->teardown(obj);
    return (double)total / ((double)dt / 1e9) / 1e6;
}

static int parse_list(const char *s, int *out, int max) {
    int n = 0;
    while (*s && n < max) {
        out[n++] = atoi(s);
        const char *c = strchr(s, ',');
        if (!c) break;
        s = c + 1;
    }
    return n;
}

int main(int argc, char **argv) {
    int ms = 200, csv = 0;
    int threads[32];
    int nthreads = 0;
    const char *only = NULL;
    for (int a = 1; a < argc; a++) {
        if (!strcmp(argv[a], "--ms") && a + 1 < argc) ms = atoi(argv[++a]);
        else if (!strcmp(argv[a], "--threads") && a + 1 < argc) nthreads = parse_list(argv[++a], threads, 32);
        else if (!strcmp(argv[a], "--rows") && a + 1 < argc) only = argv[++a];
        else if (!strcmp(argv[a], "--csv")) csv = 1;
        else {
            fprintf(stderr, "usage: %s [--ms N] [--threads 1,2,4] [--rows a,b] [--csv]\n", argv[0]);
            return 2;
        }
    }
    if (ms < 1) ms = 1;
    if (nthreads == 0) {
        /* 1, 2, 4, ... up to twice the cores */
        long cores = sysconf(_SC_NPROCESSORS_ONLN);
        for (int t = 1; t <= 2 * cores && nthreads < 32; t *= 2) threads[nthreads++] = t;
        if (threads[nthreads - 1] != 2 * cores && nthreads < 32) threads[nthreads++] = (int)(2 * cores);
    }
    for (int i = 0; i < nthreads; i++)
        if (threads[i] < 1 || threads[i] > MAX_THREADS) {
            fprintf(stderr, "threads must be in 1..%d\n", MAX_THREADS);
            return 2;
        }

    printf(csv ? "row" : "| row (M ops/s) |");
    for (int i = 0; i < nthreads; i++) printf(csv ? ",%d" : " %d |", threads[i]);
    printf("\n");
    if (!csv) {
        printf("|---|");
        for (int i = 0; i < nthreads; i++) printf("---:|");
        printf("\n");
    }
    for (size_t r = 0; r < NROWS; r++) {
        if (only) {
            size_t len = strlen(ROWS[r].name);
            const char *p = strstr(only, ROWS[r].name);
            if (!p || (p != only && p[-1] != ',') || (p[len] && p[len] != ',')) continue;
        }
        printf(csv ? "%s" : "| %s |", ROWS[r].name);
        for (int i = 0; i < nthreads; i++) {
            double m = run_cell(&ROWS[r], threads[i], ms);
            printf(csv ? ",%.1f" : " %.1f |", m);
            fflush(stdout);
        }
        printf("\n");
    }
    return 0;
}
