/*
 * redis.c - the Redis backend: URL parsing, a small connection pool, timeouts,
 * reconnection, a circuit that stops hammering a dead server, and fork safety.
 *
 * Pool. `mu` guards idle[], nidle, nopen and closed; it is held only to pop or
 * push a connection, never across I/O. A connection belongs to one thread from
 * checkout to give-back. At most max_connections are open; a caller finding
 * none idle and the pool at its cap waits on `cv` (CLOCK_MONOTONIC) until its
 * deadline. Connections are opened lazily, inside the call that needs one.
 *
 * Deadlines. A call has a budget of `timeout` from its start. Dialing uses
 * min(connect_timeout, what is left), and a freshly dialed connection gets
 * the remaining budget as its socket timeout for this call (the full timeout
 * is restored when it is given back), so one call never waits much longer
 * than `timeout` in total. A pooled connection that fails at once with EOF or
 * a reset (the server restarted) is dropped with every other idle one, and
 * the call retries once on a fresh connection; a timeout is never retried.
 *
 * Circuit. `failures` counts consecutive connection-level failures (refused,
 * reset, timed out). At PRS_REDIS_TRIP_FAILURES the circuit opens for
 * PRS_REDIS_OPEN_NS: calls fail at once instead of waiting out a timeout each.
 * After that, a single call (the probe, `probing`) tries again while the
 * others keep failing fast; its success closes the circuit, its failure
 * re-opens it. With Redis back, decisions resume within OPEN_NS + one dial.
 * Error replies from a healthy server (a script error) do not count.
 *
 * Fork. A global generation is bumped in every forked child (pthread_atfork).
 * Each backend remembers the generation it belongs to; the first call in a
 * child sees the mismatch and re-initialises the pool: locks re-made, inherited
 * connections closed locally (close(2) only, never a QUIT: the parent's
 * sessions are untouched), counters reset. Exactly one thread does it
 * (`resetting`); the others wait for it.
 */
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/time.h>
#include <time.h>

#include "prs_redis_internal.h"
#include "prs_redis_ops.h"

#define PRS_REDIS_TRIP_FAILURES 3
#define PRS_REDIS_OPEN_NS (200 * PRS_NS_PER_MS)
#define PRS_REDIS_MAX_CONNECTIONS 1024

struct prs_redis_backend {
    prs_allocator alloc;
    prs_redis_url url;
    int64_t connect_timeout_ns;
    int64_t timeout_ns;
    int max_connections;

    pthread_mutex_t mu;        /* guards the five fields below */
    pthread_cond_t cv;         /* signalled when a connection is given back */
    redisContext **idle;       /* [max_connections]; idle[0..nidle) ready to use */
    int nidle;
    int nopen;                 /* idle + checked out, <= max_connections */
    int nwaiting;              /* callers blocked on cv */
    int closed;                /* 1 after prs_redis_backend_close() */

    _Atomic int failures;      /* consecutive connection-level failures */
    _Atomic int64_t open_until;/* 0: circuit closed; else fail fast until then */
    _Atomic int probing;       /* 1 while one call probes a half-open circuit */

    _Atomic uint64_t gen;      /* the fork generation the pool belongs to */
    _Atomic int resetting;     /* 1 while a child re-initialises the pool */

    _Atomic int64_t clock_offset_us; /* Redis's TIME minus our CLOCK_REALTIME, learned at each dial */
    /* calls to Redis made through this backend (one pipelined exchange each,
     * however many nodes a cluster call asks; a refusal of the open circuit
     * included) and those that failed: relaxed atomic adds, off the hot path */
    _Atomic uint64_t round_trips, errors;
    prs_redis__cluster *cluster;     /* redis+cluster://: the node pools (this pool stays empty) */
};

/* ---- errors ---------------------------------------------------------------- */

static _Thread_local char last_error[256];

void prs_redis__set_error(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(last_error, sizeof last_error, fmt, ap);
    va_end(ap);
}

const char *prs_redis_last_error(void) { return last_error; }

/* ---- fork generation ---------------------------------------------------------- */

static _Atomic uint64_t fork_gen = 1;
static pthread_once_t fork_once = PTHREAD_ONCE_INIT;

static void on_fork_child(void) { atomic_fetch_add(&fork_gen, 1); }
static void fork_register(void) { pthread_atfork(NULL, NULL, on_fork_child); }

void prs_redis__fork_init(void) { pthread_once(&fork_once, fork_register); }
uint64_t prs_redis__fork_gen(void) { return atomic_load_explicit(&fork_gen, memory_order_acquire); }

void prs_redis__after_fork(_Atomic uint64_t *gen, _Atomic int *resetting, void (*reinit)(void *), void *ctx) {
    uint64_t g = prs_redis__fork_gen();
    if (atomic_load_explicit(gen, memory_order_acquire) == g) return;
    int expected = 0;
    if (atomic_compare_exchange_strong(resetting, &expected, 1)) {
        if (atomic_load(gen) != g) {
            reinit(ctx);
            atomic_store_explicit(gen, g, memory_order_release);
        }
        atomic_store(resetting, 0);
    } else {
        while (atomic_load(resetting)) sched_yield();
    }
}

/* ---- URLs ------------------------------------------------------------------ */

static char *dup_range(const prs_allocator *a, const char *s, size_t n, int decode) {
    char *out = prs__malloc(a, n + 1);
    if (!out) return NULL;
    size_t j = 0;
    for (size_t i = 0; i < n; i++) {
        if (decode && s[i] == '%') {
            int hi, lo;
            char c1 = i + 1 < n ? s[i + 1] : 0, c2 = i + 2 < n ? s[i + 2] : 0;
            hi = (c1 >= '0' && c1 <= '9') ? c1 - '0' : (c1 >= 'a' && c1 <= 'f') ? c1 - 'a' + 10
               : (c1 >= 'A' && c1 <= 'F') ? c1 - 'A' + 10 : -1;
            lo = (c2 >= '0' && c2 <= '9') ? c2 - '0' : (c2 >= 'a' && c2 <= 'f') ? c2 - 'a' + 10
               : (c2 >= 'A' && c2 <= 'F') ? c2 - 'A' + 10 : -1;
            if (hi < 0 || lo < 0) { prs__free(a, out); errno = EINVAL; return NULL; }
            out[j++] = (char)(hi * 16 + lo);
            i += 2;
            continue;
        }
        out[j++] = s[i];
    }
    out[j] = '\0';
    return out;
}

/* A decimal in [lo, hi] spanning exactly s[0..n). */
static int parse_num(const char *s, size_t n, int64_t lo, int64_t hi, int64_t *out) {
    if (n == 0 || n > 18) return -1;
    int64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') return -1;
        v = v * 10 + (s[i] - '0');
    }
    if (v < lo || v > hi) return -1;
    *out = v;
    return 0;
}

