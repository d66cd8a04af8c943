/*
 * test_redis.c - the Redis backend against a real, throwaway redis-server
 * (started per test on a free port and a unix socket in a directory under
 * prs_test_tmpdir(), killed at the end; PR_SET_PDEATHSIG makes it die with
 * the test even on a timeout, and the runner removes the directory).
 * Compiled only with hiredis (PRS_HAVE_HIREDIS). When redis-server is missing
 * the tests fail (set PRS_SKIP_REDIS=1 to skip them explicitly).
 */
#ifdef PRS_HAVE_HIREDIS
#include "prs_test.h"
#include "prs_redis_internal.h"
#include "prs_redis_ops.h"
#include "prs_gcra.h"
#include "prs_token_bucket.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <dirent.h>
#include <fcntl.h>
#include <stdarg.h>
#include <unistd.h>

/* ---- the throwaway server ------------------------------------------------ */

typedef struct server {
    pid_t pid;
    int port;
    char dir[600];
    char sock[640];
    char url[160];
    char unix_url[680];
} server;

static server *current;

static int free_port(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ASSERT(bind(fd, (struct sockaddr *)&a, sizeof a) == 0);
    socklen_t len = sizeof a;
    getsockname(fd, (struct sockaddr *)&a, &len);
    close(fd);
    return ntohs(a.sin_port);
}

static void server_spawn(server *s) {
    char port[16];
    snprintf(port, sizeof port, "%d", s->port);
    pid_t pid = fork();
    ASSERT(pid >= 0);
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        int devnull = open("/dev/null", 1);
        if (devnull >= 0) { dup2(devnull, 1); dup2(devnull, 2); }
        execlp("redis-server", "redis-server", "--port", port, "--bind", "127.0.0.1", "--unixsocket", s->sock,
               "--dir", s->dir, "--save", "", "--appendonly", "no", "--databases", "4", (char *)NULL);
        _exit(127);
    }
    s->pid = pid;
}

static int server_ready(server *s, int tries) {
    prs_redis_config cfg;
    prs_redis_config_init(&cfg);
    cfg.url = s->url;
    prs_redis_backend *b;
    ASSERT_OK(prs_redis_backend_new(&cfg, &b));
    int ok = 0;
    for (int i = 0; i < tries && !ok; i++) {
        ok = prs_redis_ping(b) == PRS_OK;
        if (!ok) prs_sleep_ns(10 * PRS_NS_PER_MS);
    }
    prs_redis_backend_free(b);
    return ok;
}

static void server_stop(void) {
    if (current && current->pid > 0) {
        kill(current->pid, SIGKILL);
        waitpid(current->pid, NULL, 0);
        current->pid = 0;
    }
}

static void server_cleanup(void) {
    server_stop();
    if (current) {
        unlink(current->sock);
        rmdir(current->dir);
    }
}

static server *server_start(void) {
    if (getenv("PRS_SKIP_REDIS")) exit(0);
    static server s;
    memset(&s, 0, sizeof s);
    /* under the test's own directory: the runner removes it however the test ends */
    snprintf(s.dir, sizeof s.dir, "%s/prs-redis-XXXXXX", prs_test_tmpdir());
    ASSERT(mkdtemp(s.dir) != NULL);
    snprintf(s.sock, sizeof s.sock, "%s/redis.sock", s.dir);
    if (strlen(s.sock) >= 108) PRS__FAIL("TMPDIR is too long for a unix socket path: %s", s.sock);
    s.port = free_port();
    snprintf(s.url, sizeof s.url, "redis://127.0.0.1:%d/0", s.port);
    snprintf(s.unix_url, sizeof s.unix_url, "unix://%s?db=1", s.sock);
    current = &s;
    atexit(server_cleanup);
    server_spawn(&s);
    if (!server_ready(&s, 300)) PRS__FAIL("redis-server did not start (is it installed? make deps)");
    return &s;
}

static prs_redis_backend *backend_for(const char *url, int64_t timeout_ms) {
    prs_redis_config cfg;
    prs_redis_config_init(&cfg);
    cfg.url = url;
    cfg.timeout_ns = timeout_ms * PRS_NS_PER_MS;
    cfg.connect_timeout_ns = timeout_ms * PRS_NS_PER_MS;
    prs_redis_backend *b;
    ASSERT_OK(prs_redis_backend_new(&cfg, &b));
    return b;
}

static prs_redis_limiter *limiter_for(prs_redis_backend *b, int algo, double rate_or_limit, double burst_or_window_s) {
    prs_redis_limiter_config cfg;
    prs_redis_limiter_config_init(&cfg);
    cfg.algorithm = algo;
    if (algo == PRS_REDIS_GCRA || algo == PRS_REDIS_TOKEN_BUCKET) {
        cfg.rate = rate_or_limit;
        cfg.burst = (int64_t)burst_or_window_s;
    } else {
        cfg.limit = (int64_t)rate_or_limit;
        cfg.window_ns = (int64_t)(burst_or_window_s * 1e9);
    }
    prs_redis_limiter *l;
    ASSERT_OK(prs_redis_limiter_new(b, &cfg, &l));
    return l;
}

static void cmd(prs_redis_backend *b, char *out, size_t cap, int argc, ...) {
    const char *argv[8];
    size_t lens[8];
    va_list ap;
    va_start(ap, argc);
    for (int i = 0; i < argc; i++) { argv[i] = va_arg(ap, const char *); lens[i] = strlen(argv[i]); }
    va_end(ap);
    ASSERT_OK(prs_redis_command(b, argc, argv, lens, out, cap));
}

/* ---- URLs, hashes ------------------------------------------------------------ */

TEST(redis_url_parse) {
    prs_redis_url u;
    ASSERT_OK(prs_redis_url_parse("redis://127.0.0.1:6380/3", NULL, &u));
    ASSERT_STREQ(u.host, "127.0.0.1");
    ASSERT_EQ(u.port, 6380);
    ASSERT_EQ(u.db, 3);
    ASSERT(u.user == NULL && u.password == NULL && !u.is_unix);
    prs_redis_url_clear(&u, NULL);
    ASSERT_OK(prs_redis_url_parse("redis://al%40ice:p%3Ass@[::1]:7000", NULL, &u));
    ASSERT_STREQ(u.user, "al@ice");
    ASSERT_STREQ(u.password, "p:ss");
    ASSERT_STREQ(u.host, "::1");
    ASSERT_EQ(u.port, 7000);
    ASSERT_EQ(u.db, 0);
    prs_redis_url_clear(&u, NULL);
    ASSERT_OK(prs_redis_url_parse("redis://:secret@localhost", NULL, &u));
    ASSERT(u.user == NULL);
    ASSERT_STREQ(u.password, "secret");
    ASSERT_EQ(u.port, 6379);
    prs_redis_url_clear(&u, NULL);
    ASSERT_OK(prs_redis_url_parse("unix:///tmp/r.sock?db=2", NULL, &u));
    ASSERT(u.is_unix);
    ASSERT_STREQ(u.path, "/tmp/r.sock");
    ASSERT_EQ(u.db, 2);
    prs_redis_url_clear(&u, NULL);
    const char *bad[] = {"", "http://x", "redis://", "redis://:6379", "redis://h:0", "redis://h:65536",
                         "redis://h:12x", "redis://h/abc", "redis://h/-1", "unix://", "unix://rel/path",
                         "unix:///s?db=x", "unix:///s?foo=1", "redis://h /0", "redis://u:%zz@h", "redis://[::1"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        if (prs_redis_url_parse(bad[i], NULL, &u) != PRS_EINVAL) PRS__FAIL("accepted %s", bad[i]);
        ASSERT(strlen(prs_redis_last_error()) > 0);
    }
}

TEST(redis_sha1_and_slots) {
    char hex[41];
    prs_redis__sha1_hex("abc", 3, hex);
    ASSERT_STREQ(hex, "a9993e364706816aba3e25717850c26c9cd0d89d");
    prs_redis__sha1_hex("", 0, hex);
    ASSERT_STREQ(hex, "da39a3ee5e6b4b0d3255bfef95601890afd80709");
    char big[200];
    memset(big, 'a', sizeof big);
    prs_redis__sha1_hex(big, 56, hex); /* padding spills into a second block */
    ASSERT_EQ(strlen(hex), 40);
    ASSERT_EQ(prs_redis_key_slot("123456789", 9), 12739); /* the Cluster spec's example */
    ASSERT_EQ(prs_redis_key_slot("{user1000}.following", 20), prs_redis_key_slot("user1000", 8));
}

TEST(redis_config_validate) {
    prs_redis_limiter_config c;
    prs_redis_limiter_config_init(&c);
    ASSERT_OK(prs_redis_limiter_config_validate(&c));
    c.algorithm = 9; ASSERT_STATUS(prs_redis_limiter_config_validate(&c), PRS_EINVAL);
    prs_redis_limiter_config_init(&c);
    c.rate = NAN; ASSERT_STATUS(prs_redis_limiter_config_validate(&c), PRS_EINVAL);
    c.rate = -1; ASSERT_STATUS(prs_redis_limiter_config_validate(&c), PRS_EINVAL);
    c.rate = 1; c.burst = 0; ASSERT_STATUS(prs_redis_limiter_config_validate(&c), PRS_EINVAL);
    c.burst = 5; c.lease_batch = 6; ASSERT_STATUS(prs_redis_limiter_config_validate(&c), PRS_EINVAL);
    c.lease_batch = 5; ASSERT_STATUS(prs_redis_limiter_config_validate(&c), PRS_EINVAL); /* no max_hold */
    c.lease_max_hold_ns = PRS_NS_PER_SEC; ASSERT_OK(prs_redis_limiter_config_validate(&c));
    c.key_prefix = "a{b"; ASSERT_STATUS(prs_redis_limiter_config_validate(&c), PRS_EINVAL);
    prs_redis_limiter_config_init(&c);
    c.algorithm = PRS_REDIS_FIXED_WINDOW;
    c.limit = 0; ASSERT_STATUS(prs_redis_limiter_config_validate(&c), PRS_EINVAL);
    c.limit = 5; c.window_ns = 10; ASSERT_STATUS(prs_redis_limiter_config_validate(&c), PRS_EINVAL);
    c.window_ns = PRS_NS_PER_SEC; c.lease_batch = 2; c.lease_max_hold_ns = 1;
    ASSERT_STATUS(prs_redis_limiter_config_validate(&c), PRS_EINVAL);
    prs_redis_config bc;
    prs_redis_config_init(&bc);
    prs_redis_backend *b;
    bc.max_connections = 0; ASSERT_STATUS(prs_redis_backend_new(&bc, &b), PRS_EINVAL);
    bc.max_connections = 2; bc.timeout_ns = 0; ASSERT_STATUS(prs_redis_backend_new(&bc, &b), PRS_EINVAL);
    bc.timeout_ns = PRS_NS_PER_MS; bc.url = "nope://"; ASSERT_STATUS(prs_redis_backend_new(&bc, &b), PRS_EINVAL);
    ASSERT(b == NULL);
}

/* A refusal names the config field and why (for a binding to word it). */
TEST(redis_config_check_names_the_field) {
    static const struct {
        int algorithm, from_window;
        double rate;
        int64_t burst, limit, window_ns, lease_batch, lease_hold;
        const char *prefix;
        int policy;
        double share;
        int want;
        const char *field, *reason;
    } rows[] = {
        {9, 0, 1, 1, 1, PRS_NS_PER_SEC, 0, 0, "p:", 0, 0, PRS_EINVAL, "algorithm", NULL},
        {PRS_REDIS_GCRA, 0, 1, 0, 1, PRS_NS_PER_SEC, 0, 0, "p:", 0, 0, PRS_EINVAL, "burst", "must be >= 1"},
        {PRS_REDIS_GCRA, 0, 1, INT64_C(1) << 51, 1, PRS_NS_PER_SEC, 0, 0, "p:", 0, 0, PRS_ERANGE, "burst", NULL},
        {PRS_REDIS_GCRA, 0, -1, 1, 1, PRS_NS_PER_SEC, 0, 0, "p:", 0, 0, PRS_EINVAL, "rate", NULL},
        {PRS_REDIS_GCRA, 0, 1e13, 1, 1, PRS_NS_PER_SEC, 0, 0, "p:", 0, 0, PRS_ERANGE, "rate", NULL},
        /* sized by limit and window: the window's own checks, then the derived rate */
        {PRS_REDIS_GCRA, 1, 0, 0, 5, 10, 0, 0, "p:", 0, 0, PRS_EINVAL, "window_ns", "must be >= 1 microsecond"},
        {PRS_REDIS_TOKEN_BUCKET, 1, 0, 0, 0, PRS_NS_PER_SEC, 0, 0, "p:", 0, 0, PRS_EINVAL, "limit", NULL},
        {PRS_REDIS_GCRA, 1, 0, 0, INT64_C(1) << 40, PRS_NS_PER_US, 0, 0, "p:", 0, 0, PRS_ERANGE, "rate", NULL},
        {PRS_REDIS_GCRA, 0, 1, 4, 1, PRS_NS_PER_SEC, 5, PRS_NS_PER_SEC, "p:", 0, 0, PRS_EINVAL, "lease_batch", NULL},
        {PRS_REDIS_GCRA, 0, 1, 4, 1, PRS_NS_PER_SEC, 2, 7200 * PRS_NS_PER_SEC, "p:", 0, 0, PRS_ERANGE,
         "lease_max_hold_ns", NULL},
        {PRS_REDIS_FIXED_WINDOW, 0, 1, 1, 5, PRS_NS_PER_SEC, 1, PRS_NS_PER_SEC, "p:", 0, 0, PRS_EINVAL, "lease_batch", NULL},
        {PRS_REDIS_SLIDING_WINDOW_LOG, 0, 1, 1, 1000001, PRS_NS_PER_SEC, 0, 0, "p:", 0, 0, PRS_ERANGE, "limit", NULL},
        {PRS_REDIS_GCRA, 0, 1, 1, 1, PRS_NS_PER_SEC, 0, 0, "a}", 0, 0, PRS_EINVAL, "key_prefix", NULL},
        {PRS_REDIS_GCRA, 0, 1, 1, 1, PRS_NS_PER_SEC, 0, 0, "p:", 7, 0, PRS_EINVAL, "on_backend_error", NULL},
        {PRS_REDIS_GCRA, 0, 1, 1, 1, PRS_NS_PER_SEC, 0, 0, "p:", PRS_REDIS_DENY, 0.5, PRS_EINVAL, "local_share", NULL},
        {PRS_REDIS_GCRA, 0, 1, 1, 1, PRS_NS_PER_SEC, 0, 0, "p:", PRS_REDIS_LOCAL, 1.5, PRS_EINVAL, "local_share", NULL},
        {PRS_REDIS_GCRA, 1, 0, 0, 60, 60 * PRS_NS_PER_SEC, 0, 0, "p:", PRS_REDIS_LOCAL, 0.5, PRS_OK, NULL, NULL},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        prs_redis_limiter_config c;
        prs_redis_limiter_config_init(&c);
        c.algorithm = rows[i].algorithm;
        c.from_window = rows[i].from_window;
        c.rate = rows[i].rate;
        c.burst = rows[i].burst;
        c.limit = rows[i].limit;
        c.window_ns = rows[i].window_ns;
        c.lease_batch = rows[i].lease_batch;
        c.lease_max_hold_ns = rows[i].lease_hold;
        c.key_prefix = rows[i].prefix;
        c.on_backend_error = rows[i].policy;
        c.local_share = rows[i].share;
        prs_config_error why = {NULL, NULL};
        int rc = prs_redis_limiter_config_check(&c, &why);
        if (rc != rows[i].want) PRS__FAIL("row %zu: %s, expected %s", i, prs_err_name(rc), prs_err_name(rows[i].want));
        if (rows[i].field) {
            ASSERT(why.field != NULL && why.reason != NULL);
            if (strcmp(why.field, rows[i].field)) PRS__FAIL("row %zu: field %s, expected %s", i, why.field, rows[i].field);
            if (rows[i].reason) ASSERT_STREQ(why.reason, rows[i].reason);
            /* the old entry point agrees, with "field reason" as its message */
            ASSERT_STATUS(prs_redis_limiter_config_validate(&c), rows[i].want);
            ASSERT(strncmp(prs_redis_last_error(), rows[i].field, strlen(rows[i].field)) == 0);
        }
    }
    prs_redis_config bc;
    prs_redis_config_init(&bc);
    prs_config_error why = {NULL, NULL};
    ASSERT_OK(prs_redis_config_check(&bc, &why));
    bc.timeout_ns = 999;
    ASSERT_STATUS(prs_redis_config_check(&bc, &why), PRS_EINVAL);
    ASSERT_STREQ(why.field, "timeout_ns");
    bc.timeout_ns = PRS_NS_PER_SEC;
    bc.connect_timeout_ns = 3601 * PRS_NS_PER_SEC;
    ASSERT_STATUS(prs_redis_config_check(&bc, &why), PRS_ERANGE);
    ASSERT_STREQ(why.field, "connect_timeout_ns");
    bc.connect_timeout_ns = PRS_NS_PER_SEC;
    bc.max_connections = 1025;
    ASSERT_STATUS(prs_redis_config_check(&bc, &why), PRS_EINVAL);
    ASSERT_STREQ(why.field, "max_connections");
    ASSERT_STREQ(prs_redis_policy_name(PRS_REDIS_LOCAL), "local");
    ASSERT_EQ(prs_redis_policy_from_name("deny"), PRS_REDIS_DENY);
    ASSERT_EQ(prs_redis_policy_from_name("ignore"), -1);
    ASSERT(prs_redis_policy_name(4) == NULL);
}

