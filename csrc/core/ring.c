/*
 * ring.c - a bounded FIFO of opaque pointers with backpressure strategies,
 * FIFO waiter queues on both sides, close, and watermark events.
 *
 * State (all guarded by `mu`, held only around the bookkeeping below and by
 * pthread_cond_timedwait while a blocking waiter sleeps):
 *   buf[cap]        circular storage; the oldest item is buf[head]
 *   count           items stored in buf
 *   handed          items handed to consumer waiters that have not settled;
 *                   they keep their slot, so size = count + handed <= cap and
 *                   a consumer that gives its item back always finds room at
 *                   the front
 *   producers       queued producer waiters (each holds its item), oldest first
 *   consumers       queued consumer waiters, oldest first
 *   served          BLOCKING consumers handed an item, not settled yet,
 *                   in the order served (finish() unlinks them)
 *   above           1 after a high-watermark event until the next low one
 *
 * Invariants between calls:
 *   producers non-empty => size == cap   (space goes to the oldest producer)
 *   consumers non-empty => count == 0    (items go to the oldest consumer)
 *   received == processed + dropped + size + (queued producers)
 * settle() restores the first two after any change that frees space or adds
 * an item; every operation calls it before returning.
 *
 * Waiter memory belongs to the caller. BLOCKING waiters are signalled under
 * `mu` and re-check their state under `mu` before returning; NOTIFY waiters
 * are detached and returned in result.woken (linked by `next`), after which
 * the ring never touches them again.
 *
 * Fork: prs_ring_after_fork_child() rebuilds the mutex and settles every
 * BLOCKING waiter (a thread: gone in the child) as finish(CANCEL) would, newest
 * served consumer first so the items go back to the front in their order.
 * NOTIFY waiters stay (see prs_bulkhead.h for why).
 *
 * Watermarks: high_n = ceil(high * cap) >= 1, low_n = floor(low * cap) <
 * high_n. Every call changes size by at most one (a get that lets a producer
 * in changes it by zero), so checking once at the end of each call sees every
 * crossing.
 *
 * Expected workload: producer/consumer pairs at millions of items per second
 * (one mutex round trip per put or get, no allocation), bursts of waiters.
 */
#include "prs_internal.h"
#include "prs_ring.h"

#include <errno.h>
#include <time.h>

typedef struct waitq {
    prs_ring_waiter *head, *tail;
    int64_t n;
} waitq;

struct prs_ring {
    pthread_mutex_t mu;
    void **buf;                 /* cap slots */
    int64_t cap;                /* immutable, 1..PRS_RING_MAX */
    int64_t head;               /* index of the oldest stored item */
    int64_t count;              /* stored, 0..cap - handed */
    int64_t handed;             /* handed to unsettled consumers */
    prs_ring_strategy strategy; /* immutable */
    int wm;                     /* immutable: watermarks on */
    int64_t high_n, low_n;      /* immutable: 0 <= low_n < high_n <= cap */
    int above;
    int closed;
    waitq producers, consumers;
    waitq served;               /* BLOCKING consumers holding a handed item */
    int64_t received, processed, dropped, blocked, high_events, low_events;
    prs_allocator alloc;
};

/* ---- names ------------------------------------------------------------- */

static const char *const strategy_names[] = {"block", "drop_oldest", "drop_newest", "error"};

const char *prs_ring_strategy_name(int strategy) {
    return strategy >= 0 && strategy <= PRS_RING_ERROR ? strategy_names[strategy] : NULL;
}

int prs_ring_strategy_parse(const char *name, prs_ring_strategy *out) {
    if (!name || !out) return PRS_EINVAL;
    for (int i = 0; i <= PRS_RING_ERROR; i++)
        if (strcmp(name, strategy_names[i]) == 0) { *out = (prs_ring_strategy)i; return PRS_OK; }
    return PRS_EINVAL;
}

/* ---- lifecycle ----------------------------------------------------------- */