void prs_redis_url_clear(prs_redis_url *u, const prs_allocator *alloc) {
    if (!u) return;
    const prs_allocator *a = prs__alloc_or_default(alloc);
    prs__free(a, u->host);
    prs__free(a, u->path);
    prs__free(a, u->user);
    prs__free(a, u->password);
    memset(u, 0, sizeof *u);
}

/* url for a message, at most cap - 1 bytes: a password (user-info or a
 * password= query value) becomes "***", so no message ever shows one. */
static void redact_url(const char *url, char *out, size_t cap) {
    size_t n = 0;
#define PUT(ch) do { if (n + 1 < cap) out[n++] = (ch); } while (0)
    const char *p = strstr(url, "://");
    const char *auth = p ? p + 3 : url;
    size_t alen = strcspn(auth, "/?");
    const char *at = NULL;
    for (const char *c = auth; c < auth + alen; c++) if (*c == '@') at = c;
    for (const char *c = url; c < auth; c++) PUT(*c);
    const char *c = auth;
    if (at) {
        const char *colon = memchr(auth, ':', (size_t)(at - auth));
        for (; colon && c < colon; c++) PUT(*c);
        if (colon) PUT(':');
        PUT('*'); PUT('*'); PUT('*');
        c = at;
    }
    int in_query = 0, masking = 0;
    for (; *c; c++) {
        if (*c == '?') in_query = 1;
        if (in_query && (*c == '?' || *c == '&')) {
            masking = 0;
            PUT(*c);
            if (!strncmp(c + 1, "password=", 9)) {
                for (int i = 1; i <= 9; i++) PUT(c[i]);
                PUT('*'); PUT('*'); PUT('*');
                c += 9;
                masking = 1;
            }
            continue;
        }
        if (!masking) PUT(*c);
    }
#undef PUT
    out[n] = '\0';
}

static int url_fail(prs_redis_url *u, const prs_allocator *a, int status, const char *url, const char *why) {
    prs_redis_url_clear(u, a);
    char shown[128];
    redact_url(url, shown, sizeof shown);
    if (status == PRS_EINVAL) prs_redis__set_error("invalid Redis URL %s: %s", shown, why);
    else prs_redis__set_error("out of memory parsing a Redis URL");
    return status;
}

#define URL_DUP(dst, s, n, dec)                                                              \
    do {                                                                                     \
        errno = 0;                                                                           \
        (dst) = dup_range(a, (s), (n), (dec));                                               \
        if (!(dst)) return url_fail(out, a, errno == EINVAL ? PRS_EINVAL : PRS_ENOMEM, url,  \
                                    "bad percent-escape");                                   \
    } while (0)

static int parse_query(prs_redis_url *out, const prs_allocator *a, const char *url, const char *q) {
    while (*q) {
        const char *amp = strchr(q, '&');
        size_t len = amp ? (size_t)(amp - q) : strlen(q);
        const char *eq = memchr(q, '=', len);
        if (!eq) return url_fail(out, a, PRS_EINVAL, url, "query parameter without '='");
        size_t klen = (size_t)(eq - q), vlen = len - klen - 1;
        const char *v = eq + 1;
        if (klen == 2 && !memcmp(q, "db", 2)) {
            if (parse_num(v, vlen, 0, INT32_MAX, &out->db)) return url_fail(out, a, PRS_EINVAL, url, "bad db number");
        } else if (klen == 8 && !memcmp(q, "password", 8)) {
            prs__free(a, out->password);
            URL_DUP(out->password, v, vlen, 1);
        } else if (klen == 4 && !memcmp(q, "user", 4)) {
            prs__free(a, out->user);
            URL_DUP(out->user, v, vlen, 1);
        } else {
            return url_fail(out, a, PRS_EINVAL, url, "unknown query parameter");
        }
        q += len + (amp ? 1 : 0);
    }
    return PRS_OK;
}

/* user:password@ (or password@: a lone value is the password, a common
 * spelling) in [p, at), percent-decoded into out. */
static int parse_userinfo(prs_redis_url *out, const prs_allocator *a, const char *url, const char *p,
                          const char *at) {
    const char *colon = memchr(p, ':', (size_t)(at - p));
    if (colon) {
        if (colon > p) URL_DUP(out->user, p, (size_t)(colon - p), 1);
        URL_DUP(out->password, colon + 1, (size_t)(at - colon - 1), 1);
    } else if (at > p) {
        URL_DUP(out->password, p, (size_t)(at - p), 1);
    }
    return PRS_OK;
}

int prs_redis_url_parse(const char *url, const prs_allocator *alloc, prs_redis_url *out) {
    const prs_allocator *a = prs__alloc_or_default(alloc);
    if (!out) return PRS_EINVAL;
    memset(out, 0, sizeof *out);
    out->port = 6379;
    if (!url) return url_fail(out, a, PRS_EINVAL, "(null)", "no URL");
    for (const char *c = url; *c; c++)
        if ((unsigned char)*c <= ' ' || *c == 0x7f) return url_fail(out, a, PRS_EINVAL, url, "control character or space");
    if (!strncmp(url, "unix://", 7)) {
        const char *p = url + 7;
        const char *at = strchr(p, '@');
        const char *qm = strchr(p, '?');
        if (at && (!qm || at < qm)) {
            int rc = parse_userinfo(out, a, url, p, at);
            if (rc) return rc;
            p = at + 1;
        }
        size_t plen = qm ? (size_t)(qm - p) : strlen(p);
        if (plen == 0 || p[0] != '/') return url_fail(out, a, PRS_EINVAL, url, "unix:// needs an absolute socket path");
        if (plen >= 108) return url_fail(out, a, PRS_EINVAL, url, "socket path too long");
        URL_DUP(out->path, p, plen, 1);
        out->is_unix = 1;
        return qm ? parse_query(out, a, url, qm + 1) : PRS_OK;
    }
    if (strncmp(url, "redis://", 8)) return url_fail(out, a, PRS_EINVAL, url, "scheme must be redis:// or unix://");
    const char *p = url + 8;
    const char *slash = strchr(p, '/'), *qm = strchr(p, '?');
    const char *end_auth = slash ? slash : (qm ? qm : p + strlen(p));
    if (qm && qm < end_auth) end_auth = qm;
    const char *at = NULL;
    for (const char *c = p; c < end_auth; c++) if (*c == '@') at = c; /* the last '@' */
    if (at) {
        int rc = parse_userinfo(out, a, url, p, at);
        if (rc) return rc;
        p = at + 1;
    }
    const char *host = p, *host_end, *port_s = NULL;
    if (*p == '[') {
        const char *rb = memchr(p, ']', (size_t)(end_auth - p));
        if (!rb) return url_fail(out, a, PRS_EINVAL, url, "unclosed [ in host");
        host = p + 1;
        host_end = rb;
        if (rb + 1 < end_auth) {
            if (rb[1] != ':') return url_fail(out, a, PRS_EINVAL, url, "junk after ]");
            port_s = rb + 2;
        }
    } else {
        const char *colon = memchr(p, ':', (size_t)(end_auth - p));
        host_end = colon ? colon : end_auth;
        if (colon) port_s = colon + 1;
    }
    if (host_end == host) return url_fail(out, a, PRS_EINVAL, url, "no host");
    for (const char *c = host; c < host_end; c++)
        if (*c == '@' || *c == '%' || *c == '[' || *c == ']' || *c == '/')
            return url_fail(out, a, PRS_EINVAL, url, "bad character in host");
    if (port_s) {
        int64_t port;
        if (parse_num(port_s, (size_t)(end_auth - port_s), 1, 65535, &port))
            return url_fail(out, a, PRS_EINVAL, url, "port must be 1..65535");
        out->port = (int)port;
    }
    URL_DUP(out->host, host, (size_t)(host_end - host), 0);
    if (slash && (!qm || slash < qm)) {
        const char *db = slash + 1;
        size_t dlen = qm ? (size_t)(qm - db) : strlen(db);
        if (dlen && parse_num(db, dlen, 0, INT32_MAX, &out->db))
            return url_fail(out, a, PRS_EINVAL, url, "db must be a number 0..2147483647");
    }
    return qm ? parse_query(out, a, url, qm + 1) : PRS_OK;
}

