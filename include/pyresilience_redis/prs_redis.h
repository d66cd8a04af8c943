/*
 * prs_redis.h - distributed rate limiting over Redis (hiredis).
 *
 * A prs_redis_backend is a small thread-safe pool of connections to one Redis
 * server; a prs_redis_limiter runs one algorithm's Lua script on it for any
 * number of user keys. Built only when hiredis is found (PRS_HAVE_HIREDIS);
 * this header never includes hiredis, every type is opaque.
 *
 * What callers can rely on:
 *   - Time is Redis's own, in microseconds: each new connection learns
 *     Redis's clock (one TIME) and every request carries that time (the
 *     scripts never call TIME: it cost more server CPU than the rest of a
 *     decision), so clients with disagreeing clocks make the same decisions
 *     to within half a round trip.
 *   - Server CPU: the fixed window decides without a script (MULTI, SET NX,
 *     BITFIELD OVERFLOW FAIL, EXEC: exact); the other algorithms run one
 *     short script each. Needs Redis >= 6.
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
 *   - Policy: what a failed call becomes (raise, allow, deny, or an
 *     in-process fallback) is the limiter's on_backend_error, applied here
 *     for single calls, check_many and groups alike; config checks name the
 *     field and why (prs_config_error).
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
 * user/password are percent-decoded; host may be [IPv6].
 * (A backend also takes redis+cluster://host:port[,host:port...], the seeds
 * of a Redis Cluster: every command then goes to the primary of its keys'
 * hash slot, from a slot map read with CLUSTER SLOTS, following MOVED and
 * ASK; scripts are loaded per node on NOSCRIPT. That form is not a
 * prs_redis_url.) */
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
/* PRS_OK, or PRS_EINVAL/PRS_ERANGE with *why (may be NULL) naming the field:
 * timeouts >= 1 us and <= 1 hour, max_connections 1..1024. The URL is
 * checked by prs_redis_backend_new (its message names the URL, password
 * hidden, in prs_redis_last_error()). */
int prs_redis_config_check(const prs_redis_config *cfg, prs_config_error *why);
/* Parses the URL and allocates the pool; connects lazily (no I/O here).
 * PRS_EINVAL/PRS_ERANGE (see prs_redis_config_check; a bad URL: the message
 * is in prs_redis_last_error()), PRS_ENOMEM. */
int prs_redis_backend_new(const prs_redis_config *cfg, prs_redis_backend **out);
/* Closes every connection; calls in progress on other threads must have
 * returned. NULL-safe. */
void prs_redis_backend_free(prs_redis_backend *b);
/* Closes idle connections and makes every later call fail with
 * PRS_EBACKENDCLOSED (a status of its own: closed on purpose, not a failure).
 * Idempotent; connections in use are closed when given back. */
void prs_redis_backend_close(prs_redis_backend *b);
int prs_redis_backend_closed(const prs_redis_backend *b);
/* 1 when the backend was made from a redis+cluster:// URL. */
int prs_redis_backend_is_cluster(const prs_redis_backend *b);
/* PING: PRS_OK or a failure status. */
int prs_redis_ping(prs_redis_backend *b);
/* Open connections (idle + in use) in this process. */
int prs_redis_backend_connections(prs_redis_backend *b);
/* Calls made to Redis through b (one pipelined exchange each; a cluster call
 * is one however many nodes it asks; a refusal of b's open circuit counts)
 * and those that failed, since creation. 0 for NULL. */
uint64_t prs_redis_backend_round_trips(const prs_redis_backend *b);
uint64_t prs_redis_backend_errors(const prs_redis_backend *b);
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

/* ---- failure policies ------------------------------------------------------ */

/* What a limiter's decision becomes when Redis fails (connection refused or
 * lost, a timeout, an open circuit, an error reply). Failures no policy turns
 * into a decision: PRS_ENOMEM, PRS_EINVAL and PRS_EBACKENDCLOSED (closed on
 * purpose). */
typedef enum prs_redis_policy {
    PRS_REDIS_RAISE = 0, /* the failure status is returned (the default) */
    PRS_REDIS_ALLOW = 1, /* admitted, when n could ever be (n <= limit) */
    PRS_REDIS_DENY = 2,  /* denied, retry after PRS_REDIS_DENY_RETRY_NS */
    PRS_REDIS_LOCAL = 3, /* decided by an in-process fallback limiter */
    PRS_REDIS__POLICY_COUNT
} prs_redis_policy;

