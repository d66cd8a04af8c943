/*
 * prs_ring.h - a bounded queue of opaque pointers with backpressure.
 *
 * The ring never owns what its pointers point to: whoever puts a pointer gives
 * it to the ring, and the ring gives it back exactly once - to a getter, as an
 * evicted item, or with the dropped item of a put. (The Python binding keeps a
 * strong reference per pointer.)
 *
 * Capacity holds at every instant: size = stored items + items handed to
 * consumer waiters not yet settled + slots reserved for served NOTIFY
 * producers, and a put is admitted (stored, or handed to a waiting consumer)
 * only while size < capacity. When full, a put follows the ring's strategy:
 *   PRS_RING_BLOCK        the producer waits for space (a caller-owned waiter),
 *                         or, without a waiter, the item is refused (FULL)
 *   PRS_RING_DROP_OLDEST  the oldest stored item is evicted, the new one stored
 *                         (with nothing stored - every slot handed out - the
 *                         new one is refused: DROPPED)
 *   PRS_RING_DROP_NEWEST  the new item is refused (DROPPED)
 *   PRS_RING_ERROR        the new item is refused (FULL)
 *
 * Waiters are served first come, first served: an item put while consumers
 * wait goes to the oldest consumer; space freed while producers wait goes to
 * the oldest producer. An item handed to a consumer keeps its slot until the
 * consumer settles it (prs_ring_finish), so a consumer that gives up after it
 * was served can always give the item back to the front. A served BLOCKING
 * producer (a thread) hands its item over at once; a served NOTIFY producer
 * (an event-loop task, which may be cancelled before it runs) gets a reserved
 * slot and its item enters when it settles: ACCEPT stores it, CANCEL takes it
 * back (counted dropped) - so a cancelled put never leaves its item behind.
 *
 * Capacity 0 in the config means unbounded (PRS_RING_MAX items); the storage
 * grows on demand up to the capacity. prs_ring_set_capacity() changes it at
 * run time; after a shrink below the current size the items stay, and nothing
 * is admitted until the size is below the new capacity.
 *
 * Unfinished tasks (as queue.Queue's task_done/join): every item admitted
 * counts one until prs_ring_task_done() (an evicted item counts as done).
 * Joiners (waiters of role PRS_RING_JOINER) are served when the count is 0.
 *
 * Watermarks (optional): fractions 0 <= low < high <= 1 of the capacity. The
 * call whose change makes size >= ceil(high * capacity) reports
 * PRS_RING_EV_HIGH; later, the call that makes size <= floor(low * capacity)
 * reports PRS_RING_EV_LOW; and so on, once per crossing. The caller runs its
 * callbacks after the call returned (no lock held).
 *
 * Counters: received (puts accepted for processing, i.e. not on a closed ring),
 * processed (items taken by getters), dropped (evicted, refused, or producers
 * that gave up or were closed out), blocked (puts that had to wait). At every
 * quiescent point: received == processed + dropped + size + producers waiting.
 */
#ifndef PRS_RING_H
#define PRS_RING_H

#include <pthread.h>

#include "prs_bulkhead.h" /* PRS_WAITER_* states */
#include "prs_common.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct prs_ring prs_ring;

#define PRS_RING_MAX INT64_C(1073741824) /* capacity bound (2^30); also "unbounded" */

typedef enum prs_ring_strategy {
    PRS_RING_BLOCK = 0,
    PRS_RING_DROP_OLDEST = 1,
    PRS_RING_DROP_NEWEST = 2,
    PRS_RING_ERROR = 3
} prs_ring_strategy;

typedef struct prs_ring_config {
    int64_t capacity;                /* 1 .. PRS_RING_MAX; 0: unbounded (PRS_RING_MAX) */
    prs_ring_strategy strategy;
    int watermarks;                  /* 1: use high/low below */
    double high_watermark;           /* (0, 1] */
    double low_watermark;            /* [0, high) */
    const prs_allocator *allocator;  /* NULL: the default allocator */
} prs_ring_config;

