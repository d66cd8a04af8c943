/* test_ring.c - the bounded ring: config table, every strategy, waiters on
 * both sides, close, watermarks, producer/consumer threads with exact
 * accounting, allocation failure, fork. */
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "prs_ring.h"
#include "prs_test.h"
#include "test_waiters.h"

#define P(i) ((void *)(uintptr_t)(i))
#define I(p) ((int64_t)(uintptr_t)(p))

static prs_ring *make_ring(int64_t cap, prs_ring_strategy st) {
    prs_ring_config cfg;
    prs_ring_config_init(&cfg);
    cfg.capacity = cap;
    cfg.strategy = st;
    prs_ring *r = NULL;
    ASSERT_OK(prs_ring_new(&cfg, &r));
    return r;
}

static int64_t get_one(prs_ring *r) {
    void *item = NULL;
    prs_ring_result res;
    ASSERT_OK(prs_ring_get(r, NULL, &item, &res));
    ASSERT_EQ(res.outcome, PRS_RING_GOT);
    return I(item);
}

/* What holds at every quiescent point: the size within capacity (a shrink
 * aside) and received == processed + dropped + size + producers waiting. */
static void assert_within(prs_ring *r) {
    prs_ring_stats s;
    prs_ring_stats_get(r, &s);
    ASSERT(s.size <= s.capacity);
    ASSERT_EQ(s.received, s.processed + s.dropped + s.size + s.producers_waiting);
}

/* The counters received, processed, dropped and size (-1: not checked). */
static void expect_counts(prs_ring *r, int64_t received, int64_t processed, int64_t dropped, int64_t size) {
    prs_ring_stats s;
    prs_ring_stats_get(r, &s);
    ASSERT_EQ(s.received, received);
    if (processed >= 0) ASSERT_EQ(s.processed, processed);
    if (dropped >= 0) ASSERT_EQ(s.dropped, dropped);
    if (size >= 0) ASSERT_EQ(s.size, size);
}

/* Each row: the status, and for a refusal the field that *why names. */
TEST(ring_config) {
    static const struct { int64_t cap; int st; int wm; double hi, lo; int want; const char *field; } rows[] = {
        {1, PRS_RING_BLOCK, 0, 0, 0, PRS_OK, NULL},
        {10, PRS_RING_ERROR, 1, 0.8, 0.2, PRS_OK, NULL},
        {10, PRS_RING_DROP_OLDEST, 1, 1.0, 0.0, PRS_OK, NULL},
        {0, PRS_RING_BLOCK, 0, 0, 0, PRS_OK, NULL}, /* unbounded */
        {-1, PRS_RING_BLOCK, 0, 0, 0, PRS_EINVAL, "capacity"},
        {PRS_RING_MAX + 1, PRS_RING_BLOCK, 0, 0, 0, PRS_ERANGE, "capacity"},
        {4, 7, 0, 0, 0, PRS_EINVAL, "strategy"},
        {4, -1, 0, 0, 0, PRS_EINVAL, "strategy"},
        {4, PRS_RING_BLOCK, 1, 0.0, 0.0, PRS_EINVAL, "high_watermark"},
        {4, PRS_RING_BLOCK, 1, 1.5, 0.1, PRS_EINVAL, "high_watermark"},
        {4, PRS_RING_BLOCK, 1, NAN, 0.1, PRS_EINVAL, "high_watermark"},
        {4, PRS_RING_BLOCK, 1, 0.5, 0.5, PRS_EINVAL, "low_watermark"},
        {4, PRS_RING_BLOCK, 1, 0.2, 0.8, PRS_EINVAL, "low_watermark"},
        {4, PRS_RING_BLOCK, 1, 0.5, -0.1, PRS_EINVAL, "low_watermark"},
        {4, PRS_RING_BLOCK, 1, 0.9, NAN, PRS_EINVAL, "low_watermark"},
        {0, PRS_RING_BLOCK, 1, 0.8, 0.2, PRS_EINVAL, "capacity"}, /* watermarks need a bound */
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        prs_ring_config cfg;
        prs_ring_config_init(&cfg);
        cfg.capacity = rows[i].cap;
        cfg.strategy = (prs_ring_strategy)rows[i].st;
        cfg.watermarks = rows[i].wm;
        cfg.high_watermark = rows[i].hi;
        cfg.low_watermark = rows[i].lo;
        ASSERT_STATUS(prs_ring_config_validate(&cfg), rows[i].want);
        prs_config_error why = {NULL, NULL};
        ASSERT_STATUS(prs_ring_config_check(&cfg, &why), rows[i].want);
        if (rows[i].field) {
            ASSERT_STREQ(why.field, rows[i].field);
            ASSERT(why.reason != NULL && strncmp(why.reason, "must be", 7) == 0);
        } else {
            ASSERT(why.field == NULL && why.reason == NULL); /* untouched on success */
        }
        prs_ring *r = (prs_ring *)&cfg;
        ASSERT_STATUS(prs_ring_new(&cfg, &r), rows[i].want);
        ASSERT(rows[i].want == PRS_OK ? r != NULL : r == NULL);
        prs_ring_free(r);
    }
    prs_ring_strategy st;
    ASSERT_OK(prs_ring_strategy_parse("drop_newest", &st));
    ASSERT_EQ(st, PRS_RING_DROP_NEWEST);
    ASSERT_STATUS(prs_ring_strategy_parse("drop", &st), PRS_EINVAL);
    ASSERT_STREQ(prs_ring_strategy_name(PRS_RING_DROP_OLDEST), "drop_oldest");
    ASSERT(prs_ring_strategy_name(9) == NULL);
}

/* The blocking join: it times out while a task is unfinished, returns at once
 * when none is, and marking the last task done serves a thread joining with no
 * deadline (DONE whether it queued before or after). */
typedef struct {
    prs_ring *r;
    atomic_int started;
} join_ctx;

static void *join_forever(void *arg) {
    join_ctx *c = arg;
    prs_ring_result res;
    atomic_store(&c->started, 1);
    if (prs_ring_join_blocking(c->r, PRS_NEVER, &res) != PRS_OK || res.outcome != PRS_RING_DONE) abort();
    return NULL;
}

TEST(ring_join_blocking) {
    prs_ring *r = make_ring(2, PRS_RING_BLOCK);
    prs_ring_result res;
    ASSERT_OK(prs_ring_join_blocking(r, 0, &res)); /* nothing unfinished */
    ASSERT_EQ(res.outcome, PRS_RING_DONE);
    ASSERT_OK(prs_ring_put(r, P(1), NULL, &res));
    ASSERT_STATUS(prs_ring_join_blocking(r, prs_monotonic_ns() + PRS_NS_PER_MS, &res), PRS_ETIMEDOUT);
    ASSERT_EQ(res.outcome, PRS_RING_TIMED_OUT);
    join_ctx c = {.r = r};
    atomic_init(&c.started, 0);
    pthread_t t;
    pthread_create(&t, NULL, join_forever, &c);
    while (!atomic_load(&c.started)) sched_yield();
    ASSERT_EQ(get_one(r), 1); /* the joiner waits (or is about to) until: */
    ASSERT_OK(prs_ring_task_done(r, &res));
    pthread_join(t, NULL);
    ASSERT_STATUS(prs_ring_task_done(r, &res), PRS_EINVAL);
    prs_ring_free(r);
}

/* A get blocked on an empty ring ends with PRS_ECLOSED when another thread
 * closes the ring. */
static void *close_soon(void *arg) {
    prs_ring_result res;
    struct timespec ts = {0, 2000000};
    nanosleep(&ts, NULL);
    prs_ring_close(arg, &res);
    return NULL;
}

