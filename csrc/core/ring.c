/*
 * ring.c - a bounded FIFO of opaque pointers with backpressure strategies,
 * FIFO waiter queues on both sides, joiners, close, and watermark events.
 *
 * State (all guarded by `mu`, held only around the bookkeeping below and by
 * pthread_cond_timedwait while a blocking waiter sleeps):
 *   buf[nbuf]       circular storage; the oldest item is buf[head]. It grows
 *                   (doubling, up to cap) only in put and set_capacity, so a
 *                   give-back or a settle never needs memory
 *   cap             the capacity (set_capacity changes it)
 *   count           items stored in buf
 *   handed          items handed to consumer waiters that have not settled;
 *                   they keep their slot, so a consumer that gives its item
 *                   back always finds room at the front
 *   reserved        slots given to served NOTIFY producers that have not
 *                   settled; their items are still theirs (see finish)
 *   size            count + handed + reserved: what capacity bounds
 *   producers       queued producer waiters (each holds its item), oldest first
 *   consumers       queued consumer waiters, oldest first
 *   joiners         queued joiner waiters (served together when unfinished
 *                   reaches 0)
 *   served          BLOCKING consumers handed an item, not settled yet,
 *                   in the order served (finish() unlinks them)
 *   unfinished      admitted items not marked done (task_done), >= 0
 *   above           1 after a high-watermark event until the next low one
 *
 * Invariants between calls (check_invariants() asserts them in debug builds):
 *   size <= nbuf
 *   size <= cap, unless a shrink left more (`over`); nothing is admitted
 *                                         while size >= cap
 *   producers non-empty => size >= cap   (space goes to the oldest producer)
 *   consumers non-empty => count == 0    (items go to the oldest consumer)
 *   joiners non-empty   => unfinished > 0
 *   received == processed + dropped + size + (queued producers)
 * The capacity check comes before any hand-off: a put admitted while
 * consumers wait hands its item over only if size < cap, so handed <= cap
 * and every give-back (cancel, fork) lands in a slot it still holds.
 * settle() restores the producer/consumer invariants after any change that
 * frees space or adds an item; every operation calls it before returning.
 *
 * Producers served from the queue: a BLOCKING one (a thread, which cannot be
 * cancelled) hands its item over at once; a NOTIFY one (an event-loop task,
 * which may be cancelled before it runs) gets a reserved slot, and its item
 * enters when it settles - so a cancelled put takes its item back, as
 * asyncio.Queue's rule wants.
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
 * high_n (recomputed when cap changes). Every call changes size by at most
 * one (a get that lets a producer in changes it by zero), so checking once at
 * the end of each call sees every crossing.
 *
 * Expected workload: producer/consumer pairs at millions of items per second
 * (one mutex round trip per put or get, no allocation once the storage has
 * grown), bursts of waiters.
 */
#include "prs_internal.h"
#include "prs_ring.h"

#include <errno.h>
#include <time.h>

#define INITIAL_SLOTS INT64_C(64) /* storage allocated up front (at most cap) */

typedef struct waitq {
    prs_ring_waiter *head, *tail;
    int64_t n;
} waitq;

