/* test_shm.c - the shared-memory region and limiters placed in it: names,
 * creation races, hostile regions, entries, a full region, exact admission
 * across processes, crash takeover and allocation failure. */
#include <errno.h>
#include <pthread.h>
#include <fcntl.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "prs_test.h"
#include "pyresilience.h"
#include "test_shm_util.h"

static prs_shm *open_dir(const char *name, size_t size, int *err) {
    prs_shm_config c;
    prs_shm_config_init(&c);
    c.directory = prs_test_tmpdir();
    if (size) c.size = size;
    prs_shm *r = NULL;
    int rc = prs_shm_open(name, &c, &r, err);
    return rc ? NULL : r;
}

static int open_rc(const char *name) {
    prs_shm_config c;
    prs_shm_config_init(&c);
    c.directory = prs_test_tmpdir();
    prs_shm *r = NULL;
    int e = 0, rc = prs_shm_open(name, &c, &r, &e);
    prs_shm_close(r);
    return rc;
}

static void region_path(char *out, size_t cap, const char *name) {
    snprintf(out, cap, "%s/pyresilience.%s", prs_test_tmpdir(), name);
}

TEST(shm_names) {
    ASSERT_EQ(prs_shm_name_check("api"), PRS_OK);
    ASSERT_EQ(prs_shm_name_check("a.b-c_d"), PRS_OK);
    ASSERT_EQ(prs_shm_name_check(""), PRS_EINVAL);
    ASSERT_EQ(prs_shm_name_check(NULL), PRS_EINVAL);
    ASSERT_EQ(prs_shm_name_check("a/b"), PRS_EINVAL);
    ASSERT_EQ(prs_shm_name_check(".."), PRS_EINVAL);
    ASSERT_EQ(prs_shm_name_check("x..y"), PRS_EINVAL);
    ASSERT_EQ(prs_shm_name_check("a\nb"), PRS_EINVAL);
    char longname[80];
    memset(longname, 'a', sizeof longname - 1);
    longname[sizeof longname - 1] = 0;
    ASSERT_EQ(prs_shm_name_check(longname), PRS_EINVAL);
    ASSERT_EQ(open_rc("a/b"), PRS_EINVAL);
    ASSERT_EQ(open_rc(""), PRS_EINVAL);
    prs_shm_config c;
    prs_shm_config_init(&c);
    c.directory = prs_test_tmpdir();
    prs_shm *r;
    c.size = 100;
    ASSERT_EQ(prs_shm_open("small", &c, &r, NULL), PRS_EINVAL);
    c.size = PRS_SHM_DEFAULT_SIZE;
    c.mode = 01777;
    ASSERT_EQ(prs_shm_open("mode", &c, &r, NULL), PRS_EINVAL);
}

TEST(shm_create_then_open) {
    int e = 0;
    prs_shm *a = open_dir("r1", 0, &e), *b = open_dir("r1", 64 << 10, &e);
    ASSERT(a && b);
    ASSERT_EQ(prs_shm_created(a), 1);
    ASSERT_EQ(prs_shm_created(b), 0);
    ASSERT_EQ(prs_shm_size(b), PRS_SHM_DEFAULT_SIZE); /* the existing size wins */
    struct stat st;
    ASSERT_EQ(stat(prs_shm_path(a), &st), 0);
    ASSERT_EQ(st.st_mode & 0777, 0600);
    char path[512];
    ASSERT_EQ(prs_shm_path_for("r1", prs_test_tmpdir(), path, sizeof path), PRS_OK);
    ASSERT_STREQ(path, prs_shm_path(a));
    ASSERT_EQ(prs_shm_path_for("r1", prs_test_tmpdir(), path, 8), PRS_EINVAL);
    prs_shm_close(a);
    prs_shm_close(b);
    ASSERT_EQ(prs_shm_unlink("r1", prs_test_tmpdir(), &e), PRS_OK);
    ASSERT_EQ(prs_shm_unlink("r1", prs_test_tmpdir(), &e), PRS_EBACKEND);
    ASSERT_EQ(e, ENOENT);
}

