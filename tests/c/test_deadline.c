/*
 * test_deadline.c - deadlines of calls: the arithmetic (within, cap) and a
 * thread's deadline frames (push, pop in and out of order, per key, per
 * thread).
 */
#include "prs_test.h"
#include "prs_internal.h"

#include <pthread.h>

TEST(deadline_within_takes_the_sooner) {
    ASSERT_EQ_I64(prs_deadline_within(PRS_NEVER, 100, 50), 150);
    ASSERT_EQ_I64(prs_deadline_within(120, 100, 50), 120);
    ASSERT_EQ_I64(prs_deadline_within(120, 100, -1), 120);        /* no limit of its own */
    ASSERT_EQ_I64(prs_deadline_within(PRS_NEVER, 100, -1), PRS_NEVER);
    ASSERT_EQ_I64(prs_deadline_within(PRS_NEVER, INT64_MAX - 1, 10), INT64_MAX); /* saturates */
}

TEST(deadline_cap_is_what_is_left) {
    ASSERT_EQ_I64(prs_deadline_cap(PRS_NEVER, 100, 7), 7);
    ASSERT_EQ_I64(prs_deadline_cap(PRS_NEVER, 100, PRS_NEVER), PRS_NEVER);
    ASSERT_EQ_I64(prs_deadline_cap(150, 100, PRS_NEVER), 50);
    ASSERT_EQ_I64(prs_deadline_cap(150, 100, 20), 20);
    ASSERT_EQ_I64(prs_deadline_cap(150, 100, 80), 50);
    ASSERT_EQ_I64(prs_deadline_cap(90, 100, 80), 0);               /* passed: never negative */
    ASSERT_EQ_I64(prs_deadline_cap(INT64_MIN + 1, INT64_MAX, 5), 0);
}

TEST(deadline_frames_push_pop) {
    int a, b;
    ASSERT(!prs_deadline_any());
    ASSERT_EQ_I64(prs_deadline_of(&a, PRS_NEVER), PRS_NEVER);
    int fa = prs_deadline_push(&a, 500);
    int fb = prs_deadline_push(&b, 300);
    int fa2 = prs_deadline_push(&a, 700);
    ASSERT_EQ_I64(fa, 0);
    ASSERT(prs_deadline_any());
    ASSERT_EQ_I64(prs_deadline_of(&a, PRS_NEVER), 500); /* the soonest of a's frames */
    ASSERT_EQ_I64(prs_deadline_of(&a, 400), 400);
    ASSERT_EQ_I64(prs_deadline_of(&b, PRS_NEVER), 300);
    ASSERT(prs_deadline_pop(fa2) == &a);
    ASSERT(prs_deadline_pop(fa) == &a); /* out of order: dead, the stack keeps b's */
    ASSERT_EQ_I64(prs_deadline_of(&a, PRS_NEVER), PRS_NEVER);
    ASSERT_EQ_I64(prs_deadline_of(&b, PRS_NEVER), 300);
    ASSERT(prs_deadline_pop(fb) == &b); /* the top: shrinks past the dead frame */
    ASSERT(!prs_deadline_any());
    ASSERT_EQ_I64(prs_deadline_push(&b, 1), 0);
    prs_deadline_pop(0);
}

TEST(deadline_frames_full) {
    int k;
    for (int i = 0; i < PRS_DEADLINE_FRAMES; i++) ASSERT_EQ_I64(prs_deadline_push(&k, 100 + i), i);
    ASSERT_EQ_I64(prs_deadline_push(&k, 1), -1);
    ASSERT_EQ_I64(prs_deadline_of(&k, PRS_NEVER), 100);
    for (int i = PRS_DEADLINE_FRAMES - 1; i >= 0; i--) prs_deadline_pop(i);
    ASSERT(!prs_deadline_any());
}

static void *other_thread(void *key) {
    /* the frames are this thread's own: another thread's are not seen */
    int64_t seen = prs_deadline_of(key, PRS_NEVER) == PRS_NEVER && !prs_deadline_any();
    int i = prs_deadline_push(key, 5);
    seen = seen && i == 0 && prs_deadline_of(key, PRS_NEVER) == 5;
    prs_deadline_pop(i); /* the stack is freed when the thread ends */
    return seen ? key : NULL;
}

TEST(deadline_frames_per_thread) {
    int k;
    int f = prs_deadline_push(&k, 42);
    pthread_t th;
    void *out = NULL;
    ASSERT_EQ(pthread_create(&th, NULL, other_thread, &k), 0);
    ASSERT_EQ(pthread_join(th, &out), 0);
    ASSERT(out == &k);
    ASSERT_EQ_I64(prs_deadline_of(&k, PRS_NEVER), 42);
    prs_deadline_pop(f);
}