TEST(ring_get_blocking_closed) {
    prs_ring *r = make_ring(2, PRS_RING_BLOCK);
    prs_ring_result res;
    void *item = P(7);
    pthread_t t;
    pthread_create(&t, NULL, close_soon, r);
    ASSERT_STATUS(prs_ring_get_blocking(r, PRS_NEVER, &item, &res), PRS_ECLOSED);
    ASSERT_EQ(res.outcome, PRS_RING_CLOSED);
    pthread_join(t, NULL);
    ASSERT_STATUS(prs_ring_put_blocking(r, P(1), PRS_NEVER, &res), PRS_ECLOSED);
    prs_ring_free(r);
}

/* Puts 1..5 into a ring of 3 with each strategy; expected outcomes, evicted
 * items, and what the getters see afterwards. */
TEST(ring_strategies_table) {
    static const struct {
        prs_ring_strategy st;
        int outcomes[5];
        int64_t evicted[5];
        int64_t contents[3];
        int64_t dropped;
    } rows[] = {
        {PRS_RING_BLOCK,
         {PRS_RING_STORED, PRS_RING_STORED, PRS_RING_STORED, PRS_RING_FULL, PRS_RING_FULL},
         {0, 0, 0, 0, 0}, {1, 2, 3}, 2},
        {PRS_RING_DROP_OLDEST,
         {PRS_RING_STORED, PRS_RING_STORED, PRS_RING_STORED, PRS_RING_EVICTED, PRS_RING_EVICTED},
         {0, 0, 0, 1, 2}, {3, 4, 5}, 2},
        {PRS_RING_DROP_NEWEST,
         {PRS_RING_STORED, PRS_RING_STORED, PRS_RING_STORED, PRS_RING_DROPPED, PRS_RING_DROPPED},
         {0, 0, 0, 0, 0}, {1, 2, 3}, 2},
        {PRS_RING_ERROR,
         {PRS_RING_STORED, PRS_RING_STORED, PRS_RING_STORED, PRS_RING_FULL, PRS_RING_FULL},
         {0, 0, 0, 0, 0}, {1, 2, 3}, 2},
    };
    for (size_t k = 0; k < sizeof rows / sizeof rows[0]; k++) {
        prs_ring *r = make_ring(3, rows[k].st);
        for (int i = 0; i < 5; i++) {
            prs_ring_result res;
            ASSERT_OK(prs_ring_put(r, P(i + 1), NULL, &res));
            ASSERT_EQ(res.outcome, rows[k].outcomes[i]);
            ASSERT_EQ(I(res.evicted), rows[k].evicted[i]);
        }
        ASSERT_EQ(prs_ring_size(r), 3);
        for (int i = 0; i < 3; i++) ASSERT_EQ(get_one(r), rows[k].contents[i]);
        void *item;
        prs_ring_result res;
        ASSERT_STATUS(prs_ring_get(r, NULL, &item, &res), PRS_EEMPTY);
        prs_ring_stats s;
        prs_ring_stats_get(r, &s);
        ASSERT_EQ(s.received, 5);
        ASSERT_EQ(s.processed, 3);
        ASSERT_EQ(s.dropped, rows[k].dropped);
        ASSERT_EQ(s.blocked, 0);
        prs_ring_free(r);
    }
}

TEST(ring_wraparound) {
    prs_ring *r = make_ring(4, PRS_RING_ERROR);
    int64_t next_in = 1, next_out = 1;
    for (int round = 0; round < 1000; round++) {
        int n = 1 + round % 4;
        prs_ring_result res;
        for (int i = 0; i < n; i++) ASSERT_OK(prs_ring_put(r, P(next_in++), NULL, &res));
        for (int i = 0; i < n; i++) ASSERT_EQ(get_one(r), next_out++);
    }
    ASSERT_EQ(prs_ring_size(r), 0);
    prs_ring_free(r);
}

/* NOTIFY producers (event-loop tasks): a served one holds a reserved slot and
 * its item enters only when it settles - ACCEPT stores it, CANCEL takes it
 * back (counted dropped) and the slot goes to the next producer. */
TEST(ring_block_producer_waiters) {
    prs_ring *r = make_ring(2, PRS_RING_BLOCK);
    prs_ring_result res;
    prs_ring_waiter p[3];
    for (int i = 0; i < 3; i++) ASSERT_OK(prs_ring_waiter_init(&p[i], PRS_RING_PRODUCER, 0, NULL));
    ASSERT_OK(prs_ring_put(r, P(1), &p[0], &res));
    ASSERT_EQ(res.outcome, PRS_RING_STORED);
    ASSERT_OK(prs_ring_put(r, P(2), NULL, &res));
    for (int i = 0; i < 3; i++) {
        ASSERT_OK(prs_ring_put(r, P(10 + i), &p[i], &res));
        ASSERT_EQ(res.outcome, PRS_RING_WAITING);
    }
    /* a get frees a slot: it is reserved for the oldest producer */
    ASSERT_EQ(get_one(r), 1);
    void *item;
    ASSERT_OK(prs_ring_get(r, NULL, &item, &res));
    ASSERT_EQ(I(item), 2);
    ASSERT(res.woken == &p[1]);
    ASSERT(res.woken->next == NULL);
    ASSERT_EQ(prs_ring_size(r), 2); /* two reserved slots: full */
    ASSERT(prs_ring_is_full(r));
    ASSERT_STATUS(prs_ring_get(r, NULL, &item, &res), PRS_EEMPTY); /* nothing stored yet */
    ASSERT_OK(prs_ring_put(r, P(99), NULL, &res));
    ASSERT_EQ(res.outcome, PRS_RING_FULL);
    /* p[0] settles: its item goes in */
    ASSERT_OK(prs_ring_finish(r, &p[0], PRS_RING_FINISH_ACCEPT, &item, &res));
    ASSERT_EQ(res.outcome, PRS_RING_STORED);
    ASSERT(item == NULL);
    /* p[1] was cancelled before its task ran: its item comes back, not stored,
     * and the slot goes to p[2] */
    ASSERT_OK(prs_ring_finish(r, &p[1], PRS_RING_FINISH_CANCEL, &item, &res));
    ASSERT_EQ(res.outcome, PRS_RING_GAVE_BACK);
    ASSERT_EQ(I(item), 11);
    ASSERT(res.woken == &p[2]);
    ASSERT_OK(prs_ring_finish(r, &p[2], PRS_RING_FINISH_ACCEPT, &item, &res));
    ASSERT_EQ(res.outcome, PRS_RING_STORED);
    ASSERT_EQ(get_one(r), 10);
    ASSERT_EQ(get_one(r), 12);
    prs_ring_stats s;
    prs_ring_stats_get(r, &s);
    ASSERT_EQ(s.received, 6);
    ASSERT_EQ(s.processed, 4);
    ASSERT_EQ(s.dropped, 2); /* 99 refused, 11 cancelled */
    ASSERT_EQ(s.blocked, 3);
    ASSERT_EQ(s.producers_waiting, 0);
    ASSERT_EQ(s.size, 0);
    /* A queued producer that times out still gets its item back. */
    ASSERT_OK(prs_ring_put(r, P(20), NULL, &res));
    ASSERT_OK(prs_ring_put(r, P(21), NULL, &res));
    ASSERT_OK(prs_ring_put(r, P(22), &p[0], &res));
    ASSERT_OK(prs_ring_finish(r, &p[0], PRS_RING_FINISH_ACCEPT, &item, &res));
    ASSERT_EQ(res.outcome, PRS_RING_TIMED_OUT);
    ASSERT_EQ(I(item), 22);
    for (int i = 0; i < 3; i++) prs_ring_waiter_destroy(&p[i]);
    prs_ring_drain(r, NULL, NULL);
    prs_ring_free(r);
}