void prs_ring_config_init(prs_ring_config *cfg) {
    cfg->capacity = 1;
    cfg->strategy = PRS_RING_BLOCK;
    cfg->watermarks = 0;
    cfg->high_watermark = 1.0;
    cfg->low_watermark = 0.0;
    cfg->allocator = NULL;
}

int prs_ring_config_validate(const prs_ring_config *cfg) {
    if (!cfg || cfg->capacity < 1) return PRS_EINVAL;
    if ((int)cfg->strategy < PRS_RING_BLOCK || (int)cfg->strategy > PRS_RING_ERROR) return PRS_EINVAL;
    if (cfg->watermarks) {
        double hi = cfg->high_watermark, lo = cfg->low_watermark;
        if (!(lo >= 0.0 && lo < hi && hi <= 1.0)) return PRS_EINVAL; /* NaN fails too */
    }
    if (cfg->capacity > PRS_RING_MAX) return PRS_ERANGE;
    return PRS_OK;
}

int prs_ring_new(const prs_ring_config *cfg, prs_ring **out) {
    if (!out) return PRS_EINVAL;
    *out = NULL;
    int rc = prs_ring_config_validate(cfg);
    if (rc) return rc;
    const prs_allocator *a = prs__alloc_or_default(cfg->allocator);
    prs_ring *r = prs__calloc(a, 1, sizeof *r);
    if (!r) return PRS_ENOMEM;
    r->buf = prs__calloc(a, (size_t)cfg->capacity, sizeof(void *));
    if (!r->buf) {
        prs__free(a, r);
        return PRS_ENOMEM;
    }
    if (pthread_mutex_init(&r->mu, NULL) != 0) {
        prs__free(a, r->buf);
        prs__free(a, r);
        return PRS_ENOMEM;
    }
    r->alloc = *a;
    r->cap = cfg->capacity;
    r->strategy = cfg->strategy;
    if (cfg->watermarks) {
        r->wm = 1;
        r->high_n = prs__max64(1, prs__ceil_to_i64(cfg->high_watermark * (double)r->cap));
        if (r->high_n > r->cap) r->high_n = r->cap;
        r->low_n = prs__floor_to_i64(cfg->low_watermark * (double)r->cap);
        if (r->low_n >= r->high_n) r->low_n = r->high_n - 1;
    }
    *out = r;
    return PRS_OK;
}

void prs_ring_free(prs_ring *r) {
    if (!r) return;
    assert(r->producers.n == 0 && r->consumers.n == 0 && r->served.n == 0);
    pthread_mutex_destroy(&r->mu);
    prs_allocator a = r->alloc;
    prs__free(&a, r->buf);
    prs__free(&a, r);
}

int prs_ring_waiter_init(prs_ring_waiter *w, int producer, int blocking, void *data) {
    if (!w) return PRS_EINVAL;
    memset(w, 0, sizeof *w);
    w->state = PRS_WAITER_IDLE;
    w->producer = producer ? 1 : 0;
    w->data = data;
    if (blocking) {
        int rc = prs__cond_init_monotonic(&w->cond);
        if (rc) return rc;
        w->blocking = 1;
    }
    return PRS_OK;
}

void prs_ring_waiter_destroy(prs_ring_waiter *w) {
    if (!w) return;
    assert(w->state != PRS_WAITER_WAITING);
    if (w->blocking) pthread_cond_destroy(&w->cond);
    w->blocking = 0;
}

/* ---- internals (mu held) ------------------------------------------------- */

static void res_init(prs_ring_result *res) {
    res->outcome = 0;
    res->events = 0;
    res->evicted = NULL;
    res->woken = NULL;
}

static void push_back(prs_ring *r, void *item) {
    assert(r->count + r->handed < r->cap);
    int64_t i = r->head + r->count;
    if (i >= r->cap) i -= r->cap;
    r->buf[i] = item;
    r->count++;
}