/* ---- the backend ---------------------------------------------------------------- */

void prs_redis_config_init(prs_redis_config *cfg) {
    cfg->url = "redis://127.0.0.1:6379/0";
    cfg->connect_timeout_ns = 250 * PRS_NS_PER_MS;
    cfg->timeout_ns = 250 * PRS_NS_PER_MS;
    cfg->max_connections = 8;
    cfg->allocator = NULL;
}

static int init_sync(prs_redis_backend *b) {
    pthread_condattr_t ca;
    if (pthread_condattr_init(&ca)) return PRS_ENOMEM;
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    int rc = pthread_cond_init(&b->cv, &ca);
    pthread_condattr_destroy(&ca);
    if (rc) return PRS_ENOMEM;
    if (pthread_mutex_init(&b->mu, NULL)) { pthread_cond_destroy(&b->cv); return PRS_ENOMEM; }
    return PRS_OK;
}

#define HOUR_NS (3600 * PRS_NS_PER_SEC)

static int check_timeout(int64_t ns, const char *field, prs_config_error *why) {
    if (ns < PRS_NS_PER_US) return prs_config_fail(why, PRS_EINVAL, field, "must be >= 1 microsecond");
    if (ns > HOUR_NS) return prs_config_fail(why, PRS_ERANGE, field, "must be <= 3600 seconds");
    return PRS_OK;
}

int prs_redis_config_check(const prs_redis_config *cfg, prs_config_error *why) {
    if (!cfg) return prs_config_fail(why, PRS_EINVAL, NULL, "no config");
    int rc = check_timeout(cfg->connect_timeout_ns, "connect_timeout_ns", why);
    if (!rc) rc = check_timeout(cfg->timeout_ns, "timeout_ns", why);
    if (!rc && (cfg->max_connections < 1 || cfg->max_connections > PRS_REDIS_MAX_CONNECTIONS))
        rc = prs_config_fail(why, PRS_EINVAL, "max_connections", "must be between 1 and 1024");
    return rc;
}

int prs_redis_backend_new(const prs_redis_config *cfg, prs_redis_backend **out) {
    if (!out) return PRS_EINVAL;
    *out = NULL;
    prs_config_error why = {NULL, NULL};
    int rc = prs_redis_config_check(cfg, &why);
    if (rc) {
        prs_redis__set_error("%s %s", why.field ? why.field : "config", why.reason);
        return rc;
    }
    const prs_allocator *a = prs__alloc_or_default(cfg->allocator);
    prs_redis__fork_init();
    (void)prs_redis__scripts();
    prs_redis_backend *b = prs__calloc(a, 1, sizeof *b);
    if (!b) return PRS_ENOMEM;
    b->alloc = *a;
    if (cfg->url && (!strncmp(cfg->url, "redis+cluster://", 16) || !strncmp(cfg->url, "redis+sentinel://", 17))) {
        rc = prs_redis__cluster_new(cfg, &b->cluster);
        if (rc == PRS_OK) rc = prs_redis_url_parse("redis://127.0.0.1/0", a, &b->url); /* unused */
        if (rc) { prs_redis__cluster_free(b->cluster); prs__free(a, b); return rc; }
    } else {
        rc = prs_redis_url_parse(cfg->url ? cfg->url : "redis://127.0.0.1:6379/0", a, &b->url);
        if (rc) { prs__free(a, b); return rc; }
    }
    b->idle = prs__calloc(a, (size_t)cfg->max_connections, sizeof *b->idle);
    if (!b->idle || init_sync(b)) {
        prs_redis__cluster_free(b->cluster);
        prs__free(a, b->idle);
        prs_redis_url_clear(&b->url, a);
        prs__free(a, b);
        return PRS_ENOMEM;
    }
    b->connect_timeout_ns = cfg->connect_timeout_ns;
    b->timeout_ns = cfg->timeout_ns;
    b->max_connections = cfg->max_connections;
    atomic_init(&b->failures, 0);
    atomic_init(&b->open_until, 0);
    atomic_init(&b->probing, 0);
    atomic_init(&b->gen, prs_redis__fork_gen());
    atomic_init(&b->resetting, 0);
    atomic_init(&b->clock_offset_us, 0);
    *out = b;
    return PRS_OK;
}

const prs_allocator *prs_redis__backend_alloc(const prs_redis_backend *b) { return &b->alloc; }
prs_redis__cluster *prs_redis__backend_cluster(const prs_redis_backend *b) { return b->cluster; }
int prs_redis_backend_is_cluster(const prs_redis_backend *b) {
    return b && b->cluster != NULL && !prs_redis__cluster_sentinel(b->cluster);
}

/* In a forked child: forget the parent's pool (see the top of the file). */
static void pool_reinit(void *ctx) {
    prs_redis_backend *b = ctx;
    init_sync(b); /* the parent's lock state may have been copied mid-use */
    for (int i = 0; i < b->nidle; i++) redisFree(b->idle[i]); /* close(2) only */
    b->nidle = 0;
    b->nopen = 0;
    b->nwaiting = 0;
    atomic_store(&b->failures, 0);
    atomic_store(&b->open_until, 0);
    atomic_store(&b->probing, 0);
}

