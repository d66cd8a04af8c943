/*
 * prs_redis.h - distributed rate limiting over Redis (hiredis).
 *
 * A prs_redis_backend is a small thread-safe pool of connections to one Redis
 * server; a prs_redis_limiter runs one algorithm's Lua script on it for any
 * number of user keys. Built only when hiredis is found (PRS_HAVE_HIREDIS);
 * this header never includes hiredis, every type is opaque.
 *
 * What callers can rely on:
 *   - Time is Redis's own (TIME inside the scripts, in microseconds), so
 *     clients with disagreeing clocks make the same decisions.
 *   - User keys travel only as command arguments (binary-safe: NUL, CR/LF,
 *     spaces, braces, megabytes). Every key a script writes gets a TTL. The
 *     keys of one decision share a hash tag: one Redis Cluster slot.
 *   - Failures are status codes: PRS_ECONN (cannot connect), PRS_ETIMEDOUT
 *     (connect or reply timed out), PRS_EBACKEND (the circuit is open after
 *     repeated failures, or a server error reply), PRS_EPROTO (an unexpected
 *     reply), PRS_EBACKENDCLOSED (the backend was closed on purpose: no
 *     failure policy applies to it). prs_redis_last_error() returns this
 *     thread's message for the last failure.
 *   - Blocking: every call does network I/O and returns within the backend's
 *     `timeout` (a whole call's budget: waiting for a pooled connection,
 *     connecting, AUTH/SELECT, sending, reading) plus PRS_REDIS_MARGIN_NS,
 *     whatever the server sends or withholds: each blocking read or write is
 *     bounded by the time left, and an array reply announcing more than
 *     PRS_REDIS_MAX_ELEMENTS elements is refused (PRS_EPROTO) before anything
 *     is allocated for it.
 *   - Fork: a child process never uses its parent's sockets; it opens its own
 *     connections and drops inherited leases.
 *
 * Unlike the core, this module reads CLOCK_MONOTONIC itself (deadlines of real
 * network I/O and lease expiry cannot be simulated).
 */
#ifndef PRS_REDIS_H
#define PRS_REDIS_H

#include "prs_common.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The most elements one array of a reply may announce (hiredis would
 * otherwise allocate, then walk, whatever a server announces). */
#define PRS_REDIS_MAX_ELEMENTS (1 << 16)
/* The most values (strings, integers, arrays, nils) the replies of one call
 * may hold in all, plus 16 per command sent (older hiredis; hiredis >= 1.0
 * bounds arrays only). */
#define PRS_REDIS_MAX_VALUES (1 << 18)
/* How far past its timeout a call may run: one blocking read or write that
 * started just inside the deadline (2 ms), plus parsing and freeing what
 * arrived (bounded by the above), plus scheduling. */
#define PRS_REDIS_MARGIN_NS (10 * 1000 * 1000)

/* ---- URLs -------------------------------------------------------------- */

/* A parsed Redis URL:
 *   redis://[[user]:password@]host[:port][/db]
 *   unix:///path/to/socket[?db=N][&password=P][&user=U]
 * user/password are percent-decoded; host may be [IPv6]. */
typedef struct prs_redis_url {
    int is_unix;       /* 1: unix socket at `path`; 0: TCP host:port */
    char *host;        /* TCP host (NULL for unix) */
    int port;          /* 1..65535, default 6379 */
    char *path;        /* unix socket path (NULL for TCP) */
    char *user;        /* NULL when not given */
    char *password;    /* NULL when not given */
    int64_t db;        /* 0..2^31-1, default 0 */
} prs_redis_url;

/* Parses `url` into *out (zeroed first). PRS_OK, PRS_EINVAL (malformed: the
 * message is in prs_redis_last_error()), PRS_ENOMEM. On error nothing is held. */
int prs_redis_url_parse(const char *url, const prs_allocator *alloc, prs_redis_url *out);
void prs_redis_url_clear(prs_redis_url *u, const prs_allocator *alloc);

