/* test_shm_bulkhead.c - a bulkhead placed in a shared-memory region: exactly
 * max_concurrent holders across processes, a dead holder's permit coming
 * back, a waiter of one process woken by a release in another, waits and
 * finish, the mismatch, and SIGKILL at random instants. */
#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "prs_test.h"
#include "pyresilience.h"
#include "shm_internal.h"
#include "test_shm_util.h"

static prs_shm *open_region(const char *name) {
    prs_shm_config c;
    prs_shm_config_init(&c);
    c.directory = prs_test_tmpdir();
    prs_shm *r = NULL;
    return prs_shm_open(name, &c, &r, NULL) ? NULL : r;
}

static prs_bulkhead *placed(prs_shm *r, const char *name, int64_t max) {
    prs_bulkhead_config c;
    prs_bulkhead_config_init(&c);
    c.max_concurrent = max;
    prs_shm_place pl = {r, name};
    prs_bulkhead *b = NULL;
    int rc = prs_bulkhead_new_placed(&c, &pl, &b, NULL);
    if (rc) PRS__FAIL("prs_bulkhead_new_placed: %s", prs_strerror(rc));
    return b;
}

static int try_take(prs_bulkhead *b) {
    int got = 0;
    ASSERT_OK(prs_bulkhead_try_acquire(b, 0, 1, &got));
    return got;
}

static int64_t active(prs_bulkhead *b) {
    prs_bulkhead_stats s;
    prs_bulkhead_stats_get(b, &s);
    return s.active;
}

TEST(shm_bulkhead_basics) {
    prs_shm *r = open_region("h1");
    ASSERT(r);
    prs_bulkhead *a = placed(r, "db", 2), *b = placed(r, "db", 2);
    ASSERT(prs_bulkhead_shared(a));
    ASSERT(try_take(a));
    ASSERT(try_take(b));
    ASSERT(!try_take(a));
    ASSERT_EQ(active(b), 2);
    /* a waiter: queued, times out, counted rejected */
    prs_bulkhead_waiter w;
    ASSERT_OK(prs_bulkhead_waiter_init(&w, 1, NULL));
    int outcome;
    ASSERT_OK(prs_bulkhead_acquire(a, 0, &w, &outcome));
    ASSERT_EQ(outcome, PRS_BULKHEAD_WAITING);
    prs_bulkhead_stats st;
    prs_bulkhead_stats_get(a, &st);
    ASSERT_EQ(st.waiting, 1);
    ASSERT_EQ(prs_bulkhead_wait(a, &w, prs_monotonic_ns()), PRS_ETIMEDOUT);
    /* a release (through the other handle) serves it at its next look */
    ASSERT_OK(prs_bulkhead_release(b, 0, NULL));
    ASSERT_OK(prs_bulkhead_wait(a, &w, prs_monotonic_ns()));
    ASSERT_EQ(prs_bulkhead_waiter_state(a, &w), PRS_WAITER_GRANTED);
    ASSERT_OK(prs_bulkhead_finish(a, &w, PRS_BULKHEAD_FINISH_CANCEL, 0, &outcome, NULL));
    ASSERT_EQ(outcome, PRS_BULKHEAD_RETURNED); /* given back */
    ASSERT_EQ(active(a), 1);
    ASSERT_OK(prs_bulkhead_acquire(a, 0, &w, &outcome));
    ASSERT_EQ(outcome, PRS_BULKHEAD_ACQUIRED);
    ASSERT_OK(prs_bulkhead_acquire(a, 0, &w, &outcome));
    ASSERT_EQ(outcome, PRS_BULKHEAD_WAITING);
    ASSERT_OK(prs_bulkhead_finish(a, &w, PRS_BULKHEAD_FINISH_ACCEPT, 0, &outcome, NULL));
    ASSERT_EQ(outcome, PRS_BULKHEAD_REJECTED);
    prs_bulkhead_waiter_destroy(&w);
    ASSERT_EQ(prs_bulkhead_acquire_blocking(b, prs_monotonic_ns() + PRS_NS_PER_MS), PRS_ETIMEDOUT);
    ASSERT_OK(prs_bulkhead_release(a, 0, NULL));
    ASSERT_OK(prs_bulkhead_release(a, 0, NULL));
    ASSERT_EQ(prs_bulkhead_release(a, 0, NULL), PRS_ESTATE);
    prs_bulkhead_stats_get(b, &st);
    ASSERT_EQ(st.active, 0);
    ASSERT_EQ(st.available, 2);
    ASSERT_EQ(st.acquired_total, 3); /* the one given back is not counted */
    ASSERT_EQ(st.released_total, 3);
    ASSERT_EQ(st.rejected_total, 3);
    ASSERT_EQ(st.cancelled_total, 1);
    ASSERT_EQ(prs_bulkhead_estimate_wait_ns(a, 0), 0);
    prs_bulkhead_free(a);
    prs_bulkhead_free(b);
    /* mismatch and bounds */
    prs_bulkhead_config c;
    prs_bulkhead_config_init(&c);
    c.max_concurrent = 3;
    prs_shm_place pl = {r, "db"};
    prs_config_error why;
    ASSERT_EQ(prs_bulkhead_new_placed(&c, &pl, &a, &why), PRS_ESTATE);
    char msg[400];
    ASSERT_OK(prs_bulkhead_placed_mismatch(&c, &pl, msg, sizeof msg));
    ASSERT_STREQ(msg, "exists as bulkhead(max_concurrent=2), asked for bulkhead(max_concurrent=3)");
    c.max_concurrent = PRS_SHM_BULKHEAD_MAX + 1;
    ASSERT_EQ(prs_bulkhead_new_placed(&c, &pl, &a, &why), PRS_ERANGE);
    ASSERT_STREQ(why.field, "max_concurrent");
    prs_shm_close(r);
}