static void after_fork(prs_redis_backend *b) { prs_redis__after_fork(&b->gen, &b->resetting, pool_reinit, b); }

void prs_redis_backend_close(prs_redis_backend *b) {
    if (!b) return;
    after_fork(b);
    pthread_mutex_lock(&b->mu);
    b->closed = 1;
    for (int i = 0; i < b->nidle; i++) redisFree(b->idle[i]);
    b->nopen -= b->nidle;
    b->nidle = 0;
    pthread_cond_broadcast(&b->cv);
    pthread_mutex_unlock(&b->mu);
    if (b->cluster) prs_redis__cluster_close(b->cluster);
}

int prs_redis_backend_closed(const prs_redis_backend *b) {
    prs_redis_backend *mb = (prs_redis_backend *)b;
    after_fork(mb);
    pthread_mutex_lock(&mb->mu);
    int c = mb->closed;
    pthread_mutex_unlock(&mb->mu);
    return c;
}

void prs_redis_backend_free(prs_redis_backend *b) {
    if (!b) return;
    prs_redis_backend_close(b);
    pthread_mutex_destroy(&b->mu);
    pthread_cond_destroy(&b->cv);
    prs_allocator a = b->alloc;
    prs_redis__cluster_free(b->cluster);
    prs__free(&a, b->idle);
    prs_redis_url_clear(&b->url, &a);
    prs__free(&a, b);
}

int prs_redis_backend_connections(prs_redis_backend *b) {
    after_fork(b);
    pthread_mutex_lock(&b->mu);
    int n = b->nopen;
    pthread_mutex_unlock(&b->mu);
    return b->cluster ? n + prs_redis__cluster_connections(b->cluster) : n;
}

/* ---- connections ------------------------------------------------------------ */

static struct timeval tv_of(int64_t ns) {
    if (ns < PRS_NS_PER_US) ns = PRS_NS_PER_US;
    struct timeval tv;
    tv.tv_sec = (time_t)(ns / PRS_NS_PER_SEC);
    tv.tv_usec = (suseconds_t)((ns % PRS_NS_PER_SEC) / PRS_NS_PER_US);
    return tv;
}

static int is_timeout_err(const redisContext *c, int saved_errno) {
#ifdef REDIS_ERR_TIMEOUT
    if (c->err == REDIS_ERR_TIMEOUT) return 1;
#endif
    if (c->err != REDIS_ERR_IO) return 0;
    return saved_errno == EAGAIN || saved_errno == EWOULDBLOCK || saved_errno == ETIMEDOUT ||
           saved_errno == EINPROGRESS || strstr(c->errstr, "timed out") != NULL ||
           strstr(c->errstr, "timeout") != NULL || /* hiredis 1.x: "recv timeout" */
           strstr(c->errstr, "temporarily unavailable") != NULL;
}

/* ---- bounded replies ----------------------------------------------------------
 *
 * hiredis allocates an array reply's element vector as soon as it reads the
 * header, and frees it by walking every announced slot: a reply announcing
 * *2147483647 costs a 16 GiB calloc and seconds of freeing, whatever the
 * timeout. So every connection's reader refuses an array announcing more
 * than PRS_REDIS_MAX_ELEMENTS, before allocating it (hiredis >= 1.0: its
 * maxelements; older hiredis: reply functions wrapping the default ones).
 * With the wrappers, one call also accepts at most PRS_REDIS_MAX_VALUES +
 * 16 per command values in all, so what a timed-out call frees is bounded
 * too (a server streaming an endless reply would otherwise leave millions
 * of objects to free after the deadline). A refusal is a protocol error
 * (PRS_EPROTO); the connection is then closed. */

enum { REFUSED_NONE, REFUSED_ELEMENTS, REFUSED_VALUES };

#if HIREDIS_MAJOR >= 1
static void bound_reader(redisContext *c) { c->reader->maxelements = PRS_REDIS_MAX_ELEMENTS; }
static int refused_reply(long long *elements) { (void)elements; return REFUSED_NONE; }
static void reply_budget_reset(size_t ncmds) { (void)ncmds; }
#else
static redisReplyObjectFunctions *_Atomic base_fns; /* hiredis's defaults (one static table) */
static _Thread_local int refused = REFUSED_NONE;    /* why this thread's reader last refused */
static _Thread_local long long refused_elements;
static _Thread_local int64_t values_left;            /* this call's remaining value budget */

static int take_value(void) {
    if (--values_left >= 0) return 1;
    refused = REFUSED_VALUES;
    return 0;
}
static void *bounded_string(const redisReadTask *t, char *s, size_t n) {
    return take_value() ? atomic_load(&base_fns)->createString(t, s, n) : NULL;
}
static void *bounded_integer(const redisReadTask *t, long long v) {
    return take_value() ? atomic_load(&base_fns)->createInteger(t, v) : NULL;
}
static void *bounded_nil(const redisReadTask *t) { return take_value() ? atomic_load(&base_fns)->createNil(t) : NULL; }
static void bounded_free(void *o) { atomic_load(&base_fns)->freeObject(o); }
static void *bounded_array(const redisReadTask *t, int elements) {
    if (elements < 0 || elements > PRS_REDIS_MAX_ELEMENTS) {
        refused = REFUSED_ELEMENTS;
        refused_elements = elements;
        return NULL; /* the reader fails before allocating anything */
    }
    return take_value() ? atomic_load(&base_fns)->createArray(t, elements) : NULL;
}
static redisReplyObjectFunctions bounded_fns = {bounded_string, bounded_array, bounded_integer, bounded_nil,
                                                bounded_free};

static void bound_reader(redisContext *c) {
    if (!c->reader || c->reader->fn == &bounded_fns) return;
    atomic_store(&base_fns, c->reader->fn);
    c->reader->fn = &bounded_fns;
}
static int refused_reply(long long *elements) {
    *elements = refused_elements;
    return refused;
}
static void reply_budget_reset(size_t ncmds) {
    refused = REFUSED_NONE;
    values_left = PRS_REDIS_MAX_VALUES + 16 * (int64_t)(ncmds < ((size_t)1 << 40) ? ncmds : (size_t)1 << 40);
}
#endif

/* ---- deadline-bounded I/O -----------------------------------------------------
 *
 * A socket timeout bounds one blocking read or write, not a call: a server
 * that drips its reply byte by byte would keep every read short and the call
 * going forever. So before each blocking read or write, io_bound() checks the
 * call's deadline, and when the socket timeout (*sock_ns, what the socket has
 * now) could carry the operation more than PRS_REDIS_IO_SLACK_NS past it,
 * shortens the timeout to what is left. On a healthy server a call's I/O
 * starts within the slack of the call's start and costs no extra system
 * call; a connection whose timeout was shortened gets the full one back when
 * it returns to the pool. */