/* Waiter roles (prs_ring_waiter_init). */
enum { PRS_RING_CONSUMER = 0, PRS_RING_PRODUCER = 1, PRS_RING_JOINER = 2 };

/* A waiter, embedded by the caller; fields other than `data` are private.
 * States are the PRS_WAITER_* of prs_bulkhead.h. */
typedef struct prs_ring_waiter {
    struct prs_ring_waiter *prev, *next; /* queue links; also the woken list */
    int state;                           /* PRS_WAITER_* (guarded by the ring) */
    int blocking;                        /* 1: `cond` is initialised */
    int role;                            /* PRS_RING_CONSUMER / PRODUCER / JOINER */
    void *item;                          /* producer: its item; consumer: the one handed */
    pthread_cond_t cond;
    void *data;                          /* the caller's */
} prs_ring_waiter;

/* Outcomes (prs_ring_result.outcome). */
enum {
    PRS_RING_STORED = 1,    /* put: the item is in the ring (or was handed to a consumer) */
    PRS_RING_EVICTED = 2,   /* put: stored; the oldest item is in result.evicted */
    PRS_RING_DROPPED = 3,   /* put: refused (DROP_NEWEST, or DROP_OLDEST with every
                               slot handed to waiters); the caller keeps its item */
    PRS_RING_FULL = 4,      /* put: refused (ERROR, or BLOCK without a waiter) */
    PRS_RING_WAITING = 5,   /* put/get: the waiter was queued */
    PRS_RING_GOT = 6,       /* get/finish: *item is the caller's now */
    PRS_RING_TIMED_OUT = 7, /* finish: left the queue unserved (a producer's item
                               comes back in *item, counted dropped) */
    PRS_RING_GAVE_BACK = 8, /* finish(CANCEL): a handed item went back to the front */
    PRS_RING_CLOSED = 9,    /* finish: woken by close (a producer's item comes back) */
    PRS_RING_DONE = 10      /* join/finish(joiner): no unfinished task left */
};

#define PRS_RING_EV_HIGH 1u
#define PRS_RING_EV_LOW  2u

typedef struct prs_ring_result {
    int outcome;
    unsigned events;          /* PRS_RING_EV_* crossed by this call */
    void *evicted;            /* PRS_RING_EVICTED: the caller's to release */
    prs_ring_waiter *woken;   /* NOTIFY waiters served by this call, linked by
                                 `next`; the ring no longer touches them */
} prs_ring_result;

enum { PRS_RING_FINISH_ACCEPT = 0, PRS_RING_FINISH_CANCEL = 1 };

typedef struct prs_ring_stats {
    int64_t capacity;
    int64_t size;         /* stored + handed to waiters not yet settled */
    int64_t received, processed, dropped, blocked;
    int64_t high_events, low_events;
    int64_t producers_waiting, consumers_waiting;
    int64_t unfinished;   /* admitted items not yet marked done (task_done) */
    int closed;
    int above_high;       /* 1 between a high and the next low event */
} prs_ring_stats;

/* Defaults: capacity 1, BLOCK, no watermarks, default allocator. */
void prs_ring_config_init(prs_ring_config *cfg);
/* PRS_OK, PRS_EINVAL (capacity < 0, unknown strategy, watermarks not
 * 0 <= low < high <= 1 or NaN, or set on an unbounded ring), PRS_ERANGE (capacity > PRS_RING_MAX); on
 * error *why (when not NULL) names the field and the rule it broke. */
int prs_ring_config_check(const prs_ring_config *cfg, prs_config_error *why);
/* prs_ring_config_check(cfg, NULL). */
int prs_ring_config_validate(const prs_ring_config *cfg);
/* An empty open ring in *out; on error *out is NULL and nothing is allocated. */
int prs_ring_new(const prs_ring_config *cfg, prs_ring **out);
/* NULL-safe. Items still stored are not released (drain first); no waiter may
 * be queued. */
void prs_ring_free(prs_ring *r);