/* The sizing rule, the group's member rule and the names a transport uses:
 * the core's, so a C user gets what the binding words. */
TEST(redis_sizing_members_and_names) {
    static const struct {
        int algorithm;
        unsigned given;
        int want, from_window;
        const char *field, *reason;
    } rows[] = {
        {PRS_REDIS_GCRA, PRS_REDIS_GIVEN_RATE | PRS_REDIS_GIVEN_BURST, PRS_OK, 0, NULL, NULL},
        {PRS_REDIS_GCRA, PRS_REDIS_GIVEN_LIMIT | PRS_REDIS_GIVEN_WINDOW, PRS_OK, 1, NULL, NULL},
        {PRS_REDIS_FIXED_WINDOW, PRS_REDIS_GIVEN_LIMIT | PRS_REDIS_GIVEN_WINDOW, PRS_OK, 0, NULL, NULL},
        {PRS_REDIS_TOKEN_BUCKET, PRS_REDIS_GIVEN_RATE | PRS_REDIS_GIVEN_LIMIT, PRS_EINVAL, 0, "rate",
         "takes rate and burst, or limit and window, not both"},
        {PRS_REDIS_SLIDING_WINDOW_LOG, PRS_REDIS_GIVEN_BURST, PRS_EINVAL, 0, "rate",
         "takes limit and window; rate and burst are for gcra and token_bucket"},
        {PRS_REDIS_GCRA, PRS_REDIS_GIVEN_RATE, PRS_EINVAL, 0, "burst", "needs both rate and burst (missing burst)"},
        {PRS_REDIS_GCRA, PRS_REDIS_GIVEN_BURST, PRS_EINVAL, 0, "rate", "needs both rate and burst (missing rate)"},
        {PRS_REDIS_GCRA, 0, PRS_EINVAL, 0, "limit", "needs rate and burst (or limit and window)"},
        {PRS_REDIS_FIXED_WINDOW, PRS_REDIS_GIVEN_LIMIT, PRS_EINVAL, 0, "window", "needs both limit and window"},
        {42, PRS_REDIS_GIVEN_LIMIT, PRS_EINVAL, 0, "algorithm", NULL},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        prs_redis_limiter_config c;
        prs_redis_limiter_config_init(&c);
        c.algorithm = rows[i].algorithm;
        c.from_window = 7;
        prs_config_error why = {NULL, NULL};
        int rc = prs_redis_limiter_sizing(&c, rows[i].given, &why);
        if (rc != rows[i].want) PRS__FAIL("row %zu: %s, expected %s", i, prs_err_name(rc), prs_err_name(rows[i].want));
        if (rc == PRS_OK) ASSERT_EQ(c.from_window, rows[i].from_window);
        if (rows[i].field) ASSERT_STREQ(why.field, rows[i].field);
        if (rows[i].reason) ASSERT_STREQ(why.reason, rows[i].reason);
    }
    ASSERT_STATUS(prs_redis_limiter_sizing(NULL, 0, NULL), PRS_EINVAL);

    ASSERT_EQ(prs_redis_op_kind_from_name("check"), PRS_REDIS_OP_CHECK);
    ASSERT_EQ(prs_redis_op_kind_from_name("peek"), PRS_REDIS_OP_PEEK);
    ASSERT_EQ(prs_redis_op_kind_from_name("reset"), PRS_REDIS_OP_RESET);
    ASSERT_EQ(prs_redis_op_kind_from_name("allow"), 0);
    ASSERT_EQ(prs_redis_op_kind_from_name(NULL), 0);
    ASSERT_EQ(prs_redis_transport_status("ECONN"), PRS_ECONN);
    ASSERT_EQ(prs_redis_transport_status("ETIMEDOUT"), PRS_ETIMEDOUT);
    ASSERT_EQ(prs_redis_transport_status("EBACKENDCLOSED"), PRS_EBACKENDCLOSED);
    ASSERT_EQ(prs_redis_transport_status("EINVAL"), PRS_OK); /* not a transport's failure */
    ASSERT_EQ(prs_redis_transport_status(NULL), PRS_OK);

    prs_redis_config bc;
    prs_redis_backend *b1, *b2, *cl;
    prs_redis_config_init(&bc);
    bc.url = "redis://127.0.0.1:1/0";
    ASSERT_OK(prs_redis_backend_new(&bc, &b1));
    ASSERT_OK(prs_redis_backend_new(&bc, &b2));
    bc.url = "redis+cluster://127.0.0.1:1";
    ASSERT_OK(prs_redis_backend_new(&bc, &cl));
    prs_redis_limiter_config lc;
    prs_redis_limiter_config_init(&lc);
    prs_redis_limiter *l1, *l2, *lc1;
    ASSERT_OK(prs_redis_limiter_new(b1, &lc, &l1));
    ASSERT_OK(prs_redis_limiter_new(b2, &lc, &l2));
    ASSERT_OK(prs_redis_limiter_new(cl, &lc, &lc1));
    prs_redis_member m[3] = {{l1, "a", 1, 1}, {l1, "b", 1, 1}, {l2, "c", 1, 1}};
    size_t bad = 99;
    ASSERT_OK(prs_redis_group_members_check(2, m, &bad));
    ASSERT_STATUS(prs_redis_group_members_check(3, m, &bad), PRS_EINVAL);
    ASSERT_EQ(bad, 2);
    ASSERT_STATUS(prs_redis_group_members_check(0, m, &bad), PRS_ERANGE);
    ASSERT_STATUS(prs_redis_group_members_check(PRS_REDIS_GROUP_MAX + 1, m, &bad), PRS_ERANGE);
    prs_redis_member c[2] = {{lc1, "{t}a", 4, 1}, {lc1, "{t}b", 4, 1}};
    ASSERT_OK(prs_redis_group_members_check(2, c, &bad)); /* one hash slot */
    c[1].key = "{u}b";
    ASSERT_STATUS(prs_redis_group_members_check(2, c, &bad), PRS_EINVAL);
    ASSERT_EQ(bad, 2);
    m[1].key = "{u}b"; /* one server: any slots */
    ASSERT_OK(prs_redis_group_members_check(2, m, &bad));
    prs_redis_limiter_free(l1);
    prs_redis_limiter_free(l2);
    prs_redis_limiter_free(lc1);
    prs_redis_backend_free(b1);
    prs_redis_backend_free(b2);
    prs_redis_backend_free(cl);
}

/* ---- failure policies, on a backend nothing listens to ------------------- */

static prs_redis_limiter *policy_limiter(prs_redis_backend *b, int algo, int policy, int64_t size, double share,
                                         const prs_redis_fallback *fb) {
    prs_redis_limiter_config cfg;
    prs_redis_limiter_config_init(&cfg);
    cfg.algorithm = algo;
    if (algo == PRS_REDIS_GCRA || algo == PRS_REDIS_TOKEN_BUCKET) {
        cfg.rate = 0.001;
        cfg.burst = size;
    } else {
        cfg.limit = size;
        cfg.window_ns = 3600 * PRS_NS_PER_SEC;
    }
    cfg.on_backend_error = policy;
    cfg.local_share = share;
    cfg.fallback = fb;
    prs_redis_limiter *l;
    ASSERT_OK(prs_redis_limiter_new(b, &cfg, &l));
    return l;
}

TEST(redis_policies_decide_when_redis_fails) {
    prs_redis_backend *b = backend_for("redis://127.0.0.1:1", 50); /* connection refused */
    prs_decision d;
    prs_redis_limiter *raise = policy_limiter(b, PRS_REDIS_GCRA, PRS_REDIS_RAISE, 3, 0, NULL);
    int rc = prs_redis_limiter_check(raise, "k", 1, 1, &d);
    ASSERT(rc == PRS_ECONN || rc == PRS_EBACKEND);
    prs_redis_limiter *allow = policy_limiter(b, PRS_REDIS_GCRA, PRS_REDIS_ALLOW, 3, 0, NULL);
    ASSERT_OK(prs_redis_limiter_check(allow, "k", 1, 3, &d));
    ASSERT(d.allowed && d.limit == 3 && d.retry_after_ns == 0);
    ASSERT_OK(prs_redis_limiter_peek(allow, "k", 1, 4, &d));
    ASSERT(!d.allowed && d.retry_after_ns == PRS_NEVER); /* above the limit: never */
    prs_redis_limiter *deny = policy_limiter(b, PRS_REDIS_FIXED_WINDOW, PRS_REDIS_DENY, 3, 0, NULL);
    ASSERT_OK(prs_redis_limiter_check(deny, "k", 1, 1, &d));
    ASSERT(!d.allowed && d.retry_after_ns == PRS_REDIS_DENY_RETRY_NS);
    /* local, built in: the same algorithm with local_share of the limit, per key */
    prs_redis_limiter *local = policy_limiter(b, PRS_REDIS_SLIDING_WINDOW_LOG, PRS_REDIS_LOCAL, 8, 0.5, NULL);
    for (int i = 0; i < 4; i++) {
        ASSERT_OK(prs_redis_limiter_check(local, "k", 1, 1, &d));
        ASSERT(d.allowed);
    }
    ASSERT_OK(prs_redis_limiter_check(local, "k", 1, 1, &d));
    ASSERT(!d.allowed && d.limit == 4);
    ASSERT_OK(prs_redis_limiter_peek(local, "j", 1, 4, &d)); /* another key: its own limiter */
    ASSERT(d.allowed);
    /* check_many: the policy per request */
    prs_redis_request reqs[2] = {{"x", 1, 1}, {"y", 1, 9}};
    prs_decision ds[2];
    int st[2];
    ASSERT_OK(prs_redis_limiter_check_many(allow, 2, reqs, ds, st));
    ASSERT(st[0] == PRS_OK && ds[0].allowed && st[1] == PRS_OK && !ds[1].allowed);
    ASSERT_NE_I64(prs_redis_limiter_check_many(raise, 2, reqs, ds, st), PRS_OK);
    /* closed on purpose: no policy turns that into a decision */
    prs_redis_backend_close(b);
    ASSERT_STATUS(prs_redis_limiter_check(allow, "k", 1, 1, &d), PRS_EBACKENDCLOSED);
    ASSERT_STATUS(prs_redis_limiter_check(local, "k", 1, 1, &d), PRS_EBACKENDCLOSED);
    prs_redis_limiter_free(raise);
    prs_redis_limiter_free(allow);
    prs_redis_limiter_free(deny);
    prs_redis_limiter_free(local);
    prs_redis_backend_free(b);
}

/* A C user's own fallback: a counter of permits shared by every key. */
typedef struct counter_fb {
    int64_t left, limit;
    int calls, locks;
} counter_fb;

static int counter_decide(void *ctx, const void *key, size_t keylen, int64_t n, int consume, prs_decision *d) {
    counter_fb *c = ctx;
    c->calls++;
    d->allowed = n <= c->left;
    if (d->allowed && consume) c->left -= n;
    d->limit = c->limit;
    d->remaining = d->allowed ? c->left - (consume ? 0 : n) : c->left;
    d->retry_after_ns = d->allowed ? 0 : PRS_NS_PER_SEC;
    d->reset_after_ns = 0;
    return PRS_OK;
}
static void counter_lock(void *ctx) { ((counter_fb *)ctx)->locks++; }
static void counter_unlock(void *ctx) { ((counter_fb *)ctx)->locks--; }