/* A served NOTIFY producer: ACCEPT hands its item to a consumer that queued
 * meanwhile; after close, ACCEPT gives the item back (CLOSED, dropped). */
TEST(ring_notify_producer_accept_and_close) {
    prs_ring *r = make_ring(1, PRS_RING_BLOCK);
    prs_ring_result res;
    prs_ring_waiter p, c;
    void *item;
    ASSERT_OK(prs_ring_waiter_init(&p, PRS_RING_PRODUCER, 0, NULL));
    ASSERT_OK(prs_ring_waiter_init(&c, PRS_RING_CONSUMER, 0, NULL));
    ASSERT_OK(prs_ring_put(r, P(1), NULL, &res));
    ASSERT_OK(prs_ring_put(r, P(2), &p, &res));
    ASSERT_EQ(get_one(r), 1);                      /* p served: slot reserved */
    ASSERT_OK(prs_ring_get(r, &c, &item, &res));   /* nothing stored: c queues */
    ASSERT_EQ(res.outcome, PRS_RING_WAITING);
    ASSERT_OK(prs_ring_finish(r, &p, PRS_RING_FINISH_ACCEPT, &item, &res));
    ASSERT_EQ(res.outcome, PRS_RING_STORED);
    ASSERT(res.woken == &c);                       /* straight to c */
    ASSERT_OK(prs_ring_finish(r, &c, PRS_RING_FINISH_ACCEPT, &item, &res));
    ASSERT_EQ(I(item), 2);
    ASSERT_OK(prs_ring_put(r, P(3), NULL, &res));
    ASSERT_OK(prs_ring_put(r, P(4), &p, &res));
    ASSERT_EQ(get_one(r), 3);                      /* p served again */
    ASSERT_OK(prs_ring_close(r, &res));
    ASSERT_OK(prs_ring_finish(r, &p, PRS_RING_FINISH_ACCEPT, &item, &res));
    ASSERT_EQ(res.outcome, PRS_RING_CLOSED);
    ASSERT_EQ(I(item), 4);
    prs_ring_stats s;
    prs_ring_stats_get(r, &s);
    ASSERT_EQ(s.size, 0);
    ASSERT_EQ(s.received, s.processed + s.dropped);
    prs_ring_waiter_destroy(&p);
    prs_ring_waiter_destroy(&c);
    prs_ring_free(r);
}

TEST(ring_consumer_handoff_and_give_back) {
    prs_ring *r = make_ring(2, PRS_RING_DROP_NEWEST);
    prs_ring_result res;
    prs_ring_waiter c[2];
    void *item;
    for (int i = 0; i < 2; i++) {
        ASSERT_OK(prs_ring_waiter_init(&c[i], 0, 0, NULL));
        ASSERT_OK(prs_ring_get(r, &c[i], &item, &res));
        ASSERT_EQ(res.outcome, PRS_RING_WAITING);
    }
    ASSERT_OK(prs_ring_put(r, P(1), NULL, &res));
    ASSERT(res.woken == &c[0]);
    ASSERT_OK(prs_ring_put(r, P(2), NULL, &res));
    ASSERT(res.woken == &c[1]);
    /* handed items keep their slots */
    ASSERT_EQ(prs_ring_size(r), 2);
    ASSERT_OK(prs_ring_put(r, P(3), NULL, &res));
    ASSERT_EQ(res.outcome, PRS_RING_DROPPED);
    /* c[0] is cancelled after it was served: item 1 goes back to the front */
    ASSERT_OK(prs_ring_finish(r, &c[0], PRS_RING_FINISH_CANCEL, &item, &res));
    ASSERT_EQ(res.outcome, PRS_RING_GAVE_BACK);
    ASSERT_OK(prs_ring_finish(r, &c[1], PRS_RING_FINISH_ACCEPT, &item, &res));
    ASSERT_EQ(res.outcome, PRS_RING_GOT);
    ASSERT_EQ(I(item), 2);
    ASSERT_OK(prs_ring_put(r, P(4), NULL, &res));
    ASSERT_EQ(get_one(r), 1);
    ASSERT_EQ(get_one(r), 4);
    /* a queued consumer that gives up takes nothing */
    ASSERT_OK(prs_ring_get(r, &c[0], &item, &res));
    ASSERT_OK(prs_ring_finish(r, &c[0], PRS_RING_FINISH_ACCEPT, &item, &res));
    ASSERT_EQ(res.outcome, PRS_RING_TIMED_OUT);
    expect_counts(r, 4, 3, 1, 0);
    prs_ring_stats s;
    prs_ring_stats_get(r, &s);
    ASSERT_EQ(s.consumers_waiting, 0);
    prs_ring_free(r);
}

TEST(ring_drop_oldest_all_handed) {
    prs_ring *r = make_ring(1, PRS_RING_DROP_OLDEST);
    prs_ring_waiter c;
    prs_ring_result res;
    void *item;
    prs_ring_waiter_init(&c, 0, 0, NULL);
    prs_ring_get(r, &c, &item, &res);
    prs_ring_put(r, P(1), NULL, &res); /* handed to c */
    ASSERT_OK(prs_ring_put(r, P(2), NULL, &res));
    ASSERT_EQ(res.outcome, PRS_RING_DROPPED); /* nothing stored to evict */
    prs_ring_finish(r, &c, PRS_RING_FINISH_ACCEPT, &item, &res);
    ASSERT_EQ(I(item), 1);
    prs_ring_free(r);
}

TEST(ring_close) {
    prs_ring *r = make_ring(2, PRS_RING_BLOCK);
    prs_ring_result res;
    prs_ring_waiter p;
    void *item;
    prs_ring_waiter_init(&p, 1, 0, NULL);
    prs_ring_put(r, P(1), NULL, &res);
    prs_ring_put(r, P(2), NULL, &res);
    ASSERT_OK(prs_ring_put(r, P(3), &p, &res));
    ASSERT_EQ(res.outcome, PRS_RING_WAITING);
    ASSERT_OK(prs_ring_close(r, &res));
    ASSERT(res.woken == &p);
    ASSERT_OK(prs_ring_close(r, &res)); /* idempotent */
    ASSERT(res.woken == NULL);
    ASSERT_OK(prs_ring_finish(r, &p, PRS_RING_FINISH_ACCEPT, &item, &res));
    ASSERT_EQ(res.outcome, PRS_RING_CLOSED);
    ASSERT_EQ(I(item), 3);
    ASSERT_STATUS(prs_ring_put(r, P(4), NULL, &res), PRS_ECLOSED);
    ASSERT_EQ(get_one(r), 1); /* drains */
    ASSERT_EQ(get_one(r), 2);
    ASSERT_STATUS(prs_ring_get(r, NULL, &item, &res), PRS_ECLOSED);
    prs_ring_waiter c;
    prs_ring_waiter_init(&c, 0, 0, NULL);
    ASSERT_STATUS(prs_ring_get(r, &c, &item, &res), PRS_ECLOSED);
    expect_counts(r, 3, 2, 1, 0);
    ASSERT_EQ(prs_ring_is_closed(r), 1);
    prs_ring_free(r);
}

TEST(ring_close_wakes_consumers) {
    prs_ring *r = make_ring(2, PRS_RING_BLOCK);
    prs_ring_result res;
    prs_ring_waiter c[2];
    void *item;
    for (int i = 0; i < 2; i++) {
        prs_ring_waiter_init(&c[i], 0, 0, NULL);
        prs_ring_get(r, &c[i], &item, &res);
    }
    prs_ring_close(r, &res);
    ASSERT(res.woken == &c[0]);
    ASSERT(res.woken->next == &c[1]);
    for (int i = 0; i < 2; i++) {
        prs_ring_finish(r, &c[i], PRS_RING_FINISH_ACCEPT, &item, &res);
        ASSERT_EQ(res.outcome, PRS_RING_CLOSED);
    }
    prs_ring_free(r);
}

