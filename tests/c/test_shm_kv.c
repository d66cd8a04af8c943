/* test_shm_kv.c - the key/value area of a shared-memory region (idempotency
 * records): owner tokens, leases and takeover, TTLs, bounded eviction, sizes,
 * a randomized run against a reference model, a crash at every journal point,
 * exactly-once across processes, kill loops and allocation failure. */
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/wait.h>
#include <unistd.h>

#include "prs_test.h"
#include "pyresilience.h"

/* the area's crash point (csrc/core/shm_kv.c, not installed) */
extern int prs__shm_kv_crash_at;

#define S(x) x, strlen(x)

static prs_shm *region(const char *name, size_t size) {
    prs_shm_config c;
    prs_shm_config_init(&c);
    c.directory = prs_test_tmpdir();
    if (size) c.size = size;
    prs_shm *r = NULL;
    ASSERT_OK(prs_shm_open(name, &c, &r, NULL));
    return r;
}

static prs_shm_kv *area(prs_shm *r, uint32_t keys, uint32_t vmax) {
    prs_shm_kv_config kc;
    prs_shm_kv_config_init(&kc);
    kc.max_keys = keys;
    kc.max_value_bytes = vmax;
    prs_shm_kv *kv = NULL;
    ASSERT_OK(prs_shm_kv_open(r, "idem", &kc, NULL, &kv, NULL));
    return kv;
}

typedef struct buf {
    char data[256];
    size_t len;
} buf;

static void *sink(void *ctx, size_t len) {
    buf *b = ctx;
    b->len = len;
    return len <= sizeof b->data ? b->data : NULL;
}

static int begin(prs_shm_kv *kv, const char *key, const char *fp, const char *tok, int64_t lease,
                 int64_t now, buf *b, int *match) {
    prs_shm_kv_result res;
    buf spare;
    int rc = prs_shm_kv_begin(kv, S(key), S(fp), S(tok), lease, now, sink, b ? b : &spare, &res);
    ASSERT_OK(rc);
    if (match) *match = res.fp_match;
    return res.state;
}

TEST(shm_kv_owner_tokens_leases_ttl) {
    prs_shm *r = region("kv1", 0);
    prs_shm_kv *kv = area(r, 16, 64);
    buf b;
    int match;
    ASSERT_EQ(begin(kv, "k", "fp", "a", 100, 0, NULL, NULL), PRS_KV_ACQUIRED);
    ASSERT_EQ(begin(kv, "k", "fp", "b", 100, 10, NULL, &match), PRS_KV_BUSY);
    ASSERT_EQ(match, 1);
    ASSERT_EQ(begin(kv, "k", "other", "b", 100, 10, NULL, &match), PRS_KV_BUSY);
    ASSERT_EQ(match, 0);
    ASSERT_OK(prs_shm_kv_renew(kv, S("k"), S("a"), 100, 50));           /* lives to 150 */
    ASSERT_EQ(prs_shm_kv_renew(kv, S("k"), S("b"), 100, 50), PRS_ESTATE);
    ASSERT_EQ(begin(kv, "k", "fp", "b", 100, 149, NULL, NULL), PRS_KV_BUSY);
    ASSERT_EQ(begin(kv, "k", "fp", "b", 100, 150, NULL, NULL), PRS_KV_ACQUIRED); /* taken over */
    /* the late finisher cannot overwrite nor release */
    ASSERT_EQ(prs_shm_kv_complete(kv, S("k"), S("a"), S("late"), 1000, 160), PRS_ESTATE);
    ASSERT_EQ(prs_shm_kv_release(kv, S("k"), S("a")), PRS_ESTATE);
    ASSERT_OK(prs_shm_kv_complete(kv, S("k"), S("b"), S("v2"), 1000, 160));
    ASSERT_EQ(begin(kv, "k", "fp", "c", 100, 170, &b, &match), PRS_KV_DONE);
    ASSERT_EQ(match, 1);
    ASSERT_EQ(b.len, 2);
    ASSERT(memcmp(b.data, "v2", 2) == 0);
    ASSERT_EQ(prs_shm_kv_renew(kv, S("k"), S("b"), 100, 170), PRS_ESTATE); /* completed */
    ASSERT_EQ(begin(kv, "k", "fp", "c", 100, 1159, NULL, NULL), PRS_KV_DONE);
    ASSERT_EQ(begin(kv, "k", "new", "c", 100, 1160, NULL, NULL), PRS_KV_ACQUIRED); /* expired */
    ASSERT_OK(prs_shm_kv_release(kv, S("k"), S("c")));
    ASSERT_EQ(prs_shm_kv_count(kv), 0);
    /* sizes: the value's room, the key's, the token's */
    ASSERT_EQ(begin(kv, "big", "fp", "t", 100, 0, NULL, NULL), PRS_KV_ACQUIRED);
    char v[65] = {0};
    ASSERT_EQ(prs_shm_kv_complete(kv, S("big"), S("t"), v, 65, 10, 0), PRS_ERANGE);
    ASSERT_OK(prs_shm_kv_complete(kv, S("big"), S("t"), v, 64, 10, 0));
    char longkey[300];
    memset(longkey, 'k', sizeof longkey);
    prs_shm_kv_result res;
    ASSERT_EQ(prs_shm_kv_begin(kv, longkey, 257, S("fp"), S("t"), 1, 0, NULL, NULL, &res),
              PRS_EINVAL);
    ASSERT_EQ(prs_shm_kv_begin(kv, "k", 0, S("fp"), S("t"), 1, 0, NULL, NULL, &res), PRS_EINVAL);
    ASSERT_EQ(prs_shm_kv_begin(kv, S("k"), S("fp"), S("t"), 0, 0, NULL, NULL, &res), PRS_EINVAL);
    ASSERT_OK(prs_shm_kv_check(kv));
    prs_shm_kv_free(kv);
    prs_shm_close(r);
}