TEST(redis_group_policies_strictest_wins) {
    prs_redis_backend *b = backend_for("redis://127.0.0.1:1", 50);
    counter_fb c = {3, 3, 0, 0};
    prs_redis_fallback fb = {counter_decide, counter_lock, counter_unlock, &c};
    prs_redis_limiter *raise = policy_limiter(b, PRS_REDIS_GCRA, PRS_REDIS_RAISE, 5, 0, NULL);
    prs_redis_limiter *deny = policy_limiter(b, PRS_REDIS_GCRA, PRS_REDIS_DENY, 5, 0, NULL);
    prs_redis_limiter *allow = policy_limiter(b, PRS_REDIS_TOKEN_BUCKET, PRS_REDIS_ALLOW, 5, 0, NULL);
    prs_redis_limiter *mine = policy_limiter(b, PRS_REDIS_GCRA, PRS_REDIS_LOCAL, 5, 0, &fb);
    prs_redis_limiter *own = policy_limiter(b, PRS_REDIS_GCRA, PRS_REDIS_LOCAL, 2, 0, NULL);
    prs_decision d;
    int by;
    /* raise anywhere: the failure */
    prs_redis_member m1[] = {{mine, "a", 1, 1}, {raise, "b", 1, 1}};
    int rc = prs_redis_group_check(2, m1, -1, &d, &by);
    ASSERT(rc == PRS_ECONN || rc == PRS_EBACKEND);
    ASSERT_EQ(c.calls, 0);
    /* deny over local: the local fallbacks are not asked */
    prs_redis_member m2[] = {{mine, "a", 1, 1}, {deny, "b", 1, 1}};
    ASSERT_OK(prs_redis_group_check(2, m2, -1, &d, &by));
    ASSERT(!d.allowed && by == 1 && d.retry_after_ns == PRS_REDIS_DENY_RETRY_NS);
    ASSERT_EQ(c.calls, 0);
    /* an allow member whose n exceeds its limit denies forever */
    prs_redis_member m3[] = {{mine, "a", 1, 1}, {allow, "b", 1, 6}};
    ASSERT_OK(prs_redis_group_check(2, m3, -1, &d, &by));
    ASSERT(!d.allowed && by == 1 && d.retry_after_ns == PRS_NEVER);
    /* local members all or nothing, the same fallback and key asked for the sum */
    prs_redis_member m4[] = {{allow, "z", 1, 1}, {mine, "a", 1, 2}, {own, "o", 1, 1}, {mine, "a", 1, 1}};
    ASSERT_OK(prs_redis_group_check(4, m4, -1, &d, &by));
    ASSERT(d.allowed && by == -1);
    ASSERT_EQ(c.left, 0);
    ASSERT_EQ(c.locks, 0); /* every lock given back */
    ASSERT_OK(prs_redis_group_check(4, m4, -1, &d, &by));
    ASSERT(!d.allowed && by == 1); /* the first member of the fallback that cannot hold its demand */
    c.left = 3;
    prs_redis_member m5[] = {{mine, "a", 1, 1}, {own, "o", 1, 2}};
    ASSERT_OK(prs_redis_group_check(2, m5, -1, &d, &by));
    ASSERT(!d.allowed && by == 1); /* own has 1 left (2 - 1 taken above) */
    ASSERT_EQ(c.left, 3);          /* nothing taken from the other member */
    ASSERT_EQ(c.locks, 0);
    /* one Cluster slot for the whole group only when the keys share a hash tag */
    prs_redis_member same[] = {{mine, "{t}a", 4, 1}, {own, "{t}b", 4, 1}};
    prs_redis_member spread[] = {{mine, "a", 1, 1}, {own, "b", 1, 1}};
    ASSERT_EQ(prs_redis_group_slot(2, same), prs_redis_key_slot("t", 1));
    ASSERT_EQ(prs_redis_group_slot(2, spread), -1);
    prs_redis_limiter_free(raise);
    prs_redis_limiter_free(deny);
    prs_redis_limiter_free(allow);
    prs_redis_limiter_free(mine);
    prs_redis_limiter_free(own);
    prs_redis_backend_free(b);
}

static int make_backend(const prs_allocator *a, void **obj) {
    prs_redis_config cfg;
    prs_redis_config_init(&cfg);
    cfg.url = "redis://u:p@127.0.0.1:1/2";
    cfg.allocator = a;
    return prs_redis_backend_new(&cfg, (prs_redis_backend **)obj);
}
static void free_backend(void *o) { prs_redis_backend_free(o); }

static prs_redis_backend *alloc_test_backend;
static int make_limiter(const prs_allocator *a, void **obj) {
    prs_redis_limiter_config cfg;
    prs_redis_limiter_config_init(&cfg);
    cfg.burst = 10;
    cfg.lease_batch = 5;
    cfg.lease_max_hold_ns = PRS_NS_PER_SEC;
    cfg.allocator = a;
    return prs_redis_limiter_new(alloc_test_backend, &cfg, (prs_redis_limiter **)obj);
}
static void free_limiter(void *o) { prs_redis_limiter_free(o); }
static int make_local_limiter(const prs_allocator *a, void **obj) {
    prs_redis_limiter_config cfg;
    prs_redis_limiter_config_init(&cfg);
    cfg.algorithm = PRS_REDIS_SLIDING_WINDOW_LOG;
    cfg.limit = 40;
    cfg.on_backend_error = PRS_REDIS_LOCAL;
    cfg.local_share = 0.5;
    cfg.allocator = a;
    return prs_redis_limiter_new(alloc_test_backend, &cfg, (prs_redis_limiter **)obj);
}

TEST(redis_alloc_failures) {
    prs_test_alloc_failures(make_backend, free_backend);
    alloc_test_backend = backend_for("redis://127.0.0.1:1", 50);
    prs_test_alloc_failures(make_limiter, free_limiter);
    prs_test_alloc_failures(make_local_limiter, free_limiter);
    prs_redis_backend_free(alloc_test_backend);
}

/* ---- against the server --------------------------------------------------- */

TEST(redis_ping_tcp_unix_db) {
    server *s = server_start();
    prs_redis_backend *b = backend_for(s->url, 500), *u = backend_for(s->unix_url, 500);
    ASSERT_OK(prs_redis_ping(b));
    ASSERT_OK(prs_redis_ping(u));
    char out[64];
    cmd(b, out, sizeof out, 3, "SET", "where", "db0");
    cmd(u, out, sizeof out, 3, "SET", "where", "db1");
    cmd(b, out, sizeof out, 2, "GET", "where");
    ASSERT_STREQ(out, "db0");
    cmd(u, out, sizeof out, 2, "GET", "where");
    ASSERT_STREQ(out, "db1");
    ASSERT_EQ(prs_redis_backend_connections(b), 1);
    /* the noop script's SHA1 is the server's */
    const prs_redis__script *sc = &prs_redis__scripts()[PRS_REDIS__SCRIPT_NOOP];
    cmd(b, out, sizeof out, 3, "SCRIPT", "LOAD", sc->body);
    ASSERT_STREQ(out, sc->sha);
    /* a wrong password is a clear failure, not a hang */
    char url[200];
    snprintf(url, sizeof url, "redis://:wrong@127.0.0.1:%d", s->port);
    prs_redis_backend *w = backend_for(url, 500);
    ASSERT_STATUS(prs_redis_ping(w), PRS_EBACKEND);
    ASSERT(strstr(prs_redis_last_error(), "AUTH") != NULL);
    prs_redis_backend_close(b);
    ASSERT_STATUS(prs_redis_ping(b), PRS_EBACKENDCLOSED);
    prs_redis_backend_free(w);
    prs_redis_backend_free(b);
    prs_redis_backend_free(u);
}

/* GCRA and token bucket at explicit times (us) against the in-process core:
 * the same verdicts and retry times on the same schedule. */
TEST(redis_rate_matches_core) {
    server *s = server_start();
    prs_redis_backend *b = backend_for(s->url, 500);
    prs_redis_limiter *rg = limiter_for(b, PRS_REDIS_GCRA, 10, 5), *rt = limiter_for(b, PRS_REDIS_TOKEN_BUCKET, 10, 5);
    prs_gcra_config gc; prs_gcra_config_init(&gc); gc.rate = 10; gc.burst = 5;
    prs_token_bucket_config tc; prs_token_bucket_config_init(&tc); tc.capacity = 5; tc.refill_rate = 10;
    prs_gcra *g; prs_token_bucket *t;
    ASSERT_OK(prs_gcra_new(&gc, &g));
    ASSERT_OK(prs_token_bucket_new(&tc, &t));
    uint64_t x = 12345;
    int64_t now_us = 1000000;
    int admitted = 0;
    for (int i = 0; i < 300; i++) {
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        now_us += (int64_t)((x >> 33) % 4) * 25000; /* steps of 0, 25, 50, 75 ms */
        int64_t n = 1 + (int64_t)((x >> 20) % 3);
        prs_decision dr, dc;
        ASSERT_OK(prs_redis_limiter_check_at(rg, "k", 1, n, now_us, &dr));
        ASSERT_OK(prs_gcra_check(g, now_us * 1000, n, &dc));
        ASSERT_EQ(dr.allowed, dc.allowed);
        ASSERT_EQ(dr.remaining, dc.remaining);
        ASSERT_EQ(dr.retry_after_ns, dc.retry_after_ns);
        ASSERT_OK(prs_redis_limiter_check_at(rt, "k", 1, n, now_us, &dr));
        ASSERT_OK(prs_token_bucket_check(t, now_us * 1000, n, &dc));
        ASSERT_EQ(dr.allowed, dc.allowed);
        ASSERT_EQ(dr.remaining, dc.remaining);
        ASSERT_NEAR(dr.retry_after_ns, dc.retry_after_ns, 1000);
        admitted += dr.allowed;
    }
    ASSERT(admitted > 20 && admitted < 300);
    prs_decision d;
    ASSERT_OK(prs_redis_limiter_check_at(rg, "k", 1, 6, now_us, &d)); /* n > burst: never */
    ASSERT(!d.allowed && d.retry_after_ns == PRS_NEVER);
    prs_gcra_free(g);
    prs_token_bucket_free(t);
    prs_redis_limiter_free(rg);
    prs_redis_limiter_free(rt);
    prs_redis_backend_free(b);
}

/* Window algorithms on a table of explicit times (limit 3 per 1 s). */
TEST(redis_windows_table) {
    server *s = server_start();
    prs_redis_backend *b = backend_for(s->url, 500);
    prs_redis_limiter *fw = limiter_for(b, PRS_REDIS_FIXED_WINDOW, 3, 1.0);
    prs_redis_limiter *sl = limiter_for(b, PRS_REDIS_SLIDING_WINDOW_LOG, 3, 1.0);
    prs_redis_limiter *sc = limiter_for(b, PRS_REDIS_SLIDING_WINDOW_COUNTER, 4, 1.0);
    prs_decision d;
    int64_t base = 5000000000; /* window-aligned, in us */
    /* fixed window */
    for (int i = 0; i < 3; i++) { ASSERT_OK(prs_redis_limiter_check_at(fw, "a", 1, 1, base + 100000, &d)); ASSERT(d.allowed); }
    ASSERT_OK(prs_redis_limiter_check_at(fw, "a", 1, 1, base + 600000, &d));
    ASSERT(!d.allowed);
    ASSERT_EQ(d.retry_after_ns, 400 * PRS_NS_PER_MS);
    ASSERT_OK(prs_redis_limiter_check_at(fw, "a", 1, 3, base + 1000000, &d));
    ASSERT(d.allowed);
    ASSERT_EQ(d.remaining, 0);
    /* sliding log: times 0, 0.2, 0.4 admitted; 0.5 denied until 1.0; at 1.0 admitted */
    int64_t ts[] = {0, 200000, 400000};
    for (int i = 0; i < 3; i++) { ASSERT_OK(prs_redis_limiter_check_at(sl, "a", 1, 1, base + ts[i], &d)); ASSERT(d.allowed); }
    ASSERT_OK(prs_redis_limiter_check_at(sl, "a", 1, 1, base + 500000, &d));
    ASSERT(!d.allowed);
    ASSERT_EQ(d.retry_after_ns, 500 * PRS_NS_PER_MS);
    ASSERT_OK(prs_redis_limiter_check_at(sl, "a", 1, 2, base + 1000000, &d));
    ASSERT(!d.allowed);
    ASSERT_EQ(d.retry_after_ns, 200 * PRS_NS_PER_MS);
    ASSERT_OK(prs_redis_limiter_check_at(sl, "a", 1, 1, base + 1000000, &d));
    ASSERT(d.allowed);
    /* sliding counter: 4 in window 0; at 1.25 the estimate is 4*0.75 = 3 -> 1 more */
    ASSERT_OK(prs_redis_limiter_check_at(sc, "a", 1, 4, base + 900000, &d));
    ASSERT(d.allowed);
    ASSERT_OK(prs_redis_limiter_check_at(sc, "a", 1, 1, base + 1250000, &d));
    ASSERT(d.allowed);
    ASSERT_OK(prs_redis_limiter_check_at(sc, "a", 1, 1, base + 1250000, &d));
    ASSERT(!d.allowed);
    /* est = 4*(1 - e) + 1 <= 3 when e >= 0.5: at 1.5 s */
    ASSERT_EQ(d.retry_after_ns, 250 * PRS_NS_PER_MS);
    ASSERT_OK(prs_redis_limiter_check_at(sc, "a", 1, 1, base + 1500000, &d));
    ASSERT(d.allowed);
    prs_redis_limiter_free(fw);
    prs_redis_limiter_free(sl);
    prs_redis_limiter_free(sc);
    prs_redis_backend_free(b);
}

/* The log names its entries per timestamp: many admissions at one instant
 * never collide (each permit is one entry). */
TEST(redis_log_same_instant) {
    server *s = server_start();
    prs_redis_backend *b = backend_for(s->url, 500);
    prs_redis_limiter *l = limiter_for(b, PRS_REDIS_SLIDING_WINDOW_LOG, 10, 1.0);
    prs_decision d;
    for (int i = 0; i < 5; i++) {
        ASSERT_OK(prs_redis_limiter_check_at(l, "s", 1, 2, 9000000000, &d));
        ASSERT(d.allowed);
        ASSERT_EQ(d.remaining, 10 - 2 * (i + 1));
    }
    ASSERT_OK(prs_redis_limiter_check_at(l, "s", 1, 1, 9000000000, &d));
    ASSERT(!d.allowed);
    ASSERT_EQ(d.retry_after_ns, PRS_NS_PER_SEC);
    char key[64], out[32];
    size_t len = prs_redis_limiter_redis_key(l, "s", 1, key, sizeof key);
    key[len] = '\0';
    cmd(b, out, sizeof out, 2, "ZCARD", key);
    ASSERT_STREQ(out, "10");
    prs_redis_limiter_free(l);
    prs_redis_backend_free(b);
}

/* Random schedules: each algorithm's bound holds on what Redis admitted. */
TEST(redis_bounds_random) {
    server *s = server_start();
    prs_redis_backend *b = backend_for(s->url, 500);
    for (int algo = 0; algo < PRS_REDIS__ALGORITHM_COUNT; algo++) {
        int rate = algo <= 1;
        prs_redis_limiter *l = rate ? limiter_for(b, algo, 20, 5) : limiter_for(b, algo, 5, 0.25);
        enum { N = 400 };
        int64_t when[N], size[N];
        int na = 0;
        uint64_t x = 99 + (uint64_t)algo;
        int64_t now = 7000000000;
        for (int i = 0; i < N; i++) {
            x = x * 6364136223846793005ull + 1442695040888963407ull;
            now += (int64_t)((x >> 33) % 20000);
            int64_t n = 1 + (int64_t)((x >> 17) % 2);
            prs_decision d;
            ASSERT_OK(prs_redis_limiter_check_at(l, "bound", 5, n, now, &d));
            if (d.allowed) { when[na] = now; size[na] = n; na++; }
        }
        ASSERT(na > 10);
        for (int i = 0; i < na; i++) {
            int64_t sum = 0;
            if (algo == PRS_REDIS_FIXED_WINDOW || algo == PRS_REDIS_SLIDING_WINDOW_COUNTER) {
                for (int j = 0; j < na; j++) if (when[j] / 250000 == when[i] / 250000) sum += size[j];
                ASSERT_LE_I64(sum, 5);
            } else if (algo == PRS_REDIS_SLIDING_WINDOW_LOG) {
                for (int j = i; j < na && when[j] - when[i] < 250000; j++) sum += size[j];
                ASSERT_LE_I64(sum, 5);
            } else {
                for (int j = i; j < na; j++) {
                    sum += size[j];
                    double bound = 5 + 20.0 * (double)(when[j] - when[i]) / 1e6;
                    ASSERT(sum <= bound + 1e-9);
                }
            }
        }
        prs_redis_limiter_free(l);
    }
    prs_redis_backend_free(b);
}