TEST(ring_watermarks_table) {
    prs_ring_config cfg;
    prs_ring_config_init(&cfg);
    cfg.capacity = 10;
    cfg.strategy = PRS_RING_DROP_NEWEST;
    cfg.watermarks = 1;
    cfg.high_watermark = 0.75; /* size >= 8 */
    cfg.low_watermark = 0.25;  /* size <= 2 */
    prs_ring *r;
    ASSERT_OK(prs_ring_new(&cfg, &r));
    /* +1 put, -1 get; expected events after the op, and size */
    static const struct { int op; unsigned ev; int64_t size; } rows[] = {
        {+1, 0, 1}, {+1, 0, 2}, {+1, 0, 3}, {+1, 0, 4}, {+1, 0, 5}, {+1, 0, 6}, {+1, 0, 7},
        {+1, PRS_RING_EV_HIGH, 8}, {+1, 0, 9}, {-1, 0, 8}, {-1, 0, 7}, {+1, 0, 8},
        {+1, 0, 9}, {+1, 0, 10}, {+1, 0, 10}, {-1, 0, 9}, {-1, 0, 8}, {-1, 0, 7}, {-1, 0, 6},
        {-1, 0, 5}, {-1, 0, 4}, {-1, 0, 3}, {-1, PRS_RING_EV_LOW, 2}, {-1, 0, 1},
        {+1, 0, 2}, {+1, 0, 3}, {-1, 0, 2}, {+1, 0, 3}, {+1, 0, 4}, {+1, 0, 5}, {+1, 0, 6},
        {+1, 0, 7}, {+1, PRS_RING_EV_HIGH, 8},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        prs_ring_result res;
        void *item;
        if (rows[i].op > 0) ASSERT_OK(prs_ring_put(r, P(i + 1), NULL, &res));
        else ASSERT_OK(prs_ring_get(r, NULL, &item, &res));
        if (res.events != rows[i].ev) PRS__FAIL("row %zu: events %u, want %u", i, res.events, rows[i].ev);
        ASSERT_EQ(prs_ring_size(r), rows[i].size);
    }
    prs_ring_stats s;
    prs_ring_stats_get(r, &s);
    ASSERT_EQ(s.high_events, 2);
    ASSERT_EQ(s.low_events, 1);
    prs_ring_drain(r, NULL, NULL);
    prs_ring_free(r);
}

TEST(ring_watermark_rounding) {
    /* capacity 3, high 0.5 -> size >= 2; low 0.4 -> size <= 1 */
    prs_ring_config cfg;
    prs_ring_config_init(&cfg);
    cfg.capacity = 3;
    cfg.watermarks = 1;
    cfg.high_watermark = 0.5;
    cfg.low_watermark = 0.4;
    prs_ring *r;
    ASSERT_OK(prs_ring_new(&cfg, &r));
    prs_ring_result res;
    void *item;
    prs_ring_put(r, P(1), NULL, &res);
    ASSERT_EQ(res.events, 0);
    prs_ring_put(r, P(2), NULL, &res);
    ASSERT_EQ(res.events, PRS_RING_EV_HIGH);
    prs_ring_get(r, NULL, &item, &res);
    ASSERT_EQ(res.events, PRS_RING_EV_LOW);
    prs_ring_drain(r, NULL, NULL);
    prs_ring_free(r);
}

static int count_fn(void *item, void *arg) {
    (*(int64_t *)arg) += I(item);
    return 0;
}
static void sum_fn(void *item, void *arg) { (*(int64_t *)arg) += I(item); }

TEST(ring_foreach_drain) {
    prs_ring *r = make_ring(5, PRS_RING_DROP_OLDEST);
    prs_ring_result res;
    for (int i = 1; i <= 7; i++) prs_ring_put(r, P(i), NULL, &res);
    int64_t sum = 0;
    ASSERT_EQ(prs_ring_foreach(r, count_fn, &sum), 0);
    ASSERT_EQ(sum, 3 + 4 + 5 + 6 + 7);
    sum = 0;
    ASSERT_EQ(prs_ring_drain(r, sum_fn, &sum), 5);
    ASSERT_EQ(sum, 25);
    ASSERT_EQ(prs_ring_size(r), 0);
    prs_ring_free(r);
}

TEST(ring_blocking_forms) {
    prs_ring *r = make_ring(1, PRS_RING_BLOCK);
    prs_ring_result res;
    void *item;
    ASSERT_STATUS(prs_ring_get_blocking(r, 0, &item, &res), PRS_ETIMEDOUT);
    ASSERT_OK(prs_ring_put_blocking(r, P(1), 0, &res));
    ASSERT_EQ(res.outcome, PRS_RING_STORED);
    ASSERT_OK(prs_ring_put_blocking(r, P(2), prs_monotonic_ns() + PRS_NS_PER_MS, &res));
    ASSERT_EQ(res.outcome, PRS_RING_TIMED_OUT);
    ASSERT_OK(prs_ring_get_blocking(r, PRS_NEVER, &item, &res));
    ASSERT_EQ(I(item), 1);
    prs_ring_stats s;
    prs_ring_stats_get(r, &s);
    ASSERT_EQ(s.received, 2);
    ASSERT_EQ(s.dropped, 1);
    ASSERT_EQ(s.blocked, 1);
    ASSERT_EQ(s.producers_waiting + s.consumers_waiting, 0);
    prs_ring_free(r);
}

/* ---- threads: 4 producers x 4 consumers, every item exactly once -------- */

#define NPROD 4
#define NCONS 4
#define PER_PRODUCER 250000 /* 4 producers: 10^6 items per strategy */

typedef struct {
    prs_ring *r;
    atomic_uchar *seen;        /* per item: 1 processed, 2 dropped */
    atomic_long processed, dropped_back;
    int id;
} mt_ctx;

typedef struct { mt_ctx *c; int id; } mt_arg;

static void mark(mt_ctx *c, int64_t item, unsigned char how) {
    unsigned char want = 0;
    if (!atomic_compare_exchange_strong(&c->seen[item - 1], &want, how)) abort(); /* twice */
}

static void *producer(void *arg) {
    mt_arg *a = arg;
    mt_ctx *c = a->c;
    for (int64_t k = 0; k < PER_PRODUCER; k++) {
        int64_t id = (int64_t)a->id * PER_PRODUCER + k + 1;
        prs_ring_result res;
        if (prs_ring_put_blocking(c->r, P(id), PRS_NEVER, &res) != PRS_OK) abort();
        switch (res.outcome) {
        case PRS_RING_STORED: break;
        case PRS_RING_EVICTED: mark(c, I(res.evicted), 2); atomic_fetch_add(&c->dropped_back, 1); break;
        case PRS_RING_DROPPED: case PRS_RING_FULL: case PRS_RING_TIMED_OUT:
            mark(c, id, 2); atomic_fetch_add(&c->dropped_back, 1); break;
        default: abort();
        }
    }
    return NULL;
}

static void *consumer(void *arg) {
    mt_ctx *c = ((mt_arg *)arg)->c;
    for (;;) {
        void *item;
        prs_ring_result res;
        int rc = prs_ring_get_blocking(c->r, PRS_NEVER, &item, &res);
        if (rc == PRS_ECLOSED) break;
        if (rc != PRS_OK) abort();
        mark(c, I(item), 1);
        atomic_fetch_add(&c->processed, 1);
    }
    return NULL;
}

