/*
 * prs_redis_ops.h - sans-I/O forms of the Redis calls, for transports that
 * are not the backend's blocking pool (the asyncio connection of
 * pyresilience._redis_async), or run on that pool (prs_redis_op_run: one
 * call, two transports). Not installed.
 *
 * An op is one call (a check, a peek, a reset, a check_many, a group check)
 * split at its network I/O: prs_redis_op_*_new builds exactly the commands
 * the blocking call would send (the same scripts, keys and arguments), as
 * RESP bytes; the transport sends them, reads one reply per command and
 * hands them to prs_redis_op_finish, which turns them into the decisions the
 * blocking call returns - or, when the transport failed, applies the same
 * failure policy (on_backend_error, per member for groups). Leases work the
 * same: a check served by the local lease needs no op at all. The builders
 * and the parsers are the blocking calls' own.
 *
 * A transport either sends prs_redis_op_request to its one server itself
 * (a NOSCRIPT error reply to command i means the server lost its script
 * cache: send prs_redis_op_eval(op, i), EVAL with the script's body, and use
 * its reply instead), or lets the op drive it (prs_redis_op_step below):
 * then the op also routes a Redis Cluster's commands by slot, follows MOVED
 * and ASK, and reloads lost scripts per node. The replies a transport reads
 * are parsed by prs_redis_reader (hiredis's reader), as the pool's are.
 *
 * The backend's circuit is shared with the blocking calls:
 * prs_redis_backend_admit() before sending (0: fail fast with the status it
 * returns), prs_redis_backend_outcome() after.
 */
#ifndef PRS_REDIS_OPS_H
#define PRS_REDIS_OPS_H

#include <hiredis/hiredis.h>

#include "prs_redis.h"

typedef struct prs_redis_op prs_redis_op;

enum { PRS_REDIS_OP_CHECK = 'c', PRS_REDIS_OP_PEEK = 'p', PRS_REDIS_OP_RESET = 'r' };
/* The kind named "check", "peek" or "reset"; 0 for any other name. */
int prs_redis_op_kind_from_name(const char *name);

/* One limiter call: kind CHECK (now_us >= 0: at that time, no lease), PEEK
 * or RESET. PRS_OK with *out NULL and *d filled when it was decided without
 * I/O (a lease, a cached denial); PRS_OK with *out: send it; else a status
 * (PRS_EINVAL, PRS_ENOMEM). Keys are copied. */
int prs_redis_op_limiter_new(prs_redis_limiter *l, int kind, const void *key, size_t keylen, int64_t n,
                             int64_t now_us, prs_redis_op **out, prs_decision *d);
/* The same call made blocking on the backend's pool, as the op's builder
 * takes it: CHECK (now_us >= 0: prs_redis_limiter_check_at, else
 * prs_redis_limiter_check), PEEK, or RESET (d untouched). PRS_EINVAL for
 * another kind. */
int prs_redis_limiter_call(prs_redis_limiter *l, int kind, const void *key, size_t keylen, int64_t n,
                           int64_t now_us, prs_decision *d);
/* check_many: count (>= 1) pipelined checks (no leases). */
int prs_redis_op_many_new(prs_redis_limiter *l, size_t count, const prs_redis_request *reqs,
                          prs_redis_op **out);
/* close()'s give-back of every unspent lease permit: detaches the leases
 * now; PRS_OK with *out NULL when none held any. Finishing it returns a
 * failure only under PRS_REDIS_RAISE (the permits lapse otherwise). */
int prs_redis_op_release_new(prs_redis_limiter *l, prs_redis_op **out);
/* A group's one script (members as for prs_redis_group_check). */
int prs_redis_op_group_new(size_t count, const prs_redis_member *members, int64_t now_us,
                           prs_redis_op **out);

/* The commands to send (RESP, pipelined) and how many replies they get. */
const char *prs_redis_op_request(const prs_redis_op *op, size_t *len);
size_t prs_redis_op_ncmds(const prs_redis_op *op);
/* How many decisions (and statuses) finishing it fills: check_many's
 * requests, else 1. A decision may take several commands (the fixed window
 * sends MULTI, SET, BITFIELD, EXEC and reads its decision in EXEC's reply). */
size_t prs_redis_op_decisions(const prs_redis_op *op);
/* 'c' check, 'p' peek, 'l' leased check, 'r' reset, 'm' check_many, 'g' group, 'h' lease give-back. */
int prs_redis_op_kind(const prs_redis_op *op);
/* Command i again as EVAL with its script's body (after a NOSCRIPT reply):
 * PRS_OK with the bytes (owned by op, valid until the next call or free),
 * PRS_EINVAL when command i runs no script, PRS_ENOMEM. */
int prs_redis_op_eval(prs_redis_op *op, size_t i, const char **buf, size_t *len);

/* Finishes the op once: rc PRS_OK with replies[0..ncmds), else the
 * transport's failure (replies ignored), which the policy decides.
 * Single calls: d[0]; check_many: d[i] and status[i] per request (returns
 * the first failure); group: d[0] and *denied_by; reset: nothing. Returns
 * PRS_OK or the failure the policy left (PRS_EINVAL when finished twice). */
