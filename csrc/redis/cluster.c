/*
 * cluster.c - Redis Cluster: one connection pool per primary, commands routed
 * by hash slot, MOVED and ASK followed.
 *
 * A backend made from "redis+cluster://host:port[,host:port...]" holds a
 * prs_redis__cluster instead of dialing itself. Each node is an ordinary
 * backend (its own pool, deadline, circuit, NOSCRIPT reload and fork
 * handling), so everything a single server guarantees holds per node.
 *
 * Slot map. slots[s] is the node serving slot s (-1: unknown, then the first
 * node is asked and its redirect followed). It is loaded with CLUSTER SLOTS
 * from any node that answers, before the first call and again after any MOVED
 * (a topology change: a resharding or a failover). `mu` guards the map and the
 * node list; it is held only to read or write them, never across I/O. Nodes
 * are added (a redirect may name a new one) but never removed while the
 * backend lives, so a pool pointer read under the lock stays valid.
 *
 * Routing. Every command carries the slot of its keys (the limiter's keys of
 * one decision share a hash tag: one slot); a block (MULTI ... EXEC) goes to
 * one node whole. Commands for one node keep their order and travel in one
 * pipelined round trip; different nodes are asked one after the other.
 *
 * Redirects. A block whose reply holds "MOVED slot host:port" was not run
 * (a script or a queued command is refused before it runs; EXEC then answers
 * EXECABORT), so it is sent again to that node, and the map is reloaded. "ASK
 * slot host:port" (a slot half-migrated) sends the block once to that node
 * after ASKING, without changing the map. At most PRS_REDIS_MAX_REDIRECTS per
 * block; past that the redirect reply is returned as it is (an error reply).
 *
 * Time. One call has one budget (the backend's timeout), shared by every node
 * it asks, the map load and the redirects: each node round trip ends by the
 * call's deadline.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/time.h>

#include "prs_redis_internal.h"

#define PRS_REDIS_MAX_NODES 256
#define NSLOTS 16384

typedef struct node {
    char *host;
    int port;
    prs_redis_backend *pool;
} node;

struct prs_redis__cluster {
    prs_allocator alloc;
    prs_redis_config cfg;          /* each node pool's (url replaced) */
    pthread_mutex_t mu;            /* guards everything below */
    node nodes[PRS_REDIS_MAX_NODES];
    int nnodes;
    int16_t slots[NSLOTS];         /* node index, -1 unknown */
    int stale;                     /* reload the map before the next call */
    /* Sentinel: the seeds are the sentinels (nodes[0..nsentinels)); the map
     * is every slot on the master they name for `service`. */
    char *service, *query;         /* the name; SENTINEL get-master-addr-by-name <name> in RESP */
    size_t querylen;
    int nsentinels, ask;           /* the sentinel, or the Cluster node, asked next for the map */
    _Atomic uint64_t gen;          /* fork generation of `mu` */
    _Atomic int resetting;
};

/* In a forked child: `mu` may have been copied locked (the node pools renew
 * themselves). */
static void cluster_reinit(void *ctx) { pthread_mutex_init(&((prs_redis__cluster *)ctx)->mu, NULL); }

/* The node host:port (added, with its pool, when new). -1 when the list is
 * full or out of memory. Caller holds mu. */
static int node_index(prs_redis__cluster *c, const char *host, size_t hostlen, int port) {
    for (int i = 0; i < c->nnodes; i++)
        if (c->nodes[i].port == port && strlen(c->nodes[i].host) == hostlen &&
            !memcmp(c->nodes[i].host, host, hostlen))
            return i;
    if (c->nnodes >= PRS_REDIS_MAX_NODES || hostlen == 0 || hostlen > 255) return -1;
    char url[300];
    int v6 = memchr(host, ':', hostlen) != NULL;
    snprintf(url, sizeof url, "redis://%s%.*s%s:%d/0", v6 ? "[" : "", (int)hostlen, host, v6 ? "]" : "", port);
    node *n = &c->nodes[c->nnodes];
    n->host = prs__malloc(&c->alloc, hostlen + 1);
    if (!n->host) return -1;
    memcpy(n->host, host, hostlen);
    n->host[hostlen] = '\0';
    n->port = port;
    prs_redis_config cfg = c->cfg;
    cfg.url = url;
    if (prs_redis_backend_new(&cfg, &n->pool)) {
        prs__free(&c->alloc, n->host);
        return -1;
    }
    return c->nnodes++;
}