static void run_mt(prs_ring_strategy st, int64_t cap) {
    mt_ctx c;
    c.r = make_ring(cap, st);
    int64_t total = (int64_t)NPROD * PER_PRODUCER;
    c.seen = calloc((size_t)total, 1);
    atomic_init(&c.processed, 0);
    atomic_init(&c.dropped_back, 0);
    pthread_t tp[NPROD], tc[NCONS];
    mt_arg ap[NPROD], ac[NCONS];
    for (int i = 0; i < NCONS; i++) { ac[i].c = &c; ac[i].id = i; pthread_create(&tc[i], NULL, consumer, &ac[i]); }
    for (int i = 0; i < NPROD; i++) { ap[i].c = &c; ap[i].id = i; pthread_create(&tp[i], NULL, producer, &ap[i]); }
    for (int i = 0; i < NPROD; i++) pthread_join(tp[i], NULL);
    prs_ring_result res;
    prs_ring_close(c.r, &res);
    for (int i = 0; i < NCONS; i++) pthread_join(tc[i], NULL);
    prs_ring_stats s;
    prs_ring_stats_get(c.r, &s);
    ASSERT_EQ(s.received, total);
    ASSERT_EQ(s.processed, atomic_load(&c.processed));
    ASSERT_EQ(s.dropped, atomic_load(&c.dropped_back));
    ASSERT_EQ(s.processed + s.dropped, total);
    ASSERT_EQ(s.size, 0);
    for (int64_t i = 0; i < total; i++) ASSERT(c.seen[i] == 1 || c.seen[i] == 2);
    if (st == PRS_RING_BLOCK) ASSERT_EQ(s.dropped, 0);
    free(c.seen);
    prs_ring_free(c.r);
}

TEST(ring_threads_block) { run_mt(PRS_RING_BLOCK, 64); }
TEST(ring_threads_drop_oldest) { run_mt(PRS_RING_DROP_OLDEST, 16); }
TEST(ring_threads_drop_newest) { run_mt(PRS_RING_DROP_NEWEST, 16); }
TEST(ring_threads_error) { run_mt(PRS_RING_ERROR, 16); }

static int make_r(const prs_allocator *a, void **obj) {
    prs_ring_config cfg;
    prs_ring_config_init(&cfg);
    cfg.capacity = 100;
    cfg.allocator = a;
    return prs_ring_new(&cfg, (prs_ring **)obj);
}
static void destroy_r(void *obj) { prs_ring_free(obj); }

TEST(ring_alloc_failure) { prs_test_alloc_failures(make_r, destroy_r); }

TEST(ring_try_put) {
    prs_ring *r = make_ring(1, PRS_RING_BLOCK);
    prs_ring_result res;
    ASSERT_OK(prs_ring_try_put(r, P(1), &res));
    ASSERT_EQ(res.outcome, PRS_RING_STORED);
    ASSERT_STATUS(prs_ring_try_put(r, P(2), &res), PRS_EAGAIN); /* would queue: nothing counted */
    prs_ring_stats s;
    prs_ring_stats_get(r, &s);
    ASSERT_EQ(s.received, 1);
    ASSERT_EQ(s.dropped, 0);
    prs_ring *d = make_ring(1, PRS_RING_DROP_NEWEST);
    ASSERT_OK(prs_ring_try_put(d, P(1), &res));
    ASSERT_OK(prs_ring_try_put(d, P(2), &res)); /* other strategies decide at once */
    ASSERT_EQ(res.outcome, PRS_RING_DROPPED);
    prs_ring_close(r, &res);
    ASSERT_STATUS(prs_ring_try_put(r, P(3), &res), PRS_ECLOSED);
    prs_ring_free(r);
    prs_ring_free(d);
}

/* ---- fork ------------------------------------------------------------------ */


/* The logic alone, in one process (waiters with no thread behind them stand
 * for the parent's threads). Consumers [C1, N1, C2, N2] (C blocking, N
 * NOTIFY): C1 handed 10, N1 handed 11; after the fork C2 leaves and C1's 10
 * goes back, to N2 (the oldest consumer left). */
TEST(ring_after_fork_consumers) {
    prs_ring *r = make_ring(4, PRS_RING_BLOCK);
    prs_ring_waiter c1, c2, n1, n2;
    ASSERT_OK(prs_ring_waiter_init(&c1, 0, 1, NULL));
    ASSERT_OK(prs_ring_waiter_init(&n1, 0, 0, NULL));
    ASSERT_OK(prs_ring_waiter_init(&c2, 0, 1, NULL));
    ASSERT_OK(prs_ring_waiter_init(&n2, 0, 0, NULL));
    prs_ring_waiter *order[4] = {&c1, &n1, &c2, &n2};
    prs_ring_result res;
    void *item;
    for (int i = 0; i < 4; i++) {
        ASSERT_OK(prs_ring_get(r, order[i], &item, &res));
        ASSERT_EQ(res.outcome, PRS_RING_WAITING);
    }
    ASSERT_OK(prs_ring_put(r, P(10), NULL, &res)); /* to c1 */
    ASSERT(res.woken == NULL);
    ASSERT_OK(prs_ring_put(r, P(11), NULL, &res)); /* to n1 */
    ASSERT(res.woken == &n1);

    ASSERT_OK(prs_ring_after_fork_child(r, &res));
    ASSERT(res.woken == &n2 && n2.next == NULL);
    prs_ring_stats s;
    prs_ring_stats_get(r, &s);
    ASSERT_EQ(s.size, 2); /* handed to n1 and n2 */
    ASSERT_EQ(s.consumers_waiting, 0);
    ASSERT_EQ(s.received, 2);
    ASSERT_EQ(s.processed, 0);
    assert_within(r);
    ASSERT_OK(prs_ring_finish(r, &c1, PRS_RING_FINISH_ACCEPT, &item, &res)); /* a ghost: nothing */
    ASSERT_EQ(res.outcome, PRS_RING_TIMED_OUT);
    ASSERT_OK(prs_ring_finish(r, &c2, PRS_RING_FINISH_ACCEPT, &item, &res));
    ASSERT_EQ(res.outcome, PRS_RING_TIMED_OUT);
    ASSERT_OK(prs_ring_finish(r, &n1, PRS_RING_FINISH_ACCEPT, &item, &res));
    ASSERT_EQ(res.outcome, PRS_RING_GOT);
    ASSERT_EQ(I(item), 11);
    ASSERT_OK(prs_ring_finish(r, &n2, PRS_RING_FINISH_ACCEPT, &item, &res));
    ASSERT_EQ(res.outcome, PRS_RING_GOT);
    ASSERT_EQ(I(item), 10);
    prs_ring_stats_get(r, &s);
    ASSERT_EQ(s.size, 0);
    ASSERT_EQ(s.processed, 2);
    assert_within(r);
    ASSERT_STATUS(prs_ring_after_fork_child(NULL, &res), PRS_EINVAL);
    ASSERT_STATUS(prs_ring_after_fork_child(r, NULL), PRS_EINVAL);
    for (int i = 0; i < 4; i++) prs_ring_waiter_destroy(order[i]);
    prs_ring_free(r);
}

/* Producers [P1, N3, P2] on a full ring of 1: a get lets P1 in (served: its
 * item is stored, nothing to undo); after the fork P2 leaves (its item counted
 * dropped), N3 stays queued and is served by the next get (a reserved slot;
 * its item enters when it settles). */