/* The retry_after of a PRS_REDIS_DENY denial. */
#define PRS_REDIS_DENY_RETRY_NS (100 * PRS_NS_PER_MS)

/* "raise", "allow", "deny", "local", or NULL for an unknown value. */
const char *prs_redis_policy_name(int policy);
/* The policy named `name`, or -1. */
int prs_redis_policy_from_name(const char *name);

/* The in-process limiter behind PRS_REDIS_LOCAL. decide() decides n for key
 * (consume 1: take n when admitted; 0: change nothing): PRS_OK with *d, or a
 * status returned to the caller as is. lock/unlock (both or neither) let a
 * group decide several keys of one fallback with nobody in between: the
 * core takes the locks of a group's fallbacks in one global order (ascending
 * ctx address), peeks each, then consumes; decide() is called with the lock
 * held. Without them a group's local members are checked then taken, which
 * other callers may interleave. */
typedef struct prs_redis_fallback {
    int (*decide)(void *ctx, const void *key, size_t keylen, int64_t n, int consume, prs_decision *d);
    void (*lock)(void *ctx);
    void (*unlock)(void *ctx);
    void *ctx;
} prs_redis_fallback;

/* ---- limiters (continued) -------------------------------------------------- */

typedef struct prs_redis_limiter_config {
    int algorithm;             /* prs_redis_algorithm */
    /* gcra, token_bucket: */
    double rate;               /* permits per second, finite, in [1e-9, 1e12] */
    int64_t burst;             /* permits admissible at once, 1..2^50 */
    int from_window;           /* 1: sized by limit and window instead
                                  (rate = limit / window, burst = limit) */
    /* fixed_window, sliding_window_counter, sliding_window_log (and the
     * rate algorithms with from_window): */
    int64_t limit;             /* 1..2^50 (sliding_window_log: <= 1,000,000) */
    int64_t window_ns;         /* >= 1 us, <= 10 years */
    /* every algorithm: */
    const char *key_prefix;    /* NUL-terminated, no '{' or '}', <= 1024 bytes; default "prs:" */
    /* local leases (gcra, token_bucket only): 0 = off */
    int64_t lease_batch;       /* permits taken per round trip, 1..burst */
    int64_t lease_max_hold_ns; /* > 0 and <= 1 hour when batch > 0 */
    int lease_max_keys;        /* leases held at once; default 4096 */
    /* what a failed call becomes: */
    int on_backend_error;      /* prs_redis_policy; default PRS_REDIS_RAISE */
    /* PRS_REDIS_LOCAL: `fallback` decides; when NULL the limiter makes its own,
     * one in-process limiter of the same algorithm per key with local_share of
     * the limit (rate and burst, or limit, times the share; at least 1), at
     * most local_max_keys keys (a prs_keyed table: a limited key is never
     * evicted; a new key finding the table full of limited ones is denied). */
    double local_share;        /* (0, 1]; 0: not given (1 under LOCAL; given
                                  with another policy it is an error) */
    int64_t local_max_keys;    /* 1..2^31; default 10000 */
    const prs_redis_fallback *fallback; /* copied; its ctx must outlive the limiter */
    const prs_allocator *allocator;
} prs_redis_limiter_config;

typedef struct prs_redis_limiter prs_redis_limiter;

void prs_redis_limiter_config_init(prs_redis_limiter_config *cfg);
/* Which sizing fields a caller set (the config has no "not given"). */
enum {
    PRS_REDIS_GIVEN_RATE = 1u,
    PRS_REDIS_GIVEN_BURST = 2u,
    PRS_REDIS_GIVEN_LIMIT = 4u,
    PRS_REDIS_GIVEN_WINDOW = 8u
};
/* The sizing rule: gcra and token_bucket take rate and burst, or limit and
 * window (then it sets from_window); the window algorithms take limit and
 * window. PRS_OK, or PRS_EINVAL with *why (may be NULL) whose reason reads
 * after the algorithm's name ("gcra needs both rate and burst (missing
 * burst)"). Then prs_redis_limiter_config_check checks the values. */