/* "host:port" (host may be [IPv6]) in s[0..len): *host, *hostlen, *port. */
static int split_hostport(const char *s, size_t len, const char **host, size_t *hostlen, int *port) {
    const char *colon = NULL;
    for (size_t i = len; i-- > 0;)
        if (s[i] == ':') { colon = s + i; break; }
    *port = 6379;
    size_t hl = colon ? (size_t)(colon - s) : len;
    if (colon) {
        long p = 0;
        const char *q = colon + 1;
        if (q == s + len) return -1;
        for (; q < s + len; q++) {
            if (*q < '0' || *q > '9') return -1;
            p = p * 10 + (*q - '0');
            if (p > 65535) return -1;
        }
        if (p < 1) return -1;
        *port = (int)p;
    }
    if (hl >= 2 && s[0] == '[' && s[hl - 1] == ']') { s++; hl -= 2; }
    if (hl == 0) return -1;
    *host = s;
    *hostlen = hl;
    return 0;
}

/* redis+sentinel://...: the service's name after the hosts, and the query
 * naming its master, RESP. */
static int sentinel_init(prs_redis__cluster *c, const char *name) {
    size_t n = strlen(name);
    if (n == 0 || strcspn(name, "/?#") != n) {
        prs_redis__set_error("invalid Redis URL: redis+sentinel://host:port[,host:port...]/service_name "
                             "needs the service's name");
        return PRS_EINVAL;
    }
    c->service = prs__malloc(&c->alloc, n + 1);
    c->query = prs__malloc(&c->alloc, n + 80);
    if (!c->service || !c->query) return PRS_ENOMEM;
    memcpy(c->service, name, n + 1);
    c->querylen = (size_t)snprintf(c->query, n + 80, "*3\r\n$8\r\nSENTINEL\r\n$23\r\nget-master-addr-by-name\r\n"
                                   "$%zu\r\n%s\r\n", n, name);
    return PRS_OK;
}

int prs_redis__cluster_new(const prs_redis_config *cfg, prs_redis__cluster **out) {
    const char *url = cfg->url;
    int sentinel = !strncmp(url, "redis+sentinel://", 17);
    const char *p = url + (sentinel ? strlen("redis+sentinel://") : strlen("redis+cluster://"));
    const prs_allocator *a = prs__alloc_or_default(cfg->allocator);
    prs_redis__cluster *c = prs__calloc(a, 1, sizeof *c);
    if (!c) return PRS_ENOMEM;
    c->alloc = *a;
    c->cfg = *cfg;
    c->stale = 1;
    for (int i = 0; i < NSLOTS; i++) c->slots[i] = -1;
    if (pthread_mutex_init(&c->mu, NULL)) { prs__free(a, c); return PRS_ENOMEM; }
    prs_redis__fork_init();
    atomic_init(&c->gen, prs_redis__fork_gen());
    atomic_init(&c->resetting, 0);
    int rc = PRS_OK;
    size_t plen = strcspn(p, "/?");
    if (sentinel) {
        rc = p[plen] == '/' ? sentinel_init(c, p + plen + 1) : sentinel_init(c, "");
    } else if (p[plen] && strcmp(p + plen, "/") && strcmp(p + plen, "/0")) {
        prs_redis__set_error("invalid Redis URL: redis+cluster:// takes host:port[,host:port...] only "
                             "(a Cluster has database 0 alone)");
        rc = PRS_EINVAL;
    }
    while (rc == PRS_OK && plen > 0) {
        size_t len = 0;
        while (len < plen && p[len] != ',') len++;
        const char *host;
        size_t hostlen;
        int port;
        if (split_hostport(p, len, &host, &hostlen, &port) || memchr(host, '@', hostlen)) {
            prs_redis__set_error("invalid Redis URL: bad seed %.*s in %s", (int)len, p,
                                 sentinel ? "redis+sentinel://" : "redis+cluster://");
            rc = PRS_EINVAL;
        } else if (node_index(c, host, hostlen, port) < 0) {
            rc = PRS_ENOMEM;
        }
        p += len + (len < plen);
        plen -= len + (len < plen);
    }
    if (rc == PRS_OK && c->nnodes == 0) {
        prs_redis__set_error("invalid Redis URL: %s needs at least one host:port",
                             sentinel ? "redis+sentinel://" : "redis+cluster://");
        rc = PRS_EINVAL;
    }
    c->nsentinels = sentinel ? c->nnodes : 0;
    if (rc) { prs_redis__cluster_free(c); return rc; }
    *out = c;
    return PRS_OK;
}