TEST(ring_after_fork_producers) {
    prs_ring *r = make_ring(1, PRS_RING_BLOCK);
    prs_ring_waiter p1, p2, n3;
    ASSERT_OK(prs_ring_waiter_init(&p1, 1, 1, NULL));
    ASSERT_OK(prs_ring_waiter_init(&n3, 1, 0, NULL));
    ASSERT_OK(prs_ring_waiter_init(&p2, 1, 1, NULL));
    prs_ring_result res;
    ASSERT_OK(prs_ring_put(r, P(1), NULL, &res));
    ASSERT_OK(prs_ring_put(r, P(2), &p1, &res));
    ASSERT_EQ(res.outcome, PRS_RING_WAITING);
    ASSERT_OK(prs_ring_put(r, P(3), &n3, &res));
    ASSERT_OK(prs_ring_put(r, P(4), &p2, &res));
    ASSERT_EQ(get_one(r), 1); /* p1's 2 goes in */
    ASSERT_OK(prs_ring_after_fork_child(r, &res));
    ASSERT(res.woken == NULL);
    prs_ring_stats s;
    prs_ring_stats_get(r, &s);
    ASSERT_EQ(s.size, 1);
    ASSERT_EQ(s.producers_waiting, 1); /* n3 */
    ASSERT_EQ(s.dropped, 1);           /* p2 */
    assert_within(r);
    void *item = NULL;
    ASSERT_OK(prs_ring_get(r, NULL, &item, &res));
    ASSERT_EQ(I(item), 2);
    ASSERT(res.woken == &n3); /* a slot is reserved for its 3 */
    ASSERT_OK(prs_ring_finish(r, &n3, PRS_RING_FINISH_ACCEPT, &item, &res));
    ASSERT_EQ(res.outcome, PRS_RING_STORED);
    ASSERT_EQ(get_one(r), 3);
    ASSERT_OK(prs_ring_finish(r, &p1, PRS_RING_FINISH_ACCEPT, &item, &res));
    ASSERT_EQ(res.outcome, PRS_RING_STORED);
    ASSERT_OK(prs_ring_finish(r, &p2, PRS_RING_FINISH_ACCEPT, &item, &res));
    ASSERT_EQ(res.outcome, PRS_RING_TIMED_OUT);
    assert_within(r);
    prs_ring_waiter_destroy(&p1);
    prs_ring_waiter_destroy(&p2);
    prs_ring_waiter_destroy(&n3);
    prs_ring_free(r);
}

static int ring_wait_fn(void *r, void *w, int64_t deadline_ns) { return prs_ring_wait(r, w, deadline_ns); }

static void ring_touch(void *r) {
    prs_ring_stats s;
    prs_ring_stats_get(r, &s);
}

static void ring_fork_child_checks(void *obj) {
    prs_ring *r = obj;
    prs_ring_result res;
    ASSERT_OK(prs_ring_after_fork_child(r, &res));
    ASSERT(res.woken == NULL);
    prs_ring_stats s;
    prs_ring_stats_get(r, &s);
    ASSERT_EQ(s.size, 3);       /* 10 and 11 back at the front, 12 */
    ASSERT_EQ(s.received, 4);
    ASSERT_EQ(s.processed, 0);
    ASSERT_EQ(s.dropped, 1);    /* the queued producer's 13 */
    ASSERT_EQ(s.producers_waiting, 0);
    ASSERT_EQ(s.consumers_waiting, 0);
    for (int64_t want = 10; want <= 12; want++) ASSERT_EQ(get_one(r), want);
    for (int64_t i = 20; i <= 22; i++) {
        ASSERT_OK(prs_ring_put(r, P(i), NULL, &res));
        ASSERT_EQ(res.outcome, PRS_RING_STORED);
    }
    ASSERT_STATUS(prs_ring_try_put(r, P(23), &res), PRS_EAGAIN);
    ASSERT_OK(prs_ring_put_blocking(r, P(23), prs_monotonic_ns() + PRS_NS_PER_MS, &res));
    ASSERT_EQ(res.outcome, PRS_RING_TIMED_OUT);
    void *item;
    for (int64_t want = 20; want <= 22; want++) {
        ASSERT_OK(prs_ring_get_blocking(r, prs_monotonic_ns() + PRS_NS_PER_SEC, &item, &res));
        ASSERT_EQ(I(item), want);
    }
    ASSERT_STATUS(prs_ring_get_blocking(r, prs_monotonic_ns() + PRS_NS_PER_MS, &item, &res), PRS_ETIMEDOUT);
    expect_counts(r, 8, 6, 2, 0);
    assert_within(r);
}

/* Fork while two consumer threads hold handed items (not settled), a producer
 * thread is blocked in prs_ring_wait() (1 ms slices), and another thread takes
 * the lock nonstop. Forked 20 times; each child repairs and checks exactly. */
TEST(ring_fork_child) {
    prs_ring *r = make_ring(3, PRS_RING_BLOCK);
    prs_ring_waiter ws[3]; /* two consumers, a producer */
    waiter_thread c1, c2, p;
    waiter_thread *cs[3] = {&c1, &c2, &p};
    pthread_t t[3];
    prs_ring_result res;
    void *item;
    for (int i = 0; i < 3; i++) ASSERT_OK(prs_ring_waiter_init(&ws[i], i == 2, 1, NULL));
    ASSERT_OK(prs_ring_get(r, &ws[0], &item, &res));
    ASSERT_OK(prs_ring_get(r, &ws[1], &item, &res));
    for (int i = 0; i < 2; i++) waiter_thread_start(cs[i], &t[i], ring_wait_fn, r, &ws[i]);
    ASSERT_OK(prs_ring_put(r, P(10), NULL, &res)); /* to c1 */
    ASSERT_OK(prs_ring_put(r, P(11), NULL, &res)); /* to c2 */
    ASSERT_OK(prs_ring_put(r, P(12), NULL, &res)); /* stored: full */
    ASSERT_OK(prs_ring_put(r, P(13), &ws[2], &res));
    ASSERT_EQ(res.outcome, PRS_RING_WAITING);
    waiter_thread_start(&p, &t[2], ring_wait_fn, r, &ws[2]);
    waiter_thread_until_served(&c1);
    waiter_thread_until_served(&c2);
    fork_rounds(r, ring_touch, ring_fork_child_checks, 20);
    /* The parent is untouched. */
    for (int i = 0; i < 2; i++) {
        waiter_thread_stop(cs[i], t[i]);
        ASSERT_OK(prs_ring_finish(r, &ws[i], PRS_RING_FINISH_ACCEPT, &item, &res));
        ASSERT_EQ(res.outcome, PRS_RING_GOT);
        ASSERT_EQ(I(item), 10 + i); /* each frees a slot: p's 13 goes in after the first */
    }
    waiter_thread_until_served(&p);
    waiter_thread_stop(&p, t[2]);
    ASSERT_OK(prs_ring_finish(r, &ws[2], PRS_RING_FINISH_ACCEPT, &item, &res));
    ASSERT_EQ(res.outcome, PRS_RING_STORED);
    ASSERT_EQ(get_one(r), 12);
    ASSERT_EQ(get_one(r), 13);
    expect_counts(r, 4, 4, 0, 0);
    assert_within(r);
    for (int i = 0; i < 3; i++) prs_ring_waiter_destroy(&ws[i]);
    prs_ring_free(r);
}

/* ---- capacity holds at every instant -------------------------------------- */


/* 32 consumers wait on a ring of 2: only two puts are handed over (each keeps
 * its slot); the others follow the strategy as on any full ring. Then every
 * consumer is cancelled: the two items go back (each to the next consumer,
 * finally to the ring), never past capacity. */
