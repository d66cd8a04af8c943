/* test_waiters.h - what the bulkhead and ring tests share about their
 * intrusive BLOCKING waiters: a thread that waits on one in 1 ms slices (it
 * keeps re-taking the object's lock, as the Python binding does), a thread
 * that takes the lock nonstop, and forking a child while they run. */
#ifndef PRS_TEST_WAITERS_H
#define PRS_TEST_WAITERS_H

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <time.h>
#include <unistd.h>

#include "prs_test.h"

typedef struct {
    int (*wait)(void *obj, void *waiter, int64_t deadline_ns); /* prs_X_wait */
    void *obj, *waiter;
    atomic_int stop;   /* the test lets the thread settle */
    atomic_int served; /* its wait returned served */
} waiter_thread;

/* Waits in 1 ms slices, then holds what it was handed until told to stop. */
static void *waiter_thread_run(void *arg) {
    waiter_thread *c = arg;
    while (c->wait(c->obj, c->waiter, prs_monotonic_ns() + PRS_NS_PER_MS) == PRS_ETIMEDOUT &&
           !atomic_load(&c->stop)) {}
    atomic_store(&c->served, 1);
    while (!atomic_load(&c->stop)) {
        struct timespec ts = {0, 200000};
        nanosleep(&ts, NULL);
    }
    return NULL;
}

static void waiter_thread_start(waiter_thread *c, pthread_t *t, int (*wait)(void *, void *, int64_t),
                                void *obj, void *waiter) {
    c->wait = wait;
    c->obj = obj;
    c->waiter = waiter;
    atomic_init(&c->stop, 0);
    atomic_init(&c->served, 0);
    pthread_create(t, NULL, waiter_thread_run, c);
}

static void waiter_thread_until_served(waiter_thread *c) {
    while (!atomic_load(&c->served)) sched_yield();
}

static void waiter_thread_stop(waiter_thread *c, pthread_t t) {
    atomic_store(&c->stop, 1);
    pthread_join(t, NULL);
}

typedef struct {
    void (*touch)(void *obj); /* takes and drops the object's lock */
    void *obj;
    atomic_int stop;
    pthread_t t;
} hammer_thread;

static void *hammer_thread_run(void *arg) {
    hammer_thread *h = arg;
    while (!atomic_load(&h->stop)) h->touch(h->obj);
    return NULL;
}

/* Forks `rounds` children while a hammer takes obj's lock nonstop (a child
 * may inherit it held); each child runs check(obj) and exits 0. */
static void fork_rounds(void *obj, void (*touch)(void *), void (*check)(void *), int rounds) {
    hammer_thread h = {.touch = touch, .obj = obj};
    atomic_init(&h.stop, 0);
    pthread_create(&h.t, NULL, hammer_thread_run, &h);
    for (int round = 0; round < rounds; round++) {
        fflush(NULL);
        pid_t pid = fork();
        ASSERT(pid >= 0);
        if (pid == 0) {
            check(obj);
            _exit(0);
        }
        ASSERT_EQ(prs_test_wait_child(pid), 0);
    }
    atomic_store(&h.stop, 1);
    pthread_join(h.t, NULL);
}

#endif