/* P processes grab what they can and hold it: exactly max_concurrent among
 * them; killed, their permits come back (reap), and never while they live. */
TEST(shm_bulkhead_exact_and_dead_holders) {
    enum { P = 6, MAXC = 5 };
    prs_shm *r = open_region("h2");
    ASSERT(r);
    prs_bulkhead *b = placed(r, "db", MAXC);
    for (int round = 0; round < 4; round++) {
        int fds[2];
        ASSERT_EQ(pipe(fds), 0);
        pid_t pids[P];
        for (int k = 0; k < P; k++) {
            pids[k] = fork();
            if (pids[k] == 0) {
                prctl(PR_SET_PDEATHSIG, SIGKILL); /* never outlives a failed test */
                int got = 0;
                for (int i = 0; i < 20; i++) {
                    int g = 0;
                    prs_bulkhead_try_acquire(b, 0, 0, &g);
                    got += g;
                }
                if (write(fds[1], &got, sizeof got) != sizeof got) _exit(3);
                for (;;) pause();
            }
        }
        ASSERT_EQ(children_sum(fds, P, 0), MAXC);
        ASSERT_EQ(active(b), MAXC);
        ASSERT_EQ(prs_bulkhead_reap(b), 0);
        ASSERT(!try_take(b));
        for (int k = 0; k < P; k++) {
            kill(pids[k], SIGKILL);
            waitpid(pids[k], NULL, 0);
        }
        if (round % 2) {
            ASSERT_EQ(prs_bulkhead_reap(b), MAXC);
            ASSERT_EQ(active(b), 0);
        } else {
            /* a waiter finds them within its slices (the reap is due at once
             * or within its interval) */
            ASSERT_OK(prs_bulkhead_acquire_blocking(b, prs_monotonic_ns() + 5 * PRS_NS_PER_SEC));
            ASSERT_OK(prs_bulkhead_release(b, 0, NULL));
            prs_bulkhead_reap(b);
        }
    }
    prs_bulkhead_free(b);
    prs_shm_close(r);
}

/* A waiter blocked in another process is woken by this process's release
 * (the futex word is shared), well before its deadline. */