TEST(shm_kv_bounded_evicts_results_never_leases) {
    prs_shm *r = region("kv2", 0);
    prs_shm_kv *kv = area(r, 2, 16);
    ASSERT_EQ(begin(kv, "a", "f", "t1", 100, 0, NULL, NULL), PRS_KV_ACQUIRED);
    ASSERT_OK(prs_shm_kv_complete(kv, S("a"), S("t1"), S("A"), 1000, 1));
    ASSERT_EQ(begin(kv, "b", "f", "t2", 100, 2, NULL, NULL), PRS_KV_ACQUIRED);
    ASSERT_OK(prs_shm_kv_complete(kv, S("b"), S("t2"), S("B"), 1000, 3));
    ASSERT_EQ(begin(kv, "c", "f", "t3", 100, 4, NULL, NULL), PRS_KV_ACQUIRED); /* a goes (oldest) */
    ASSERT_EQ(begin(kv, "a", "f", "t4", 100, 5, NULL, NULL), PRS_KV_ACQUIRED); /* b goes */
    ASSERT_EQ(prs_shm_kv_count(kv), 2);
    /* two live leases: a third key is refused, nothing changes */
    prs_shm_kv_result res;
    ASSERT_EQ(prs_shm_kv_begin(kv, S("d"), S("f"), S("t5"), 100, 6, NULL, NULL, &res), PRS_EFULL);
    ASSERT_EQ(begin(kv, "c", "f", "x", 100, 6, NULL, NULL), PRS_KV_BUSY);
    /* an expired lease makes room */
    ASSERT_EQ(begin(kv, "d", "f", "t5", 100, 104, NULL, NULL), PRS_KV_ACQUIRED);
    ASSERT_OK(prs_shm_kv_check(kv));
    prs_shm_kv_clear(kv);
    ASSERT_EQ(prs_shm_kv_count(kv), 0);
    ASSERT_OK(prs_shm_kv_check(kv));
    prs_shm_kv_free(kv);
    prs_shm_close(r);
}