static void push_front(prs_ring *r, void *item) {
    assert(r->count + r->handed < r->cap);
    r->head = r->head == 0 ? r->cap - 1 : r->head - 1;
    r->buf[r->head] = item;
    r->count++;
}

static void *pop_front(prs_ring *r) {
    assert(r->count > 0);
    void *item = r->buf[r->head];
    r->buf[r->head] = NULL;
    if (++r->head == r->cap) r->head = 0;
    r->count--;
    return item;
}

static void enqueue(waitq *q, prs_ring_waiter *w) {
    w->state = PRS_WAITER_WAITING;
    w->next = NULL;
    w->prev = q->tail;
    if (q->tail) q->tail->next = w; else q->head = w;
    q->tail = w;
    q->n++;
}

static void unlink_waiter(waitq *q, prs_ring_waiter *w) {
    if (w->prev) w->prev->next = w->next; else q->head = w->next;
    if (w->next) w->next->prev = w->prev; else q->tail = w->prev;
    w->prev = w->next = NULL;
    q->n--;
}

/* Wakes a waiter whose state was just set: signal a blocking one, append a
 * NOTIFY one to the result's woken list (kept in service order). */
static void wake(prs_ring_waiter *w, prs_ring_result *res) {
    if (w->blocking) {
        pthread_cond_signal(&w->cond);
        return;
    }
    w->next = NULL;
    w->prev = NULL;
    prs_ring_waiter **p = &res->woken;
    while (*p) p = &(*p)->next;
    *p = w;
}

/* Gives `item` to the oldest consumer: it keeps its slot until settled. */
static void hand_to_consumer(prs_ring *r, void *item, prs_ring_result *res) {
    prs_ring_waiter *c = r->consumers.head;
    unlink_waiter(&r->consumers, c);
    c->item = item;
    c->state = PRS_WAITER_GRANTED;
    r->handed++;
    if (c->blocking) {
        /* Linked into `served` (its prev/next are free now) until settled. */
        c->next = NULL;
        c->prev = r->served.tail;
        if (r->served.tail) r->served.tail->next = c; else r->served.head = c;
        r->served.tail = c;
        r->served.n++;
    }
    wake(c, res);
}

/* Restores the waiter invariants: free space takes the oldest producers'
 * items, stored items go to the oldest consumers. */
static void settle(prs_ring *r, prs_ring_result *res) {
    while (r->producers.n > 0 && r->count + r->handed < r->cap) {
        prs_ring_waiter *p = r->producers.head;
        unlink_waiter(&r->producers, p);
        void *item = p->item;
        p->state = PRS_WAITER_GRANTED;
        if (r->consumers.n > 0) hand_to_consumer(r, item, res); else push_back(r, item);
        wake(p, res);
    }
    while (r->count > 0 && r->consumers.n > 0) hand_to_consumer(r, pop_front(r), res);
}

static void check_watermarks(prs_ring *r, prs_ring_result *res) {
    if (!r->wm) return;
    int64_t size = r->count + r->handed;
    if (!r->above && size >= r->high_n) {
        r->above = 1;
        r->high_events++;
        res->events |= PRS_RING_EV_HIGH;
    } else if (r->above && size <= r->low_n) {
        r->above = 0;
        r->low_events++;
        res->events |= PRS_RING_EV_LOW;
    }
}

/* ---- operations ----------------------------------------------------------- */

/* put with try_only: where put would queue a waiter, change nothing and
 * return PRS_EAGAIN. */