#define PRS_REDIS_IO_SLACK_NS (2 * PRS_NS_PER_MS)

/* PRS_OK, PRS_ETIMEDOUT (the deadline has passed), PRS_ECONN. */
static int io_bound(redisContext *c, int64_t deadline, int64_t *sock_ns) {
    int64_t now = prs_monotonic_ns();
    if (now >= deadline) return PRS_ETIMEDOUT;
    if (prs__sat_add(now, *sock_ns) <= prs__sat_add(deadline, PRS_REDIS_IO_SLACK_NS)) return PRS_OK;
    *sock_ns = deadline - now;
    return redisSetTimeout(c, tv_of(*sock_ns)) == REDIS_OK ? PRS_OK : PRS_ECONN;
}

/* Sends what c has buffered. PRS_OK, PRS_ETIMEDOUT, PRS_ECONN, or -1 (a
 * hiredis error: see c->err and errno). */
static int io_send(redisContext *c, int64_t deadline, int64_t *sock_ns) {
    for (;;) {
        int done = 0, rc = io_bound(c, deadline, sock_ns);
        if (rc) return rc;
        if (redisBufferWrite(c, &done) != REDIS_OK) return -1;
        if (done) return PRS_OK;
    }
}

/* Reads the next reply into *reply; the same statuses as io_send. */
static int io_read(redisContext *c, int64_t deadline, int64_t *sock_ns, void **reply) {
    *reply = NULL;
    for (;;) {
        if (redisGetReplyFromReader(c, reply) != REDIS_OK) return -1;
        if (*reply) return PRS_OK;
        int rc = io_bound(c, deadline, sock_ns);
        if (rc) return rc;
        if (redisBufferRead(c) != REDIS_OK) return -1;
    }
}

/* The failure status (and this thread's message) after io_send/io_read
 * returned io (not PRS_OK) on c; saved is errno right after the failure.
 * *instant: the connection failed without waiting (EOF, reset). */
static int io_failure(redisContext *c, int io, int saved, const char *what, int *instant) {
    long long elements;
    *instant = 0;
    if (io == PRS_ETIMEDOUT || (io == -1 && is_timeout_err(c, saved))) {
        prs_redis__set_error("redis: timed out %s", what);
        return PRS_ETIMEDOUT;
    }
    int why = io == -1 ? refused_reply(&elements) : REFUSED_NONE;
    if (why == REFUSED_ELEMENTS) {
        prs_redis__set_error("redis: protocol error %s: a reply announces %lld elements (at most %d accepted)",
                             what, elements, PRS_REDIS_MAX_ELEMENTS);
        return PRS_EPROTO;
    }
    if (why == REFUSED_VALUES) {
        prs_redis__set_error("redis: protocol error %s: the replies hold more values than a call accepts "
                             "(%d + 16 per command)", what, PRS_REDIS_MAX_VALUES);
        return PRS_EPROTO;
    }
    if (io == -1 && c->err == REDIS_ERR_PROTOCOL) {
        prs_redis__set_error("redis: protocol error %s: %s", what, c->errstr);
        return PRS_EPROTO;
    }
    *instant = io == -1 && (c->err == REDIS_ERR_EOF || (c->err == REDIS_ERR_IO && (saved == ECONNRESET || saved == EPIPE)));
    prs_redis__set_error("redis: connection lost %s: %s", what, io == -1 && c->err ? c->errstr : "no reply");
    return PRS_ECONN;
}

/* A simple command on a fresh connection during setup (AUTH, SELECT). */
static int setup_cmd(redisContext *c, int argc, const char **argv, const char *what, int64_t deadline,
                     int64_t *sock_ns, redisReply **keep) {
    size_t lens[3];
    for (int i = 0; i < argc; i++) lens[i] = strlen(argv[i]);
    if (redisAppendCommandArgv(c, argc, argv, lens) != REDIS_OK) {
        prs_redis__set_error("redis: out of memory formatting %s", what);
        return PRS_ENOMEM;
    }
    void *r = NULL;
    reply_budget_reset(1);
    int io = io_send(c, deadline, sock_ns);
    if (io == PRS_OK) io = io_read(c, deadline, sock_ns, &r);
    if (io != PRS_OK) {
        int saved = errno, instant;
        char during[48];
        snprintf(during, sizeof during, "during %s", what);
        return io_failure(c, io, saved, during, &instant);
    }
    redisReply *reply = r;
    int bad = reply->type == REDIS_REPLY_ERROR;
    if (bad) prs_redis__set_error("redis: %s failed: %.200s", what, reply->str);
    if (keep && !bad) *keep = reply;
    else freeReplyObject(reply);
    return bad ? PRS_EBACKEND : PRS_OK;
}

static int64_t realtime_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* Learns Redis's clock on a fresh connection: one TIME, its reply taken as
 * the server's time at the middle of the round trip. The scripts then run
 * on our CLOCK_REALTIME plus this offset instead of calling TIME themselves
 * (a redis.call costs more server CPU than the rest of a GCRA decision). */
static int sync_clock(prs_redis_backend *b, redisContext *c, int64_t deadline, int64_t *sock_ns) {
    const char *argv[1] = {"TIME"};
    redisReply *r = NULL;
    int64_t t0 = realtime_us();
    int rc = setup_cmd(c, 1, argv, "TIME", deadline, sock_ns, &r);
    int64_t t1 = realtime_us();
    if (rc) return rc;
    prs_redis_backend_clock(b, t0, t1, r);
    freeReplyObject(r);
    return PRS_OK;
}

void prs_redis_backend_clock(prs_redis_backend *b, int64_t sent_us, int64_t got_us, const redisReply *r) {
    if (b && r && r->type == REDIS_REPLY_ARRAY && r->elements == 2 && r->element[0]->type == REDIS_REPLY_STRING &&
        r->element[1]->type == REDIS_REPLY_STRING) {
        int64_t server = strtoll(r->element[0]->str, NULL, 10) * 1000000 + strtoll(r->element[1]->str, NULL, 10);
        prs_redis_backend_clock_us(b, sent_us, got_us, server);
    }
}

void prs_redis_backend_clock_us(prs_redis_backend *b, int64_t sent_us, int64_t got_us, int64_t server_us) {
    if (b) atomic_store_explicit(&b->clock_offset_us, server_us - (sent_us + (got_us - sent_us) / 2),
                                 memory_order_relaxed);
}