struct prs_ring {
    pthread_mutex_t mu;
    void **buf;                 /* nbuf slots */
    int64_t nbuf;               /* >= size; grows up to cap */
    int64_t cap;                /* 1..PRS_RING_MAX */
    int64_t head;               /* index of the oldest stored item */
    int64_t count;              /* stored */
    int64_t handed;             /* handed to unsettled consumers */
    int64_t reserved;           /* slots of served, unsettled NOTIFY producers */
    int64_t unfinished;         /* admitted, not marked done */
    prs_ring_strategy strategy; /* immutable */
    int wm;                     /* immutable: watermarks on */
    double high_f, low_f;       /* immutable: the fractions */
    int64_t high_n, low_n;      /* 0 <= low_n < high_n <= cap */
    int above;
    int over;                   /* 1 while a shrink left size > cap */
    int closed;
    waitq producers, consumers, joiners;
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

int prs_ring_config_check(const prs_ring_config *cfg, prs_config_error *why) {
    if (!cfg) return prs_config_fail(why, PRS_EINVAL, NULL, "no config");
    if (cfg->capacity < 0) return prs_config_fail(why, PRS_EINVAL, "capacity", "must be >= 0 (0: unbounded)");
    if ((int)cfg->strategy < PRS_RING_BLOCK || (int)cfg->strategy > PRS_RING_ERROR)
        return prs_config_fail(why, PRS_EINVAL, "strategy",
                               "must be 'block', 'drop_oldest', 'drop_newest' or 'error'");
    if (cfg->watermarks) {
        double hi = cfg->high_watermark, lo = cfg->low_watermark;
        if (!(hi > 0.0 && hi <= 1.0)) /* NaN fails too */
            return prs_config_fail(why, PRS_EINVAL, "high_watermark", "must be a fraction in (0, 1]");
        if (!(lo >= 0.0 && lo < hi))
            return prs_config_fail(why, PRS_EINVAL, "low_watermark",
                                   "must be below high_watermark (0 <= low < high <= 1)");
        if (cfg->capacity == 0) /* a fraction of no capacity */
            return prs_config_fail(why, PRS_EINVAL, "capacity",
                                   "must be > 0 when watermarks are set (a bounded queue)");
    }
    if (cfg->capacity > PRS_RING_MAX)
        return prs_config_fail(why, PRS_ERANGE, "capacity", "must be <= 1073741824");
    return PRS_OK;
}

int prs_ring_config_validate(const prs_ring_config *cfg) { return prs_ring_config_check(cfg, NULL); }

static void set_thresholds(prs_ring *r) {
    if (!r->wm) return;
    r->high_n = prs__ceil_to_i64(r->high_f * (double)r->cap);
    if (r->high_n < 1) r->high_n = 1;
    if (r->high_n > r->cap) r->high_n = r->cap;
    r->low_n = prs__floor_to_i64(r->low_f * (double)r->cap);
    if (r->low_n >= r->high_n) r->low_n = r->high_n - 1;
}

int prs_ring_new(const prs_ring_config *cfg, prs_ring **out) {
    if (!out) return PRS_EINVAL;
    *out = NULL;
    int rc = prs_ring_config_validate(cfg);
    if (rc) return rc;
    const prs_allocator *a = prs__alloc_or_default(cfg->allocator);
    prs_ring *r = prs__calloc(a, 1, sizeof *r);
    if (!r) return PRS_ENOMEM;
    int64_t cap = cfg->capacity == 0 ? PRS_RING_MAX : cfg->capacity;
    r->nbuf = cap < INITIAL_SLOTS ? cap : INITIAL_SLOTS;
    r->buf = prs__calloc(a, (size_t)r->nbuf, sizeof(void *));
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
    r->cap = cap;
    r->strategy = cfg->strategy;
    r->wm = cfg->watermarks ? 1 : 0;
    r->high_f = cfg->high_watermark;
    r->low_f = cfg->low_watermark;
    set_thresholds(r);
    *out = r;
    return PRS_OK;
}

void prs_ring_free(prs_ring *r) {
    if (!r) return;
    assert(r->producers.n == 0 && r->consumers.n == 0 && r->served.n == 0 && r->joiners.n == 0);
    pthread_mutex_destroy(&r->mu);
    prs_allocator a = r->alloc;
    prs__free(&a, r->buf);
    prs__free(&a, r);
}

int prs_ring_waiter_init(prs_ring_waiter *w, int role, int blocking, void *data) {
    if (!w || role < PRS_RING_CONSUMER || role > PRS_RING_JOINER) return PRS_EINVAL;
    memset(w, 0, sizeof *w);
    w->state = PRS_WAITER_IDLE;
    w->role = role;
    w->data = data;
    return prs__waiter_cond_init(&w->cond, blocking, &w->blocking);
}

void prs_ring_waiter_destroy(prs_ring_waiter *w) {
    if (!w) return;
    assert(w->state != PRS_WAITER_WAITING);
    prs__waiter_cond_destroy(&w->cond, &w->blocking);
}

/* ---- internals (mu held) ------------------------------------------------- */

static int64_t size_of(const prs_ring *r) { return r->count + r->handed + r->reserved; }

static void check_invariants(const prs_ring *r) {
    (void)r;
    assert(r->count >= 0 && r->handed >= 0 && r->reserved >= 0 && r->unfinished >= 0);
    assert(size_of(r) <= r->nbuf);
    assert(size_of(r) <= r->cap || r->over);
    assert(r->producers.n == 0 || size_of(r) >= r->cap);
    assert(r->consumers.n == 0 || r->count == 0);
    assert(r->joiners.n == 0 || r->unfinished > 0);
    assert(r->handed >= r->served.n);
}

static void res_init(prs_ring_result *res) {
    res->outcome = 0;
    res->events = 0;
    res->evicted = NULL;
    res->woken = NULL;
}

/* Makes room for `need` items in buf: PRS_OK or PRS_ENOMEM (nothing changed). */
static int grow(prs_ring *r, int64_t need) {
    if (need <= r->nbuf) return PRS_OK;
    int64_t n = r->nbuf > r->cap / 2 ? r->cap : r->nbuf * 2;
    if (n < need) n = need;
    void **nb = prs__calloc(&r->alloc, (size_t)n, sizeof(void *));
    if (!nb) return PRS_ENOMEM;
    for (int64_t k = 0; k < r->count; k++) {
        int64_t i = r->head + k;
        if (i >= r->nbuf) i -= r->nbuf;
        nb[k] = r->buf[i];
    }
    prs__free(&r->alloc, r->buf);
    r->buf = nb;
    r->nbuf = n;
    r->head = 0;
    return PRS_OK;
}

static void push_back(prs_ring *r, void *item) {
    assert(r->count < r->nbuf);
    int64_t i = r->head + r->count;
    if (i >= r->nbuf) i -= r->nbuf;
    r->buf[i] = item;
    r->count++;
}

static void push_front(prs_ring *r, void *item) {
    assert(r->count < r->nbuf);
    r->head = r->head == 0 ? r->nbuf - 1 : r->head - 1;
    r->buf[r->head] = item;
    r->count++;
}

static void *pop_front(prs_ring *r) {
    assert(r->count > 0);
    void *item = r->buf[r->head];
    r->buf[r->head] = NULL;
    if (++r->head == r->nbuf) r->head = 0;
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

/* Gives `item` (already counted in size: a stored item or an admitted one)
 * to the oldest consumer: it keeps its slot until settled. */
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

/* An admitted item enters: to the oldest consumer, else stored at the back.
 * The caller checked size < cap (or holds a reserved slot it releases). */
static void admit(prs_ring *r, void *item, prs_ring_result *res) {
    r->unfinished++;
    if (r->consumers.n > 0) hand_to_consumer(r, item, res); else push_back(r, item);
}

/* Restores the waiter invariants: free space goes to the oldest producers,
 * stored items to the oldest consumers. */
static void settle(prs_ring *r, prs_ring_result *res) {
    while (r->producers.n > 0 && size_of(r) < r->cap) {
        prs_ring_waiter *p = r->producers.head;
        unlink_waiter(&r->producers, p);
        p->state = PRS_WAITER_GRANTED;
        if (p->blocking) admit(r, p->item, res);
        else r->reserved++; /* its item enters when its task settles */
        wake(p, res);
    }
    while (r->count > 0 && r->consumers.n > 0) hand_to_consumer(r, pop_front(r), res);
}

/* Serves every joiner once no task is unfinished. */
static void serve_joiners(prs_ring *r, prs_ring_result *res) {
    if (r->unfinished > 0) return;
    while (r->joiners.head) {
        prs_ring_waiter *j = r->joiners.head;
        unlink_waiter(&r->joiners, j);
        j->state = PRS_WAITER_GRANTED;
        wake(j, res);
    }
}

/* Reports watermark crossings and checks the invariants: the last step of
 * every operation that changes the ring. */
static void check_watermarks(prs_ring *r, prs_ring_result *res) {
    int64_t size = size_of(r);
    if (r->over && size <= r->cap) r->over = 0;
    check_invariants(r);
    if (!r->wm) return;
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
    if (w && (w->state == PRS_WAITER_WAITING || w->role != PRS_RING_PRODUCER)) return PRS_EINVAL;
    prs__mutex_lock(&r->mu);
    if (r->closed) {
        pthread_mutex_unlock(&r->mu);
        return PRS_ECLOSED;
    }
    int full = size_of(r) >= r->cap; /* handed and reserved slots count */
    if (try_only && r->strategy == PRS_RING_BLOCK && full) {
        pthread_mutex_unlock(&r->mu);
        return PRS_EAGAIN;
    }
    if (!full) {
        if (grow(r, size_of(r) + 1) != PRS_OK) {
            pthread_mutex_unlock(&r->mu);
            return PRS_ENOMEM;
        }
        r->received++;
        admit(r, item, res);
        res->outcome = PRS_RING_STORED;
    } else {
        r->received++;
        switch (r->strategy) {
        case PRS_RING_DROP_OLDEST:
            r->dropped++;
            if (r->count > 0) {
                res->evicted = pop_front(r);
                r->unfinished--; /* the evicted item will never be got: done */
                admit(r, item, res);
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
    if (w && (w->state == PRS_WAITER_WAITING || w->role != PRS_RING_CONSUMER)) return PRS_EINVAL;
    int rc = PRS_OK;
    prs__mutex_lock(&r->mu);
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
    return prs__cond_wait_while(&w->cond, &r->mu, &w->state, PRS_WAITER_WAITING, deadline_ns);
}

/* finish() of a served producer. */
static void finish_producer(prs_ring *r, prs_ring_waiter *w, int mode, void **item, prs_ring_result *res) {
    if (w->blocking) { /* its item went in when it was served */
        res->outcome = PRS_RING_STORED;
        return;
    }
    r->reserved--;
    if (mode == PRS_RING_FINISH_ACCEPT && !r->closed) {
        admit(r, w->item, res);
        res->outcome = PRS_RING_STORED;
        return;
    }
    /* Cancelled before its task ran (or the ring closed meanwhile): the item
     * never entered; the slot goes to the next producer. */
    *item = w->item;
    r->dropped++;
    settle(r, res);
    res->outcome = mode == PRS_RING_FINISH_ACCEPT ? PRS_RING_CLOSED : PRS_RING_GAVE_BACK;
}

static waitq *queue_of(prs_ring *r, const prs_ring_waiter *w) {
    return w->role == PRS_RING_PRODUCER ? &r->producers
         : w->role == PRS_RING_JOINER   ? &r->joiners
                                        : &r->consumers;
}

int prs_ring_finish(prs_ring *r, prs_ring_waiter *w, int mode, void **item, prs_ring_result *res) {
    if (!r || !w || !item || !res) return PRS_EINVAL;
    if (mode != PRS_RING_FINISH_ACCEPT && mode != PRS_RING_FINISH_CANCEL) return PRS_EINVAL;
    res_init(res);
    *item = NULL;
    prs__mutex_lock(&r->mu);
    switch (w->state) {
    case PRS_WAITER_WAITING:
        unlink_waiter(queue_of(r, w), w);
        if (w->role == PRS_RING_PRODUCER) {
            *item = w->item;
            r->dropped++;
        }
        res->outcome = PRS_RING_TIMED_OUT;
        break;
    case PRS_WAITER_GRANTED:
        if (w->role == PRS_RING_PRODUCER) {
            finish_producer(r, w, mode, item, res);
            break;
        }
        if (w->role == PRS_RING_JOINER) {
            res->outcome = PRS_RING_DONE;
            break;
        }
        if (w->blocking) unlink_waiter(&r->served, w);
        r->handed--;
        if (mode == PRS_RING_FINISH_ACCEPT) {
            *item = w->item;
            r->processed++;
            res->outcome = PRS_RING_GOT;
        } else {
            push_front(r, w->item); /* its slot was kept: room guaranteed */
            res->outcome = PRS_RING_GAVE_BACK;
        }
        settle(r, res);
        break;
    case PRS_WAITER_CLOSED:
        if (w->role == PRS_RING_PRODUCER) *item = w->item;
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

int prs_ring_task_done(prs_ring *r, prs_ring_result *res) {
    if (!r || !res) return PRS_EINVAL;
    res_init(res);
    prs__mutex_lock(&r->mu);
    int rc = PRS_OK;
    if (r->unfinished == 0) {
        rc = PRS_EINVAL;
    } else {
        r->unfinished--;
        serve_joiners(r, res);
    }
    check_invariants(r);
    pthread_mutex_unlock(&r->mu);
    return rc;
}

int prs_ring_join(prs_ring *r, prs_ring_waiter *w, prs_ring_result *res) {
    if (!r || !res) return PRS_EINVAL;
    res_init(res);
    if (w && (w->state == PRS_WAITER_WAITING || w->role != PRS_RING_JOINER)) return PRS_EINVAL;
    int rc = PRS_OK;
    prs__mutex_lock(&r->mu);
    if (r->unfinished == 0) {
        res->outcome = PRS_RING_DONE;
    } else if (w) {
        enqueue(&r->joiners, w);
        res->outcome = PRS_RING_WAITING;
    } else {
        rc = PRS_EAGAIN;
    }
    pthread_mutex_unlock(&r->mu);
    return rc;
}

int prs_ring_set_capacity(prs_ring *r, int64_t capacity, prs_ring_result *res) {
    if (!r || !res || capacity < 0) return PRS_EINVAL;
    if (capacity > PRS_RING_MAX) return PRS_ERANGE;
    res_init(res);
    int64_t cap = capacity == 0 ? PRS_RING_MAX : capacity;
    prs__mutex_lock(&r->mu);
    /* Room for the producers a larger capacity lets in (settle never allocates). */
    int64_t need = size_of(r) + r->producers.n;
    if (need > cap) need = cap;
    if (grow(r, need) != PRS_OK) {
        pthread_mutex_unlock(&r->mu);
        return PRS_ENOMEM;
    }
    r->cap = cap;
    if (size_of(r) > cap) r->over = 1;
    set_thresholds(r);
    settle(r, res);
    check_watermarks(r, res);
    pthread_mutex_unlock(&r->mu);
    return PRS_OK;
}

int prs_ring_close(prs_ring *r, prs_ring_result *res) {
    if (!r || !res) return PRS_EINVAL;
    res_init(res);
    prs__mutex_lock(&r->mu);
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
    check_invariants(r);
    pthread_mutex_unlock(&r->mu);
    return PRS_OK;
}

int prs_ring_after_fork_child(prs_ring *r, prs_ring_result *res) {
    if (!r || !res) return PRS_EINVAL;
    res_init(res);
    /* The parent's mutex may have been held by a thread that is gone. */
    memset(&r->mu, 0, sizeof r->mu);
    if (pthread_mutex_init(&r->mu, NULL) != 0) return PRS_ENOMEM;
    prs__mutex_lock(&r->mu);
    /* Queued threads leave the queues unserved, as a timed-out finish would:
     * a producer's item is its thread's again (counted dropped). Nobody is
     * woken: their condition variables are the parent's. */
    waitq *qs[3] = {&r->producers, &r->consumers, &r->joiners};
    for (int k = 0; k < 3; k++) {
        prs_ring_waiter *w = qs[k]->head;
        while (w) {
            prs_ring_waiter *next = w->next;
            if (w->blocking) {
                unlink_waiter(qs[k], w);
                if (w->role == PRS_RING_PRODUCER) r->dropped++;
                w->state = PRS_WAITER_IDLE;
            }
            w = next;
        }
    }
    /* Threads handed an item give it back to the front, newest first, so the
     * items keep their order. Each lands in the slot it held: capacity holds. */
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
        prs__mutex_lock(&r->mu);
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
    prs__mutex_lock(&r->mu);
    for (int64_t k = 0; k < r->count && rc == 0; k++) {
        int64_t i = r->head + k;
        if (i >= r->nbuf) i -= r->nbuf;
        rc = fn(r->buf[i], arg);
    }
    pthread_mutex_unlock(&r->mu);
    return rc;
}

void prs_ring_stats_get(prs_ring *r, prs_ring_stats *s) {
    prs__mutex_lock(&r->mu);
    s->capacity = r->cap;
    s->size = size_of(r);
    s->received = r->received;
    s->processed = r->processed;
    s->dropped = r->dropped;
    s->blocked = r->blocked;
    s->high_events = r->high_events;
    s->low_events = r->low_events;
    s->producers_waiting = r->producers.n;
    s->consumers_waiting = r->consumers.n;
    s->unfinished = r->unfinished;
    s->closed = r->closed;
    s->above_high = r->above;
    pthread_mutex_unlock(&r->mu);
}

int64_t prs_ring_size(prs_ring *r) {
    prs__mutex_lock(&r->mu);
    int64_t n = size_of(r);
    pthread_mutex_unlock(&r->mu);
    return n;
}

int64_t prs_ring_capacity(prs_ring *r) {
    prs__mutex_lock(&r->mu);
    int64_t c = r->cap;
    pthread_mutex_unlock(&r->mu);
    return c;
}

int prs_ring_is_full(prs_ring *r) {
    prs__mutex_lock(&r->mu);
    int f = size_of(r) >= r->cap;
    pthread_mutex_unlock(&r->mu);
    return f;
}

prs_ring_strategy prs_ring_strategy_of(const prs_ring *r) { return r->strategy; }

int prs_ring_is_closed(prs_ring *r) {
    prs__mutex_lock(&r->mu);
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

/* The blocking forms: a BLOCKING waiter of `role` on this stack, queued by
 * put/get/join, waited on until deadline_ns and settled with ACCEPT. */
static int blocking(prs_ring *r, int role, void *in, void **out, int64_t deadline_ns, prs_ring_result *res) {
    prs_ring_waiter w;
    int rc = prs_ring_waiter_init(&w, role, 1, NULL);
    if (rc) { res_init(res); return rc; }
    rc = role == PRS_RING_PRODUCER ? prs_ring_put(r, in, &w, res)
       : role == PRS_RING_CONSUMER ? prs_ring_get(r, &w, out, res)
                                   : prs_ring_join(r, &w, res);
    if (rc == PRS_OK && res->outcome == PRS_RING_WAITING) {
        prs_ring_result fin;
        void *back = NULL; /* a producer's item that was not stored: still the caller's */
        prs_ring_wait(r, &w, deadline_ns);
        prs_ring_finish(r, &w, PRS_RING_FINISH_ACCEPT, role == PRS_RING_CONSUMER ? out : &back, &fin);
        res_merge(res, &fin);
        res->outcome = fin.outcome;
        if (fin.outcome == PRS_RING_CLOSED) rc = PRS_ECLOSED;
        else if (fin.outcome == PRS_RING_TIMED_OUT && role != PRS_RING_PRODUCER) rc = PRS_ETIMEDOUT;
    }
    prs_ring_waiter_destroy(&w);
    return rc;
}

int prs_ring_put_blocking(prs_ring *r, void *item, int64_t deadline_ns, prs_ring_result *res) {
    if (!r || !res) return PRS_EINVAL;
    return blocking(r, PRS_RING_PRODUCER, item, NULL, deadline_ns, res);
}

int prs_ring_get_blocking(prs_ring *r, int64_t deadline_ns, void **item, prs_ring_result *res) {
    if (!r || !item || !res) return PRS_EINVAL;
    return blocking(r, PRS_RING_CONSUMER, NULL, item, deadline_ns, res);
}

int prs_ring_join_blocking(prs_ring *r, int64_t deadline_ns, prs_ring_result *res) {
    if (!r || !res) return PRS_EINVAL;
    return blocking(r, PRS_RING_JOINER, NULL, NULL, deadline_ns, res);
}
