/*
 * prs_test.h - the pure-C suite's harness (after libuv's test/task.h).
 *
 *   TEST(gcra_refill) { ASSERT_EQ_I64(a, b); ... }
 *
 * Tests register themselves (a constructor per TEST), so each module's file is
 * independent. ./run_tests runs all, `./run_tests NAME...` runs the named ones
 * (prefix match with a trailing '*'). Each test runs in a forked child with a
 * timeout; the runner ends with "N passed, N failed".
 */
#ifndef PRS_TEST_H
#define PRS_TEST_H

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "prs_common.h"

typedef void (*prs_test_fn)(void);
void prs_test_register(const char *name, prs_test_fn fn, const char *file);

#define TEST(name)                                                           \
    static void test_##name(void);                                           \
    __attribute__((constructor)) static void register_##name(void) {         \
        prs_test_register(#name, test_##name, __FILE__);                     \
    }                                                                        \
    static void test_##name(void)

#define PRS__FAIL(...)                                                       \
    do {                                                                     \
        fprintf(stderr, "  %s:%d: ", __FILE__, __LINE__);                    \
        fprintf(stderr, __VA_ARGS__);                                        \
        fprintf(stderr, "\n");                                               \
        exit(1);                                                             \
    } while (0)

#define ASSERT(cond)                                                         \
    do { if (!(cond)) PRS__FAIL("assertion failed: %s", #cond); } while (0)

#define PRS__ASSERT_CMP_I64(a, op, b)                                        \
    do {                                                                     \
        int64_t prs__a = (int64_t)(a), prs__b = (int64_t)(b);                \
        if (!(prs__a op prs__b))                                             \
            PRS__FAIL("%s %s %s: %" PRId64 " vs %" PRId64, #a, #op, #b,      \
                      prs__a, prs__b);                                       \
    } while (0)

#define ASSERT_EQ_I64(a, b) PRS__ASSERT_CMP_I64(a, ==, b)
#define ASSERT_NE_I64(a, b) PRS__ASSERT_CMP_I64(a, !=, b)
#define ASSERT_LT_I64(a, b) PRS__ASSERT_CMP_I64(a, <, b)
#define ASSERT_LE_I64(a, b) PRS__ASSERT_CMP_I64(a, <=, b)
#define ASSERT_GT_I64(a, b) PRS__ASSERT_CMP_I64(a, >, b)
#define ASSERT_GE_I64(a, b) PRS__ASSERT_CMP_I64(a, >=, b)
#define ASSERT_EQ(a, b) ASSERT_EQ_I64(a, b)

#define ASSERT_OK(expr)                                                      \
    do {                                                                     \
        int prs__rc = (expr);                                                \
        if (prs__rc != PRS_OK)                                               \
            PRS__FAIL("%s returned %s (%s)", #expr, prs_err_name(prs__rc),   \
                      prs_strerror(prs__rc));                                \
    } while (0)

#define ASSERT_STATUS(expr, want)                                            \
    do {                                                                     \
        int prs__rc = (expr);                                                \
        if (prs__rc != (want))                                               \
            PRS__FAIL("%s returned %s, expected %s", #expr,                  \
                      prs_err_name(prs__rc), prs_err_name(want));            \
    } while (0)

#define ASSERT_NEAR(a, b, eps)                                               \
    do {                                                                     \
        double prs__a = (double)(a), prs__b = (double)(b);                   \
        if (!(fabs(prs__a - prs__b) <= (eps)))                               \
            PRS__FAIL("%s ~= %s: %.17g vs %.17g (eps %g)", #a, #b, prs__a,   \
                      prs__b, (double)(eps));                                \
    } while (0)

#define ASSERT_STREQ(a, b)                                                   \
    do {                                                                     \
        const char *prs__a = (a), *prs__b = (b);                             \
        if (strcmp(prs__a, prs__b) != 0)                                     \
            PRS__FAIL("%s == %s: \"%s\" vs \"%s\"", #a, #b, prs__a, prs__b); \
    } while (0)

/* ---- the failing allocator (allocation-failure tests) ----------------- */

/* Succeeds `fail_after` times, then every allocation fails. Counts live blocks
 * so a test can check that a failed constructor freed what it took. */
typedef struct prs_test_alloc {
    prs_allocator base;
    long fail_after; /* < 0: never fail */
    long calls;
    long live;
} prs_test_alloc;

void prs_test_alloc_init(prs_test_alloc *ta, long fail_after);

/* Runs `make` with an allocator failing after 0, 1, 2, ... allocations until it
 * succeeds; asserts that every failure returned PRS_ENOMEM with no block left
 * live, and that the final success frees to zero live blocks via `destroy`.
 * `make` returns a status and stores its object in *obj. */
typedef int (*prs_test_make_fn)(const prs_allocator *a, void **obj);
typedef void (*prs_test_destroy_fn)(void *obj);
void prs_test_alloc_failures(prs_test_make_fn make, prs_test_destroy_fn destroy);

/* ---- temporary files ---------------------------------------------------- */

/* A directory private to the running test ($TMPDIR/prs-test-XXXXXX, /tmp when
 * TMPDIR is unset), made by the runner before the test starts and removed with
 * everything in it after the test's process ends, however it ends (passed,
 * failed, timed out, crashed, or left by _exit()). Put every temporary file
 * or directory a test makes under it. */
const char *prs_test_tmpdir(void);

/* ---- child processes (fork tests) ------------------------------------- */

#include <sys/types.h>

/* Waits up to 20 s for child `pid` (then SIGKILLs it, so a hung child fails
 * the test instead of hanging the suite). Returns its exit status,
 * 128 + signal when it was killed by one, or -1 when it timed out. */
int prs_test_wait_child(pid_t pid);

#endif /* PRS_TEST_H */