int prs_redis_limiter_sizing(prs_redis_limiter_config *cfg, unsigned given, prs_config_error *why);
/* PRS_OK, or PRS_EINVAL/PRS_ERANGE with *why (may be NULL) naming the config
 * field that failed ("rate", "window_ns", "lease_batch", "local_share", ...)
 * and why ("must be >= 1"). */
int prs_redis_limiter_config_check(const prs_redis_limiter_config *cfg, prs_config_error *why);
/* The same, with "field reason" in prs_redis_last_error(). */
int prs_redis_limiter_config_validate(const prs_redis_limiter_config *cfg);
/* The limiter uses `b` (not owned: b must outlive it). No I/O here. */
int prs_redis_limiter_new(prs_redis_backend *b, const prs_redis_limiter_config *cfg,
                          prs_redis_limiter **out);
/* Frees the limiter; held lease permits lapse (they expire in Redis). */
void prs_redis_limiter_free(prs_redis_limiter *l);
/* Gives back every unspent lease permit (one pipelined round trip) and drops
 * the leases. PRS_OK, or under PRS_REDIS_RAISE a failure status (the permits
 * then lapse; under the other policies they lapse quietly). */
int prs_redis_limiter_release_leases(prs_redis_limiter *l);
/* Decisions l's on_backend_error policy made (allow, deny, local) because
 * Redis failed, alone or as a group member, since creation. 0 for NULL. */
uint64_t prs_redis_limiter_fallbacks(const prs_redis_limiter *l);

/* Asks for n (>= 1) permits for `key`; consumes only when allowed. With a
 * lease configured, served from the local lease when it can be. When Redis
 * fails, the limiter's on_backend_error decides (PRS_OK with *d) or the
 * failure is returned (PRS_REDIS_RAISE). The same holds for peek, check_at
 * and check_many (per request). */
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
 * PRS_OK with d[i] filled (a reply, or the policy's decision), or the failure
 * of request i. Returns PRS_OK when every request was decided, else the
 * first failure. */
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
 * of the member that denied (-1 when allowed). now_us < 0: Redis's TIME.
 *
 * When Redis fails, each member's on_backend_error applies and the strictest
 * wins: RAISE (any member) returns the failure; else a DENY member (or an
 * ALLOW member whose n exceeds its limit) denies, and no fallback is touched;
 * else the LOCAL members' fallbacks decide all or nothing among themselves
 * (one fallback and key named k times is asked for the sum); ALLOW members
 * admit. *d is then the denying member's decision (the longest retry_after
 * among DENY/ALLOW denials), or the most restrictive admitting one's. */
int prs_redis_group_check(size_t count, const prs_redis_member *members, int64_t now_us,
                          prs_decision *d, int *denied_by);

/* The most members of a group. */
#define PRS_REDIS_GROUP_MAX 1000
/* Whether count members can make one group: PRS_OK; PRS_ERANGE for a count
 * outside 1..PRS_REDIS_GROUP_MAX; PRS_EINVAL with *bad the index of a member
 * on another backend than member 0's (a group runs one script on one
 * server), or *bad == count when the backend is a Redis Cluster and the
 * members' keys span several hash slots (give them a common hash tag). */
int prs_redis_group_members_check(size_t count, const prs_redis_member *members, size_t *bad);

/* The one Redis Cluster slot every member's Redis key maps to, or -1 when
 * they span several (a group on Cluster needs one: give the keys a common
 * hash tag) or on bad arguments. */
int prs_redis_group_slot(size_t count, const prs_redis_member *members);

/* The Redis Cluster hash slot (0..16383) of a Redis key (CRC16 of its hash
 * tag, or of the whole key). */
int prs_redis_key_slot(const void *key, size_t len);
/* The Redis key that a limiter stores `key` under. Writes up to cap bytes to
 * buf (no NUL added); returns the full length (call with cap 0 to size it).
 * fixed_window and sliding_window_counter keep one key per window: this is
 * their stem, to which the window's "<index>" (fixed_window:
 * "<index>/<limit>") is appended; the hash tag is the same. */
size_t prs_redis_limiter_redis_key(const prs_redis_limiter *l, const void *key, size_t keylen,
                                   char *buf, size_t cap);

#ifdef __cplusplus
}
#endif
#endif /* PRS_REDIS_H */
