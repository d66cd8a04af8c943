/*
 * runner.c - main() of the pure-C suite. Runs every registered test (or the
 * ones named on the command line) each in a forked child with a timeout, and
 * ends with "N passed, N failed".
 *
 * Each test gets its own temporary directory (prs_test_tmpdir()), made before
 * the fork and removed by the runner once the child is gone: a child leaves
 * by _exit(), a timeout or a crash, so nothing the child registers to run at
 * exit can be relied on to clean up. A directory that cannot be removed
 * fails the test.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "prs_test.h"

#include <ftw.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_TESTS 2048

static struct { const char *name; prs_test_fn fn; const char *file; } tests[MAX_TESTS];
static int ntests;

void prs_test_register(const char *name, prs_test_fn fn, const char *file) {
    if (ntests == MAX_TESTS) { fprintf(stderr, "too many tests\n"); exit(2); }
    tests[ntests].name = name; tests[ntests].fn = fn; tests[ntests].file = file;
    ntests++;
}


static void *ta_malloc(void *ctx, size_t n) {
    prs_test_alloc *ta = ctx;
    ta->calls++;
    if (ta->fail_after >= 0 && ta->calls > ta->fail_after) return NULL;
    void *p = malloc(n ? n : 1);
    if (p) ta->live++;
    return p;
}
static void *ta_calloc(void *ctx, size_t m, size_t n) {
    prs_test_alloc *ta = ctx;
    ta->calls++;
    if (ta->fail_after >= 0 && ta->calls > ta->fail_after) return NULL;
    if (n && m > SIZE_MAX / n) return NULL;
    void *p = calloc(m ? m : 1, n ? n : 1);
    if (p) ta->live++;
    return p;
}
static void *ta_realloc(void *ctx, void *old, size_t n) {
    prs_test_alloc *ta = ctx;
    ta->calls++;
    if (ta->fail_after >= 0 && ta->calls > ta->fail_after) return NULL;
    void *p = realloc(old, n ? n : 1);
    if (p && !old) ta->live++;
    return p;
}
static void ta_free(void *ctx, void *p) {
    prs_test_alloc *ta = ctx;
    if (p) { ta->live--; free(p); }
}

void prs_test_alloc_init(prs_test_alloc *ta, long fail_after) {
    ta->base.malloc_fn = ta_malloc;
    ta->base.calloc_fn = ta_calloc;
    ta->base.realloc_fn = ta_realloc;
    ta->base.free_fn = ta_free;
    ta->base.ctx = ta;
    ta->fail_after = fail_after;
    ta->calls = 0;
    ta->live = 0;
}

void prs_test_alloc_failures(prs_test_make_fn make, prs_test_destroy_fn destroy) {
    for (long k = 0; k < 100000; k++) {
        prs_test_alloc ta;
        prs_test_alloc_init(&ta, k);
        void *obj = NULL;
        int rc = make(&ta.base, &obj);
        if (rc == PRS_OK) {
            ASSERT(obj != NULL);
            ASSERT_GE_I64(k, 0);
            destroy(obj);
            ASSERT_EQ_I64(ta.live, 0);
            if (k == 0 && ta.calls > 0) PRS__FAIL("constructor succeeded with no memory");
            return;
        }
        ASSERT_STATUS(rc, PRS_ENOMEM);
        ASSERT(obj == NULL);
        ASSERT_EQ_I64(ta.live, 0);
    }
    PRS__FAIL("constructor never succeeded");
}

int prs_test_wait_child(pid_t pid) {
    int status = 0;
    for (int i = 0; i < 2000; i++) {
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid) return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        struct timespec ts = {0, 10000000};
        nanosleep(&ts, NULL);
    }
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
    return -1;
}

static char tmpdir[512];

const char *prs_test_tmpdir(void) { return tmpdir; }

static int make_tmpdir(void) {
    const char *base = getenv("TMPDIR");
    if (!base || !*base) base = "/tmp";
    snprintf(tmpdir, sizeof tmpdir, "%s/prs-test-XXXXXX", base);
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        tmpdir[0] = '\0';
        return -1;
    }
    return 0;
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st; (void)flag; (void)ftw;
    remove(path);
    return 0; /* keep going: whatever stays is reported by the caller */
}

/* Removes the test's directory and everything in it; 0, or -1 if it stays. */
static int remove_tmpdir(void) {
    if (!tmpdir[0]) return 0;
    nftw(tmpdir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    struct stat st;
    int left = stat(tmpdir, &st) == 0;
    if (left) fprintf(stderr, "  could not remove %s\n", tmpdir);
    tmpdir[0] = '\0';
    return left ? -1 : 0;
}

static int matches(const char *pattern, const char *name) {
    size_t n = strlen(pattern);
    if (n && pattern[n - 1] == '*') return strncmp(pattern, name, n - 1) == 0;
    return strcmp(pattern, name) == 0;
}

static int run_one(int i, int timeout_s) {
    if (make_tmpdir() < 0) {
        printf("FAILED %s (no temporary directory)\n", tests[i].name);
        return 0;
    }
    fflush(stdout); fflush(stderr);
    pid_t pid = fork();
    if (pid < 0) { perror("fork"); remove_tmpdir(); return 0; }
    if (pid == 0) {
        alarm((unsigned)timeout_s);
        tests[i].fn();
        fflush(stdout); fflush(stderr);
        _exit(0);
    }
    int status = 0;
    while (waitpid(pid, &status, 0) < 0) {}
    if (remove_tmpdir() < 0) {
        printf("FAILED %s (left files it could not remove)\n", tests[i].name);
        return 0;
    }
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
        printf("ok     %s\n", tests[i].name);
        return 1;
    }
    if (WIFSIGNALED(status))
        printf("FAILED %s (%s%s)\n", tests[i].name, strsignal(WTERMSIG(status)),
               WTERMSIG(status) == SIGALRM ? ": timed out" : "");
    else
        printf("FAILED %s (%s)\n", tests[i].name, tests[i].file);
    return 0;
}

int main(int argc, char **argv) {
    int timeout_s = 120;
    const char *t = getenv("PRS_TEST_TIMEOUT");
    if (t && atoi(t) > 0) timeout_s = atoi(t);
    setvbuf(stdout, NULL, _IOLBF, 0);
    int passed = 0, failed = 0;
    for (int i = 0; i < ntests; i++) {
        int selected = argc < 2;
        for (int a = 1; a < argc && !selected; a++) selected = matches(argv[a], tests[i].name);
        if (!selected) continue;
        if (run_one(i, timeout_s)) passed++; else failed++;
    }
    if (passed + failed == 0) { fprintf(stderr, "no test matched\n"); return 2; }
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