int prs_redis_backend_node(prs_redis_backend *b, int i, const char **host, int *port) {
    if (!b || !b->cluster || !host || !port) return PRS_EINVAL;
    return prs_redis__cluster_node(b->cluster, i, host, port);
}

int64_t prs_redis__now_us(prs_redis_backend *b) {
    return realtime_us() + atomic_load_explicit(&b->clock_offset_us, memory_order_relaxed);
}

/* Opens a connection before `deadline`; *sock_ns is the socket timeout it
 * got (min(timeout, what is left)). NULL with *status on failure. */
static redisContext *dial(prs_redis_backend *b, int64_t deadline, int64_t *sock_ns, int *status) {
    int64_t budget_ns = deadline - prs_monotonic_ns();
    int64_t ct = prs__min64(b->connect_timeout_ns, budget_ns);
    if (ct <= 0) {
        prs_redis__set_error("redis: timed out before connecting");
        *status = PRS_ETIMEDOUT;
        return NULL;
    }
    redisContext *c = b->url.is_unix ? redisConnectUnixWithTimeout(b->url.path, tv_of(ct))
                                     : redisConnectWithTimeout(b->url.host, b->url.port, tv_of(ct));
    int saved = errno;
    if (!c) {
        prs_redis__set_error("redis: out of memory connecting");
        *status = PRS_ENOMEM;
        return NULL;
    }
    if (c->err) {
        if (b->url.is_unix) prs_redis__set_error("redis: cannot connect to %s: %s", b->url.path, c->errstr);
        else prs_redis__set_error("redis: cannot connect to %s:%d: %s", b->url.host, b->url.port, c->errstr);
        *status = is_timeout_err(c, saved) ? PRS_ETIMEDOUT : PRS_ECONN;
        redisFree(c);
        return NULL;
    }
    bound_reader(c);
    *sock_ns = prs__min64(b->timeout_ns, prs__max64(deadline - prs_monotonic_ns(), PRS_NS_PER_US));
    int rc = redisSetTimeout(c, tv_of(*sock_ns)) == REDIS_OK ? PRS_OK : PRS_ECONN;
    if (rc == PRS_OK && b->url.password) {
        const char *argv[3] = {"AUTH", b->url.user ? b->url.user : b->url.password, b->url.password};
        rc = setup_cmd(c, b->url.user ? 3 : 2, argv, "AUTH", deadline, sock_ns, NULL);
    }
    if (rc == PRS_OK && b->url.db) {
        char db[24];
        snprintf(db, sizeof db, "%lld", (long long)b->url.db);
        const char *argv[2] = {"SELECT", db};
        rc = setup_cmd(c, 2, argv, "SELECT", deadline, sock_ns, NULL);
    }
    if (rc == PRS_OK) rc = sync_clock(b, c, deadline, sock_ns);
    if (rc) {
        redisFree(c);
        *status = rc;
        return NULL;
    }
    return c;
}

/* Checks a connection out: an idle one (*sock_ns = the full timeout), or a
 * new one dialed before the deadline, or waits for one to be given back.
 * *fresh tells which. */
static redisContext *checkout(prs_redis_backend *b, int64_t deadline, int *fresh, int64_t *sock_ns, int *status) {
    pthread_mutex_lock(&b->mu);
    for (;;) {
        if (b->closed) {
            pthread_mutex_unlock(&b->mu);
            prs_redis__set_error("redis: backend is closed");
            *status = PRS_EBACKENDCLOSED;
            return NULL;
        }
        if (b->nidle > 0) {
            redisContext *c = b->idle[--b->nidle];
            pthread_mutex_unlock(&b->mu);
            *fresh = 0;
            *sock_ns = b->timeout_ns; /* the pool's invariant */
            return c;
        }
        if (b->nopen < b->max_connections) {
            b->nopen++;
            pthread_mutex_unlock(&b->mu);
            redisContext *c = dial(b, deadline, sock_ns, status);
            if (!c) {
                pthread_mutex_lock(&b->mu);
                b->nopen--;
                pthread_cond_signal(&b->cv);
                pthread_mutex_unlock(&b->mu);
            }
            *fresh = 1;
            return c;
        }
        int64_t now = prs_monotonic_ns();
        if (now >= deadline) {
            pthread_mutex_unlock(&b->mu);
            prs_redis__set_error("redis: no free connection within the timeout (max_connections=%d)",
                                 b->max_connections);
            *status = PRS_ETIMEDOUT;
            return NULL;
        }
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        int64_t wake = (int64_t)ts.tv_sec * PRS_NS_PER_SEC + ts.tv_nsec + (deadline - now);
        ts.tv_sec = (time_t)(wake / PRS_NS_PER_SEC);
        ts.tv_nsec = (long)(wake % PRS_NS_PER_SEC);
        b->nwaiting++;
        pthread_cond_timedwait(&b->cv, &b->mu, &ts);
        b->nwaiting--;
    }
}

/* Gives a connection back (broken ones are closed; a healthy one whose socket
 * timeout was shortened, sock_ns, gets the full timeout back: every idle
 * connection has it). With drop_idle, every idle connection is closed too
 * (the server probably restarted). */
static void give_back(prs_redis_backend *b, redisContext *c, int broken, int64_t sock_ns, int drop_idle) {
    if (c && !broken && sock_ns != b->timeout_ns && redisSetTimeout(c, tv_of(b->timeout_ns)) != REDIS_OK)
        broken = 1;
    redisContext *dropped[PRS_REDIS_MAX_CONNECTIONS];
    int ndropped = 0;
    pthread_mutex_lock(&b->mu);
    if (drop_idle) {
        for (int i = 0; i < b->nidle; i++) dropped[ndropped++] = b->idle[i];
        b->nopen -= b->nidle;
        b->nidle = 0;
    }
    if (c) {
        if (broken || b->closed) {
            dropped[ndropped++] = c;
            b->nopen--;
        } else {
            b->idle[b->nidle++] = c;
        }
    }
    if (b->nwaiting) pthread_cond_signal(&b->cv);
    pthread_mutex_unlock(&b->mu);
    for (int i = 0; i < ndropped; i++) redisFree(dropped[i]); /* close outside the lock */
}

/* ---- the circuit ---------------------------------------------------------------- */

/* 0: fail fast; 1: go; 2: go as the probe of a half-open circuit. */
static int circuit_admit(prs_redis_backend *b, int64_t now) {
    int64_t until = atomic_load_explicit(&b->open_until, memory_order_acquire);
    if (until == 0) return 1;
    if (now < until) return 0;
    int expected = 0;
    return atomic_compare_exchange_strong(&b->probing, &expected, 1) ? 2 : 0;
}