void prs_redis__cluster_free(prs_redis__cluster *c) {
    if (!c) return;
    for (int i = 0; i < c->nnodes; i++) {
        prs_redis_backend_free(c->nodes[i].pool);
        prs__free(&c->alloc, c->nodes[i].host);
    }
    pthread_mutex_destroy(&c->mu);
    prs__free(&c->alloc, c->service);
    prs__free(&c->alloc, c->query);
    prs_allocator a = c->alloc;
    prs__free(&a, c);
}

void prs_redis__cluster_close(prs_redis__cluster *c) {
    pthread_mutex_lock(&c->mu);
    int n = c->nnodes;
    pthread_mutex_unlock(&c->mu);
    for (int i = 0; i < n; i++) prs_redis_backend_close(c->nodes[i].pool);
}

int prs_redis__cluster_connections(prs_redis__cluster *c) {
    pthread_mutex_lock(&c->mu);
    int n = c->nnodes, total = 0;
    pthread_mutex_unlock(&c->mu);
    for (int i = 0; i < n; i++) total += prs_redis_backend_connections(c->nodes[i].pool);
    return total;
}

/* ---- the slot map ------------------------------------------------------- */

static int int_of(const redisReply *r, long long *v) {
    if (r->type == REDIS_REPLY_INTEGER) { *v = r->integer; return 0; }
    return -1;
}

/* Applies a CLUSTER SLOTS reply got from node `from`. 0, or -1 when it is
 * not one. Caller holds mu. */
static int apply_slots(prs_redis__cluster *c, const redisReply *r, int from) {
    if (r->type != REDIS_REPLY_ARRAY || r->elements == 0) return -1;
    for (size_t i = 0; i < r->elements; i++) {
        const redisReply *e = r->element[i];
        long long lo, hi, port;
        if (e->type != REDIS_REPLY_ARRAY || e->elements < 3 || int_of(e->element[0], &lo) ||
            int_of(e->element[1], &hi) || lo < 0 || hi >= NSLOTS || lo > hi)
            return -1;
        const redisReply *primary = e->element[2];
        if (primary->type != REDIS_REPLY_ARRAY || primary->elements < 2 ||
            primary->element[0]->type != REDIS_REPLY_STRING || int_of(primary->element[1], &port))
            return -1;
        const char *host = primary->element[0]->str;
        size_t hostlen = primary->element[0]->len;
        if (hostlen == 0 || (hostlen == 1 && host[0] == '?')) { /* "the node you asked" */
            host = c->nodes[from].host;
            hostlen = strlen(host);
        }
        int idx = node_index(c, host, hostlen, (int)port);
        if (idx < 0) return -1;
        for (long long s = lo; s <= hi; s++) c->slots[s] = (int16_t)idx;
    }
    return 0;
}

/* Applies a sentinel's SENTINEL get-master-addr-by-name reply: every slot
 * on the master it names. 0, or -1 when it names none. Caller holds mu. */
static int apply_master(prs_redis__cluster *c, const redisReply *r) {
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 || r->element[0]->type != REDIS_REPLY_STRING ||
        r->element[1]->type != REDIS_REPLY_STRING)
        return -1;
    char *end;
    long port = strtol(r->element[1]->str, &end, 10);
    if (*end || port < 1 || port > 65535) return -1;
    int idx = node_index(c, r->element[0]->str, r->element[0]->len, (int)port);
    if (idx < 0) return -1;
    for (int s = 0; s < NSLOTS; s++) c->slots[s] = (int16_t)idx;
    return 0;
}

/* Asks the sentinels in turn (from the one that answered last) for the
 * master, on a connection of its own that ends by the deadline. */