typedef struct thr_arg { prs_redis_limiter *l; int admitted; } thr_arg;
static void *hammer(void *p) {
    thr_arg *a = p;
    for (int i = 0; i < 200; i++) {
        prs_decision d;
        ASSERT_OK(prs_redis_limiter_check(a->l, "shared", 6, 1, &d));
        a->admitted += d.allowed;
    }
    return NULL;
}

/* 8 threads share a pool of 3 connections; a long window admits exactly its limit. */
TEST(redis_threads_exact) {
    server *s = server_start();
    prs_redis_config cfg;
    prs_redis_config_init(&cfg);
    cfg.url = s->url;
    cfg.max_connections = 3;
    cfg.timeout_ns = 2 * PRS_NS_PER_SEC;
    prs_redis_backend *b;
    ASSERT_OK(prs_redis_backend_new(&cfg, &b));
    prs_redis_limiter *l = limiter_for(b, PRS_REDIS_FIXED_WINDOW, 777, 3600);
    pthread_t t[8];
    thr_arg args[8];
    for (int i = 0; i < 8; i++) { args[i].l = l; args[i].admitted = 0; pthread_create(&t[i], NULL, hammer, &args[i]); }
    int total = 0;
    for (int i = 0; i < 8; i++) { pthread_join(t[i], NULL); total += args[i].admitted; }
    /* the window may roll over once (aligned to the hour): allow one extra window */
    ASSERT(total == 777 || (total > 777 && total <= 1554));
    ASSERT(prs_redis_backend_connections(b) <= 3);
    prs_redis_limiter_free(l);
    prs_redis_backend_free(b);
}

/* Every key written has a TTL; hostile keys are distinct and binary-safe. */
TEST(redis_keys_ttl_hostile) {
    server *s = server_start();
    prs_redis_backend *b = backend_for(s->url, 2000);
    static char big[1 << 20];
    memset(big, 'x', sizeof big);
    big[5] = '\0'; big[6] = '\r'; big[7] = '\n'; big[8] = '{'; big[10] = '}';
    struct { const char *k; size_t n; } keys[] = {
        {"plain", 5}, {"with space", 10}, {"cr\r\nlf", 6}, {"100%", 4}, {"{tag}a", 6}, {"{tag}b", 6},
        {"}{", 2}, {"{}", 2}, {"nul\0x", 5}, {"nul\0y", 5}, {"", 0}, {"*3\r\n$3\r\nDEL", 12}, {big, sizeof big},
    };
    size_t nk = sizeof keys / sizeof keys[0];
    for (int algo = 0; algo < PRS_REDIS__ALGORITHM_COUNT; algo++) {
        int rate = algo <= 1;
        prs_redis_limiter *l = rate ? limiter_for(b, algo, 1, 2) : limiter_for(b, algo, 2, 60);
        for (size_t i = 0; i < nk; i++) {
            prs_decision d;
            ASSERT_OK(prs_redis_limiter_check(l, keys[i].k, keys[i].n, 2, &d));
            if (!d.allowed) PRS__FAIL("algo %d key %zu: first check denied (keys collide?)", algo, i);
            ASSERT_OK(prs_redis_limiter_check(l, keys[i].k, keys[i].n, 1, &d));
            ASSERT(!d.allowed);
            ASSERT_OK(prs_redis_limiter_peek(l, keys[i].k, keys[i].n, 1, &d));
            ASSERT(!d.allowed);
            /* the Redis key carries the user key's hash tag: its slot */
            char k1[300];
            size_t len = prs_redis_limiter_redis_key(l, keys[i].k, keys[i].n, k1, sizeof k1);
            if (len <= sizeof k1 && keys[i].n > 0 && !memchr(keys[i].k, '{', keys[i].n) &&
                !memchr(keys[i].k, '}', keys[i].n))
                ASSERT_EQ(prs_redis_key_slot(k1, len), prs_redis_key_slot(keys[i].k, keys[i].n));
        }
        ASSERT_OK(prs_redis_limiter_reset(l, keys[1].k, keys[1].n));
        prs_decision d;
        ASSERT_OK(prs_redis_limiter_check(l, keys[1].k, keys[1].n, 2, &d));
        ASSERT(d.allowed);
        prs_redis_limiter_free(l);
    }
    /* the "{tag}" keys share a slot */
    prs_redis_limiter *l = limiter_for(b, PRS_REDIS_GCRA, 1, 2);
    char a[64], c[64];
    size_t la = prs_redis_limiter_redis_key(l, "{tag}a", 6, a, sizeof a);
    size_t lc = prs_redis_limiter_redis_key(l, "{tag}b", 6, c, sizeof c);
    ASSERT_EQ(prs_redis_key_slot(a, la), prs_redis_key_slot(c, lc));
    prs_redis_limiter_free(l);
    /* TTL scan: every key has one */
    char out[64];
    cmd(b, out, sizeof out, 1, "DBSIZE");
    int nkeys = atoi(out);
    ASSERT(nkeys >= 20);
    /* SCAN through the raw command API is awkward; use KEYS via a script */
    cmd(b, out, sizeof out, 3, "EVAL",
        "local bad = 0 for _, k in ipairs(redis.call('KEYS', '*')) do "
        "if redis.call('PTTL', k) < 0 and k ~= 'where' then bad = bad + 1 end end return bad", "0");
    ASSERT_STREQ(out, "0");
    prs_redis_backend_free(b);
}

TEST(redis_noscript_reload) {
    server *s = server_start();
    prs_redis_backend *b = backend_for(s->url, 500);
    prs_redis_limiter *l = limiter_for(b, PRS_REDIS_SLIDING_WINDOW_LOG, 100, 10);
    char out[64];
    for (int i = 0; i < 20; i++) {
        if (i % 5 == 0) cmd(b, out, sizeof out, 2, "SCRIPT", "FLUSH");
        prs_decision d;
        ASSERT_OK(prs_redis_limiter_check(l, "k", 1, 1, &d));
        ASSERT(d.allowed);
        ASSERT_EQ(d.remaining, 100 - i - 1);
    }
    prs_redis_request reqs[3] = {{"a", 1, 1}, {"b", 1, 2}, {"a", 1, 1}};
    prs_decision ds[3];
    int st[3];
    cmd(b, out, sizeof out, 2, "SCRIPT", "FLUSH");
    ASSERT_OK(prs_redis_limiter_check_many(l, 3, reqs, ds, st));
    ASSERT(ds[0].allowed && ds[1].allowed && ds[2].allowed);
    ASSERT_EQ(ds[2].remaining, 98);
    ASSERT_EQ(ds[1].remaining, 98);
    prs_redis_limiter_free(l);
    prs_redis_backend_free(b);
}

/* ---- sans-I/O ops (prs_redis_ops.h): a transport of our own ------------------ */

/* Sends buf on a plain socket and reads n replies with hiredis's reader. */
static void op_exchange(int fd, redisReader *rd, const char *buf, size_t len, size_t n, redisReply **out) {
    ASSERT(write(fd, buf, len) == (ssize_t)len);
    for (size_t got = 0; got < n;) {
        void *r = NULL;
        ASSERT(redisReaderGetReply(rd, &r) == REDIS_OK);
        if (r) { out[got++] = r; continue; }
        char tmp[4096];
        ssize_t k = read(fd, tmp, sizeof tmp);
        ASSERT(k > 0);
        ASSERT(redisReaderFeed(rd, tmp, (size_t)k) == REDIS_OK);
    }
}

/* Runs op on fd (EVAL again after NOSCRIPT) and finishes it. */
static int op_run(int fd, redisReader *rd, prs_redis_op *op, prs_decision *d, int *status, int *denied) {
    size_t len, n = prs_redis_op_ncmds(op);
    const char *req = prs_redis_op_request(op, &len);
    redisReply *r[16] = {NULL};
    ASSERT(n <= 16);
    op_exchange(fd, rd, req, len, n, r);
    for (size_t i = 0; i < n; i++) {
        if (r[i]->type == REDIS_REPLY_ERROR && !strncmp(r[i]->str, "NOSCRIPT", 8)) {
            const char *e;
            size_t elen;
            ASSERT_OK(prs_redis_op_eval(op, i, &e, &elen));
            freeReplyObject(r[i]);
            op_exchange(fd, rd, e, elen, 1, &r[i]);
        }
    }
    int rc = prs_redis_op_finish(op, PRS_OK, r, d, status, denied);
    for (size_t i = 0; i < n; i++) freeReplyObject(r[i]);
    prs_redis_op_free(op);
    return rc;
}

static int dial(int port) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ASSERT(connect(fd, (struct sockaddr *)&a, sizeof a) == 0);
    return fd;
}

/* An op sends the blocking call's exact request: the same decisions at the
 * same times, for every algorithm, groups, check_many, reset and NOSCRIPT;
 * and a transport failure gets the limiter's policy. */
TEST(redis_ops_decide_as_the_blocking_calls) {
    server *s = server_start();
    prs_redis_backend *b = backend_for(s->url, 500);
    int fd = dial(s->port);
    redisReader *rd = redisReaderCreate();
    char out[64];
    for (int algo = 0; algo < PRS_REDIS__ALGORITHM_COUNT; algo++) {
        int rate = algo == PRS_REDIS_GCRA || algo == PRS_REDIS_TOKEN_BUCKET;
        prs_redis_limiter *l = limiter_for(b, algo, rate ? 5 : 3, rate ? 3 : 2);
        int64_t now_us = 5000000;
        for (int i = 0; i < 12; i++) {
            now_us += (i % 3) * 150000;
            int64_t n = 1 + i % 2;
            if (i == 6) cmd(b, out, sizeof out, 2, "SCRIPT", "FLUSH");
            prs_decision dc, dop;
            ASSERT_OK(prs_redis_limiter_check_at(l, "blocking", 8, n, now_us, &dc));
            prs_redis_op *op;
            ASSERT_OK(prs_redis_op_limiter_new(l, PRS_REDIS_OP_CHECK, "op-path", 7, n, now_us, &op, &dop));
            ASSERT(op != NULL);
            ASSERT_EQ(prs_redis_op_kind(op), 'c');
            ASSERT_OK(op_run(fd, rd, op, &dop, NULL, NULL));
            ASSERT_EQ(dop.allowed, dc.allowed);
            ASSERT_EQ(dop.remaining, dc.remaining);
            ASSERT_EQ(dop.retry_after_ns, dc.retry_after_ns);
            ASSERT_EQ(dop.reset_after_ns, dc.reset_after_ns);
        }
        prs_redis_op *op;
        prs_decision d;
        ASSERT_OK(prs_redis_op_limiter_new(l, PRS_REDIS_OP_RESET, "op-path", 7, 0, -1, &op, &d));
        ASSERT_OK(op_run(fd, rd, op, &d, NULL, NULL));
        ASSERT_OK(prs_redis_op_limiter_new(l, PRS_REDIS_OP_PEEK, "op-path", 7, 3, -1, &op, &d));
        ASSERT_OK(op_run(fd, rd, op, &d, NULL, NULL));
        ASSERT(d.allowed && d.remaining == 0); /* reset: the whole limit again */
        prs_redis_request reqs[3] = {{"m", 1, 2}, {"m", 1, 1}, {"m", 1, 1}};
        prs_decision ds[3];
        int st[3];
        ASSERT_OK(prs_redis_op_many_new(l, 3, reqs, &op));
        ASSERT_EQ(prs_redis_op_kind(op), 'm');
        ASSERT_EQ(prs_redis_op_decisions(op), 3);
        ASSERT_EQ(prs_redis_op_ncmds(op), algo == PRS_REDIS_FIXED_WINDOW ? 12 : 3); /* MULTI ... EXEC each */
        ASSERT_OK(op_run(fd, rd, op, ds, st, NULL));
        ASSERT(ds[0].allowed && ds[1].allowed && !ds[2].allowed);
        prs_redis_member m[2] = {{l, "{g}a", 4, 1}, {l, "{g}b", 4, 3}};
        int denied = 0;
        ASSERT_OK(prs_redis_op_group_new(2, m, -1, &op));
        ASSERT_OK(op_run(fd, rd, op, &d, NULL, &denied));
        ASSERT(d.allowed && denied == -1);
        ASSERT_OK(prs_redis_op_group_new(2, m, -1, &op));
        ASSERT_OK(op_run(fd, rd, op, &d, NULL, &denied));
        ASSERT(!d.allowed && denied == 1);
        prs_redis_limiter_free(l);
    }
    /* a transport failure: the policy decides, as for the blocking call */
    prs_redis_limiter_config cfg;
    prs_redis_limiter_config_init(&cfg);
    cfg.on_backend_error = PRS_REDIS_DENY;
    prs_redis_limiter *l;
    ASSERT_OK(prs_redis_limiter_new(b, &cfg, &l));
    prs_redis_op *op;
    prs_decision d;
    ASSERT_OK(prs_redis_op_limiter_new(l, PRS_REDIS_OP_CHECK, "k", 1, 1, -1, &op, &d));
    ASSERT_OK(prs_redis_op_finish(op, PRS_ETIMEDOUT, NULL, &d, NULL, NULL));
    ASSERT(!d.allowed && d.retry_after_ns == PRS_REDIS_DENY_RETRY_NS);
    ASSERT_EQ(prs_redis_op_finish(op, PRS_OK, NULL, &d, NULL, NULL), PRS_EINVAL); /* once only */
    prs_redis_op_free(op);
    ASSERT_EQ(prs_redis_op_limiter_new(l, 'x', "k", 1, 1, -1, &op, &d), PRS_EINVAL);
    ASSERT(op == NULL);
    /* a transport's TIME reply sets the clock the ops send (a day ahead here) */
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    int64_t t = (int64_t)ts.tv_sec * 1000000;
    char secs[24], zero[] = "0";
    snprintf(secs, sizeof secs, "%lld", (long long)(ts.tv_sec + 86400));
    redisReply e0 = {.type = REDIS_REPLY_STRING, .str = secs, .len = strlen(secs)};
    redisReply e1 = {.type = REDIS_REPLY_STRING, .str = zero, .len = 1};
    redisReply *el[2] = {&e0, &e1};
    redisReply tr = {.type = REDIS_REPLY_ARRAY, .elements = 2, .element = el};
    prs_redis_backend_clock(b, t, t, &tr);
    int64_t ahead = prs_redis__now_us(b) - t;
    ASSERT(ahead >= INT64_C(86400000000));
    ASSERT(ahead < INT64_C(90000000000));
    int admit = 0;
    ASSERT_OK(prs_redis_backend_admit(b, &admit));
    ASSERT_EQ(admit, 1);
    prs_redis_backend_outcome(b, admit, PRS_OK);
    prs_redis_limiter_free(l);
    redisReaderFree(rd);
    close(fd);
    prs_redis_backend_close(b);
    ASSERT_EQ(prs_redis_backend_admit(b, &admit), PRS_EBACKENDCLOSED);
    prs_redis_backend_free(b);
}