int prs_redis_op_finish(prs_redis_op *op, int rc, redisReply *const *replies, prs_decision *d, int *status,
                        int *denied_by);
void prs_redis_op_free(prs_redis_op *op);
/* Runs op on its backend's pool, blocking, as the blocking calls run theirs
 * (the timeout, the circuit, a stale connection, NOSCRIPT, a Cluster's
 * routing and redirects), and finishes it (prs_redis_op_finish with the
 * replies or the pool's failure). PRS_EINVAL for an op stepped or finished. */
int prs_redis_op_run(prs_redis_op *op, prs_decision *d, int *status, int *denied_by);

/* ---- an op driving its transport ------------------------------------------
 * The op runs in steps. prs_redis_op_step gives the next step's sends; each
 * goes to one node of the backend - 0, the server, or a Cluster's node
 * (address from prs_redis_backend_node) - and gets `nreplies` replies, in
 * order, each handed to prs_redis_op_put(op, send index, reply). When every
 * reply of the step is in, step again; a step without sends means done:
 * finish the op with replies NULL (it uses the ones it was given). The first
 * step sends the commands (one send of prs_redis_op_request on one server; on
 * a Cluster, CLUSTER SLOTS first when the slot map is stale, then one send per
 * node, commands in order); later ones send a MOVED or ASK block again where
 * the cluster says (at most 5 times a block) and a NOSCRIPT command as EVAL
 * to the node that answered. The sends are the op's until its next step. */
typedef struct prs_redis_send {
    int node;
    const char *buf;
    size_t len;
    size_t nreplies;
} prs_redis_send;
int prs_redis_op_step(prs_redis_op *op, const prs_redis_send **sends, size_t *count);
/* Reply (the op's from now on, freed even on failure) as the next of send s:
 * 1 when it was the step's last, 0 when more are due, PRS_EINVAL when none
 * is due from s. */
int prs_redis_op_put(prs_redis_op *op, size_t s, redisReply *reply);
/* A Cluster's node i: PRS_OK with its address (valid while b lives), else
 * PRS_EINVAL (no such node, or not a Cluster). */
int prs_redis_backend_node(prs_redis_backend *b, int i, const char **host, int *port);

/* ---- the reader -------------------------------------------------------------
 * Feed the bytes a connection reads; take whole replies in order (hiredis
 * redisReply trees: freeReplyObject). PRS_EPROTO (message set) when the
 * stream is not RESP: drop the connection. */
typedef struct prs_redis_reader prs_redis_reader;
int prs_redis_reader_new(prs_redis_reader **out);
void prs_redis_reader_free(prs_redis_reader *r);
int prs_redis_reader_feed(prs_redis_reader *r, const char *buf, size_t len);
/* PRS_OK with *out the next reply, or NULL when none is whole yet. */
int prs_redis_reader_next(prs_redis_reader *r, redisReply **out);

/* The backend's circuit, shared with its blocking calls: *admit 1 (go), 2
 * (go as the probe of a half-open circuit) with PRS_OK, or 0 with
 * PRS_EBACKEND (open: fail fast) or PRS_EBACKENDCLOSED, the message in
 * prs_redis_last_error(). After an admitted exchange, its outcome: rc
 * PRS_OK or the transport's failure status. */
int prs_redis_backend_admit(prs_redis_backend *b, int *admit);
void prs_redis_backend_outcome(prs_redis_backend *b, int admit, int rc);
/* Redis's clock, learned by a transport's fresh connection as the pool's
 * connections learn it: a TIME sent at sent_us and its reply read at got_us
 * (CLOCK_REALTIME, microseconds since the epoch); the ops then send Redis's
 * time as the blocking calls do. A reply that is not TIME's is ignored. */
void prs_redis_backend_clock(prs_redis_backend *b, int64_t sent_us, int64_t got_us, const redisReply *time_reply);
/* The same from the reply's time: server_us, microseconds since the epoch. */
void prs_redis_backend_clock_us(prs_redis_backend *b, int64_t sent_us, int64_t got_us, int64_t server_us);
/* The backend's parsed URL (owned by b). */
const prs_redis_url *prs_redis_backend_url(const prs_redis_backend *b);
/* The backend of a limiter. */
prs_redis_backend *prs_redis_limiter_backend(const prs_redis_limiter *l);

/* A transport failure reported by name: "ECONN", "ETIMEDOUT", "EPROTO",
 * "EBACKEND" or "EBACKENDCLOSED" (prs_err_name without "PRS_"): its status;
 * PRS_OK for any other name. */
int prs_redis_transport_status(const char *name);

/* Sets this thread's last error message (what prs_redis_last_error returns). */
void prs_redis_set_last_error(const char *msg);

/* The distributed circuit breaker's Lua script (breaker_script.c). */
const char *prs_redis_breaker_script(size_t *len);
/* Redis's clock now, in microseconds since the epoch, as the backend's
 * connections learned it (the time the breaker script is sent, as the
 * limiters send theirs: no script reads TIME). */
int64_t prs_redis_backend_now_us(prs_redis_backend *b);

#endif /* PRS_REDIS_OPS_H */
