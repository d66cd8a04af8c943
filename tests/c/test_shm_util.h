/* test_shm_util.h - what the shared-memory tests share: a region in the
 * test's directory and a config of each algorithm admitting exactly `cap`
 * at a frozen instant. */
#ifndef TEST_SHM_UTIL_H
#define TEST_SHM_UTIL_H

#include <sys/wait.h>
#include <unistd.h>

#include "prs_test.h"
#include "pyresilience.h"

typedef union any_config {
    prs_token_bucket_config tb;
    prs_gcra_config gcra;
    prs_leaky_bucket_config lb;
    prs_fixed_window_config fw;
    prs_sliding_log_config sl;
    prs_sliding_counter_config sc;
} any_config;

/* A config of algorithm i (its row in PRS_ALGORITHMS) admitting exactly `cap`
 * at a frozen instant (windows of 1000 s, rates of 1 per second). */
static inline const prs_algo *config_of(int i, int64_t cap, any_config *c) {
    switch (i) {
    case 0: prs_token_bucket_config_init(&c->tb); c->tb.capacity = (double)cap; c->tb.refill_rate = 1; return &prs_algo_token_bucket;
    case 1: prs_gcra_config_init(&c->gcra); c->gcra.rate = 1; c->gcra.burst = cap; return &prs_algo_gcra;
    case 2: prs_leaky_bucket_config_init(&c->lb); c->lb.capacity = (double)cap; c->lb.leak_rate = 1; return &prs_algo_leaky_bucket;
    case 3: prs_fixed_window_config_init(&c->fw); c->fw.limit = cap; c->fw.window_ns = 1000 * PRS_NS_PER_SEC; return &prs_algo_fixed_window;
    case 4: prs_sliding_log_config_init(&c->sl); c->sl.limit = cap; c->sl.window_ns = 1000 * PRS_NS_PER_SEC; return &prs_algo_sliding_log;
    default: prs_sliding_counter_config_init(&c->sc); c->sc.limit = cap; c->sc.window_ns = 1000 * PRS_NS_PER_SEC; return &prs_algo_sliding_counter;
    }
}

/* The region `name` in the test's directory (size 0: the default), or NULL. */
static inline prs_shm *test_region(const char *name, size_t size) {
    prs_shm_config c;
    prs_shm_config_init(&c);
    c.directory = prs_test_tmpdir();
    if (size) c.size = size;
    prs_shm *r = NULL;
    return prs_shm_open(name, &c, &r, NULL) == PRS_OK ? r : NULL;
}

/* The sum of one int written by each of `procs` children on fds[1], read
 * from fds[0]; with `reap`, each child is also waited for and must have
 * exited 0 (without it they keep running: they hold something). Closes both
 * ends of the pipe. */
static inline int children_sum(int fds[2], int procs, int reap) {
    int total = 0;
    for (int k = 0; k < procs; k++) {
        int got = 0, status;
        ASSERT_EQ(read(fds[0], &got, sizeof got), (ssize_t)sizeof got);
        total += got;
        if (reap) {
            ASSERT(wait(&status) > 0);
            ASSERT(WIFEXITED(status) && WEXITSTATUS(status) == 0);
        }
    }
    close(fds[0]);
    close(fds[1]);
    return total;
}

#endif /* TEST_SHM_UTIL_H */