/* prs_redis_limiter_call: the blocking call an op's kind names. */
TEST(redis_limiter_call_makes_the_blocking_call_of_a_kind) {
    server *s = server_start();
    prs_redis_backend *b = backend_for(s->url, 500);
    prs_redis_limiter *l = limiter_for(b, PRS_REDIS_GCRA, 1, 3);
    prs_decision d;
    ASSERT_OK(prs_redis_limiter_call(l, PRS_REDIS_OP_CHECK, "c", 1, 2, 7000000, &d)); /* at that time */
    ASSERT(d.allowed && d.remaining == 1);
    ASSERT_OK(prs_redis_limiter_call(l, PRS_REDIS_OP_CHECK, "c", 1, 2, 7000000, &d));
    ASSERT(!d.allowed);
    ASSERT_OK(prs_redis_limiter_call(l, PRS_REDIS_OP_RESET, "c", 1, 0, -1, NULL));
    ASSERT_OK(prs_redis_limiter_call(l, PRS_REDIS_OP_PEEK, "c", 1, 3, -1, &d));
    ASSERT(d.allowed && d.remaining == 0); /* reset: the whole burst, nothing taken */
    ASSERT_OK(prs_redis_limiter_call(l, PRS_REDIS_OP_CHECK, "c", 1, 3, -1, &d)); /* Redis's time */
    ASSERT(d.allowed);
    ASSERT_EQ(prs_redis_limiter_call(l, 'x', "c", 1, 1, -1, &d), PRS_EINVAL);
    prs_redis_limiter_free(l);
    prs_redis_backend_free(b);
}

/* prs_redis_op_run: an op run on the backend's own pool decides as the
 * blocking call (NOSCRIPT reloaded, one round trip each); a failure gets
 * the policy; an op runs once, and not after a step. */
TEST(redis_op_run_decides_as_the_blocking_calls) {
    server *s = server_start();
    prs_redis_backend *b = backend_for(s->url, 500);
    char out[64];
    for (int algo = 0; algo < PRS_REDIS__ALGORITHM_COUNT; algo++) {
        int rate = algo == PRS_REDIS_GCRA || algo == PRS_REDIS_TOKEN_BUCKET;
        prs_redis_limiter *l = limiter_for(b, algo, rate ? 5 : 3, rate ? 3 : 2);
        prs_redis_op *op;
        prs_decision dc, dop, ds[3];
        for (int i = 0; i < 6; i++) {
            if (i == 3) cmd(b, out, sizeof out, 2, "SCRIPT", "FLUSH");
            int64_t now_us = 5000000 + i * 150000, n = 1 + i % 2;
            ASSERT_OK(prs_redis_limiter_check_at(l, "blocking", 8, n, now_us, &dc));
            ASSERT_OK(prs_redis_op_limiter_new(l, PRS_REDIS_OP_CHECK, "op-run", 6, n, now_us, &op, &dop));
            uint64_t trips = prs_redis_backend_round_trips(b);
            ASSERT_OK(prs_redis_op_run(op, &dop, NULL, NULL));
            ASSERT_EQ(prs_redis_backend_round_trips(b), trips + 1);
            ASSERT(dop.allowed == dc.allowed && dop.remaining == dc.remaining);
            ASSERT(dop.retry_after_ns == dc.retry_after_ns && dop.reset_after_ns == dc.reset_after_ns);
            ASSERT_EQ(prs_redis_op_run(op, &dop, NULL, NULL), PRS_EINVAL); /* once only */
            prs_redis_op_free(op);
        }
        ASSERT_OK(prs_redis_op_limiter_new(l, PRS_REDIS_OP_RESET, "op-run", 6, 0, -1, &op, &dop));
        ASSERT_OK(prs_redis_op_run(op, &dop, NULL, NULL));
        prs_redis_op_free(op);
        ASSERT_OK(prs_redis_limiter_peek(l, "op-run", 6, 3, &dc));
        ASSERT(dc.allowed && dc.remaining == 0); /* reset: the whole limit again */
        prs_redis_request reqs[3] = {{"m", 1, 2}, {"m", 1, 1}, {"m", 1, 1}};
        int st[3];
        cmd(b, out, sizeof out, 2, "SCRIPT", "FLUSH");
        ASSERT_OK(prs_redis_op_many_new(l, 3, reqs, &op)); /* fixed window: 12 commands, off the stack */
        ASSERT_OK(prs_redis_op_run(op, ds, st, NULL));
        prs_redis_op_free(op);
        ASSERT(ds[0].allowed && ds[1].allowed && !ds[2].allowed && st[2] == PRS_OK);
        prs_redis_member m[2] = {{l, "{g}a", 4, 1}, {l, "{g}b", 4, 3}};
        int denied = 0;
        for (int i = 0; i < 2; i++) {
            ASSERT_OK(prs_redis_op_group_new(2, m, -1, &op));
            ASSERT_OK(prs_redis_op_run(op, &dop, NULL, &denied));
            prs_redis_op_free(op);
            ASSERT(dop.allowed == !i && denied == (i ? 1 : -1));
        }
        prs_redis_limiter_free(l);
    }
    prs_redis_limiter *l = limiter_for(b, PRS_REDIS_GCRA, 5, 3);
    prs_redis_op *op;
    prs_decision d;
    const prs_redis_send *sends;
    size_t nsends;
    ASSERT_OK(prs_redis_op_limiter_new(l, PRS_REDIS_OP_PEEK, "k", 1, 1, -1, &op, &d));
    ASSERT_OK(prs_redis_op_step(op, &sends, &nsends)); /* a transport's now */
    ASSERT_EQ(prs_redis_op_run(op, &d, NULL, NULL), PRS_EINVAL);
    prs_redis_op_free(op);
    prs_redis_limiter_free(l);
    prs_redis_backend_free(b);
    /* Redis down: the policy decides; 'raise' leaves the pool's failure */
    b = backend_for("redis://127.0.0.1:1", 50);
    prs_redis_limiter *deny = policy_limiter(b, PRS_REDIS_GCRA, PRS_REDIS_DENY, 3, 0, NULL);
    prs_redis_limiter *raise = policy_limiter(b, PRS_REDIS_GCRA, PRS_REDIS_RAISE, 3, 0, NULL);
    ASSERT_OK(prs_redis_op_limiter_new(deny, PRS_REDIS_OP_CHECK, "k", 1, 1, -1, &op, &d));
    ASSERT_OK(prs_redis_op_run(op, &d, NULL, NULL));
    prs_redis_op_free(op);
    ASSERT(!d.allowed && d.retry_after_ns == PRS_REDIS_DENY_RETRY_NS);
    ASSERT_OK(prs_redis_op_limiter_new(raise, PRS_REDIS_OP_CHECK, "k", 1, 1, -1, &op, &d));
    int rc = prs_redis_op_run(op, &d, NULL, NULL);
    prs_redis_op_free(op);
    ASSERT(rc == PRS_ECONN || rc == PRS_EBACKEND);
    ASSERT(strstr(prs_redis_last_error(), "redis") != NULL);
    prs_redis_limiter_free(deny);
    prs_redis_limiter_free(raise);
    prs_redis_backend_free(b);
}

TEST(redis_group_all_or_nothing) {
    server *s = server_start();
    prs_redis_backend *b = backend_for(s->url, 500);
    prs_redis_limiter *user = limiter_for(b, PRS_REDIS_TOKEN_BUCKET, 1, 3);
    prs_redis_limiter *global = limiter_for(b, PRS_REDIS_FIXED_WINDOW, 5, 3600);
    prs_redis_limiter *log = limiter_for(b, PRS_REDIS_SLIDING_WINDOW_LOG, 4, 3600);
    prs_redis_member m[3] = {{user, "{t}u1", 5, 1}, {global, "{t}all", 6, 1}, {log, "{t}all", 6, 1}};
    prs_decision d;
    int denied;
    int64_t now = 1000000000;
    for (int i = 0; i < 3; i++) {
        ASSERT_OK(prs_redis_group_check(3, m, now, &d, &denied));
        ASSERT(d.allowed);
        ASSERT_EQ(denied, -1);
    }
    ASSERT_OK(prs_redis_group_check(3, m, now, &d, &denied)); /* user bucket empty */
    ASSERT(!d.allowed);
    ASSERT_EQ(denied, 0);
    ASSERT_EQ(d.retry_after_ns, PRS_NS_PER_SEC);
    m[0].key = "{t}u2";
    ASSERT_OK(prs_redis_group_check(3, m, now, &d, &denied)); /* log has 1 left */
    ASSERT(d.allowed);
    ASSERT_OK(prs_redis_group_check(3, m, now, &d, &denied));
    ASSERT(!d.allowed);
    ASSERT_EQ(denied, 2);
    /* the denied groups consumed nothing: global used 4 of 5 */
    ASSERT_OK(prs_redis_limiter_check_at(global, "{t}all", 6, 1, now, &d));
    ASSERT(d.allowed);
    ASSERT_EQ(d.remaining, 0);
    /* the same key twice in one group counts twice */
    prs_redis_member twice[2] = {{user, "{t}u3", 5, 2}, {user, "{t}u3", 5, 2}};
    ASSERT_OK(prs_redis_group_check(2, twice, now, &d, &denied));
    ASSERT(!d.allowed);
    ASSERT_EQ(denied, 1);
    twice[1].n = 1;
    ASSERT_OK(prs_redis_group_check(2, twice, now, &d, &denied));
    ASSERT(d.allowed);
    ASSERT_EQ(d.remaining, 0);
    prs_redis_limiter_free(user);
    prs_redis_limiter_free(global);
    prs_redis_limiter_free(log);
    prs_redis_backend_free(b);
}

/* redis+cluster:// seeds: host:port lists; bad ones are refused with a message. */
TEST(redis_cluster_urls) {
    const char *bad[] = {"redis+cluster://", "redis+cluster://h:0", "redis+cluster://h:70000",
                         "redis+cluster://h:1,,", "redis+cluster://u:p@h:1", "redis+cluster://h:1/3",
                         "redis+cluster://h:x", "redis+sentinel://h:1", "redis+sentinel://h:1/",
                         "redis+sentinel:///m", "redis+sentinel://h:x/m", "redis+sentinel://h:1/m/0"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        prs_redis_config cfg;
        prs_redis_config_init(&cfg);
        cfg.url = bad[i];
        prs_redis_backend *b = NULL;
        if (prs_redis_backend_new(&cfg, &b) != PRS_EINVAL) PRS__FAIL("accepted %s", bad[i]);
        ASSERT(strstr(prs_redis_last_error(), "redis+") || strstr(prs_redis_last_error(), "seed"));
    }
    prs_redis_config cfg;
    prs_redis_config_init(&cfg);
    cfg.url = "redis+cluster://127.0.0.1:1,[::1]:2,localhost";
    prs_redis_backend *b = NULL;
    ASSERT_OK(prs_redis_backend_new(&cfg, &b));
    ASSERT(prs_redis_backend_is_cluster(b));
    ASSERT_EQ(prs_redis_backend_connections(b), 0);
    prs_redis_backend_free(b);
}

static int64_t stat_calls(prs_redis_backend *b, const char *command);

/* A random schedule (times, sizes; every eighth n beyond the limit) from
 * `now` through a single check and a group of one, on two keys that start
 * equal: every field of every decision agrees. Steps are up to 90 ms times
 * `scale`: a window limiter runs with a 30 s window and scale 100, so that
 * its keys' TTLs (which Redis counts on its own clock, not the schedule's)
 * outlast the test however slowly the machine runs it. */
static void single_as_group(prs_redis_limiter *l, int algo, int64_t now, uint64_t x, int64_t scale) {
    ASSERT_OK(prs_redis_limiter_reset(l, "single", 6));
    ASSERT_OK(prs_redis_limiter_reset(l, "group", 5));
    for (int i = 0; i < 300; i++) {
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        now += (int64_t)((x >> 33) % 90000) * scale;
        int64_t n = 1 + (int64_t)((x >> 20) % 3);
        if (((x >> 40) & 7) == 0) n = 5; /* beyond the limit: never */
        prs_decision ds, dg;
        int denied;
        ASSERT_OK(prs_redis_limiter_check_at(l, "single", 6, n, now, &ds));
        prs_redis_member m = {l, "group", 5, n};
        ASSERT_OK(prs_redis_group_check(1, &m, now, &dg, &denied));
        if (ds.allowed != dg.allowed || ds.remaining != dg.remaining || ds.retry_after_ns != dg.retry_after_ns ||
            ds.reset_after_ns != dg.reset_after_ns || ds.limit != dg.limit)
            PRS__FAIL("algo %d step %d n %lld: single {%d %lld %lld %lld} group {%d %lld %lld %lld}", algo, i,
                      (long long)n, ds.allowed, (long long)ds.remaining, (long long)ds.retry_after_ns,
                      (long long)ds.reset_after_ns, dg.allowed, (long long)dg.remaining,
                      (long long)dg.retry_after_ns, (long long)dg.reset_after_ns);
    }
}

/* The same, one key driven by single checks and groups in turn (each
 * reading what the other wrote), the other by groups only. */
static void mixed_as_group(prs_redis_limiter *l, int algo, int64_t now, uint64_t x) {
    ASSERT_OK(prs_redis_limiter_reset(l, "mixed", 5));
    ASSERT_OK(prs_redis_limiter_reset(l, "group", 5));
    for (int i = 0; i < 300; i++) {
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        now += (int64_t)((x >> 33) % 90000);
        int64_t n = 1 + (int64_t)((x >> 20) % 3);
        if (((x >> 40) & 7) == 0) n = 5;
        prs_decision ds, dg;
        int denied;
        if ((x >> 45) & 1) {
            ASSERT_OK(prs_redis_limiter_check_at(l, "mixed", 5, n, now, &ds));
        } else {
            prs_redis_member mm = {l, "mixed", 5, n};
            ASSERT_OK(prs_redis_group_check(1, &mm, now, &ds, &denied));
        }
        prs_redis_member m = {l, "group", 5, n};
        ASSERT_OK(prs_redis_group_check(1, &m, now, &dg, &denied));
        if (ds.allowed != dg.allowed || ds.remaining != dg.remaining || ds.retry_after_ns != dg.retry_after_ns ||
            ds.reset_after_ns != dg.reset_after_ns)
            PRS__FAIL("mixed algo %d step %d n %lld: {%d %lld %lld %lld} group {%d %lld %lld %lld}", algo, i,
                      (long long)n, ds.allowed, (long long)ds.remaining, (long long)ds.retry_after_ns,
                      (long long)ds.reset_after_ns, dg.allowed, (long long)dg.remaining,
                      (long long)dg.retry_after_ns, (long long)dg.reset_after_ns);
    }
}