/* Processes racing to create one name end with one region: each places the
 * same entry and takes one unit from a limit of exactly the process count. */
TEST(shm_create_race) {
    enum { P = 8 };
    for (int i = 0; i < P; i++) {
        pid_t pid = fork();
        ASSERT(pid >= 0);
        if (pid == 0) {
            prs_shm *r = open_dir("race", 0, NULL);
            if (!r) _exit(2);
            prs_fixed_window_config cfg;
            prs_fixed_window_config_init(&cfg);
            cfg.limit = P;
            cfg.window_ns = INT64_MAX / 2;
            prs_shm_place pl = {r, "lim"};
            prs_limiter *lim;
            if (prs_limiter_new_placed(&prs_algo_fixed_window, &cfg, NULL, &pl, &lim, NULL))
                _exit(3);
            prs_decision d;
            prs_limiter_check(lim, 1, 1, &d);
            _exit(d.allowed ? 0 : 4);
        }
    }
    for (int i = 0; i < P; i++) {
        int status;
        ASSERT(wait(&status) > 0);
        ASSERT(WIFEXITED(status));
        ASSERT_EQ(WEXITSTATUS(status), 0);
    }
    prs_shm *r = open_dir("race", 0, NULL);
    ASSERT(r);
    ASSERT_EQ(prs_shm_entries(r), 1);
    prs_shm_close(r);
}

static void write_file(const char *name, const void *data, size_t len, mode_t mode) {
    char path[1024];
    region_path(path, sizeof path, name);
    int fd = open(path, O_CREAT | O_TRUNC | O_WRONLY, mode);
    ASSERT(fd >= 0);
    ASSERT_EQ(write(fd, data, len), (ssize_t)len);
    close(fd);
}

/* Takes a valid region's bytes, applies `edit` at offset `at`, writes it under
 * `name` and returns what opening it returns. */
static int open_edited(const char *name, size_t at, const void *edit, size_t elen, size_t keep) {
    prs_shm *ok = open_dir("valid", 16 << 10, NULL);
    ASSERT(ok);
    size_t sz = prs_shm_size(ok);
    unsigned char *copy = malloc(sz);
    int fd = open(prs_shm_path(ok), O_RDONLY);
    ASSERT_EQ(read(fd, copy, sz), (ssize_t)sz);
    close(fd);
    prs_shm_close(ok);
    if (elen) memcpy(copy + at, edit, elen);
    write_file(name, copy, keep ? keep : sz, 0600);
    free(copy);
    return open_rc(name);
}

TEST(shm_hostile_regions) {
    ASSERT_EQ(open_edited("truncated", 0, NULL, 0, 100), PRS_EPROTO);
    ASSERT_EQ(open_edited("half", 0, NULL, 0, 8 << 10), PRS_EPROTO);
    ASSERT_EQ(open_edited("magic", 0, "XXXXXXXX", 8, 0), PRS_EPROTO);
    uint32_t v2 = 2;
    ASSERT_EQ(open_edited("version", 8, &v2, 4, 0), PRS_EPROTO);
    uint64_t big = (uint64_t)1 << 39;
    ASSERT_EQ(open_edited("size", 16, &big, 8, 0), PRS_EPROTO);
    uint64_t off = 1;
    ASSERT_EQ(open_edited("dataoff", 40, &off, 8, 0), PRS_EPROTO);
    write_file("empty", "", 0, 0600);
    ASSERT_EQ(open_rc("empty"), PRS_EPROTO);
    /* a directory, a symbolic link where the region should be */
    char path[1024];
    region_path(path, sizeof path, "dir");
    ASSERT_EQ(mkdir(path, 0700), 0);
    ASSERT(open_rc("dir") != PRS_OK);
    region_path(path, sizeof path, "link");
    ASSERT_EQ(symlink("/etc/passwd", path), 0);
    ASSERT_EQ(open_rc("link"), PRS_EPROTO);
    /* another user's region (only testable as root) */
    if (geteuid() == 0) {
        prs_shm *r = open_dir("theirs", 0, NULL);
        ASSERT(r);
        ASSERT_EQ(chown(prs_shm_path(r), 65534, 65534), 0);
        prs_shm_close(r);
        int e = 0;
        prs_shm_config c;
        prs_shm_config_init(&c);
        c.directory = prs_test_tmpdir();
        ASSERT_EQ(prs_shm_open("theirs", &c, &r, &e), PRS_EBACKEND);
        ASSERT_EQ(e, EPERM);
    }
}