TEST(shm_kv_config_and_room) {
    prs_shm *r = region("kv3", 64 << 10);
    prs_shm_kv_config kc, found;
    prs_shm_kv_config_init(&kc);
    prs_shm_kv *kv = NULL;
    /* 1024 x 4 KiB values do not fit in 64 KiB */
    ASSERT_EQ(prs_shm_kv_open(r, "idem", &kc, NULL, &kv, NULL), PRS_EFULL);
    kc.max_keys = 4;
    kc.max_value_bytes = 100;
    ASSERT(prs_shm_kv_bytes(&kc) < (size_t)(64 << 10));
    ASSERT_OK(prs_shm_kv_open(r, "idem", &kc, NULL, &kv, NULL));
    prs_shm_kv_free(kv);
    kc.max_keys = 5;
    ASSERT_EQ(prs_shm_kv_open(r, "idem", &kc, NULL, &kv, &found), PRS_ESTATE);
    ASSERT_EQ(found.max_keys, 4);
    ASSERT_EQ(found.max_value_bytes, 100);
    kc.max_keys = 0;
    ASSERT_EQ(prs_shm_kv_open(r, "idem2", &kc, NULL, &kv, NULL), PRS_EINVAL);
    kc.max_keys = 4;
    kc.max_value_bytes = PRS_SHM_KV_VALUE_MAX + 1;
    ASSERT_EQ(prs_shm_kv_bytes(&kc), 0);
    prs_shm_close(r);
}

/* A randomized run against a plain model (a few keys, a tiny table: many
 * evictions, deletions and index rebuilds). The model cannot know which
 * expired record an eviction picks (the area scans its records): after each
 * step it forgets the expired records that the area no longer has. */
#define MK 6
typedef struct model_rec {
    int state; /* 0 none, 1 busy, 2 done */
    int tok;
    int64_t expires, stamp;
    int val;
} model_rec;