static int put_impl(prs_ring *r, void *item, prs_ring_waiter *w, int try_only, prs_ring_result *res) {
    if (!r || !res) return PRS_EINVAL;
    res_init(res);
    if (w && (w->state == PRS_WAITER_WAITING || !w->producer)) return PRS_EINVAL;
    pthread_mutex_lock(&r->mu);
    if (r->closed) {
        pthread_mutex_unlock(&r->mu);
        return PRS_ECLOSED;
    }
    if (try_only && r->strategy == PRS_RING_BLOCK && r->consumers.n == 0 &&
        r->count + r->handed >= r->cap) {
        pthread_mutex_unlock(&r->mu);
        return PRS_EAGAIN;
    }
    r->received++;
    if (r->consumers.n > 0) {
        hand_to_consumer(r, item, res);
        res->outcome = PRS_RING_STORED;
    } else if (r->count + r->handed < r->cap) {
        push_back(r, item);
        res->outcome = PRS_RING_STORED;
    } else {
        switch (r->strategy) {
        case PRS_RING_DROP_OLDEST:
            r->dropped++;
            if (r->count > 0) {
                res->evicted = pop_front(r);
                push_back(r, item);
                res->outcome = PRS_RING_EVICTED;
            } else {
                res->outcome = PRS_RING_DROPPED; /* every slot is handed out */
            }
            break;
        case PRS_RING_DROP_NEWEST:
            r->dropped++;
            res->outcome = PRS_RING_DROPPED;
            break;
        case PRS_RING_ERROR:
            r->dropped++;
            res->outcome = PRS_RING_FULL;
            break;
        case PRS_RING_BLOCK:
        default:
            if (w) {
                w->item = item;
                enqueue(&r->producers, w);
                r->blocked++;
                res->outcome = PRS_RING_WAITING;
            } else {
                r->dropped++;
                res->outcome = PRS_RING_FULL;
            }
            break;
        }
    }
    check_watermarks(r, res);
    pthread_mutex_unlock(&r->mu);
    return PRS_OK;
}

int prs_ring_put(prs_ring *r, void *item, prs_ring_waiter *w, prs_ring_result *res) {
    return put_impl(r, item, w, 0, res);
}

int prs_ring_try_put(prs_ring *r, void *item, prs_ring_result *res) {
    return put_impl(r, item, NULL, 1, res);
}

int prs_ring_get(prs_ring *r, prs_ring_waiter *w, void **item, prs_ring_result *res) {
    if (!r || !item || !res) return PRS_EINVAL;
    res_init(res);
    if (w && (w->state == PRS_WAITER_WAITING || w->producer)) return PRS_EINVAL;
    int rc = PRS_OK;
    pthread_mutex_lock(&r->mu);
    if (r->count > 0) {
        *item = pop_front(r);
        r->processed++;
        settle(r, res);
        res->outcome = PRS_RING_GOT;
    } else if (r->closed) {
        rc = PRS_ECLOSED;
    } else if (w) {
        w->item = NULL;
        enqueue(&r->consumers, w);
        res->outcome = PRS_RING_WAITING;
    } else {
        rc = PRS_EEMPTY;
    }
    check_watermarks(r, res);
    pthread_mutex_unlock(&r->mu);
    return rc;
}

int prs_ring_wait(prs_ring *r, prs_ring_waiter *w, int64_t deadline_ns) {
    if (!r || !w || !w->blocking) return PRS_EINVAL;
    int rc = PRS_OK;
    pthread_mutex_lock(&r->mu);
    while (w->state == PRS_WAITER_WAITING) {
        if (prs__cond_wait_until(&w->cond, &r->mu, deadline_ns)) {
            if (w->state == PRS_WAITER_WAITING) rc = PRS_ETIMEDOUT;
            break;
        }
    }
    pthread_mutex_unlock(&r->mu);
    return rc;
}