static int ask_sentinels(prs_redis__cluster *c, int64_t deadline) {
    int rc = PRS_ECONN;
    prs_redis__set_error("redis: no sentinel of %s answered", c->service);
    for (int k = 0; k < c->nsentinels; k++) {
        pthread_mutex_lock(&c->mu);
        int i = (c->ask + k) % c->nsentinels;
        pthread_mutex_unlock(&c->mu);
        int64_t left = prs__min64(deadline - prs_monotonic_ns(), c->cfg.connect_timeout_ns);
        if (left <= 0) return PRS_ETIMEDOUT;
        struct timeval tv = {(time_t)(left / PRS_NS_PER_SEC), (suseconds_t)(left % PRS_NS_PER_SEC / 1000)};
        redisContext *ctx = redisConnectWithTimeout(c->nodes[i].host, c->nodes[i].port, tv);
        redisReply *r = ctx && !ctx->err && redisSetTimeout(ctx, tv) == REDIS_OK
                            ? redisCommand(ctx, "SENTINEL get-master-addr-by-name %s", c->service) : NULL;
        pthread_mutex_lock(&c->mu);
        int bad = !r || apply_master(c, r);
        if (!bad) {
            c->stale = 0;
            c->ask = i;
        }
        pthread_mutex_unlock(&c->mu);
        if (r) freeReplyObject(r);
        redisFree(ctx);
        if (!bad) return PRS_OK;
        if (r) {
            prs_redis__set_error("redis: sentinel %s:%d names no master for %s", c->nodes[i].host, c->nodes[i].port,
                                 c->service);
            rc = PRS_EBACKEND;
        }
    }
    return rc;
}

/* Loads the map from the first node that answers CLUSTER SLOTS. */
static int load_map(prs_redis__cluster *c, int64_t deadline) {
    if (c->service) return ask_sentinels(c, deadline);
    static const char *const argv[] = {"CLUSTER", "SLOTS"};
    static const size_t lens[] = {7, 5};
    pthread_mutex_lock(&c->mu);
    int n = c->nnodes, first = c->ask;
    pthread_mutex_unlock(&c->mu);
    int rc = PRS_ECONN;
    for (int k = 0; k < n; k++) { /* from the node that answered last: a dead first seed costs nothing */
        int i = (first + k) % n;
        prs_redis__cmd cmd = {2, (const char **)argv, (size_t *)lens, -1, 0, 0};
        redisReply *r = NULL;
        rc = prs_redis__roundtrip_until(c->nodes[i].pool, deadline, 1, &cmd, &r);
        if (rc) continue;
        pthread_mutex_lock(&c->mu);
        int bad = apply_slots(c, r, i);
        if (!bad) {
            c->stale = 0;
            c->ask = i;
        }
        pthread_mutex_unlock(&c->mu);
        freeReplyObject(r);
        if (!bad) return PRS_OK;
        prs_redis__set_error("redis: CLUSTER SLOTS gave an unexpected reply (is this a Redis Cluster?)");
        rc = PRS_EPROTO;
    }
    return rc;
}

static int node_of_slot(prs_redis__cluster *c, int slot) {
    pthread_mutex_lock(&c->mu);
    int i = slot >= 0 && slot < NSLOTS ? c->slots[slot] : -1;
    pthread_mutex_unlock(&c->mu);
    return i < 0 ? 0 : i;
}

/* A MOVED or ASK reply: 1 (MOVED) or 2 (ASK) with the target node, else 0. */
static int redirect_of(prs_redis__cluster *c, const redisReply *r, int *slot, int *target) {
    if (!r || r->type != REDIS_REPLY_ERROR || !r->str) return 0;
    int kind = !strncmp(r->str, "MOVED ", 6) ? 1 : !strncmp(r->str, "ASK ", 4) ? 2 : 0;
    if (!kind) return 0;
    const char *p = r->str + (kind == 1 ? 6 : 4);
    char *end;
    long s = strtol(p, &end, 10);
    if (end == p || *end != ' ' || s < 0 || s >= NSLOTS) return 0;
    const char *hp = end + 1;
    const char *host;
    size_t hostlen;
    int port;
    if (split_hostport(hp, strlen(hp), &host, &hostlen, &port)) return 0;
    pthread_mutex_lock(&c->mu);
    int idx = node_index(c, host, hostlen, port);
    if (idx >= 0 && kind == 1) {
        c->slots[s] = (int16_t)idx;
        c->stale = 1;
    }
    pthread_mutex_unlock(&c->mu);
    if (idx < 0) return 0;
    *slot = (int)s;
    *target = idx;
    return kind;
}

/* ---- routing ------------------------------------------------------------ */