/* The next reply of RESP text, through the reader an asyncio transport uses. */
static redisReply *resp(prs_redis_reader *rd, const char *text) {
    redisReply *r = NULL;
    if (prs_redis_reader_feed(rd, text, strlen(text)) || prs_redis_reader_next(rd, &r)) return NULL;
    return r;
}

/* A user key of l whose Redis key's slot is in [lo, hi]. */
static void key_in(prs_redis_limiter *l, int lo, int hi, char *key) {
    char rk[256];
    for (int i = 0;; i++) {
        snprintf(key, 16, "k%d", i);
        size_t n = prs_redis_limiter_redis_key(l, key, strlen(key), rk, sizeof rk);
        int slot = prs_redis_key_slot(rk, n);
        if (slot >= lo && slot <= hi) return;
    }
}

/* The reader, split anywhere and refusing what is not RESP; an op driving a
 * Cluster transport without a server: CLUSTER SLOTS first (stale map), one
 * send per node, MOVED resent to its target (the map then stale again), a
 * NOSCRIPT resent as EVAL to the node that answered, ASK resent after
 * ASKING, and the decisions from the replies put into the op. */
TEST(redis_op_steps_route_redirect_and_reload) {
    prs_redis_reader *rd;
    ASSERT_OK(prs_redis_reader_new(&rd));
    const char *text = "*2\r\n$1\r\nx\r\n:7\r\n+OK\r\n";
    redisReply *r = NULL;
    for (size_t i = 0; i + 5 < strlen(text); i++) {
        ASSERT_OK(prs_redis_reader_feed(rd, text + i, 1));
        ASSERT_OK(prs_redis_reader_next(rd, &r));
        ASSERT(r == NULL || i == strlen(text) - 6);
    }
    ASSERT(r && r->type == REDIS_REPLY_ARRAY && r->elements == 2 && r->element[1]->integer == 7);
    freeReplyObject(r);
    ASSERT_OK(prs_redis_reader_feed(rd, "+", 1));
    ASSERT_OK(prs_redis_reader_next(rd, &r));
    ASSERT(r == NULL);
    ASSERT_OK(prs_redis_reader_feed(rd, "OK\r\n?\r\n", 7));
    ASSERT_OK(prs_redis_reader_next(rd, &r));
    ASSERT(r && r->type == REDIS_REPLY_STATUS);
    freeReplyObject(r);
    ASSERT_EQ(prs_redis_reader_next(rd, &r), PRS_EPROTO);
    ASSERT_EQ(prs_redis_reader_feed(rd, "+OK\r\n", 5), PRS_EPROTO); /* broken for good */
    prs_redis_reader_free(rd);

    ASSERT_OK(prs_redis_reader_new(&rd));
    prs_redis_config cfg;
    prs_redis_config_init(&cfg);
    cfg.url = "redis+cluster://127.0.0.1:1,127.0.0.1:2";
    prs_redis_backend *b;
    ASSERT_OK(prs_redis_backend_new(&cfg, &b));
    prs_redis_limiter_config lc;
    prs_redis_limiter_config_init(&lc);
    prs_redis_limiter *l;
    ASSERT_OK(prs_redis_limiter_new(b, &lc, &l));
    char low[16], high[16], moved[64], ask[64], rk[256];
    key_in(l, 0, 8191, low);
    key_in(l, 8192, 16383, high);
    int hslot = prs_redis_key_slot(rk, prs_redis_limiter_redis_key(l, high, strlen(high), rk, sizeof rk));
    const char *slots = "*2\r\n*3\r\n:0\r\n:8191\r\n*2\r\n$9\r\n127.0.0.1\r\n:1\r\n"
                        "*3\r\n:8192\r\n:16383\r\n*2\r\n$9\r\n127.0.0.1\r\n:2\r\n";
    const char *yes = "$17\r\n1 5 4 0 1000000 0\r\n";
    prs_redis_request reqs[2] = {{low, strlen(low), 1}, {high, strlen(high), 1}};
    prs_redis_op *op;
    const prs_redis_send *s;
    size_t n;
    ASSERT_OK(prs_redis_op_many_new(l, 2, reqs, &op));
    ASSERT_OK(prs_redis_op_step(op, &s, &n)); /* the map is stale: CLUSTER SLOTS to the first seed */
    ASSERT(n == 1 && s[0].node == 0 && s[0].nreplies == 1 && memmem(s[0].buf, s[0].len, "SLOTS", 5));
    ASSERT_EQ(prs_redis_op_step(op, &s, &n), PRS_EINVAL); /* replies are due */
    ASSERT_EQ(prs_redis_op_put(op, 0, resp(rd, slots)), 1);
    ASSERT_OK(prs_redis_op_step(op, &s, &n)); /* one send per node */
    ASSERT(n == 2 && s[0].nreplies == 1 && s[1].nreplies == 1 && s[0].node != s[1].node);
    size_t to0 = s[0].node == 0 ? 0 : 1;
    snprintf(moved, sizeof moved, "-MOVED %d 127.0.0.1:1\r\n", hslot);
    ASSERT_EQ(prs_redis_op_put(op, to0, resp(rd, "-NOSCRIPT No matching script\r\n")), 0);
    ASSERT_EQ(prs_redis_op_put(op, 1 - to0, resp(rd, moved)), 1);
    ASSERT_EQ(prs_redis_op_put(op, 0, resp(rd, yes)), PRS_EINVAL); /* nothing due */
    ASSERT_OK(prs_redis_op_step(op, &s, &n)); /* both to node 0: the EVALSHA moved there, the EVAL */
    ASSERT(n == 1 && s[0].node == 0 && s[0].nreplies == 2);
    ASSERT(memmem(s[0].buf, s[0].len, "$4\r\nEVAL\r\n", 10) && memmem(s[0].buf, s[0].len, "EVALSHA", 7));
    ASSERT_EQ(prs_redis_op_put(op, 0, resp(rd, yes)), 0);
    ASSERT_EQ(prs_redis_op_put(op, 0, resp(rd, yes)), 1);
    ASSERT_OK(prs_redis_op_step(op, &s, &n));
    ASSERT_EQ(n, 0);
    prs_decision d[2];
    int st[2];
    ASSERT_OK(prs_redis_op_finish(op, PRS_OK, NULL, d, st, NULL));
    ASSERT(d[0].allowed && d[1].allowed && d[1].remaining == 4);
    prs_redis_op_free(op);
    /* ASK: the block once more after ASKING, the map kept; a MOVED made it stale */
    ASSERT_OK(prs_redis_op_limiter_new(l, PRS_REDIS_OP_CHECK, high, strlen(high), 1, -1, &op, d));
    ASSERT_OK(prs_redis_op_step(op, &s, &n));
    ASSERT(n == 1 && memmem(s[0].buf, s[0].len, "SLOTS", 5));
    ASSERT_EQ(prs_redis_op_put(op, 0, resp(rd, slots)), 1);
    ASSERT_OK(prs_redis_op_step(op, &s, &n));
    ASSERT(n == 1 && s[0].node == 1);
    snprintf(ask, sizeof ask, "-ASK %d 127.0.0.1:1\r\n", hslot);
    ASSERT_EQ(prs_redis_op_put(op, 0, resp(rd, ask)), 1);
    ASSERT_OK(prs_redis_op_step(op, &s, &n));
    ASSERT(n == 1 && s[0].node == 0 && s[0].nreplies == 2 && !memcmp(s[0].buf, "*1\r\n$6\r\nASKING\r\n", 16));
    ASSERT_EQ(prs_redis_op_put(op, 0, resp(rd, "+OK\r\n")), 0);
    ASSERT_EQ(prs_redis_op_put(op, 0, resp(rd, yes)), 1);
    ASSERT_OK(prs_redis_op_step(op, &s, &n));
    ASSERT_EQ(n, 0);
    ASSERT_OK(prs_redis_op_finish(op, PRS_OK, NULL, d, NULL, NULL));
    ASSERT(d[0].allowed);
    prs_redis_op_free(op);
    const char *host;
    int port;
    ASSERT_OK(prs_redis_backend_node(b, 1, &host, &port));
    ASSERT(!strcmp(host, "127.0.0.1") && port == 2);
    ASSERT_EQ(prs_redis_backend_node(b, 2, &host, &port), PRS_EINVAL);
    prs_redis_limiter_free(l);
    prs_redis_backend_free(b);
    prs_redis_reader_free(rd);
}

TEST(redis_sentinel_urls) {
    prs_redis_config cfg;
    prs_redis_config_init(&cfg);
    cfg.url = "redis+sentinel://127.0.0.1:1,127.0.0.1:2/mymaster";
    prs_redis_backend *b = NULL;
    ASSERT_OK(prs_redis_backend_new(&cfg, &b));
    ASSERT(!prs_redis_backend_is_cluster(b)); /* one server: groups need no common slot */
    prs_redis_limiter_config lc;
    prs_redis_limiter_config_init(&lc);
    lc.on_backend_error = PRS_REDIS_ALLOW;
    prs_redis_limiter *l;
    ASSERT_OK(prs_redis_limiter_new(b, &lc, &l));
    prs_decision d;
    ASSERT_OK(prs_redis_limiter_check(l, "k", 1, 1, &d)); /* no sentinel answers: the policy decides */
    ASSERT(d.allowed);
    prs_redis_op *op;
    const prs_redis_send *s;
    size_t n;
    ASSERT_OK(prs_redis_op_limiter_new(l, PRS_REDIS_OP_CHECK, "k", 1, 1, -1, &op, &d));
    ASSERT_OK(prs_redis_op_step(op, &s, &n)); /* ask a sentinel first */
    ASSERT(n == 1 && s[0].node < 2 && memmem(s[0].buf, s[0].len, "get-master-addr-by-name", 23));
    prs_redis_reader *rd;
    ASSERT_OK(prs_redis_reader_new(&rd));
    ASSERT_EQ(prs_redis_op_put(op, 0, resp(rd, "*2\r\n$9\r\n127.0.0.1\r\n$4\r\n6390\r\n")), 1);
    ASSERT_OK(prs_redis_op_step(op, &s, &n)); /* then the master it named, a node of its own */
    ASSERT(n == 1 && s[0].node == 2 && memmem(s[0].buf, s[0].len, "EVALSHA", 7));
    ASSERT_EQ(prs_redis_op_put(op, 0, resp(rd, "-READONLY You can't write against a read only replica.\r\n")), 1);
    ASSERT_OK(prs_redis_op_step(op, &s, &n)); /* a replica now: ask again */
    ASSERT(n == 1 && s[0].node < 2 && memmem(s[0].buf, s[0].len, "get-master-addr-by-name", 23));
    ASSERT_EQ(prs_redis_op_put(op, 0, resp(rd, "*2\r\n$9\r\n127.0.0.1\r\n$4\r\n6391\r\n")), 1);
    ASSERT_OK(prs_redis_op_step(op, &s, &n));
    ASSERT(n == 1 && s[0].node == 3);
    ASSERT_EQ(prs_redis_op_put(op, 0, resp(rd, "$17\r\n1 5 4 0 1000000 0\r\n")), 1);
    ASSERT_OK(prs_redis_op_step(op, &s, &n));
    ASSERT_EQ(n, 0);
    ASSERT_OK(prs_redis_op_finish(op, PRS_OK, NULL, &d, NULL, NULL));
    ASSERT(d.allowed && d.remaining == 4);
    prs_redis_op_free(op);
    const char *host;
    int port;
    ASSERT_OK(prs_redis_backend_node(b, 3, &host, &port));
    ASSERT_EQ(port, 6391);
    prs_redis_reader_free(rd);
    prs_redis_limiter_free(l);
    prs_redis_backend_free(b);
}

/* The single-decision scripts are written straight through for server CPU
 * while the group script keeps one function set per algorithm: both must
 * decide exactly alike on the same stored state. */
TEST(redis_single_scripts_decide_as_group_script) {
    server *s = server_start();
    prs_redis_backend *b = backend_for(s->url, 1000);
    /* at 3e9 us a bucket's times mostly have fine fractions (the check
     * scripts answer with the decision string); at 1.7e15 us (a real clock)
     * they are whole quarters (the one-integer answer) and a bucket's check
     * keeps its state in quarters (one INCRBY); at 8/s, T is 125000 us: the INCRBY
     * form of the bucket check; at 3/s and 7/s (T 333333.33.. and
     * 142857.14.. us) the quarter form again, the 7/s run crossing 2^51 us
     * (where doubles stop being whole quarters: the GET + SET form) */
    static const double rates[] = {7.5, 7.5, 8, 3, 7};
    static const int64_t starts[] = {3000000000, INT64_C(1700000000000000), INT64_C(1700000000000000),
                                     INT64_C(1700000000000000), (INT64_C(1) << 51) - 6000000};
    for (int pass = 0; pass < 5; pass++)
    for (int algo = 0; algo < PRS_REDIS__ALGORITHM_COUNT; algo++) {
        int rate = algo <= 1;
        if (pass >= 2 && !rate) continue;
        prs_redis_limiter *l = rate ? limiter_for(b, algo, rates[pass], 4) : limiter_for(b, algo, 4, 30);
        /* odd microseconds: off the window grid */
        single_as_group(l, algo, starts[pass] + 123457, 4242 + (uint64_t)algo + 100 * (uint64_t)pass,
                        rate ? 1 : 100);
        if (rate && pass) mixed_as_group(l, algo, starts[pass] + 123457, 777 + (uint64_t)algo + 100 * (uint64_t)pass);
        prs_redis_limiter_free(l);
    }
    prs_redis_backend_free(b);
}

/* The quarter form of the bucket check reads every form a bucket's key may
 * hold (microseconds written by the other scripts with %.17g or as an
 * integer, quarters, an old token bucket's "tokens last", stale, negative,
 * past 2^51 us, deep in debt), and the group script reads the quarters it
 * leaves: every decision, and the state left behind, are the group
 * script's on the same value. */