/* Prepares a waiter of `role` (PRS_RING_PRODUCER waits to put,
 * PRS_RING_CONSUMER to get, PRS_RING_JOINER for join). blocking=1 initialises
 * a condition variable for prs_ring_wait(). PRS_OK, PRS_EINVAL, PRS_ENOMEM,
 * PRS_EAGAIN. Destroy once settled. */
int prs_ring_waiter_init(prs_ring_waiter *w, int role, int blocking, void *data);
void prs_ring_waiter_destroy(prs_ring_waiter *w);

/* Puts `item`. w (a producer waiter, IDLE) is queued only when the ring is full
 * with the BLOCK strategy; with w NULL that case is FULL. Outcomes STORED,
 * EVICTED, DROPPED, FULL, WAITING. Returns PRS_OK; PRS_ECLOSED when closed
 * (nothing counted, the caller keeps its item); PRS_ENOMEM when the storage
 * could not grow (nothing counted); PRS_EINVAL. */
int prs_ring_put(prs_ring *r, void *item, prs_ring_waiter *w, prs_ring_result *res);
/* prs_ring_put() without a waiter, except that where put would queue one (a
 * full BLOCK ring) it changes and counts nothing and returns PRS_EAGAIN. */
int prs_ring_try_put(prs_ring *r, void *item, prs_ring_result *res);
/* Gets the oldest item into *item (GOT). When none is stored: with w (a
 * consumer waiter, IDLE) queues it (WAITING) and returns PRS_OK; without,
 * returns PRS_EEMPTY; on a closed ring PRS_ECLOSED. */
int prs_ring_get(prs_ring *r, prs_ring_waiter *w, void **item, prs_ring_result *res);
/* Blocks until the queued BLOCKING waiter `w` is served or woken by close, or
 * until deadline_ns (absolute monotonic; PRS_NEVER: no limit). PRS_OK or
 * PRS_ETIMEDOUT (still queued). */
int prs_ring_wait(prs_ring *r, prs_ring_waiter *w, int64_t deadline_ns);
/* Settles a waiter and leaves it IDLE:
 *   served consumer: ACCEPT -> GOT (*item), CANCEL -> GAVE_BACK (the item goes
 *                    back to the front, or to the next waiting consumer)
 *   served BLOCKING producer: STORED (its item is in the ring; nothing to undo)
 *   served NOTIFY producer: ACCEPT -> STORED (its item enters the reserved
 *                    slot, or goes to the oldest waiting consumer), or CLOSED
 *                    when the ring was closed since (*item returned, counted
 *                    dropped); CANCEL -> GAVE_BACK (*item returned, counted
 *                    dropped, the slot goes to the next producer)
 *   served joiner:   DONE
 *   still queued:    TIMED_OUT (producer: *item returned, counted dropped)
 *   woken by close:  CLOSED (producer: *item returned)
 *   IDLE:            TIMED_OUT, nothing changes.
 * PRS_OK or PRS_EINVAL. */
int prs_ring_finish(prs_ring *r, prs_ring_waiter *w, int mode, void **item, prs_ring_result *res);
/* Marks one admitted item done (queue.Queue.task_done): PRS_OK, or
 * PRS_EINVAL when no task is unfinished (nothing changes). When the count
 * reaches 0 every joiner is served (NOTIFY ones come back in res->woken). */
int prs_ring_task_done(prs_ring *r, prs_ring_result *res);
/* DONE when no task is unfinished; else with w (a joiner waiter, IDLE)
 * queues it (WAITING), without returns PRS_EAGAIN. PRS_OK, PRS_EINVAL. */
int prs_ring_join(prs_ring *r, prs_ring_waiter *w, prs_ring_result *res);
/* Changes the capacity (1 .. PRS_RING_MAX, 0: unbounded); growing lets
 * waiting producers in. PRS_OK, PRS_EINVAL (< 0), PRS_ERANGE, PRS_ENOMEM
 * (nothing changed). Watermark thresholds follow the new capacity. */
int prs_ring_set_capacity(prs_ring *r, int64_t capacity, prs_ring_result *res);

/* Closes the ring: later puts fail with PRS_ECLOSED, gets drain what is left,
 * then fail with PRS_ECLOSED; every queued waiter is woken (CLOSED). NOTIFY
 * waiters come back in res->woken. Idempotent. */