static size_t block_len(const prs_redis__cmd *cmds, size_t i, size_t ncmds) {
    size_t k = cmds[i].nblock > 1 ? (size_t)cmds[i].nblock : 1;
    return k <= ncmds - i ? k : ncmds - i;
}

/* Sends the block cmds[0..k) to node `to` (after ASKING when ask), its
 * replies into replies[0..k). */
static int send_block(prs_redis__cluster *c, int64_t deadline, int to, int ask, size_t k, prs_redis__cmd *cmds,
                      redisReply **replies) {
    if (!ask) return prs_redis__roundtrip_until(c->nodes[to].pool, deadline, k, cmds, replies);
    static const char *asking[] = {"ASKING"};
    static size_t asking_len[] = {6};
    prs_redis__cmd tmp[8];
    redisReply *rr[8];
    if (k + 1 > 8) return PRS_EINVAL;
    tmp[0] = (prs_redis__cmd){1, asking, asking_len, -1, 0, 0};
    memcpy(&tmp[1], cmds, k * sizeof *cmds);
    int rc = prs_redis__roundtrip_until(c->nodes[to].pool, deadline, k + 1, tmp, rr);
    if (rc) return rc;
    freeReplyObject(rr[0]);
    memcpy(replies, &rr[1], k * sizeof *replies);
    return PRS_OK;
}

static int route_all(prs_redis__cluster *c, int64_t deadline, size_t ncmds, prs_redis__cmd *cmds,
                     redisReply **replies) {
    pthread_mutex_lock(&c->mu);
    int stale = c->stale;
    pthread_mutex_unlock(&c->mu);
    if (stale) { /* a failure: the first node is asked, its redirects followed (a sentinel knows no slot) */
        int lr = load_map(c, deadline);
        if (lr && c->service) return lr;
    }
    int *to = prs__calloc(&c->alloc, ncmds ? ncmds : 1, sizeof *to);
    prs_redis__cmd *sub = prs__calloc(&c->alloc, ncmds ? ncmds : 1, sizeof *sub);
    redisReply **got = prs__calloc(&c->alloc, ncmds ? ncmds : 1, sizeof *got);
    size_t *at = prs__calloc(&c->alloc, ncmds ? ncmds : 1, sizeof *at);
    int rc = to && sub && got && at ? PRS_OK : PRS_ENOMEM;
    for (size_t i = 0; rc == PRS_OK && i < ncmds;) {
        size_t k = block_len(cmds, i, ncmds);
        int n = node_of_slot(c, cmds[i].slot);
        for (size_t j = 0; j < k; j++) to[i + j] = n;
        i += k;
    }
    for (size_t i = 0; i < ncmds; i++) replies[i] = NULL;
    /* One pipelined round trip per node, in node order. */
    for (int n = 0; rc == PRS_OK; n++) {
        pthread_mutex_lock(&c->mu);
        int nnodes = c->nnodes;
        pthread_mutex_unlock(&c->mu);
        if (n >= nnodes) break;
        size_t m = 0;
        for (size_t i = 0; i < ncmds; i++)
            if (to[i] == n) { sub[m] = cmds[i]; at[m++] = i; }
        if (!m) continue;
        rc = prs_redis__roundtrip_until(c->nodes[n].pool, deadline, m, sub, got);
        for (size_t j = 0; rc == PRS_OK && j < m; j++) replies[at[j]] = got[j];
    }
    /* Redirected blocks: sent again where the cluster says. */
    for (size_t i = 0; rc == PRS_OK && i < ncmds;) {
        size_t k = block_len(cmds, i, ncmds);
        for (int hops = 0; hops < PRS_REDIS_MAX_REDIRECTS; hops++) {
            int kind = 0, slot = 0, target = 0;
            for (size_t j = 0; j < k && !kind; j++) kind = redirect_of(c, replies[i + j], &slot, &target);
            if (!kind) break;
            for (size_t j = 0; j < k; j++) { freeReplyObject(replies[i + j]); replies[i + j] = NULL; }
            rc = send_block(c, deadline, target, kind == 2, k, &cmds[i], &replies[i]);
            if (rc) break;
        }
        i += k;
    }
    if (rc)
        for (size_t i = 0; i < ncmds; i++)
            if (replies[i]) { freeReplyObject(replies[i]); replies[i] = NULL; }
    prs__free(&c->alloc, to);
    prs__free(&c->alloc, sub);
    prs__free(&c->alloc, got);
    prs__free(&c->alloc, at);
    return rc;
}