TEST(redis_bucket_quarter_form_reads_stored_forms) {
    server *s = server_start();
    prs_redis_backend *b = backend_for(s->url, 1000);
    static const char *forms[] = {
        NULL, "1700000000123457.2", "1700000000456790.7000732421875", "1700000000800000",
        "2.5 1700000000000000", "3000000000.333", "-5", "2251799813685300", "1700000001500000",
        "1700000001000000.5", "6800000000493828", "6800000003200001", "6800000009000000", "6800000000000000",
        "9007199254740000",
    };
    int64_t now = INT64_C(1700000000123457);
    for (int algo = PRS_REDIS_GCRA; algo <= PRS_REDIS_TOKEN_BUCKET; algo++) {
        prs_redis_limiter *l = limiter_for(b, algo, 3, 4);
        char ks[256], kg[256], out[128], vs[128], vg[128];
        ks[prs_redis_limiter_redis_key(l, "fs", 2, ks, sizeof ks - 1)] = 0;
        kg[prs_redis_limiter_redis_key(l, "fg", 2, kg, sizeof kg - 1)] = 0;
        for (size_t f = 0; f < sizeof forms / sizeof forms[0]; f++) {
            for (int step = 0; step < 3; step++) {
                if (step == 0) {
                    cmd(b, out, sizeof out, 2, "DEL", ks);
                    cmd(b, out, sizeof out, 2, "DEL", kg);
                    if (forms[f]) {
                        cmd(b, out, sizeof out, 5, "SET", ks, forms[f], "PX", "100000000");
                        cmd(b, out, sizeof out, 5, "SET", kg, forms[f], "PX", "100000000");
                    }
                }
                int64_t n = step == 2 ? 2 : 1, t = now + 1000 * step;
                prs_decision ds, dg;
                int denied;
                ASSERT_OK(prs_redis_limiter_check_at(l, "fs", 2, n, t, &ds));
                prs_redis_member m = {l, "fg", 2, n};
                ASSERT_OK(prs_redis_group_check(1, &m, t, &dg, &denied));
                if (ds.allowed != dg.allowed || ds.remaining != dg.remaining ||
                    ds.retry_after_ns != dg.retry_after_ns || ds.reset_after_ns != dg.reset_after_ns)
                    PRS__FAIL("algo %d form %zu step %d: single {%d %lld %lld %lld} group {%d %lld %lld %lld}",
                              algo, f, step, ds.allowed, (long long)ds.remaining, (long long)ds.retry_after_ns,
                              (long long)ds.reset_after_ns, dg.allowed, (long long)dg.remaining,
                              (long long)dg.retry_after_ns, (long long)dg.reset_after_ns);
                cmd(b, vs, sizeof vs, 2, "GET", ks);
                cmd(b, vg, sizeof vg, 2, "GET", kg);
                /* the same state: the same number (an old token bucket value
                 * denied and left as it was: the same text) */
                double xs = strtod(vs, NULL), xg = strtod(vg, NULL);
                if (xs >= 4503599627370496.0) xs /= 4;
                if (xg >= 4503599627370496.0) xg /= 4;
                if (strcmp(vs, vg) && xs != xg)
                    PRS__FAIL("algo %d form %zu step %d: single left '%s', group '%s'", algo, f, step, vs, vg);
                cmd(b, out, sizeof out, 2, "PTTL", ks);
                ASSERT(atoll(out) != -1); /* never a key without a TTL */
            }
        }
        prs_redis_limiter_free(l);
    }
    prs_redis_backend_free(b);
}

/* Once the table of specialised check scripts is full (1024 configurations
 * in this process), a new configuration runs the generic check scripts,
 * which read the parameters from ARGV: the same decisions. */
TEST(redis_generic_check_scripts_when_the_table_is_full) {
    server *s = server_start();
    prs_redis_backend *b = backend_for(s->url, 1000);
    int slot = 0;
    for (int i = 0; slot >= 0; i++) slot = prs_redis__check_script(PRS_REDIS_GCRA, 1000 + i, 7, 0);
    for (int pass = 0; pass < 2; pass++)
    for (int algo = 0; algo < PRS_REDIS__ALGORITHM_COUNT; algo++) {
        int rate = algo <= 1;
        int64_t incrs = stat_calls(b, "incrby");
        prs_redis_limiter *l = rate ? limiter_for(b, algo, pass ? 8 : 7.5, 4) : limiter_for(b, algo, 4, 30);
        single_as_group(l, algo, INT64_C(1700000000000000) + 123457, 77 + (uint64_t)algo + 100 * (uint64_t)pass,
                        rate ? 1 : 100);
        prs_redis_limiter_free(l);
        if (rate) ASSERT_EQ(stat_calls(b, "incrby"), incrs); /* the INCRBY form is a specialised script's */
    }
    prs_redis_backend_free(b);
}

/* The token bucket is stored as GCRA's state since the check scripts (one
 * number: the time the bucket is full again). A key written by an earlier
 * version ("tokens last", two %.17g numbers) is read as the same bucket by
 * the check script, the general script (peek) and the group script. */
TEST(redis_old_token_bucket_value_is_read) {
    server *s = server_start();
    prs_redis_backend *b = backend_for(s->url, 1000);
    prs_redis_limiter *l = limiter_for(b, PRS_REDIS_TOKEN_BUCKET, 1, 10); /* 1 token/s, capacity 10 */
    int64_t now = INT64_C(1700000000000000);
    char key[64], val[64], out[32];
    size_t len = prs_redis_limiter_redis_key(l, "old", 3, key, sizeof key);
    key[len] = '\0';
    prs_decision d;
    for (int how = 0; how < 3; how++) {
        /* 4 tokens at now - 1 s: 5 at now */
        snprintf(val, sizeof val, "4 %lld", (long long)(now - 1000000));
        cmd(b, out, sizeof out, 5, "SET", key, val, "PX", "60000");
        if (how == 0) {
            ASSERT_OK(prs_redis_limiter_check_at(l, "old", 3, 2, now, &d));
        } else if (how == 1) {
            /* peek runs on Redis's clock: a bucket last seen in 2223 holds 4
             * tokens then and has not refilled since (a full one would admit) */
            cmd(b, out, sizeof out, 5, "SET", key, "4 8000000000000000", "PX", "60000");
            ASSERT_OK(prs_redis_limiter_peek(l, "old", 3, 5, &d));
            ASSERT(!d.allowed);
            continue;
        } else {
            prs_redis_member m = {l, "old", 3, 2};
            int denied;
            ASSERT_OK(prs_redis_group_check(1, &m, now, &d, &denied));
        }
        ASSERT(d.allowed);
        ASSERT_EQ(d.remaining, 3);
        ASSERT_EQ(d.limit, 10);
    }
    /* the group wrote the new form: 3 tokens at now, full 7 s later */
    cmd(b, out, sizeof out, 2, "GET", key);
    ASSERT_EQ(atoll(out), now + 7000000);
    ASSERT_OK(prs_redis_limiter_check_at(l, "old", 3, 4, now, &d));
    ASSERT(!d.allowed);
    ASSERT_EQ(d.remaining, 3);
    ASSERT_EQ(d.retry_after_ns, INT64_C(1000000000));
    prs_redis_limiter_free(l);
    prs_redis_backend_free(b);
}

/* The sliding log names its entries "t:<count + i>" (no ZCOUNT). With a clock
 * that goes back a name can already exist; the entry is then added under the
 * next free number, so the log still holds one entry per permit. */
TEST(redis_log_names_survive_a_clock_step_back) {
    server *s = server_start();
    prs_redis_backend *b = backend_for(s->url, 1000);
    prs_redis_limiter *l = limiter_for(b, PRS_REDIS_SLIDING_WINDOW_LOG, 10, 60); /* 10 per 60 s */
    char key[64], out[32];
    size_t len = prs_redis_limiter_redis_key(l, "back", 4, key, sizeof key);
    key[len] = '\0';
    int64_t t0 = INT64_C(1700000000000000);
    prs_decision d;
    ASSERT_OK(prs_redis_limiter_check_at(l, "back", 4, 2, t0, &d));          /* t0:1, t0:2 */
    ASSERT_OK(prs_redis_limiter_check_at(l, "back", 4, 1, t0 + 30000000, &d)); /* t0+30s:3 */
    ASSERT_OK(prs_redis_limiter_check_at(l, "back", 4, 1, t0 + 72000000, &d)); /* t0 gone; t0+72s:2 */
    ASSERT(d.allowed);
    ASSERT_EQ(d.remaining, 8);
    /* back to t0 + 30 s: two live entries, so the next name is t0+30s:3 - taken */
    ASSERT_OK(prs_redis_limiter_check_at(l, "back", 4, 1, t0 + 30000000, &d));
    ASSERT(d.allowed);
    ASSERT_EQ(d.remaining, 7);
    cmd(b, out, sizeof out, 2, "ZCARD", key);
    ASSERT_EQ(atoll(out), 3);
    /* the same through a group (its own store) and with n > 1 */
    prs_redis_member m = {l, "back", 4, 2};
    int denied;
    ASSERT_OK(prs_redis_group_check(1, &m, t0 + 30000000, &d, &denied));
    ASSERT(d.allowed);
    ASSERT_OK(prs_redis_limiter_check_at(l, "back", 4, 2, t0 + 30000000, &d));
    ASSERT(d.allowed);
    ASSERT_EQ(d.remaining, 3);
    cmd(b, out, sizeof out, 2, "ZCARD", key);
    ASSERT_EQ(atoll(out), 7);
    prs_redis_limiter_free(l);
    prs_redis_backend_free(b);
}

static int64_t stat_calls(prs_redis_backend *b, const char *command) {
    char script[200], out[64];
    snprintf(script, sizeof script,
             "local s = redis.call('INFO', 'commandstats') "
             "return tonumber(string.match(s, 'cmdstat_%s:calls=(%%d+)') or '0')", command);
    cmd(b, out, sizeof out, 3, "EVAL", script, "0");
    return atoll(out);
}

/* Server CPU: a decision's script reads no clock (the backend sends Redis's
 * time, learned at connect), and a fixed or sliding-counter window written
 * again inside its window keeps its TTL instead of setting it anew. */
TEST(redis_scripts_cheap_paths) {
    server *s = server_start();
    prs_redis_backend *b = backend_for(s->url, 1000);
    cmd(b, NULL, 0, 2, "CONFIG", "RESETSTAT");
    for (int algo = 0; algo < PRS_REDIS__ALGORITHM_COUNT; algo++) {
        int rate = algo <= 1;
        prs_redis_limiter *l = rate ? limiter_for(b, algo, 100, 10) : limiter_for(b, algo, 10, 3600);
        prs_decision d;
        for (int i = 0; i < 3; i++) ASSERT_OK(prs_redis_limiter_check(l, "k", 1, 1, &d));
        ASSERT_OK(prs_redis_limiter_peek(l, "k", 1, 1, &d));
        prs_redis_limiter_free(l);
    }
    ASSERT_EQ(stat_calls(b, "time"), 0);
    /* the sliding log's check names its entries without a ZCOUNT */
    ASSERT_EQ(stat_calls(b, "zcount"), 0);
    /* a bucket in debt, admitted checks: one INCRBY each (no GET, no SET), with
     * T in whole microseconds (1000/s) and, on a real clock, not (3/s: the
     * state in quarter microseconds) */
    static const struct { double rate; const char *key; } forms[] = {{1000, "inc"}, {3, "flt"}};
    for (int f = 0; f < 2; f++)
        for (int algo = PRS_REDIS_GCRA; algo <= PRS_REDIS_TOKEN_BUCKET; algo++) {
            const char *key = forms[f].key;
            prs_redis_limiter *l = limiter_for(b, algo, forms[f].rate, 1000000);
            prs_decision d;
            int64_t t = INT64_C(1700000000000000);
            ASSERT_OK(prs_redis_limiter_check_at(l, key, 3, 1, t, &d)); /* spent: INCRBY + SET */
            int64_t gets = stat_calls(b, "get"), sets = stat_calls(b, "set");
            int64_t incrs = stat_calls(b, "incrby");
            for (int i = 1; i <= 5; i++) {
                ASSERT_OK(prs_redis_limiter_check_at(l, key, 3, 1, t + i, &d));
                ASSERT(d.allowed);
                ASSERT_EQ(d.remaining, 1000000 - 1 - i);
                if (f == 0) ASSERT_EQ(d.reset_after_ns, (1000 * (i + 1) - i) * INT64_C(1000));
            }
            ASSERT_EQ(stat_calls(b, "get"), gets);
            ASSERT_EQ(stat_calls(b, "set"), sets);
            ASSERT_EQ(stat_calls(b, "incrby"), incrs + 5);
            if (f == 1) {
                char rk[256], out[64];
                rk[prs_redis_limiter_redis_key(l, key, 3, rk, sizeof rk - 1)] = 0;
                cmd(b, out, sizeof out, 2, "GET", rk); /* tat in quarters: (t + 6 T) * 4 */
                ASSERT_EQ(atoll(out), 4 * t + 6 * 1333333);
            }
            prs_redis_limiter_free(l);
        }
    /* the fixed window decides without a script: MULTI/BITFIELD/EXEC */
    int64_t scripts = stat_calls(b, "evalsha"), bitfields = stat_calls(b, "bitfield");
    prs_redis_limiter *fw = limiter_for(b, PRS_REDIS_FIXED_WINDOW, 2, 3600);
    prs_decision d;
    for (int i = 0; i < 4; i++) {
        ASSERT_OK(prs_redis_limiter_check_at(fw, "nos", 3, 1, 36000000000 + i, &d));
        ASSERT_EQ(d.allowed, i < 2);
    }
    prs_redis_limiter_free(fw);
    ASSERT_EQ(stat_calls(b, "evalsha"), scripts);
    ASSERT_EQ(stat_calls(b, "bitfield"), bitfields + 4);
    for (int algo = PRS_REDIS_FIXED_WINDOW; algo <= PRS_REDIS_SLIDING_WINDOW_COUNTER; algo++) {
        prs_redis_limiter *l = limiter_for(b, algo, 10, 3600);
        int64_t start = 7200 * INT64_C(1000000) * 1000; /* a window start, in us */
        prs_decision d;
        ASSERT_OK(prs_redis_limiter_check_at(l, "ttl", 3, 1, start + 1000000, &d)); /* 3599 s left */
        ASSERT_OK(prs_redis_limiter_check_at(l, "ttl", 3, 1, start + 3000000000LL, &d)); /* 600 s left */
        ASSERT(d.allowed);
        char key[64], out[32];
        size_t len = prs_redis_limiter_redis_key(l, "ttl", 3, key, sizeof key);
        key[len] = '\0';
        strcat(key, algo == PRS_REDIS_FIXED_WINDOW ? "2000/10" : "2000"); /* one key per window */
        cmd(b, out, sizeof out, 2, "PTTL", key);
        /* kept from the first write (the window's end), not reset from the second */
        if (algo == PRS_REDIS_FIXED_WINDOW) ASSERT(atoll(out) > 3500 * 1000);
        else ASSERT(atoll(out) > 7100 * 1000);
        prs_redis_limiter_free(l);
    }
    prs_redis_backend_free(b);
}

/* A bucket's key (GCRA, token bucket) keeps its TTL while its state's expiry
 * step (1/16 of the full refill time, clamped to 1 ms..1 s; 1 s here) is
 * unchanged, and its TTL always lies between the state's remaining life and
 * that plus the step (+ 1 ms of rounding). */
