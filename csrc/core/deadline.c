/*
 * deadline.c - each thread's stack of deadline frames (the arithmetic of
 * deadlines is inline, in prs_internal.h).
 *
 * A frame is the deadline of a call running on this thread, keyed by what the
 * call runs in (the Python binding keys it by the context: a greenlet switch
 * inside a blocking call changes the context, so one greenlet never sees
 * another's frame). A caller pushes a frame when the call begins and pops it
 * when it ends; frames popped out of order (greenlets interleaving on one
 * thread) are marked dead, and the stack shrinks past them once the frames
 * above are popped. A reader asks for the soonest deadline among the frames
 * of a key: a wait caps its timeout with it.
 *
 * The stack is made at a thread's first push and freed when the thread ends
 * (a pthread key's destructor). Its pointer is thread-local in the
 * initial-exec model where the C library allows it: one load, no
 * __tls_get_addr call, on every wait and every call with a deadline.
 */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif
#include "prs_internal.h"

#include <pthread.h>
#include <stdlib.h>

typedef struct {
    void *key; /* NULL: a dead frame (popped out of order) */
    int64_t deadline;
} frame;

typedef struct {
    int n;
    frame f[PRS_DEADLINE_FRAMES];
} frames;

static _Thread_local frames *mine PRS_TLS_FAST;
static pthread_key_t key_of_thread;
static pthread_once_t once = PTHREAD_ONCE_INIT;
static int key_ok;

static void key_init(void) { key_ok = pthread_key_create(&key_of_thread, free) == 0; }

static frames *make(void) {
    pthread_once(&once, key_init);
    if (!key_ok) return NULL;
    frames *d = calloc(1, sizeof *d);
    if (d && pthread_setspecific(key_of_thread, d) != 0) {
        free(d);
        return NULL;
    }
    return mine = d;
}

int prs_deadline_push(void *key, int64_t deadline) {
    frames *d = mine ? mine : make();
    if (!d || d->n == PRS_DEADLINE_FRAMES) return -1;
    int i = d->n++;
    d->f[i].key = key;
    d->f[i].deadline = deadline;
    return i;
}

void *prs_deadline_pop(int i) {
    frames *d = mine;
    void *key = d->f[i].key;
    d->f[i].key = NULL;
    if (i == d->n - 1) /* the usual case; else a frame below another's */
        while (d->n && !d->f[d->n - 1].key) d->n--;
    return key;
}

int prs_deadline_any(void) { return mine && mine->n; }

int64_t prs_deadline_of(const void *key, int64_t deadline) {
    const frames *d = mine;
    for (int i = d ? d->n - 1 : -1; i >= 0; i--)
        if (d->f[i].key == key && d->f[i].deadline < deadline) deadline = d->f[i].deadline;
    return deadline;
}