/* ---- the sans-I/O ops' view (no I/O, mu held only to read or write) ----- */

int prs_redis__cluster_route(prs_redis__cluster *c, int slot) { return node_of_slot(c, slot); }

int prs_redis__cluster_stale(prs_redis__cluster *c) {
    prs_redis__after_fork(&c->gen, &c->resetting, cluster_reinit, c);
    pthread_mutex_lock(&c->mu);
    int stale = c->stale;
    pthread_mutex_unlock(&c->mu);
    return stale;
}

int prs_redis__cluster_apply(prs_redis__cluster *c, const redisReply *r, int from) {
    pthread_mutex_lock(&c->mu);
    int bad = from < 0 || from >= c->nnodes || (c->service ? apply_master(c, r) : apply_slots(c, r, from));
    if (!bad) c->stale = 0;
    if (!bad && !c->service) c->ask = from;
    pthread_mutex_unlock(&c->mu);
    return bad ? PRS_EPROTO : PRS_OK;
}

int prs_redis__cluster_redirect(prs_redis__cluster *c, const redisReply *r, int *target) {
    int slot;
    return redirect_of(c, r, &slot, target);
}

int prs_redis__cluster_node(prs_redis__cluster *c, int i, const char **host, int *port) {
    pthread_mutex_lock(&c->mu);
    int ok = i >= 0 && i < c->nnodes;
    if (ok) {
        *host = c->nodes[i].host; /* nodes are never removed: valid while the backend lives */
        *port = c->nodes[i].port;
    }
    pthread_mutex_unlock(&c->mu);
    return ok ? PRS_OK : PRS_EINVAL;
}

int prs_redis__cluster_roundtrip(prs_redis__cluster *c, int64_t deadline, size_t ncmds, prs_redis__cmd *cmds,
                                 redisReply **replies) {
    prs_redis__after_fork(&c->gen, &c->resetting, cluster_reinit, c);
    for (int again = 0;; again++) {
        int rc = route_all(c, deadline, ncmds, cmds, replies);
        if (rc == PRS_ECONN || rc == PRS_ETIMEDOUT || rc == PRS_EPROTO) prs_redis__cluster_invalidate(c);
        int readonly = 0;
        for (size_t i = 0; rc == PRS_OK && i < ncmds; i++) readonly |= prs_redis__is_readonly(replies[i]);
        if (!readonly || !c->service || again) return rc;
        /* A sentinel's master turned replica (a failover): nothing was
         * written; ask again and send it all to the master named now. */
        prs_redis__cluster_invalidate(c);
        for (size_t i = 0; i < ncmds; i++) { freeReplyObject(replies[i]); replies[i] = NULL; }
    }
}

int prs_redis__cluster_sentinel(const prs_redis__cluster *c) { return c->service != NULL; }

void prs_redis__cluster_invalidate(prs_redis__cluster *c) {
    pthread_mutex_lock(&c->mu);
    c->stale = 1;
    if (!c->service) c->ask = (c->ask + 1) % c->nnodes; /* the node asked for the map may be the dead one */
    if (c->service) {
        c->ask = (c->ask + 1) % c->nsentinels;
        for (int s = 0; s < NSLOTS; s++) c->slots[s] = -1;
    }
    pthread_mutex_unlock(&c->mu);
}

int prs_redis__cluster_map_query(prs_redis__cluster *c, int *node, const char **buf, size_t *len) {
    pthread_mutex_lock(&c->mu);
    *node = c->ask;
    pthread_mutex_unlock(&c->mu);
    *buf = c->service ? c->query : "*2\r\n$7\r\nCLUSTER\r\n$5\r\nSLOTS\r\n";
    *len = c->service ? c->querylen : 28;
    return PRS_OK;
}

int prs_redis__is_readonly(const redisReply *r) {
    if (!r) return 0;
    if (r->type == REDIS_REPLY_ARRAY) {
        for (size_t i = 0; i < r->elements; i++)
            if (prs_redis__is_readonly(r->element[i])) return 1;
        return 0;
    }
    return r->type == REDIS_REPLY_ERROR && r->str && (!strncmp(r->str, "READONLY", 8) || strstr(r->str, "-READONLY"));
}