TEST(shm_bulkhead_cross_process_wakeup) {
    prs_shm *r = open_region("h3");
    ASSERT(r);
    prs_bulkhead *b = placed(r, "db", 1);
    ASSERT(try_take(b));
    int fds[2];
    ASSERT_EQ(pipe(fds), 0);
    pid_t pid = fork();
    if (pid == 0) {
        char go = 1;
        if (write(fds[1], &go, 1) != 1) _exit(3);
        int rc = prs_bulkhead_acquire_blocking(b, prs_monotonic_ns() + 10 * PRS_NS_PER_SEC);
        int64_t at = prs_monotonic_ns();
        if (write(fds[1], &at, sizeof at) != sizeof at) _exit(3);
        _exit(rc == PRS_OK ? 0 : 1);
    }
    char go;
    ASSERT_EQ(read(fds[0], &go, 1), 1);
    usleep(100000); /* let it sleep */
    int64_t released = prs_monotonic_ns();
    ASSERT_OK(prs_bulkhead_release(b, 0, NULL));
    int64_t at = 0;
    ASSERT_EQ(read(fds[0], &at, sizeof at), (ssize_t)sizeof at);
    int status;
    ASSERT_EQ(waitpid(pid, &status, 0), pid);
    ASSERT(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    fprintf(stderr, "  cross-process wake-up: %.3f ms\n", (double)(at - released) / 1e6);
    /* the child died holding it: reaped */
    ASSERT_EQ(prs_bulkhead_reap(b), 1);
    close(fds[0]);
    close(fds[1]);
    prs_bulkhead_free(b);
    prs_shm_close(r);
}

/* Children take and give back permits (try, waits, cancels) and are SIGKILLed
 * at random instants: afterwards the permits held are exactly those of live
 * holders (none), and the bulkhead admits exactly max_concurrent again. */
TEST(shm_bulkhead_kill_loop) {
    enum { MAXC = 3, ROUNDS = 600 };
    prs_shm *r = open_region("h4");
    ASSERT(r);
    prs_bulkhead *b = placed(r, "db", MAXC);
    unsigned seed = 777;
    for (int k = 0; k < ROUNDS; k++) {
        pid_t pids[2];
        for (int c = 0; c < 2; c++) {
            pids[c] = fork();
            if (pids[c] == 0) {
                unsigned x = (unsigned)getpid();
                prs_bulkhead_waiter w;
                prs_bulkhead_waiter_init(&w, 1, NULL);
                for (;;) {
                    x = x * 1103515245u + 12345u;
                    int got = 0, outcome;
                    if (x & 256) {
                        prs_bulkhead_try_acquire(b, 0, 1, &got);
                    } else {
                        prs_bulkhead_acquire(b, 0, &w, &outcome);
                        if (outcome == PRS_BULKHEAD_WAITING) {
                            prs_bulkhead_wait(b, &w, prs_monotonic_ns() + PRS_NS_PER_MS);
                            prs_bulkhead_finish(b, &w, (x & 512) ? PRS_BULKHEAD_FINISH_CANCEL
                                                                 : PRS_BULKHEAD_FINISH_ACCEPT,
                                                0, &outcome, NULL);
                        }
                        got = outcome == PRS_BULKHEAD_ACQUIRED;
                    }
                    if (got) prs_bulkhead_release(b, 0, NULL);
                }
            }
        }
        seed = seed * 1103515245u + 12345u;
        usleep((useconds_t)(100 + (seed >> 8) % 1200));
        kill(pids[0], SIGKILL);
        kill(pids[1], SIGKILL);
        waitpid(pids[0], NULL, 0);
        waitpid(pids[1], NULL, 0);
        prs_bulkhead_reap(b);
        ASSERT_EQ(active(b), 0); /* permits = max - live holders */
    }
    for (int i = 0; i < MAXC; i++) ASSERT(try_take(b));
    ASSERT(!try_take(b));
    for (int i = 0; i < MAXC; i++) ASSERT_OK(prs_bulkhead_release(b, 0, NULL));
    prs_bulkhead_free(b);
    prs_shm_close(r);
}

/* The owner token: pid and start time (field 22 of /proc/<pid>/stat), which
 * stay the same however the process changes (its memory size, field 23, was
 * once read by mistake: a holder that grew looked dead). */
TEST(shm_owner_token_is_pid_and_start_time) {
    uint64_t me = prs__self_token();
    ASSERT_EQ((int64_t)(me >> 32), (int64_t)getpid());
    FILE *f = fopen("/proc/self/stat", "r");
    if (f) {
        char buf[1024];
        size_t n = fread(buf, 1, sizeof buf - 1, f);
        fclose(f);
        buf[n] = 0;
        char *p = strrchr(buf, ')') + 2;
        unsigned long long start = 0;
        int field = 3;
        for (char *tok = strtok(p, " "); tok; tok = strtok(NULL, " "), field++)
            if (field == 22) start = strtoull(tok, NULL, 10);
        ASSERT_EQ((int64_t)(me & 0xffffffffu), (int64_t)(start & 0xffffffffu));
    }
    ASSERT_EQ(prs__token_dead(me), 0);
    int fds[2];
    ASSERT_EQ(pipe(fds), 0);
    pid_t pid = fork();
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        uint64_t t = prs__self_token();
        void *big = mmap(NULL, 256 << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        (void)big; /* the process grows after its token was taken */
        if (write(fds[1], &t, sizeof t) != sizeof t) _exit(3);
        for (;;) pause();
    }
    uint64_t t = 0;
    ASSERT_EQ(read(fds[0], &t, sizeof t), (ssize_t)sizeof t);
    ASSERT(t != me);
    ASSERT_EQ(prs__token_dead(t), 0);
    ASSERT_EQ(prs__token_dead(t ^ 1), 1); /* the same pid started at another time */
    kill(pid, SIGKILL);
    ASSERT_EQ(waitpid(pid, NULL, 0), pid);
    ASSERT_EQ(prs__token_dead(t), 1);
    close(fds[0]);
    close(fds[1]);
}
