/*
 * prs_redis_internal.h - what the csrc/redis files share; not installed.
 * Includes hiredis (the public prs_redis.h never does).
 */
#ifndef PRS_REDIS_INTERNAL_H
#define PRS_REDIS_INTERNAL_H

#include <hiredis/hiredis.h>
#include <stdarg.h>

#include "prs_internal.h"
#include "prs_redis.h"

/* ---- scripts (redis_scripts.c) ---------------------------------------- */

/* Script slots: one per algorithm (same numbers as prs_redis_algorithm), the
 * group script, the empty script used as the benchmark floor, and the
 * check-only scripts of the bucket algorithms (GCRA, token bucket) and of the
 * sliding log. */
enum { PRS_REDIS__SCRIPT_GROUP = PRS_REDIS__ALGORITHM_COUNT, PRS_REDIS__SCRIPT_NOOP,
       PRS_REDIS__SCRIPT_BUCKET_CHECK, PRS_REDIS__SCRIPT_LOG_CHECK, PRS_REDIS__NSCRIPTS };

typedef struct prs_redis__script {
    const char *body;
    size_t len;
    char sha[41];  /* lowercase hex SHA1 of body, NUL-terminated */
} prs_redis__script;

/* The scripts, with their SHA1s computed once (thread-safe, idempotent). */
const prs_redis__script *prs_redis__scripts(void);
/* The slot of a limiter's specialised check script (thread-safe; one per
 * distinct configuration, kept for the process's life): the bucket's
 * (gcra, token_bucket: p1 = T in us, p2 = burst) or the sliding log's (p1 =
 * W in us, p2 = limit, ttl_ms its key's TTL). -1 when the table is full:
 * then the generic check script, which reads them from ARGV. */
int prs_redis__check_script(int algorithm, double p1, int64_t p2, int64_t ttl_ms);
/* Whether a bucket's check script is the INCRBY form (T whole microseconds,
 * burst * T < 2^52): its ARGV[3] is then n * T in decimal (n <= burst).
 * Otherwise it is the quarter form: ARGV[3], when sent (2^50 <= now <
 * 2^51 us, n <= burst), is n * T in quarter microseconds, rounded. */
int prs_redis__bucket_incr(double T, int64_t burst);
/* A RESP command cmd[0..len), EVALSHA of script s, as EVAL with s's body:
 * a new buffer (prs__malloc) in *out. PRS_OK or PRS_ENOMEM. */
int prs_redis__resp_eval(const prs_allocator *a, const char *cmd, size_t len, const prs_redis__script *s,
                         char **out, size_t *outlen);
/* SHA1 of data as 40 lowercase hex digits + NUL. */
void prs_redis__sha1_hex(const void *data, size_t len, char out[41]);

/* ---- the backend (redis.c) -------------------------------------------- */

/* Sets this thread's last error message (printf-style). */
void prs_redis__set_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* One round trip on a pooled connection: send `ncmds` commands (pipelined),
 * read their replies into replies[0..ncmds) (the caller frees each with
 * freeReplyObject). A script command is EVALSHA with its sha in argv[1]; a
 * NOSCRIPT reply is retried once with EVAL of the body (script index in
 * scripts[i], or -1 for a plain command). Applies the deadline, the retry on
 * a stale connection and the circuit. PRS_OK when every reply was read
 * (individual replies may be errors), else a failure status and no replies. */
typedef struct prs_redis__cmd {
    int argc;
    const char **argv;
    size_t *argvlen;
    int script;     /* -1 or the script slot (then argv[0..1] are EVALSHA, sha) */
    int slot;       /* Cluster: the hash slot of its keys (0 for a command without keys) */
    int nblock;     /* > 1: first of nblock commands sent together to one node (MULTI ... EXEC) */
} prs_redis__cmd; /* argc 0: argv[0] is the command in RESP already, argvlen[0] bytes (an op's) */

int prs_redis__roundtrip(prs_redis_backend *b, size_t ncmds, prs_redis__cmd *cmds, redisReply **replies);
/* The same on a single-server backend, ending by `until` (monotonic ns) when
 * that comes before its own timeout. */