TEST(ring_handoff_respects_capacity) {
    static const struct { prs_ring_strategy st; int refused; } rows[] = {
        {PRS_RING_BLOCK, PRS_RING_FULL},
        {PRS_RING_DROP_OLDEST, PRS_RING_DROPPED}, /* nothing stored to evict */
        {PRS_RING_DROP_NEWEST, PRS_RING_DROPPED},
        {PRS_RING_ERROR, PRS_RING_FULL},
    };
    enum { N = 32 };
    for (size_t k = 0; k < sizeof rows / sizeof rows[0]; k++) {
        prs_ring *r = make_ring(2, rows[k].st);
        prs_ring_waiter c[N];
        prs_ring_result res;
        void *item;
        for (int i = 0; i < N; i++) {
            ASSERT_OK(prs_ring_waiter_init(&c[i], PRS_RING_CONSUMER, 0, NULL));
            ASSERT_OK(prs_ring_get(r, &c[i], &item, &res));
            ASSERT_EQ(res.outcome, PRS_RING_WAITING);
        }
        for (int i = 0; i < N; i++) {
            ASSERT_OK(prs_ring_put(r, P(100 + i), NULL, &res));
            ASSERT_EQ(res.outcome, i < 2 ? PRS_RING_STORED : rows[k].refused);
            ASSERT(i < 2 ? res.woken == &c[i] : res.woken == NULL);
            ASSERT_EQ(prs_ring_size(r), i < 2 ? i + 1 : 2);
            assert_within(r);
        }
        if (rows[k].st == PRS_RING_BLOCK) {
            prs_ring_waiter p;
            ASSERT_OK(prs_ring_waiter_init(&p, PRS_RING_PRODUCER, 0, NULL));
            ASSERT_STATUS(prs_ring_try_put(r, P(7), &res), PRS_EAGAIN);
            ASSERT_OK(prs_ring_put(r, P(7), &p, &res));
            ASSERT_EQ(res.outcome, PRS_RING_WAITING); /* not handed: every slot is out */
            ASSERT_OK(prs_ring_finish(r, &p, PRS_RING_FINISH_CANCEL, &item, &res));
            ASSERT_EQ(res.outcome, PRS_RING_TIMED_OUT);
            ASSERT_EQ(I(item), 7);
        }
        for (int i = 0; i < N; i++) {
            ASSERT_OK(prs_ring_finish(r, &c[i], PRS_RING_FINISH_CANCEL, &item, &res));
            ASSERT_EQ(prs_ring_size(r), 2);
            assert_within(r);
        }
        int64_t a = get_one(r), b = get_one(r);
        ASSERT((a == 100 && b == 101) || (a == 101 && b == 100));
        ASSERT_STATUS(prs_ring_get(r, NULL, &item, &res), PRS_EEMPTY);
        assert_within(r);
        for (int i = 0; i < N; i++) prs_ring_waiter_destroy(&c[i]);
        prs_ring_free(r);
    }
}

/* The fork path of the same: 8 blocking consumers (threads of the parent) on
 * a ring of 2, two of them served; after the fork both items come back in
 * order, the six still queued leave, and capacity holds. */
TEST(ring_after_fork_handed_at_capacity) {
    enum { N = 8 };
    prs_ring *r = make_ring(2, PRS_RING_BLOCK);
    prs_ring_waiter c[N];
    prs_ring_result res;
    void *item;
    for (int i = 0; i < N; i++) {
        ASSERT_OK(prs_ring_waiter_init(&c[i], PRS_RING_CONSUMER, 1, NULL));
        ASSERT_OK(prs_ring_get(r, &c[i], &item, &res));
    }
    for (int i = 0; i < N; i++) {
        ASSERT_OK(prs_ring_put(r, P(10 + i), NULL, &res));
        ASSERT_EQ(res.outcome, i < 2 ? PRS_RING_STORED : PRS_RING_FULL);
    }
    ASSERT_OK(prs_ring_after_fork_child(r, &res));
    prs_ring_stats s;
    prs_ring_stats_get(r, &s);
    ASSERT_EQ(s.size, 2);
    ASSERT_EQ(s.consumers_waiting, 0);
    assert_within(r);
    ASSERT_EQ(get_one(r), 10);
    ASSERT_EQ(get_one(r), 11);
    for (int i = 0; i < N; i++) {
        ASSERT_OK(prs_ring_finish(r, &c[i], PRS_RING_FINISH_CANCEL, &item, &res)); /* ghosts */
        ASSERT_EQ(res.outcome, PRS_RING_TIMED_OUT);
        prs_ring_waiter_destroy(&c[i]);
    }
    assert_within(r);
    prs_ring_free(r);
}

/* Real threads: 32 consumers blocked on a ring of 2 while a producer puts as
 * fast as it can and a checker samples the size: never above 2. */
typedef struct {
    prs_ring *r;
    atomic_int stop;
    atomic_long got;
    atomic_long max_size;
} cap_ctx;

static void *cap_consumer(void *arg) {
    cap_ctx *c = arg;
    prs_ring_result res;
    void *item;
    while (!atomic_load(&c->stop)) {
        int rc = prs_ring_get_blocking(c->r, prs_monotonic_ns() + PRS_NS_PER_MS, &item, &res);
        if (rc == PRS_OK) atomic_fetch_add(&c->got, 1);
        if (rc == PRS_ECLOSED) break;
    }
    return NULL;
}

static void *cap_sampler(void *arg) {
    cap_ctx *c = arg;
    while (!atomic_load(&c->stop)) {
        long n = (long)prs_ring_size(c->r);
        long m = atomic_load(&c->max_size);
        if (n > m) atomic_store(&c->max_size, n);
    }
    return NULL;
}

TEST(ring_threads_capacity_never_exceeded) {
    enum { N = 32, ITEMS = 20000 };
    cap_ctx c = {.r = make_ring(2, PRS_RING_BLOCK)};
    atomic_init(&c.stop, 0);
    atomic_init(&c.got, 0);
    atomic_init(&c.max_size, 0);
    pthread_t t[N], st;
    for (int i = 0; i < N; i++) pthread_create(&t[i], NULL, cap_consumer, &c);
    pthread_create(&st, NULL, cap_sampler, &c);
    prs_ring_result res;
    for (int i = 0; i < ITEMS; i++) {
        ASSERT_OK(prs_ring_put_blocking(c.r, P(i + 1), PRS_NEVER, &res));
        ASSERT_EQ(res.outcome, PRS_RING_STORED);
    }
    while (atomic_load(&c.got) < ITEMS) sched_yield();
    atomic_store(&c.stop, 1);
    for (int i = 0; i < N; i++) pthread_join(t[i], NULL);
    pthread_join(st, NULL);
    ASSERT(atomic_load(&c.max_size) <= 2);
    assert_within(c.r);
    prs_ring_free(c.r);
}

/* ---- task_done / join --------------------------------------------------- */