TEST(shm_kv_random_against_model) {
    prs_shm *r = region("kv4", 0);
    prs_shm_kv *kv = area(r, 4, 16);
    model_rec m[MK];
    memset(m, 0, sizeof m);
    uint64_t s = 12345;
    int64_t now = 0;
    for (int step = 0; step < 20000; step++) {
        s = s * 6364136223846793005ULL + 1442695040888963407ULL;
        int k = (int)((s >> 33) % MK), op = (int)((s >> 40) % 5), tok = (int)((s >> 50) % 3) + 1;
        now += 1 + (int64_t)((s >> 20) % 7);
        char key[8], t[8], v[8];
        snprintf(key, sizeof key, "k%d", k);
        snprintf(t, sizeof t, "t%d", tok);
        int live = m[k].state && m[k].expires > now;
        if (op <= 1) {
            prs_shm_kv_result res;
            buf b;
            int rc = prs_shm_kv_begin(kv, S(key), S("f"), S(t), 20, now, sink, &b, &res);
            if (!live) {
                int used = 0, leases = 0, expired = 0;
                for (int i = 0; i < MK; i++) {
                    used += m[i].state != 0;
                    leases += m[i].state == 1 && m[i].expires > now;
                    expired += i != k && m[i].state && m[i].expires <= now;
                }
                if (!m[k].state && used == 4 && leases == 4) {
                    ASSERT_EQ(rc, PRS_EFULL);
                    continue;
                }
                ASSERT_OK(rc);
                ASSERT_EQ(res.state, PRS_KV_ACQUIRED);
                if (!m[k].state && used == 4 && !expired) { /* the oldest completed goes */
                    int victim = -1;
                    int64_t oldest = INT64_MAX;
                    for (int i = 0; i < MK; i++)
                        if (m[i].state == 2 && m[i].stamp < oldest) {
                            oldest = m[i].stamp;
                            victim = i;
                        }
                    ASSERT(victim >= 0);
                    m[victim].state = 0;
                }
                m[k] = (model_rec){1, tok, now + 20, 0, 0};
            } else if (m[k].state == 2) {
                ASSERT_OK(rc);
                ASSERT_EQ(res.state, PRS_KV_DONE);
                ASSERT_EQ(b.len, 2);
                ASSERT_EQ(b.data[1] - '0', m[k].val);
            } else if (m[k].tok == tok) {
                ASSERT_OK(rc);
                ASSERT_EQ(res.state, PRS_KV_ACQUIRED);
                m[k].expires = now + 20;
            } else {
                ASSERT_OK(rc);
                ASSERT_EQ(res.state, PRS_KV_BUSY);
            }
        } else if (op == 2) {
            int val = (int)(s % 10);
            snprintf(v, sizeof v, "v%d", val);
            int rc = prs_shm_kv_complete(kv, S(key), S(t), S(v), 50, now);
            /* an expired lease not taken over may still complete */
            int owner = m[k].state == 1 && m[k].tok == tok;
            ASSERT_EQ(rc, owner ? PRS_OK : PRS_ESTATE);
            if (owner) m[k] = (model_rec){2, 0, now + 50, now, val};
        } else if (op == 3) {
            int rc = prs_shm_kv_renew(kv, S(key), S(t), 20, now);
            int owner = m[k].state == 1 && m[k].tok == tok;
            ASSERT_EQ(rc, owner ? PRS_OK : PRS_ESTATE);
            if (owner) m[k].expires = now + 20;
        } else {
            int rc = prs_shm_kv_release(kv, S(key), S(t));
            int owner = m[k].state == 1 && m[k].tok == tok;
            ASSERT_EQ(rc, owner ? PRS_OK : PRS_ESTATE);
            if (owner) m[k].state = 0;
        }
        for (int i = 0; i < MK; i++) { /* the model against the area, key by key */
            char kk[8];
            snprintf(kk, sizeof kk, "k%d", i);
            prs_shm_kv_result q;
            int rc = prs_shm_kv_peek(kv, S(kk), NULL, 0, NULL, NULL, &q);
            if (rc == PRS_ESTATE && m[i].state && m[i].expires <= now) m[i].state = 0;
            if (!m[i].state) {
                ASSERT_EQ(rc, PRS_ESTATE);
                continue;
            }
            ASSERT_OK(rc);
            ASSERT_EQ(q.state, m[i].state == 2 ? PRS_KV_DONE : PRS_KV_BUSY);
            ASSERT_EQ(q.expires_ns, m[i].expires);
        }
        if (step % 97 == 0) ASSERT_OK(prs_shm_kv_check(kv));
    }
    ASSERT_OK(prs_shm_kv_check(kv));
    prs_shm_kv_free(kv);
    prs_shm_close(r);
}

/* The script a crashing child runs: inserts, completions, evictions,
 * takeovers, releases and deletions on a table of 3. */
static void script(prs_shm_kv *kv) {
    int64_t now = 1000;
    for (int i = 0; i < 6; i++) {
        char key[8], t[8];
        snprintf(key, sizeof key, "s%d", i);
        snprintf(t, sizeof t, "t%d", i);
        prs_shm_kv_result res;
        prs_shm_kv_begin(kv, S(key), S("f"), S(t), 10, now, NULL, NULL, &res);
        if (i % 3 != 2) prs_shm_kv_complete(kv, S(key), S(t), S("value"), 100, now);
        else prs_shm_kv_release(kv, S(key), S(t));
        now += 5;
    }
    prs_shm_kv_delete(kv, S("s5"));
    prs_shm_kv_begin(kv, S("s1"), S("f"), S("z"), 10, now + 1000, NULL, NULL, NULL);
}

/* A crash at every journal write and commit of the script: the next user
 * rolls the step back (the lock taken over from the dead child) and every
 * invariant holds; the area keeps working. */