int prs_redis__roundtrip_until(prs_redis_backend *b, int64_t until, size_t ncmds, prs_redis__cmd *cmds,
                               redisReply **replies);

/* ---- Redis Cluster (cluster.c) ---------------------------------------- */

/* Redirects (MOVED, ASK) followed per block of commands before its reply stands. */
#define PRS_REDIS_MAX_REDIRECTS 5

typedef struct prs_redis__cluster prs_redis__cluster;
/* Parses "redis+cluster://host:port[,host:port...]" (or
 * "redis+sentinel://host:port[,host:port...]/service_name") and makes one pool per
 * seed (cfg's timeouts and max_connections each). PRS_EINVAL (message set),
 * PRS_ENOMEM. */
int prs_redis__cluster_new(const prs_redis_config *cfg, prs_redis__cluster **out);
void prs_redis__cluster_free(prs_redis__cluster *c);
void prs_redis__cluster_close(prs_redis__cluster *c);
int prs_redis__cluster_connections(prs_redis__cluster *c);
/* prs_redis__roundtrip over the cluster: each command (block) goes to the
 * primary of its slot; MOVED and ASK replies are followed. */
int prs_redis__cluster_roundtrip(prs_redis__cluster *c, int64_t deadline, size_t ncmds, prs_redis__cmd *cmds,
                                 redisReply **replies);
/* The same map without I/O, for the sans-I/O ops: the node (index) serving
 * slot (0 when unknown: its redirect is followed); whether the map needs a
 * reload; a CLUSTER SLOTS reply got from node `from` applied (PRS_EPROTO when
 * it is not one); a MOVED (1) or ASK (2) reply's target node (0: neither; a
 * MOVED updates the slot and marks the map stale); node i's address. */
int prs_redis__cluster_route(prs_redis__cluster *c, int slot);
int prs_redis__cluster_stale(prs_redis__cluster *c);
int prs_redis__cluster_apply(prs_redis__cluster *c, const redisReply *r, int from);
int prs_redis__cluster_redirect(prs_redis__cluster *c, const redisReply *r, int *target);
int prs_redis__cluster_node(prs_redis__cluster *c, int i, const char **host, int *port);
/* The query that loads the map, for the sans-I/O ops: its node and RESP (a
 * Cluster: CLUSTER SLOTS to the node that answered last, the next one
 * after a connection failure; Sentinel: the sentinel to ask). */
int prs_redis__cluster_map_query(prs_redis__cluster *c, int *node, const char **buf, size_t *len);
/* After a connection failure, or a master that turned replica: reload the
 * map before the next call (Sentinel: ask the next sentinel). */
void prs_redis__cluster_invalidate(prs_redis__cluster *c);
/* redis+sentinel:// - the same routing over one master, named by sentinels. */
int prs_redis__cluster_sentinel(const prs_redis__cluster *c);
/* A READONLY error reply (or one inside an EXEC's): written on a replica. */
int prs_redis__is_readonly(const redisReply *r);
prs_redis__cluster *prs_redis__backend_cluster(const prs_redis_backend *b);
const prs_allocator *prs_redis__backend_alloc(const prs_redis_backend *b);
/* Redis's clock now, in microseconds since the epoch: our CLOCK_REALTIME plus
 * the offset learned by a TIME on each new connection (0 before the first). */
int64_t prs_redis__now_us(prs_redis_backend *b);

/* The generation of this process (bumped in every forked child). */
uint64_t prs_redis__fork_gen(void);
void prs_redis__fork_init(void);
/* The first call in a forked child (for an object whose generation is *gen)
 * runs reinit(ctx) exactly once, then records this process's generation;
 * concurrent callers wait for it (`resetting`). A no-op otherwise. */
void prs_redis__after_fork(_Atomic uint64_t *gen, _Atomic int *resetting, void (*reinit)(void *), void *ctx);

/* 64-bit keyed hash (SipHash-2-4). */
uint64_t prs_redis__siphash(const void *data, size_t len, uint64_t k0, uint64_t k1);

#endif /* PRS_REDIS_INTERNAL_H */