static void circuit_result(prs_redis_backend *b, int admit, int conn_failure, int64_t now) {
    if (!conn_failure) {
        if (atomic_load_explicit(&b->failures, memory_order_relaxed) != 0) atomic_store(&b->failures, 0);
        if (admit == 2 || atomic_load_explicit(&b->open_until, memory_order_relaxed) != 0) {
            atomic_store(&b->open_until, 0);
            atomic_store(&b->probing, 0);
        }
        return;
    }
    int f = atomic_fetch_add(&b->failures, 1) + 1;
    if (admit == 2 || f >= PRS_REDIS_TRIP_FAILURES) {
        atomic_store(&b->open_until, now + PRS_REDIS_OPEN_NS);
        atomic_store(&b->probing, 0);
    }
}

static int is_conn_failure(int status) {
    return status == PRS_ECONN || status == PRS_ETIMEDOUT || status == PRS_EPROTO;
}

/* ---- one round trip --------------------------------------------------------- */

static int is_noscript(const redisReply *r) {
    return r && r->type == REDIS_REPLY_ERROR && r->len >= 8 && !memcmp(r->str, "NOSCRIPT", 8);
}

/* Appends cmd to c's output; with s, as EVAL with s's body instead of
 * EVALSHA and its sha (after a NOSCRIPT reply). REDIS_OK or REDIS_ERR. */
static int append_cmd(redisContext *c, const prs_allocator *a, prs_redis__cmd *cmd, const prs_redis__script *s) {
    if (!cmd->argc && !s) return redisAppendFormattedCommand(c, cmd->argv[0], cmd->argvlen[0]);
    if (!cmd->argc) {
        char *e;
        size_t len;
        if (prs_redis__resp_eval(a, cmd->argv[0], cmd->argvlen[0], s, &e, &len)) return REDIS_ERR;
        int ok = redisAppendFormattedCommand(c, e, len);
        prs__free(a, e);
        return ok;
    }
    if (!s) return redisAppendCommandArgv(c, cmd->argc, cmd->argv, cmd->argvlen);
    const char *a0 = cmd->argv[0], *a1 = cmd->argv[1];
    size_t l0 = cmd->argvlen[0], l1 = cmd->argvlen[1];
    cmd->argv[0] = "EVAL";
    cmd->argvlen[0] = 4;
    cmd->argv[1] = s->body;
    cmd->argvlen[1] = s->len;
    int ok = redisAppendCommandArgv(c, cmd->argc, cmd->argv, cmd->argvlen);
    cmd->argv[0] = a0; cmd->argvlen[0] = l0;
    cmd->argv[1] = a1; cmd->argvlen[1] = l1;
    return ok;
}

/* Sends cmds and reads the replies on c before the deadline. Returns PRS_OK,
 * or a failure (c is then broken) with *instant set when it failed without
 * waiting (EOF/reset: a stale pooled connection). */
static int exchange(redisContext *c, const prs_allocator *a, size_t ncmds, prs_redis__cmd *cmds,
                    redisReply **replies, const prs_redis__script *scripts, int64_t deadline, int64_t *sock_ns,
                    int *instant) {
    *instant = 0;
    reply_budget_reset(2 * ncmds); /* a NOSCRIPT retry reads a second reply */
    for (size_t i = 0; i < ncmds; i++) {
        if (append_cmd(c, a, &cmds[i], NULL) != REDIS_OK) {
            prs_redis__set_error("redis: cannot format a command: %s", c->errstr);
            return PRS_ENOMEM;
        }
    }
    size_t got = 0;
    int io = io_send(c, deadline, sock_ns), rc = PRS_OK;
    for (; io == PRS_OK && got < ncmds; got++) {
        void *r = NULL;
        io = io_read(c, deadline, sock_ns, &r);
        if (io != PRS_OK) break;
        replies[got] = r;
    }
    if (io == PRS_OK) {
        /* NOSCRIPT: the server lost its script cache (restart, SCRIPT FLUSH,
         * failover). Send those again as EVAL with the body, pipelined. */
        size_t nretry = 0;
        for (size_t i = 0; i < ncmds; i++) {
            if (cmds[i].script >= 0 && is_noscript(replies[i])) {
                if (append_cmd(c, a, &cmds[i], &scripts[cmds[i].script]) != REDIS_OK) { rc = PRS_ENOMEM; break; }
                nretry++;
            }
        }
        if (rc == PRS_OK && nretry) io = io_send(c, deadline, sock_ns);
        for (size_t i = 0; i < ncmds && nretry && rc == PRS_OK && io == PRS_OK; i++) {
            if (cmds[i].script >= 0 && is_noscript(replies[i])) {
                void *r = NULL;
                io = io_read(c, deadline, sock_ns, &r);
                if (io != PRS_OK) break;
                freeReplyObject(replies[i]);
                replies[i] = r;
                nretry--;
            }
        }
        if (rc == PRS_OK && io == PRS_OK) return PRS_OK;
        got = ncmds;
    }
    int saved = errno;
    for (size_t i = 0; i < got; i++) { freeReplyObject(replies[i]); replies[i] = NULL; }
    if (rc == PRS_ENOMEM) {
        prs_redis__set_error("redis: out of memory formatting a command");
        return rc;
    }
    return io_failure(c, io, saved, "waiting for a reply", instant);
}

static void count_call(prs_redis_backend *b, int rc) {
    atomic_fetch_add_explicit(&b->round_trips, 1, memory_order_relaxed);
    if (rc != PRS_OK) atomic_fetch_add_explicit(&b->errors, 1, memory_order_relaxed);
}

uint64_t prs_redis_backend_round_trips(const prs_redis_backend *b) {
    return b ? atomic_load_explicit(&b->round_trips, memory_order_relaxed) : 0;
}

uint64_t prs_redis_backend_errors(const prs_redis_backend *b) {
    return b ? atomic_load_explicit(&b->errors, memory_order_relaxed) : 0;
}

static int roundtrip(prs_redis_backend *b, size_t ncmds, prs_redis__cmd *cmds, redisReply **replies);

int prs_redis__roundtrip(prs_redis_backend *b, size_t ncmds, prs_redis__cmd *cmds, redisReply **replies) {
    int rc = roundtrip(b, ncmds, cmds, replies);
    count_call(b, rc);
    return rc;
}

static int roundtrip(prs_redis_backend *b, size_t ncmds, prs_redis__cmd *cmds, redisReply **replies) {
    after_fork(b);
    if (b->cluster) {
        if (prs_redis_backend_closed(b)) {
            prs_redis__set_error("redis: backend is closed");
            return PRS_EBACKENDCLOSED;
        }
        /* one budget for the whole call, however many nodes it asks */
        int64_t deadline = prs__sat_add(prs_monotonic_ns(), b->timeout_ns);
        return prs_redis__cluster_roundtrip(b->cluster, deadline, ncmds, cmds, replies);
    }
    return prs_redis__roundtrip_until(b, INT64_MAX, ncmds, cmds, replies);
}