TEST(shm_kv_crash_at_every_point) {
    prs_shm *r = region("kv5", 0);
    int crashed = 0;
    for (int point = 1; point < 400; point++) {
        prs_shm_kv *kv = area(r, 3, 16);
        prs_shm_kv_clear(kv);
        pid_t pid = fork();
        if (pid == 0) {
            prs__shm_kv_crash_at = point;
            script(kv);
            _exit(0);
        }
        int st = prs_test_wait_child(pid);
        ASSERT_OK(prs_shm_kv_check(kv));
        /* it still works: the script again, to the end */
        script(kv);
        ASSERT_OK(prs_shm_kv_check(kv));
        prs_shm_kv_free(kv);
        if (st == 0) break; /* no more crash points */
        ASSERT_EQ(st, 77);
        crashed++;
    }
    ASSERT_GT_I64(crashed, 40);
    prs_shm_close(r);
}

/* N processes, one key: exactly one runs it, every other sees BUSY or its value. */
TEST(shm_kv_processes_exactly_once) {
    prs_shm *r = region("kv6", 0);
    prs_shm_kv *kv = area(r, 64, 16);
    enum { N = 8 };
    int fds[2];
    ASSERT_EQ(pipe(fds), 0);
    pid_t pids[N];
    for (int i = 0; i < N; i++) {
        pids[i] = fork();
        if (pids[i] == 0) {
            char t[8];
            snprintf(t, sizeof t, "p%d", i);
            int ran = 0;
            for (;;) {
                prs_shm_kv_result res;
                uint32_t seq = prs_shm_kv_seq(kv);
                buf b;
                if (prs_shm_kv_begin(kv, S("once"), S("f"), S(t), 5000000000LL,
                                     prs_monotonic_ns(), sink, &b, &res))
                    _exit(2);
                if (res.state == PRS_KV_ACQUIRED) {
                    ran = 1;
                    prs_sleep_ns(2000000);
                    prs_shm_kv_complete(kv, S("once"), S(t), S("R"), 60000000000LL,
                                        prs_monotonic_ns());
                    break;
                }
                if (res.state == PRS_KV_DONE) {
                    if (b.len != 1 || b.data[0] != 'R') _exit(3);
                    break;
                }
                prs_shm_kv_wait(kv, seq, 50000000);
            }
            char c = ran ? '1' : '0';
            if (write(fds[1], &c, 1) != 1) _exit(4);
            _exit(0);
        }
    }
    close(fds[1]);
    for (int i = 0; i < N; i++) ASSERT_EQ(prs_test_wait_child(pids[i]), 0);
    char got[N];
    ASSERT_EQ(read(fds[0], got, N), N);
    int runs = 0;
    for (int i = 0; i < N; i++) runs += got[i] == '1';
    ASSERT_EQ(runs, 1);
    close(fds[0]);
    ASSERT_OK(prs_shm_kv_check(kv));
    prs_shm_kv_free(kv);
    prs_shm_close(r);
}

/* Children SIGKILLed at random instants while hammering a small table. */
TEST(shm_kv_kill_loop) {
    prs_shm *r = region("kv7", 0);
    prs_shm_kv *kv = area(r, 8, 32);
    for (int round = 0; round < 200; round++) {
        pid_t pid = fork();
        if (pid == 0) {
            for (uint64_t i = 0;; i++) {
                char key[8], t[8];
                snprintf(key, sizeof key, "k%d", (int)(i % 13));
                snprintf(t, sizeof t, "t%d", (int)(i % 5));
                prs_shm_kv_result res;
                int64_t now = (int64_t)i;
                prs_shm_kv_begin(kv, S(key), S("f"), S(t), 3, now, NULL, NULL, &res);
                if (i % 3 == 0) prs_shm_kv_complete(kv, S(key), S(t), S("v"), 5, now);
                else if (i % 3 == 1) prs_shm_kv_release(kv, S(key), S(t));
                if (i % 7 == 0) prs_shm_kv_delete(kv, S(key));
            }
        }
        prs_sleep_ns((int64_t)(50000 + (round * 7919) % 400000));
        kill(pid, SIGKILL);
        ASSERT_EQ(prs_test_wait_child(pid), 128 + SIGKILL);
        ASSERT_OK(prs_shm_kv_check(kv));
    }
    prs_shm_kv_free(kv);
    prs_shm_close(r);
}