int prs_ring_finish(prs_ring *r, prs_ring_waiter *w, int mode, void **item, prs_ring_result *res) {
    if (!r || !w || !item || !res) return PRS_EINVAL;
    if (mode != PRS_RING_FINISH_ACCEPT && mode != PRS_RING_FINISH_CANCEL) return PRS_EINVAL;
    res_init(res);
    *item = NULL;
    pthread_mutex_lock(&r->mu);
    switch (w->state) {
    case PRS_WAITER_WAITING:
        if (w->producer) {
            unlink_waiter(&r->producers, w);
            *item = w->item;
            r->dropped++;
        } else {
            unlink_waiter(&r->consumers, w);
        }
        res->outcome = PRS_RING_TIMED_OUT;
        break;
    case PRS_WAITER_GRANTED:
        if (w->producer) {
            res->outcome = PRS_RING_STORED;
            break;
        }
        if (w->blocking) unlink_waiter(&r->served, w);
        if (mode == PRS_RING_FINISH_ACCEPT) {
            *item = w->item;
            r->handed--;
            r->processed++;
            settle(r, res);
            res->outcome = PRS_RING_GOT;
        } else {
            r->handed--;
            push_front(r, w->item);
            settle(r, res);
            res->outcome = PRS_RING_GAVE_BACK;
        }
        break;
    case PRS_WAITER_CLOSED:
        if (w->producer) *item = w->item;
        res->outcome = PRS_RING_CLOSED;
        break;
    default:
        res->outcome = PRS_RING_TIMED_OUT;
        break;
    }
    w->item = NULL;
    w->state = PRS_WAITER_IDLE;
    check_watermarks(r, res);
    pthread_mutex_unlock(&r->mu);
    return PRS_OK;
}

int prs_ring_close(prs_ring *r, prs_ring_result *res) {
    if (!r || !res) return PRS_EINVAL;
    res_init(res);
    pthread_mutex_lock(&r->mu);
    r->closed = 1;
    while (r->producers.head) {
        prs_ring_waiter *w = r->producers.head;
        unlink_waiter(&r->producers, w);
        w->state = PRS_WAITER_CLOSED;
        r->dropped++;
        wake(w, res);
    }
    while (r->consumers.head) {
        prs_ring_waiter *w = r->consumers.head;
        unlink_waiter(&r->consumers, w);
        w->state = PRS_WAITER_CLOSED;
        wake(w, res);
    }
    pthread_mutex_unlock(&r->mu);
    return PRS_OK;
}

int prs_ring_after_fork_child(prs_ring *r, prs_ring_result *res) {
    if (!r || !res) return PRS_EINVAL;
    res_init(res);
    /* The parent's mutex may have been held by a thread that is gone. */
    memset(&r->mu, 0, sizeof r->mu);
    if (pthread_mutex_init(&r->mu, NULL) != 0) return PRS_ENOMEM;
    pthread_mutex_lock(&r->mu);
    /* Queued threads leave the queues unserved, as a timed-out finish would:
     * a producer's item is its thread's again (counted dropped). Nobody is
     * woken: their condition variables are the parent's. */
    waitq *qs[2] = {&r->producers, &r->consumers};
    for (int k = 0; k < 2; k++) {
        prs_ring_waiter *w = qs[k]->head;
        while (w) {
            prs_ring_waiter *next = w->next;
            if (w->blocking) {
                unlink_waiter(qs[k], w);
                if (w->producer) r->dropped++;
                w->state = PRS_WAITER_IDLE;
            }
            w = next;
        }
    }
    /* Threads handed an item give it back to the front, newest first, so the
     * items keep their order. */
    while (r->served.tail) {
        prs_ring_waiter *w = r->served.tail;
        unlink_waiter(&r->served, w);
        r->handed--;
        push_front(r, w->item);
        w->item = NULL;
        w->state = PRS_WAITER_IDLE;
    }
    settle(r, res); /* items back while NOTIFY consumers wait go to them */
    check_watermarks(r, res);
    pthread_mutex_unlock(&r->mu);
    return PRS_OK;
}

int64_t prs_ring_drain(prs_ring *r, void (*fn)(void *item, void *arg), void *arg) {
    if (!r) return 0;
    int64_t n = 0;
    for (;;) {
        pthread_mutex_lock(&r->mu);
        int got = r->count > 0;
        void *item = got ? pop_front(r) : NULL;
        pthread_mutex_unlock(&r->mu);
        if (!got) break;
        n++;
        if (fn) fn(item, arg);
    }
    return n;
}