TEST(ring_task_done_join) {
    prs_ring *r = make_ring(3, PRS_RING_DROP_OLDEST);
    prs_ring_result res;
    prs_ring_waiter j1, j2;
    void *item;
    ASSERT_OK(prs_ring_waiter_init(&j1, PRS_RING_JOINER, 0, NULL));
    ASSERT_OK(prs_ring_waiter_init(&j2, PRS_RING_JOINER, 0, NULL));
    ASSERT_STATUS(prs_ring_task_done(r, &res), PRS_EINVAL); /* nothing unfinished */
    ASSERT_OK(prs_ring_join(r, &j1, &res));
    ASSERT_EQ(res.outcome, PRS_RING_DONE);
    for (int i = 1; i <= 4; i++) ASSERT_OK(prs_ring_put(r, P(i), NULL, &res)); /* 1 evicted: done */
    prs_ring_stats s;
    prs_ring_stats_get(r, &s);
    ASSERT_EQ(s.unfinished, 3);
    ASSERT_STATUS(prs_ring_join(r, NULL, &res), PRS_EAGAIN);
    ASSERT_OK(prs_ring_join(r, &j1, &res));
    ASSERT_EQ(res.outcome, PRS_RING_WAITING);
    ASSERT_OK(prs_ring_join(r, &j2, &res));
    for (int i = 0; i < 3; i++) {
        get_one(r);
        ASSERT_OK(prs_ring_task_done(r, &res));
        ASSERT(i < 2 ? res.woken == NULL : (res.woken == &j1 && j1.next == &j2));
    }
    ASSERT_OK(prs_ring_finish(r, &j1, PRS_RING_FINISH_ACCEPT, &item, &res));
    ASSERT_EQ(res.outcome, PRS_RING_DONE);
    ASSERT_OK(prs_ring_finish(r, &j2, PRS_RING_FINISH_ACCEPT, &item, &res));
    ASSERT_EQ(res.outcome, PRS_RING_DONE);
    ASSERT_STATUS(prs_ring_task_done(r, &res), PRS_EINVAL);
    /* a joiner that gives up leaves the queue */
    ASSERT_OK(prs_ring_put(r, P(5), NULL, &res));
    ASSERT_OK(prs_ring_join(r, &j1, &res));
    ASSERT_OK(prs_ring_finish(r, &j1, PRS_RING_FINISH_CANCEL, &item, &res));
    ASSERT_EQ(res.outcome, PRS_RING_TIMED_OUT);
    ASSERT_STATUS(prs_ring_join_blocking(r, prs_monotonic_ns() + PRS_NS_PER_MS, &res), PRS_ETIMEDOUT);
    ASSERT_EQ(get_one(r), 5);
    ASSERT_OK(prs_ring_task_done(r, &res));
    ASSERT_OK(prs_ring_join_blocking(r, PRS_NEVER, &res));
    ASSERT_EQ(res.outcome, PRS_RING_DONE);
    /* a cancelled NOTIFY put never counts; a served one counts when it settles */
    prs_ring_waiter p;
    ASSERT_OK(prs_ring_waiter_init(&p, PRS_RING_PRODUCER, 0, NULL));
    for (int i = 0; i < 3; i++) ASSERT_OK(prs_ring_put(r, P(6 + i), NULL, &res));
    prs_ring *b = make_ring(1, PRS_RING_BLOCK);
    ASSERT_OK(prs_ring_put(b, P(1), NULL, &res));
    ASSERT_OK(prs_ring_put(b, P(2), &p, &res));
    ASSERT_EQ(get_one(b), 1);
    ASSERT_OK(prs_ring_task_done(b, &res));
    prs_ring_stats_get(b, &s);
    ASSERT_EQ(s.unfinished, 0);
    ASSERT_OK(prs_ring_finish(b, &p, PRS_RING_FINISH_CANCEL, &item, &res));
    prs_ring_stats_get(b, &s);
    ASSERT_EQ(s.unfinished, 0);
    ASSERT_EQ(s.size, 0);
    prs_ring_waiter_destroy(&p);
    prs_ring_waiter_destroy(&j1);
    prs_ring_waiter_destroy(&j2);
    prs_ring_drain(r, NULL, NULL);
    prs_ring_free(r);
    prs_ring_free(b);
}

/* ---- unbounded, growth, set_capacity ---------------------------------------- */

TEST(ring_unbounded_grows) {
    prs_ring *r = make_ring(0, PRS_RING_BLOCK);
    ASSERT_EQ(prs_ring_capacity(r), PRS_RING_MAX);
    prs_ring_result res;
    for (int i = 0; i < 5000; i++) {
        ASSERT_OK(prs_ring_put(r, P(i + 1), NULL, &res));
        ASSERT_EQ(res.outcome, PRS_RING_STORED);
        if (i % 7 == 0) ASSERT_EQ(get_one(r), i / 7 + 1); /* wrapped while growing */
    }
    int64_t next = 5000 / 7 + 2;
    while (prs_ring_size(r) > 0) ASSERT_EQ(get_one(r), next++);
    ASSERT_EQ(next, 5001);
    ASSERT(!prs_ring_is_full(r));
    prs_ring_free(r);
}

TEST(ring_growth_failure) {
    prs_test_alloc ta;
    prs_test_alloc_init(&ta, 2); /* the ring and its first 64 slots */
    prs_ring_config cfg;
    prs_ring_config_init(&cfg);
    cfg.capacity = 1000;
    cfg.allocator = &ta.base;
    prs_ring *r = NULL;
    ASSERT_OK(prs_ring_new(&cfg, &r));
    prs_ring_result res;
    for (int i = 0; i < 64; i++) ASSERT_OK(prs_ring_put(r, P(i + 1), NULL, &res));
    ASSERT_STATUS(prs_ring_put(r, P(65), NULL, &res), PRS_ENOMEM);
    prs_ring_stats s;
    prs_ring_stats_get(r, &s);
    ASSERT_EQ(s.received, 64); /* nothing counted */
    ASSERT_EQ(s.size, 64);
    ASSERT_STATUS(prs_ring_set_capacity(r, 2000, &res), PRS_OK); /* nothing to grow for */
    for (int i = 0; i < 64; i++) ASSERT_EQ(get_one(r), i + 1);
    prs_ring_free(r);
}

TEST(ring_set_capacity) {
    prs_ring_config cfg;
    prs_ring_config_init(&cfg);
    cfg.capacity = 3;
    cfg.watermarks = 1;
    cfg.high_watermark = 1.0;
    cfg.low_watermark = 0.0;
    prs_ring *r = NULL;
    ASSERT_OK(prs_ring_new(&cfg, &r));
    prs_ring_result res;
    void *item;
    for (int i = 1; i <= 3; i++) ASSERT_OK(prs_ring_put(r, P(i), NULL, &res));
    ASSERT_EQ(res.events, PRS_RING_EV_HIGH);
    /* shrink below the size: items stay, nothing is admitted */
    ASSERT_OK(prs_ring_set_capacity(r, 2, &res));
    ASSERT_EQ(prs_ring_size(r), 3);
    ASSERT_OK(prs_ring_put(r, P(4), NULL, &res));
    ASSERT_EQ(res.outcome, PRS_RING_FULL);
    ASSERT_EQ(get_one(r), 1);
    ASSERT(prs_ring_is_full(r));
    ASSERT_OK(prs_ring_put(r, P(5), NULL, &res));
    ASSERT_EQ(res.outcome, PRS_RING_FULL);
    ASSERT_EQ(get_one(r), 2);
    ASSERT_OK(prs_ring_put(r, P(6), NULL, &res));
    ASSERT_EQ(res.outcome, PRS_RING_STORED);
    /* grow with producers waiting: they come in */
    prs_ring_waiter p[2];
    for (int i = 0; i < 2; i++) {
        ASSERT_OK(prs_ring_waiter_init(&p[i], PRS_RING_PRODUCER, 1, NULL));
        ASSERT_OK(prs_ring_put(r, P(7 + i), &p[i], &res));
        ASSERT_EQ(res.outcome, PRS_RING_WAITING);
    }
    ASSERT_OK(prs_ring_set_capacity(r, 0, &res)); /* unbounded */
    ASSERT_EQ(prs_ring_size(r), 4);
    for (int i = 0; i < 2; i++) {
        ASSERT_OK(prs_ring_finish(r, &p[i], PRS_RING_FINISH_ACCEPT, &item, &res));
        ASSERT_EQ(res.outcome, PRS_RING_STORED);
        prs_ring_waiter_destroy(&p[i]);
    }
    for (int64_t want = 3; want <= 8; want++) if (want != 4 && want != 5) ASSERT_EQ(get_one(r), want);
    ASSERT_STATUS(prs_ring_set_capacity(r, -1, &res), PRS_EINVAL);
    ASSERT_STATUS(prs_ring_set_capacity(r, PRS_RING_MAX + 1, &res), PRS_ERANGE);
    assert_within(r);
    prs_ring_free(r);
}