int prs_redis__roundtrip_until(prs_redis_backend *b, int64_t end_by, size_t ncmds, prs_redis__cmd *cmds,
                               redisReply **replies) {
    after_fork(b);
    int64_t start = prs_monotonic_ns(), deadline = prs__min64(prs__sat_add(start, b->timeout_ns), end_by);
    if (deadline <= start) {
        prs_redis__set_error("redis: timed out before sending");
        return PRS_ETIMEDOUT;
    }
    int admit = circuit_admit(b, start);
    if (!admit) {
        if (prs_redis_backend_closed(b)) { /* closed on purpose says so, open circuit or not */
            prs_redis__set_error("redis: backend is closed");
            return PRS_EBACKENDCLOSED;
        }
        int64_t until = atomic_load(&b->open_until);
        prs_redis__set_error("redis: unavailable after %d consecutive failures; next attempt in %lld ms",
                             atomic_load(&b->failures),
                             (long long)(prs__max64(0, until - start) / PRS_NS_PER_MS));
        return PRS_EBACKEND;
    }
    const prs_redis__script *scripts = prs_redis__scripts();
    int rc = PRS_OK;
    for (int attempt = 0; attempt < 2; attempt++) {
        int fresh = 0, instant = 0;
        int64_t sock_ns = b->timeout_ns;
        redisContext *c = checkout(b, deadline, &fresh, &sock_ns, &rc);
        if (!c) break;
        rc = exchange(c, &b->alloc, ncmds, cmds, replies, scripts, deadline, &sock_ns, &instant);
        int broken = rc != PRS_OK;
        int retry = broken && instant && !fresh && prs_monotonic_ns() < deadline;
        give_back(b, c, broken, sock_ns, retry);
        if (!retry) break;
    }
    if (rc == PRS_EBACKENDCLOSED || rc == PRS_ENOMEM) {
        if (admit == 2) atomic_store(&b->probing, 0);
        return rc;
    }
    circuit_result(b, admit, is_conn_failure(rc), prs_monotonic_ns());
    return rc;
}

/* ---- the circuit for other transports (prs_redis_ops.h) ------------------------- */

int prs_redis_backend_admit(prs_redis_backend *b, int *admit) {
    after_fork(b);
    int64_t now = prs_monotonic_ns();
    *admit = prs_redis_backend_closed(b) ? 0 : circuit_admit(b, now);
    if (*admit) return PRS_OK;
    count_call(b, PRS_EBACKEND);
    if (prs_redis_backend_closed(b)) {
        prs_redis__set_error("redis: backend is closed");
        return PRS_EBACKENDCLOSED;
    }
    int64_t until = atomic_load(&b->open_until);
    prs_redis__set_error("redis: unavailable after %d consecutive failures; next attempt in %lld ms",
                         atomic_load(&b->failures), (long long)(prs__max64(0, until - now) / PRS_NS_PER_MS));
    return PRS_EBACKEND;
}

void prs_redis_backend_outcome(prs_redis_backend *b, int admit, int rc) {
    if (b->cluster && is_conn_failure(rc)) prs_redis__cluster_invalidate(b->cluster); /* a failover? ask again */
    if (!admit) return;
    count_call(b, rc);
    if (rc == PRS_EBACKENDCLOSED || rc == PRS_ENOMEM) {
        if (admit == 2) atomic_store(&b->probing, 0);
        return;
    }
    circuit_result(b, admit, is_conn_failure(rc), prs_monotonic_ns());
}

const prs_redis_url *prs_redis_backend_url(const prs_redis_backend *b) { return &b->url; }

void prs_redis_set_last_error(const char *msg) { prs_redis__set_error("%s", msg ? msg : ""); }

/* ---- commands ----------------------------------------------------------------- */

int prs_redis_command(prs_redis_backend *b, int argc, const char *const *argv, const size_t *argvlen,
                      char *buf, size_t bufsize) {
    if (!b || argc < 1 || !argv || !argvlen) return PRS_EINVAL;
    prs_redis__cmd cmd = {argc, (const char **)argv, (size_t *)argvlen, -1,
                          argc > 1 ? prs_redis_key_slot(argv[1], argvlen[1]) : 0, 1};
    redisReply *r = NULL;
    int rc = prs_redis__roundtrip(b, 1, &cmd, &r);
    if (rc) return rc;
    char tmp[32];
    const char *s = tmp;
    size_t len;
    switch (r->type) {
    case REDIS_REPLY_INTEGER: len = (size_t)snprintf(tmp, sizeof tmp, "%lld", (long long)r->integer); break;
    case REDIS_REPLY_NIL: s = "(nil)"; len = 5; break;
    case REDIS_REPLY_ARRAY: len = (size_t)snprintf(tmp, sizeof tmp, "*%zu", (size_t)r->elements); break;
    case REDIS_REPLY_ERROR:
        prs_redis__set_error("redis: %.200s", r->str);
        freeReplyObject(r);
        return PRS_EBACKEND;
    default: s = r->str ? r->str : ""; len = r->str ? (size_t)r->len : 0; break;
    }
    if (buf && bufsize) {
        size_t k = len < bufsize - 1 ? len : bufsize - 1;
        memcpy(buf, s, k);
        buf[k] = '\0';
    }
    freeReplyObject(r);
    return PRS_OK;
}

int prs_redis_command_reply(prs_redis_backend *b, int argc, const char *const *argv, const size_t *argvlen,
                            void **reply) {
    if (!b || argc < 1 || !argv || !argvlen || !reply) return PRS_EINVAL;
    prs_redis__cmd cmd = {argc, (const char **)argv, (size_t *)argvlen, -1,
                          argc > 1 ? prs_redis_key_slot(argv[1], argvlen[1]) : 0, 1};
    redisReply *r = NULL;
    int rc = prs_redis__roundtrip(b, 1, &cmd, &r);
    *reply = rc ? NULL : r;
    return rc;
}

int prs_redis_ping(prs_redis_backend *b) {
    if (!b) return PRS_EINVAL;
    static const char *const argv[] = {"PING"};
    static const size_t lens[] = {4};
    char buf[16];
    int rc = prs_redis_command(b, 1, argv, lens, buf, sizeof buf);
    if (rc == PRS_OK && strcmp(buf, "PONG")) {
        prs_redis__set_error("redis: unexpected PING reply %s", buf);
        return PRS_EPROTO;
    }
    return rc;
}