int prs_ring_foreach(prs_ring *r, int (*fn)(void *item, void *arg), void *arg) {
    if (!r || !fn) return 0;
    int rc = 0;
    pthread_mutex_lock(&r->mu);
    for (int64_t k = 0; k < r->count && rc == 0; k++) {
        int64_t i = r->head + k;
        if (i >= r->cap) i -= r->cap;
        rc = fn(r->buf[i], arg);
    }
    pthread_mutex_unlock(&r->mu);
    return rc;
}

void prs_ring_stats_get(prs_ring *r, prs_ring_stats *s) {
    pthread_mutex_lock(&r->mu);
    s->capacity = r->cap;
    s->size = r->count + r->handed;
    s->received = r->received;
    s->processed = r->processed;
    s->dropped = r->dropped;
    s->blocked = r->blocked;
    s->high_events = r->high_events;
    s->low_events = r->low_events;
    s->producers_waiting = r->producers.n;
    s->consumers_waiting = r->consumers.n;
    s->closed = r->closed;
    s->above_high = r->above;
    pthread_mutex_unlock(&r->mu);
}

int64_t prs_ring_size(prs_ring *r) {
    pthread_mutex_lock(&r->mu);
    int64_t n = r->count + r->handed;
    pthread_mutex_unlock(&r->mu);
    return n;
}

int64_t prs_ring_capacity(const prs_ring *r) { return r->cap; }
prs_ring_strategy prs_ring_strategy_of(const prs_ring *r) { return r->strategy; }

int prs_ring_is_closed(prs_ring *r) {
    pthread_mutex_lock(&r->mu);
    int c = r->closed;
    pthread_mutex_unlock(&r->mu);
    return c;
}

/* ---- blocking forms for C users ------------------------------------------ */

static void res_merge(prs_ring_result *into, const prs_ring_result *from) {
    into->events |= from->events;
    if (from->woken) {
        prs_ring_waiter **p = &into->woken;
        while (*p) p = &(*p)->next;
        *p = from->woken;
    }
}

int prs_ring_put_blocking(prs_ring *r, void *item, int64_t deadline_ns, prs_ring_result *res) {
    if (!r || !res) return PRS_EINVAL;
    prs_ring_waiter w;
    int rc = prs_ring_waiter_init(&w, 1, 1, NULL);
    if (rc) { res_init(res); return rc; }
    rc = prs_ring_put(r, item, &w, res);
    if (rc == PRS_OK && res->outcome == PRS_RING_WAITING) {
        prs_ring_result fin;
        void *back;
        prs_ring_wait(r, &w, deadline_ns);
        prs_ring_finish(r, &w, PRS_RING_FINISH_ACCEPT, &back, &fin);
        res_merge(res, &fin);
        res->outcome = fin.outcome;
        if (fin.outcome == PRS_RING_CLOSED) rc = PRS_ECLOSED;
    }
    prs_ring_waiter_destroy(&w);
    return rc;
}

int prs_ring_get_blocking(prs_ring *r, int64_t deadline_ns, void **item, prs_ring_result *res) {
    if (!r || !item || !res) return PRS_EINVAL;
    prs_ring_waiter w;
    int rc = prs_ring_waiter_init(&w, 0, 1, NULL);
    if (rc) { res_init(res); return rc; }
    rc = prs_ring_get(r, &w, item, res);
    if (rc == PRS_OK && res->outcome == PRS_RING_WAITING) {
        prs_ring_result fin;
        prs_ring_wait(r, &w, deadline_ns);
        prs_ring_finish(r, &w, PRS_RING_FINISH_ACCEPT, item, &fin);
        res_merge(res, &fin);
        res->outcome = fin.outcome;
        if (fin.outcome == PRS_RING_CLOSED) rc = PRS_ECLOSED;
        else if (fin.outcome != PRS_RING_GOT) rc = PRS_ETIMEDOUT;
    }
    prs_ring_waiter_destroy(&w);
    return rc;
}