/* A corrupt entry (its offset outside the region) is refused, never followed. */
TEST(shm_corrupt_entry) {
    prs_shm *r = open_dir("ent", 16 << 10, NULL);
    ASSERT(r);
    void *blk;
    int created;
    ASSERT_OK(prs_shm_entry(r, "e", "kind", "cfg", 3, 100, NULL, NULL, &blk, &created, NULL, NULL));
    ASSERT_EQ(created, 1);
    ASSERT_OK(prs_shm_entry(r, "e", "kind", "cfg", 3, 100, NULL, NULL, &blk, &created, NULL, NULL));
    ASSERT_EQ(created, 0);
    char kind[PRS_SHM_KIND_MAX + 1];
    unsigned char cfg[PRS_SHM_CONFIG_MAX];
    ASSERT_EQ(prs_shm_entry(r, "e", "other", "cfg", 3, 100, NULL, NULL, &blk, NULL, kind, cfg),
              PRS_ESTATE);
    ASSERT(strcmp(kind, "kind") == 0);
    ASSERT_EQ(prs_shm_entry(r, "e", "kind", "cfX", 3, 100, NULL, NULL, &blk, NULL, NULL, NULL),
              PRS_ESTATE);
    ASSERT_EQ(prs_shm_entry(r, "e/x", "kind", "c", 1, 100, NULL, NULL, &blk, NULL, NULL, NULL),
              PRS_EINVAL);
    /* corrupt the entry's offset through a second mapping */
    int fd = open(prs_shm_path(r), O_RDWR);
    unsigned char *m = mmap(NULL, prs_shm_size(r), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    ASSERT(m != MAP_FAILED);
    uint64_t bad = (uint64_t)1 << 50;
    memcpy(m + 128 + 64 + 32 + 8, &bad, 8); /* entry 0's offset */
    ASSERT_EQ(prs_shm_entry(r, "e", "kind", "cfg", 3, 100, NULL, NULL, &blk, NULL, NULL, NULL),
              PRS_EPROTO);
    munmap(m, prs_shm_size(r));
    prs_shm_close(r);
}

TEST(shm_full) {
    prs_shm *r = open_dir("full", 16 << 10, NULL);
    ASSERT(r);
    void *blk;
    int rc = PRS_OK, made = 0;
    char name[32];
    for (int i = 0; i < 1000 && rc == PRS_OK; i++) {
        snprintf(name, sizeof name, "e%d", i);
        rc = prs_shm_entry(r, name, "k", NULL, 0, 1000, NULL, NULL, &blk, NULL, NULL, NULL);
        if (rc == PRS_OK) made++;
    }
    ASSERT_EQ(rc, PRS_EFULL);
    ASSERT_GT_I64(made, 0);
    ASSERT_EQ(prs_shm_entry(r, "big", "k", NULL, 0, 1u << 20, NULL, NULL, &blk, NULL, NULL, NULL),
              PRS_EFULL);
    /* a limiter that does not fit: EFULL, and the region still answers */
    prs_sliding_log_config sl;
    prs_sliding_log_config_init(&sl);
    sl.limit = 100000;
    prs_shm_place pl = {r, "log"};
    prs_limiter *lim;
    ASSERT_EQ(prs_limiter_new_placed(&prs_algo_sliding_log, &sl, NULL, &pl, &lim, NULL), PRS_EFULL);
    ASSERT(lim == NULL);
    prs_shm_close(r);
}

/* ---- limiters ---------------------------------------------------------------- */

#define NOW (5 * PRS_NS_PER_SEC)

/* P processes hammer one placed limiter of each algorithm at a frozen instant:
 * together they admit exactly its capacity. */
TEST(shm_limiter_exact_across_processes) {
    enum { P = 4, CAP = 500, TRIES = 400 };
    prs_shm *r = open_dir("exact", 0, NULL);
    ASSERT(r);
    for (int i = 0; i < PRS_ALGO__COUNT; i++) {
        any_config c;
        const prs_algo *al = config_of(i, CAP, &c);
        char name[16];
        snprintf(name, sizeof name, "l%d", i);
        int fds[2];
        ASSERT_EQ(pipe(fds), 0);
        for (int k = 0; k < P; k++) {
            if (fork() == 0) {
                prs_shm *rr = open_dir("exact", 0, NULL);
                prs_shm_place pl = {rr, name};
                prs_limiter *lim;
                if (!rr || prs_limiter_new_placed(al, &c, NULL, &pl, &lim, NULL)) _exit(2);
                prs_shm_close(rr);
                int got = 0;
                prs_decision d;
                for (int t = 0; t < TRIES; t++) {
                    prs_limiter_check(lim, NOW, 1, &d);
                    got += d.allowed;
                }
                prs_limiter_free(lim);
                if (write(fds[1], &got, sizeof got) != sizeof got) _exit(3);
                _exit(0);
            }
        }
        int total = children_sum(fds, P, 1);
        if (total != CAP) PRS__FAIL("%s admitted %d, capacity %d", al->name, total, CAP);
        /* this process sees the same state, and reset refills it for all */
        prs_shm_place pl = {r, name};
        prs_limiter *lim;
        ASSERT_OK(prs_limiter_new_placed(al, &c, NULL, &pl, &lim, NULL));
        prs_decision d;
        ASSERT_OK(prs_limiter_check(lim, NOW, 1, &d));
        ASSERT_EQ(d.allowed, 0);
        ASSERT_OK(prs_limiter_peek(lim, NOW, 1, &d));
        ASSERT_EQ(d.allowed, 0);
        prs_limiter_reset(lim);
        ASSERT_OK(prs_limiter_check(lim, NOW, 1, &d));
        ASSERT_EQ(d.allowed, 1);
        ASSERT_OK(prs_limiter_reconfigure(lim, &c, NOW, NULL)); /* (test_shm_group.c) */
        prs_group_member m;
        prs_group_member_limiter(&m, lim);
        prs_group *g;
        ASSERT_OK(prs_group_new(&m, 1, NULL, &g));
        prs_group_free(g);
        prs_limiter_free(lim);
    }
    prs_shm_close(r);
}

TEST(shm_limiter_mismatch) {
    prs_shm *r = open_dir("mm", 0, NULL);
    ASSERT(r);
    prs_shm_place pl = {r, "api"};
    prs_token_bucket_config tb;
    prs_token_bucket_config_init(&tb);
    tb.capacity = 10;
    tb.refill_rate = 5;
    prs_limiter *a, *b;
    ASSERT_OK(prs_limiter_new_placed(&prs_algo_token_bucket, &tb, NULL, &pl, &a, NULL));
    tb.capacity = 20;
    prs_config_error why = {NULL, NULL};
    ASSERT_EQ(prs_limiter_new_placed(&prs_algo_token_bucket, &tb, NULL, &pl, &b, &why), PRS_ESTATE);
    ASSERT(why.reason != NULL);
    char msg[400];
    ASSERT_OK(prs_limiter_placed_mismatch(&prs_algo_token_bucket, &tb, &pl, msg, sizeof msg));
    if (strcmp(msg, "exists as token_bucket(capacity=10, refill_rate=5), asked for "
                    "token_bucket(capacity=20, refill_rate=5)") != 0)
        PRS__FAIL("message: %s", msg);
    prs_gcra_config g;
    prs_gcra_config_init(&g);
    g.rate = 2;
    g.burst = 3;
    ASSERT_EQ(prs_limiter_new_placed(&prs_algo_gcra, &g, NULL, &pl, &b, NULL), PRS_ESTATE);
    ASSERT_OK(prs_limiter_placed_mismatch(&prs_algo_gcra, &g, &pl, msg, sizeof msg));
    ASSERT(strstr(msg, "asked for gcra(rate=2, burst=3)") != NULL);
    /* a bad config is refused before the region is touched */
    tb.capacity = -1;
    pl.name = "other";
    ASSERT_EQ(prs_limiter_new_placed(&prs_algo_token_bucket, &tb, NULL, &pl, &b, &why), PRS_EINVAL);
    ASSERT(strcmp(why.field, "capacity") == 0);
    pl.name = "../x";
    tb.capacity = 1;
    ASSERT_EQ(prs_limiter_new_placed(&prs_algo_token_bucket, &tb, NULL, &pl, &b, &why), PRS_EINVAL);
    ASSERT_EQ(prs_shm_entries(r), 1);
    prs_limiter_free(a);
    prs_shm_close(r);
}

/* A process killed while it holds a placed limiter's lock: the next decision
 * takes the lock over and finds the state whole. */
TEST(shm_limiter_dead_holder) {
    prs_shm *r = open_dir("dead", 0, NULL);
    ASSERT(r);
    prs_shm_place pl = {r, "tb"};
    prs_token_bucket_config tb;
    prs_token_bucket_config_init(&tb);
    tb.capacity = 3;
    tb.refill_rate = 0;
    prs_limiter *lim;
    ASSERT_OK(prs_limiter_new_placed(&prs_algo_token_bucket, &tb, NULL, &pl, &lim, NULL));
    prs_decision d;
    ASSERT_OK(prs_limiter_check(lim, NOW, 1, &d));
    pid_t pid = fork();
    if (pid == 0) { /* take the lock (as a decision would) and die holding it */
        prs_shm *rr = open_dir("dead", 0, NULL);
        void *blk;
        prs_shm_entry(rr, "tb", "token_bucket", NULL, 0, 1, NULL, NULL, &blk, NULL, NULL, NULL);
        atomic_store((_Atomic int32_t *)blk, (int32_t)getpid());
        /* killed inside a decision: the state journalled (state, then its undo
         * copy: token_bucket_state_size bytes each, 16-aligned), dirty set,
         * the state half-written */
        size_t at = 128 + 2 * ((prs_algo_token_bucket.params_size + 15) & ~(size_t)15);
        size_t ssz = prs_algo_token_bucket.state_size(prs_limiter_params(lim));
        memcpy((char *)blk + at + ((ssz + 15) & ~(size_t)15), (char *)blk + at, ssz);
        atomic_store((_Atomic uint32_t *)((char *)blk + 4), 1u);
        memset((char *)blk + at, 0x7f, ssz);
        raise(SIGKILL);
    }
    int status;
    ASSERT_EQ(waitpid(pid, &status, 0), pid);
    ASSERT(WIFSIGNALED(status));
    ASSERT_OK(prs_limiter_check(lim, NOW, 1, &d));
    ASSERT_EQ(d.allowed, 1);
    ASSERT_OK(prs_limiter_check(lim, NOW, 1, &d));
    ASSERT_EQ(d.allowed, 1);
    ASSERT_OK(prs_limiter_check(lim, NOW, 1, &d));
    ASSERT_EQ(d.allowed, 0);
    prs_limiter_free(lim);
    prs_shm_close(r);
}

/* SIGKILL processes at random instants while they hammer one limiter: it keeps
 * answering, and a frozen-time capacity is never exceeded. */
TEST(shm_limiter_kill_loop) {
    enum { ROUNDS = 60, CAP = 1000000 };
    prs_shm *r = open_dir("kill", 0, NULL);
    ASSERT(r);
    for (int i = 0; i < PRS_ALGO__COUNT; i++) {
        if (i == 4) continue; /* a sliding log of a million entries: 16 MB, not here */
        any_config c;
        const prs_algo *al = config_of(i, CAP, &c);
        char name[16];
        snprintf(name, sizeof name, "k%d", i);
        prs_shm_place pl = {r, name};
        prs_limiter *lim;
        ASSERT_OK(prs_limiter_new_placed(al, &c, NULL, &pl, &lim, NULL));
        for (int k = 0; k < ROUNDS; k++) {
            int ready[2];
            ASSERT_EQ(pipe(ready), 0);
            pid_t pid = fork();
            if (pid == 0) { /* one decision, then say so: every round takes some */
                prs_decision d;
                prs_limiter_check(lim, NOW, 1, &d);
                if (write(ready[1], "r", 1) != 1) _exit(1);
                for (;;) prs_limiter_check(lim, NOW, 1, &d);
            }
            char c1;
            ASSERT_EQ(read(ready[0], &c1, 1), 1);
            close(ready[0]);
            close(ready[1]);
            usleep((useconds_t)(200 + (k * 37) % 900));
            kill(pid, SIGKILL);
            waitpid(pid, NULL, 0);
        }
        prs_decision d;
        ASSERT_OK(prs_limiter_peek(lim, NOW, 1, &d)); /* answers (takes over if need be) */
        int64_t got = 0;
        while (got <= CAP) {
            ASSERT_OK(prs_limiter_check(lim, NOW, 1, &d));
            if (!d.allowed) break;
            got++;
        }
        ASSERT_LT_I64(got, CAP); /* the killed ones took some */
        prs_limiter_free(lim);
    }
    prs_shm_close(r);
}

static int make_open(const prs_allocator *a, void **obj) {
    prs_shm_config c;
    prs_shm_config_init(&c);
    c.directory = prs_test_tmpdir();
    c.allocator = a;
    return prs_shm_open("alloc", &c, (prs_shm **)obj, NULL);
}
static void destroy_open(void *obj) { prs_shm_close(obj); }

static prs_shm *alloc_region;
static int make_placed(const prs_allocator *a, void **obj) {
    prs_gcra_config g;
    prs_gcra_config_init(&g);
    prs_shm_place pl = {alloc_region, "g"};
    return prs_limiter_new_placed(&prs_algo_gcra, &g, a, &pl, (prs_limiter **)obj, NULL);
}
static void destroy_placed(void *obj) { prs_limiter_free(obj); }

TEST(shm_alloc_failures) {
    prs_test_alloc_failures(make_open, destroy_open);
    alloc_region = open_dir("alloc", 0, NULL);
    ASSERT(alloc_region);
    prs_test_alloc_failures(make_placed, destroy_placed);
    prs_shm_close(alloc_region);
}

/* Threads of one process share the pid in the lock word: they exclude each
 * other all the same (and never take the lock "over" from their own pid). */
typedef struct thr_arg {
    prs_limiter *lim;
    int got;
} thr_arg;

static void *thr_hammer(void *p) {
    thr_arg *a = p;
    prs_decision d;
    for (int i = 0; i < 20000; i++) {
        prs_limiter_check(a->lim, NOW, 1, &d);
        a->got += d.allowed;
    }
    return NULL;
}

TEST(shm_limiter_threads_exact) {
    enum { T = 4, CAP = 30000 };
    prs_shm *r = open_dir("threads", 0, NULL);
    ASSERT(r);
    for (int i = 0; i < PRS_ALGO__COUNT; i++) {
        if (i == 4) continue; /* sliding log: covered across processes */
        any_config c;
        const prs_algo *al = config_of(i, CAP, &c);
        char name[16];
        snprintf(name, sizeof name, "t%d", i);
        prs_shm_place pl = {r, name};
        prs_limiter *lim;
        ASSERT_OK(prs_limiter_new_placed(al, &c, NULL, &pl, &lim, NULL));
        pthread_t th[T];
        thr_arg args[T];
        for (int k = 0; k < T; k++) {
            args[k].lim = lim;
            args[k].got = 0;
            ASSERT_EQ(pthread_create(&th[k], NULL, thr_hammer, &args[k]), 0);
        }
        int total = 0;
        for (int k = 0; k < T; k++) {
            pthread_join(th[k], NULL);
            total += args[k].got;
        }
        if (total != CAP) PRS__FAIL("%s admitted %d, capacity %d", al->name, total, CAP);
        prs_limiter_free(lim);
    }
    prs_shm_close(r);
}