int prs_ring_close(prs_ring *r, prs_ring_result *res);

/* Removes every stored item, calling fn(item, arg) on each after the ring's
 * lock is released (for teardown: releases the ring's references). Counts
 * nothing. Returns how many. */
int64_t prs_ring_drain(prs_ring *r, void (*fn)(void *item, void *arg), void *arg);
/* Calls fn on every stored item (not those handed to waiters), oldest first, under the ring's
 * lock: fn must not call the ring (for a garbage collector's traversal). Stops
 * at the first non-zero return, which it returns. */
int prs_ring_foreach(prs_ring *r, int (*fn)(void *item, void *arg), void *arg);

/* Fork. A child process inherits the ring as the forking thread saw it: its
 * mutex possibly held by a thread that does not exist there, and queued or
 * just-served waiters of such threads. Call this in the CHILD only, right
 * after fork() and before any other use, while it runs a single thread. It
 * makes a new mutex and settles every BLOCKING waiter as finish(CANCEL) would,
 * without waking any:
 *   queued producer:  leaves the queue, counted dropped; its item is not
 *                     stored (it belongs to the thread that put it, which does
 *                     not exist in the child: whoever owns it reclaims it, or
 *                     it leaks)
 *   queued consumer:  leaves the queue
 *   served consumer:  its item goes back to the front of the ring (several:
 *                     in the order they were taken), or to the oldest NOTIFY
 *                     consumer waiting
 *   served producer:  nothing (its item is stored)
 *   queued joiner:    leaves the queue
 * so that received == processed + dropped + size + producers waiting still
 * holds and no item stored or handed to a thread is lost. NOTIFY waiters are
 * kept (they belong to an event loop, which the child may keep running); those
 * served here come back in res->woken. Precondition: at the fork no other
 * thread was inside a ring call other than prs_ring_wait() (which only sleeps
 * and reads), else the state may be torn. The Python binding calls this from
 * an os.register_at_fork() hook (its other calls run under the GIL, which
 * fork holds); C users call it themselves, e.g. from a pthread_atfork() child
 * handler. PRS_OK, PRS_EINVAL, PRS_ENOMEM (no mutex: the ring is unusable). */
int prs_ring_after_fork_child(prs_ring *r, prs_ring_result *res);

void prs_ring_stats_get(prs_ring *r, prs_ring_stats *s);
int64_t prs_ring_size(prs_ring *r);
int64_t prs_ring_capacity(prs_ring *r);
/* 1 when size >= capacity (a put would not be admitted). */
int prs_ring_is_full(prs_ring *r);
prs_ring_strategy prs_ring_strategy_of(const prs_ring *r);
int prs_ring_is_closed(prs_ring *r);
/* "block", "drop_oldest", "drop_newest", "error"; NULL for other values. */
const char *prs_ring_strategy_name(int strategy);
/* The strategy named `name` into *out: PRS_OK or PRS_EINVAL. */
int prs_ring_strategy_parse(const char *name, prs_ring_strategy *out);

/* For C users: put/get waiting until deadline_ns (absolute monotonic) when the
 * ring is full (BLOCK) / empty. put: PRS_OK with res->outcome as for
 * prs_ring_put (never WAITING; a producer that timed out gets TIMED_OUT and
 * keeps its item), PRS_ECLOSED. get: PRS_OK (*item), PRS_ETIMEDOUT, PRS_ECLOSED.
 * NOTIFY waiters served meanwhile come back in res->woken. */
int prs_ring_put_blocking(prs_ring *r, void *item, int64_t deadline_ns, prs_ring_result *res);
int prs_ring_get_blocking(prs_ring *r, int64_t deadline_ns, void **item, prs_ring_result *res);
/* Waits until no task is unfinished: PRS_OK or PRS_ETIMEDOUT. */
int prs_ring_join_blocking(prs_ring *r, int64_t deadline_ns, prs_ring_result *res);

#ifdef __cplusplus
}
#endif
#endif