static int64_t bucket_pttl(prs_redis_backend *b, prs_redis_limiter *l) {
    char key[64], out[32];
    size_t len = prs_redis_limiter_redis_key(l, "lazy", 4, key, sizeof key);
    key[len] = '\0';
    cmd(b, out, sizeof out, 2, "PTTL", key);
    return atoll(out);
}

TEST(redis_bucket_ttl_is_lazy_and_bounded) {
    server *s = server_start();
    prs_redis_backend *b = backend_for(s->url, 1000);
    for (int algo = PRS_REDIS_GCRA; algo <= PRS_REDIS_TOKEN_BUCKET; algo++) {
        /* 1000 permits/s, a million of burst: each permit is 1 ms of state */
        prs_redis_limiter *l = limiter_for(b, algo, 1000, 1000000);
        int64_t now = INT64_C(1000000000000); /* on a step boundary */
        prs_decision d;
        ASSERT_OK(prs_redis_limiter_check_at(l, "lazy", 4, 1, now, &d));
        ASSERT(d.allowed);
        int64_t first = bucket_pttl(b, l); /* state lives 1 ms: the step's end, 1 s */
        ASSERT(first >= 990 && first <= 1000);
        for (int i = 1; i <= 5; i++) {
            ASSERT_OK(prs_redis_limiter_check_at(l, "lazy", 4, 1, now + 10 * i, &d));
            ASSERT(d.allowed);
            int64_t ttl = bucket_pttl(b, l); /* kept, not set anew from the grown state */
            ASSERT(ttl <= first && ttl >= 990);
        }
        /* a state past the step moves the TTL: 1.006 s of state, expiry step 2 s */
        ASSERT_OK(prs_redis_limiter_check_at(l, "lazy", 4, 1000, now + 100, &d));
        ASSERT(d.allowed);
        int64_t ttl = bucket_pttl(b, l);
        ASSERT(ttl >= 1006 - 10 && ttl <= 2000);
        /* every state stays within [life, life + step + 1 ms] */
        for (int i = 0; i < 50; i++) {
            int64_t t = now + 200 + 20000 * i, n = 1 + (i * 37) % 500;
            ASSERT_OK(prs_redis_limiter_check_at(l, "lazy", 4, n, t, &d));
            ASSERT(d.allowed);
            double life_ms = d.reset_after_ns / 1e6;
            ttl = bucket_pttl(b, l);
            ASSERT((double)ttl >= life_ms - 10 && (double)ttl <= life_ms + 1000 + 2);
        }
        prs_redis_limiter_free(l);
    }
    prs_redis_backend_free(b);
}

static int64_t server_calls(prs_redis_backend *b) {
    char out[64];
    const char *argv[2] = {"EVAL", "local s = redis.call('INFO', 'commandstats') "
                                   "local n = string.match(s, 'cmdstat_evalsha:calls=(%d+)') return tonumber(n or '0')"};
    size_t lens[3] = {4, strlen(argv[1]), 1};
    const char *argv3[3] = {argv[0], argv[1], "0"};
    ASSERT_OK(prs_redis_command(b, 3, argv3, lens, out, sizeof out));
    return atoll(out);
}

TEST(redis_leases) {
    server *s = server_start();
    prs_redis_backend *b = backend_for(s->url, 500);
    prs_redis_limiter_config cfg;
    prs_redis_limiter_config_init(&cfg);
    cfg.algorithm = PRS_REDIS_GCRA;
    cfg.rate = 1000;
    cfg.burst = 200;
    cfg.lease_batch = 50;
    cfg.lease_max_hold_ns = 50 * PRS_NS_PER_MS;
    prs_redis_limiter *l, *strict;
    ASSERT_OK(prs_redis_limiter_new(b, &cfg, &l));
    cfg.lease_batch = 0;
    ASSERT_OK(prs_redis_limiter_new(b, &cfg, &strict));
    int64_t calls0 = server_calls(b);
    int64_t t0 = prs_monotonic_ns();
    int admitted = 0;
    for (int i = 0; i < 2000; i++) {
        prs_decision d;
        ASSERT_OK(prs_redis_limiter_check(l, "lk", 2, 1, &d));
        admitted += d.allowed;
    }
    double elapsed = (double)(prs_monotonic_ns() - t0) / 1e9;
    int64_t trips = server_calls(b) - calls0;
    /* never more than the shared limit */
    ASSERT(admitted <= 200 + 1000 * elapsed + 1);
    ASSERT(admitted >= 200);
    ASSERT(trips * 10 <= 2000);
    /* what the lease holds is visible to a strict limiter on the same key only
     * after it is given back */
    prs_decision d;
    ASSERT_OK(prs_redis_limiter_release_leases(l));
    ASSERT_OK(prs_redis_limiter_peek(strict, "lk", 2, 1, &d));
    ASSERT_OK(prs_redis_limiter_reset(l, "lk", 2));
    ASSERT_OK(prs_redis_limiter_check(strict, "lk", 2, 200, &d));
    ASSERT(d.allowed);
    prs_redis_limiter_free(l);
    prs_redis_limiter_free(strict);
    prs_redis_backend_free(b);
}

/* Kill the server mid-load: every call fails fast with a status; restart it:
 * decisions resume within 1 s; no connection growth. */
TEST(redis_kill_restart) {
    server *s = server_start();
    prs_redis_backend *b = backend_for(s->url, 100);
    prs_redis_limiter *l = limiter_for(b, PRS_REDIS_GCRA, 1e6, 1000000);
    prs_decision d;
    for (int i = 0; i < 50; i++) ASSERT_OK(prs_redis_limiter_check(l, "k", 1, 1, &d));
    server_stop();
    int64_t worst = 0;
    int fails = 0;
    for (int i = 0; i < 200; i++) {
        int64_t t = prs_monotonic_ns();
        int rc = prs_redis_limiter_check(l, "k", 1, 1, &d);
        worst = prs__max64(worst, prs_monotonic_ns() - t);
        if (rc != PRS_OK) fails++;
        ASSERT(rc == PRS_OK || rc == PRS_ECONN || rc == PRS_EBACKEND || rc == PRS_ETIMEDOUT);
    }
    ASSERT_EQ(fails, 200);
    ASSERT(worst < 150 * PRS_NS_PER_MS);
    ASSERT(strlen(prs_redis_last_error()) > 0);
    server_spawn(s);
    ASSERT(server_ready(s, 300));
    int64_t back = prs_monotonic_ns();
    while (prs_redis_limiter_check(l, "k", 1, 1, &d) != PRS_OK) {
        ASSERT(prs_monotonic_ns() - back < PRS_NS_PER_SEC);
        prs_sleep_ns(5 * PRS_NS_PER_MS);
    }
    ASSERT(prs_redis_backend_connections(b) <= 1);
    prs_redis_limiter_free(l);
    prs_redis_backend_free(b);
}

/* A stalled server (SIGSTOP): calls time out within the budget, the circuit
 * then fails fast, and SIGCONT brings decisions back. */
TEST(redis_stalled_server_times_out) {
    server *s = server_start();
    prs_redis_backend *b = backend_for(s->url, 80);
    prs_redis_limiter *l = limiter_for(b, PRS_REDIS_FIXED_WINDOW, 1000000, 60);
    prs_decision d;
    ASSERT_OK(prs_redis_limiter_check(l, "k", 1, 1, &d));
    kill(s->pid, SIGSTOP);
    int64_t worst = 0;
    int timeouts = 0, fast = 0;
    for (int i = 0; i < 10; i++) {
        int64_t t = prs_monotonic_ns();
        int rc = prs_redis_limiter_check(l, "k", 1, 1, &d);
        int64_t took = prs_monotonic_ns() - t;
        worst = prs__max64(worst, took);
        ASSERT(rc == PRS_ETIMEDOUT || rc == PRS_EBACKEND);
        timeouts += rc == PRS_ETIMEDOUT;
        fast += rc == PRS_EBACKEND && took < 10 * PRS_NS_PER_MS;
    }
    ASSERT(worst < 130 * PRS_NS_PER_MS);
    ASSERT_EQ(timeouts, 3);  /* then the circuit is open */
    ASSERT_EQ(fast, 7);
    kill(s->pid, SIGCONT);
    int64_t back = prs_monotonic_ns();
    while (prs_redis_limiter_check(l, "k", 1, 1, &d) != PRS_OK) {
        ASSERT(prs_monotonic_ns() - back < PRS_NS_PER_SEC);
        prs_sleep_ns(5 * PRS_NS_PER_MS);
    }
    prs_redis_limiter_free(l);
    prs_redis_backend_free(b);
}

TEST(redis_fork) {
    server *s = server_start();
    prs_redis_backend *b = backend_for(s->url, 500);
    prs_redis_limiter_config cfg;
    prs_redis_limiter_config_init(&cfg);
    cfg.rate = 1;
    cfg.burst = 100;
    cfg.lease_batch = 10;
    cfg.lease_max_hold_ns = 10 * PRS_NS_PER_SEC;
    prs_redis_limiter *l;
    ASSERT_OK(prs_redis_limiter_new(b, &cfg, &l));
    prs_decision d;
    ASSERT_OK(prs_redis_limiter_check(l, "f", 1, 1, &d)); /* parent holds 9 leased */
    ASSERT_EQ(prs_redis_backend_connections(b), 1);
    pid_t pid = fork();
    if (pid == 0) {
        int ok = prs_redis_backend_connections(b) == 0; /* the parent's socket is not ours */
        for (int i = 0; i < 5 && ok; i++) ok = prs_redis_limiter_check(l, "f", 1, 1, &d) == PRS_OK && d.allowed;
        /* the child took its own lease: the shared state shows 10 + 10 taken */
        ok = ok && prs_redis_limiter_peek(l, "f", 1, 1, &d) == PRS_OK && d.remaining >= 79 && d.remaining <= 80;
        _exit(ok ? 0 : 1);
    }
    int status;
    waitpid(pid, &status, 0);
    ASSERT(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    for (int i = 0; i < 9; i++) { ASSERT_OK(prs_redis_limiter_check(l, "f", 1, 1, &d)); ASSERT(d.allowed); }
    ASSERT_OK(prs_redis_ping(b));
    prs_redis_limiter_free(l);
    prs_redis_backend_free(b);
}

/* ---- a hostile fake server ------------------------------------------------ */

/* Forks a fake Redis on 127.0.0.1 (a free port) that answers every request
 * with `reply` (len bytes), one byte per drip_ms when drip_ms > 0. Returns
 * its pid; *port is set. It dies with the test (PR_SET_PDEATHSIG). */
static pid_t fake_server(const char *reply, size_t len, int drip_ms, int *port) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    ASSERT(fd >= 0);
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ASSERT(bind(fd, (struct sockaddr *)&a, sizeof a) == 0);
    ASSERT(listen(fd, 16) == 0);
    socklen_t alen = sizeof a;
    getsockname(fd, (struct sockaddr *)&a, &alen);
    *port = ntohs(a.sin_port);
    pid_t pid = fork();
    ASSERT(pid >= 0);
    if (pid > 0) { close(fd); return pid; }
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    signal(SIGPIPE, SIG_IGN);
    for (;;) {
        int c = accept(fd, NULL, NULL);
        if (c < 0) continue;
        if (fork() == 0) {
            prctl(PR_SET_PDEATHSIG, SIGKILL);
            char buf[4096];
            while (read(c, buf, sizeof buf) > 0) {
                for (size_t i = 0; i < len; i += drip_ms > 0 ? 1 : len) {
                    if (write(c, reply + i, drip_ms > 0 ? 1 : len) < 0) _exit(0);
                    if (drip_ms > 0) prs_sleep_ns(drip_ms * PRS_NS_PER_MS);
                }
            }
            _exit(0);
        }
        close(c);
    }
}

/* Whatever the server sends, a call returns within its timeout plus the
 * margin (asserted generously: the point is 250 ms against the seconds a
 * reply announcing 2^31 elements used to cost, or forever for a drip). */
TEST(redis_hostile_replies_bounded) {
    if (getenv("PRS_SKIP_REDIS")) return;
    static const struct { const char *reply; int drip_ms; int want; } cases[] = {
        {"*2147483647\r\n", 0, PRS_EPROTO},
        {"*3\r\n*65536\r\n*65536\r\n*65536\r\n*65536\r\n*65536\r\n", 0, PRS_ETIMEDOUT},
        {"*-7\r\n", 0, PRS_EPROTO},
        {"$2147483647\r\nabc", 0, PRS_ETIMEDOUT},
        {"+PONG\r\n", 200, PRS_ETIMEDOUT}, /* one byte per 200 ms */
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        int port;
        pid_t pid = fake_server(cases[k].reply, strlen(cases[k].reply), cases[k].drip_ms, &port);
        for (int with_auth = 0; with_auth < 2; with_auth++) {
            char url[128];
            snprintf(url, sizeof url, "redis://%s127.0.0.1:%d/2", with_auth ? "u:secret@" : "", port);
            prs_redis_backend *b = backend_for(url, 250);
            int64_t t = prs_monotonic_ns();
            int rc = prs_redis_ping(b);
            int64_t took = prs_monotonic_ns() - t;
            if (rc != cases[k].want)
                PRS__FAIL("case %zu: %s, expected %s (%s)", k, prs_err_name(rc), prs_err_name(cases[k].want),
                          prs_redis_last_error());
            if (took > 250 * PRS_NS_PER_MS + PRS_REDIS_MARGIN_NS + 500 * PRS_NS_PER_MS)
                PRS__FAIL("case %zu: a call took %lld ms", k, (long long)(took / PRS_NS_PER_MS));
            if (with_auth) ASSERT(strstr(prs_redis_last_error(), "AUTH") != NULL);
            ASSERT(strstr(prs_redis_last_error(), "secret") == NULL);
            prs_redis_backend_free(b);
        }
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
    }
}

/* Run by tests/test_redis.py::test_c_suite_leaves_no_temp_dirs with
 * PRS_TEST_PROBE=pass|fail|crash|hang: it writes its server's directory to
 * the file PRS_TEST_PROBE_OUT, then ends that way, and the caller checks that
 * the directory is gone. A plain run just passes. */
TEST(redis_tmpdir_probe) {
    server *s = server_start();
    ASSERT(strncmp(s->dir, prs_test_tmpdir(), strlen(prs_test_tmpdir())) == 0);
    const char *out = getenv("PRS_TEST_PROBE_OUT"), *mode = getenv("PRS_TEST_PROBE");
    if (out) {
        FILE *f = fopen(out, "w");
        ASSERT(f != NULL);
        fprintf(f, "%s\n", s->dir);
        fclose(f);
    }
    if (!mode) return;
    if (!strcmp(mode, "fail")) PRS__FAIL("failing on purpose (PRS_TEST_PROBE=fail)");
    if (!strcmp(mode, "crash")) { signal(SIGABRT, SIG_DFL); abort(); }
    if (!strcmp(mode, "hang")) for (;;) pause();
}

#endif /* PRS_HAVE_HIREDIS */