/* ---- the backend ------------------------------------------------------- */

typedef struct prs_redis_backend prs_redis_backend;

typedef struct prs_redis_config {
    const char *url;               /* default "redis://127.0.0.1:6379/0" */
    int64_t connect_timeout_ns;    /* > 0; default 250 ms */
    int64_t timeout_ns;            /* > 0; bounds a whole call; default 250 ms */
    int max_connections;           /* 1..1024; default 8 */
    const prs_allocator *allocator;
} prs_redis_config;

void prs_redis_config_init(prs_redis_config *cfg);
/* Parses the URL and allocates the pool; connects lazily (no I/O here).
 * PRS_EINVAL (bad URL or numbers), PRS_ENOMEM. */
int prs_redis_backend_new(const prs_redis_config *cfg, prs_redis_backend **out);
/* Closes every connection; calls in progress on other threads must have
 * returned. NULL-safe. */
void prs_redis_backend_free(prs_redis_backend *b);
/* Closes idle connections and makes every later call fail with
 * PRS_EBACKENDCLOSED (a status of its own: closed on purpose, not a failure).
 * Idempotent; connections in use are closed when given back. */
void prs_redis_backend_close(prs_redis_backend *b);
int prs_redis_backend_closed(const prs_redis_backend *b);
/* PING: PRS_OK or a failure status. */
int prs_redis_ping(prs_redis_backend *b);
/* Open connections (idle + in use) in this process. */
int prs_redis_backend_connections(prs_redis_backend *b);
/* This thread's message for its last failure ("" when none). */
const char *prs_redis_last_error(void);

/* Raw command for tests and tools: sends argv and returns the reply rendered
 * as text into buf (integers in decimal, strings as is, nil as "(nil)",
 * arrays as their element count "*N"; errors return PRS_EBACKEND with the
 * message in prs_redis_last_error()). */
int prs_redis_command(prs_redis_backend *b, int argc, const char *const *argv, const size_t *argvlen,
                      char *buf, size_t bufsize);

/* The same, returning the hiredis reply itself in *reply (a redisReply *;
 * free it with freeReplyObject). Error replies are returned, not failures. */
int prs_redis_command_reply(prs_redis_backend *b, int argc, const char *const *argv, const size_t *argvlen,
                            void **reply);

/* ---- limiters ----------------------------------------------------------- */

typedef enum prs_redis_algorithm {
    PRS_REDIS_GCRA = 0,
    PRS_REDIS_TOKEN_BUCKET = 1,
    PRS_REDIS_FIXED_WINDOW = 2,
    PRS_REDIS_SLIDING_WINDOW_COUNTER = 3,
    PRS_REDIS_SLIDING_WINDOW_LOG = 4,
    PRS_REDIS__ALGORITHM_COUNT
} prs_redis_algorithm;

/* "gcra", "token_bucket", ... or NULL for an unknown value. */
const char *prs_redis_algorithm_name(int algorithm);
/* The algorithm named `name`, or -1. */
int prs_redis_algorithm_from_name(const char *name);

typedef struct prs_redis_limiter_config {
    int algorithm;             /* prs_redis_algorithm */
    /* gcra, token_bucket: */
    double rate;               /* permits per second, finite, > 0 */
    int64_t burst;             /* permits admissible at once, >= 1 */
    /* fixed_window, sliding_window_counter, sliding_window_log: */
    int64_t limit;             /* >= 1 (sliding_window_log: <= 1,000,000) */
    int64_t window_ns;         /* >= 1 us, <= 10 years */
    /* every algorithm: */
    const char *key_prefix;    /* NUL-terminated, no '{' or '}'; default "prs:" */
    /* local leases (gcra, token_bucket only): 0 = off */
    int64_t lease_batch;       /* permits taken per round trip, 1..burst */
    int64_t lease_max_hold_ns; /* > 0 when batch > 0 */
    int lease_max_keys;        /* leases held at once; default 4096 */
    const prs_allocator *allocator;
} prs_redis_limiter_config;