/* Threads of one process (one pid: the lock is shared by them as by
 * processes): every key runs once, and the area stays consistent. */
typedef struct thr_ctx {
    prs_shm_kv *kv;
    int id;
    _Atomic int *runs;
} thr_ctx;

static void *thr_main(void *arg) {
    thr_ctx *c = arg;
    char t[8];
    snprintf(t, sizeof t, "t%d", c->id);
    for (int i = 0; i < 2000; i++) {
        char key[16];
        snprintf(key, sizeof key, "k%d", i % 300);
        prs_shm_kv_result res;
        if (prs_shm_kv_begin(c->kv, S(key), S("f"), S(t), INT64_MAX / 4, 0, NULL, NULL, &res))
            continue;
        if (res.state == PRS_KV_ACQUIRED) {
            atomic_fetch_add(&c->runs[i % 300], 1);
            prs_shm_kv_complete(c->kv, S(key), S(t), S("v"), INT64_MAX / 4, 0);
        }
    }
    return NULL;
}

TEST(shm_kv_threads_run_each_key_once) {
    prs_shm *r = region("kv9", 4 << 20);
    prs_shm_kv *kv = area(r, 512, 16);
    _Atomic int runs[300] = {0};
    pthread_t th[4];
    thr_ctx ctx[4];
    for (int i = 0; i < 4; i++) {
        ctx[i] = (thr_ctx){kv, i, runs};
        ASSERT_EQ(pthread_create(&th[i], NULL, thr_main, &ctx[i]), 0);
    }
    for (int i = 0; i < 4; i++) pthread_join(th[i], NULL);
    for (int i = 0; i < 300; i++) ASSERT_EQ(atomic_load(&runs[i]), 1);
    ASSERT_OK(prs_shm_kv_check(kv));
    prs_shm_kv_free(kv);
    prs_shm_close(r);
}

static prs_shm *alloc_region;
static int make_kv(const prs_allocator *a, void **obj) {
    prs_shm_kv_config kc;
    prs_shm_kv_config_init(&kc);
    kc.max_keys = 4;
    return prs_shm_kv_open(alloc_region, "idem", &kc, a, (prs_shm_kv **)obj, NULL);
}
static void free_kv(void *obj) { prs_shm_kv_free(obj); }

TEST(shm_kv_alloc_failures) {
    alloc_region = region("kv8", 0);
    prs_test_alloc_failures(make_kv, free_kv);
    prs_shm_close(alloc_region);
}

static void *no_room(void *ctx, size_t len) { return NULL; }

/* begin and peek hand a done record's value through the same sink step: its
 * length with no sink, PRS_ENOMEM from a sink without room. */
TEST(shm_kv_value_through_the_sink) {
    prs_shm *r = region("kv9", 0);
    prs_shm_kv *kv = area(r, 8, 64);
    prs_shm_kv_result res;
    buf b = {{0}, 0};
    ASSERT_EQ(begin(kv, "k", "f", "t", 10, 0, NULL, NULL), PRS_KV_ACQUIRED);
    ASSERT_OK(prs_shm_kv_complete(kv, S("k"), S("t"), S("value"), 100, 1));
    ASSERT_EQ(begin(kv, "k", "f", "u", 10, 2, &b, NULL), PRS_KV_DONE);
    ASSERT_EQ(b.len, 5u);
    ASSERT(memcmp(b.data, "value", 5) == 0);
    ASSERT_OK(prs_shm_kv_peek(kv, S("k"), S("f"), NULL, NULL, &res));
    ASSERT_EQ(res.value_len, 5u);
    ASSERT_EQ(prs_shm_kv_peek(kv, S("k"), S("f"), no_room, NULL, &res), PRS_ENOMEM);
    ASSERT_EQ(prs_shm_kv_begin(kv, S("k"), S("f"), S("u"), 10, 3, no_room, NULL, &res), PRS_ENOMEM);
    prs_shm_kv_free(kv);
    prs_shm_close(r);
}