typedef struct prs_redis_limiter prs_redis_limiter;

void prs_redis_limiter_config_init(prs_redis_limiter_config *cfg);
/* PRS_OK, PRS_EINVAL (the message in prs_redis_last_error()), PRS_ERANGE. */
int prs_redis_limiter_config_validate(const prs_redis_limiter_config *cfg);
/* The limiter uses `b` (not owned: b must outlive it). No I/O here. */
int prs_redis_limiter_new(prs_redis_backend *b, const prs_redis_limiter_config *cfg,
                          prs_redis_limiter **out);
/* Frees the limiter; held lease permits lapse (they expire in Redis). */
void prs_redis_limiter_free(prs_redis_limiter *l);
/* Gives back every unspent lease permit (one pipelined round trip) and drops
 * the leases. PRS_OK or a failure status (the permits then lapse). */
int prs_redis_limiter_release_leases(prs_redis_limiter *l);

/* Asks for n (>= 1) permits for `key`; consumes only when allowed. With a
 * lease configured, served from the local lease when it can be. */
int prs_redis_limiter_check(prs_redis_limiter *l, const void *key, size_t keylen, int64_t n,
                            prs_decision *d);
/* The lease-only part of check: PRS_OK with *d when the local lease (or a
 * cached denial) decides without I/O, PRS_EAGAIN when a round trip is needed
 * (then call prs_redis_limiter_check). Never blocks: for callers that release
 * a lock (the GIL) only around I/O. */
int prs_redis_limiter_check_local(prs_redis_limiter *l, const void *key, size_t keylen, int64_t n,
                                  prs_decision *d);
/* The same decision without consuming (never served from a lease). */
int prs_redis_limiter_peek(prs_redis_limiter *l, const void *key, size_t keylen, int64_t n,
                           prs_decision *d);
/* Test hook: check at an explicit time `now_us` (microseconds, >= 0) instead
 * of Redis's TIME. Never uses leases. */
int prs_redis_limiter_check_at(prs_redis_limiter *l, const void *key, size_t keylen, int64_t n,
                               int64_t now_us, prs_decision *d);
/* Deletes the key's state (and drops its local lease). */
int prs_redis_limiter_reset(prs_redis_limiter *l, const void *key, size_t keylen);

typedef struct prs_redis_request {
    const void *key;
    size_t keylen;
    int64_t n;
} prs_redis_request;

/* Checks count requests in one pipelined round trip (no leases). status[i] is
 * PRS_OK with d[i] filled, or the failure of request i. Returns PRS_OK when
 * every request got a reply, else the first failure. */
int prs_redis_limiter_check_many(prs_redis_limiter *l, size_t count, const prs_redis_request *reqs,
                                 prs_decision *d, int *status);

/* ---- groups: all or nothing across several limits ------------------------ */

typedef struct prs_redis_member {
    prs_redis_limiter *limiter; /* all on the same backend */
    const void *key;
    size_t keylen;
    int64_t n;
} prs_redis_member;

/* One atomic script: admitted only when every member admits its n; a denied
 * group consumes from no member. *d is the most restrictive member (allowed:
 * smallest remaining; denied: the longest retry_after), *denied_by the index
 * of the member that denied (-1 when allowed). now_us < 0: Redis's TIME. */
int prs_redis_group_check(size_t count, const prs_redis_member *members, int64_t now_us,
                          prs_decision *d, int *denied_by);

/* The Redis Cluster hash slot (0..16383) of a Redis key (CRC16 of its hash
 * tag, or of the whole key). */
int prs_redis_key_slot(const void *key, size_t len);
/* The Redis key that a limiter stores `key` under. Writes up to cap bytes to
 * buf (no NUL added); returns the full length (call with cap 0 to size it). */
size_t prs_redis_limiter_redis_key(const prs_redis_limiter *l, const void *key, size_t keylen,
                                   char *buf, size_t cap);

#ifdef __cplusplus
}
#endif
#endif /* PRS_REDIS_H */
