/*
 * prs_group.h - several limiters checked as one, all or nothing.
 *
 *   prs_group_member m[3];
 *   prs_group_member_limiter(&m[0], global);               // a plain limiter
 *   prs_group_member_keyed(&m[1], per_user, "u42", 3);      // a key of a table
 *   prs_group_member_keyed(&m[2], per_path, "/search", 7);
 *   prs_group *g;
 *   prs_group_new(m, 3, NULL, &g);
 *   prs_group_check(g, now_ns, 1, &d, &denied_by);
 *
 * A request is admitted only when every member admits it, and then it is
 * taken from every member; a denied request takes from none. The decision's
 * limit, remaining and reset_after are one member's, never a mix: the most
 * restrictive member's (the least remaining; ties go to the longest
 * reset_after, then to the first listed), so headers built from it describe
 * a real state. retry_after is the longest any member asks (0 when admitted;
 * PRS_NEVER when some member can never admit the request). `denied_by` is the
 * index of the first member that denied (-1 when admitted).
 *
 * The same limiter (or the same key of a table) listed k times is one state
 * asked for k * n: check, peek, retry_after and the reported limit and
 * remaining (divided by k) all count its demand once per appearance, so a
 * request it can never hold is denied with PRS_NEVER, never admitted by peek.
 *
 * Concurrency (the design choice): a check locks every member, in one global
 * order (ascending address of each member's lock, each distinct lock once),
 * decides on each member's state directly, and unlocks. Ordered locking can
 * neither deadlock (every thread takes locks in the same order, whatever order
 * the groups list their members in) nor over-admit (no member's state changes
 * between the decision and the commit). The alternative, deciding member by
 * member and refunding on a later denial, lets another thread see - and be
 * denied by - capacity that is about to be given back, and a refund cannot be
 * exact once time has moved (a token bucket refilled meanwhile, a GCRA tat
 * that the clock overtook). The cost of ordered locking is that a group holds
 * k locks for the k decisions, a few tens of nanoseconds each.
 *
 * Members and their locks:
 *   - a limiter (prs_limiter, of any algorithm of the table): its spinlock, or
 *     for a lock-free one (GCRA) its word taken as a lock (swapped with a
 *     marker value); plain calls on it take the same lock or wait while they
 *     see the marker, so they stay exact next to groups;
 *   - a key of a keyed table: the key's shard lock. An absent key is decided
 *     on a fresh state and inserted only when the whole group admits; room is
 *     reserved (fresh keys evicted, never the group's own) before deciding, and
 *     a shard full of limited keys denies the group (retry_after = when a slot
 *     frees) without taking anything from any member.
 * A limiter (or key) listed twice has its lock taken once and is decided once,
 * for its whole demand.
 *
 * Members are borrowed: each limiter or table must outlive the group. Keys are
 * copied. No allocation per check unless the keyed states are large (a sliding
 * log's), then one. A member whose state exceeds the snapshot buffer (a
 * sliding log with limit > 5) is rolled back with its algorithm's refund,
 * exact here because nothing else touches it while the group holds its lock.
 */
#ifndef PRS_GROUP_H
#define PRS_GROUP_H

#include "prs_algo.h"
#include "prs_common.h"
#include "prs_keyed.h"
#include "prs_limiter.h"

#ifdef __cplusplus
extern "C" {
#endif

#define PRS_GROUP_MAX_MEMBERS 32

/* Filled by the prs_group_member_* functions; the fields are private. */
typedef struct prs_group_member {
    int kind;
    const prs_algo *algo;
    const void *params;
    void *obj;          /* the limiter or the keyed table */
    void *state;        /* unused (a limiter's state is found under its lock) */
    const void *key;    /* keyed: the key (copied by prs_group_new) */
    size_t key_len;
} prs_group_member;

/* A limiter of any algorithm of the table. */
void prs_group_member_limiter(prs_group_member *m, prs_limiter *lim);
/* The same for a typed handle: prs_group_member_token_bucket(m, tb), ... */
#define PRS__GROUP_MEMBER_TYPED(c, py, redis)                                          \
    struct prs_##c;                                                                    \
    static inline void prs_group_member_##c(prs_group_member *m, struct prs_##c *x) {  \
        prs_group_member_limiter(m, (prs_limiter *)x);                                 \
    }
PRS_ALGORITHMS(PRS__GROUP_MEMBER_TYPED)
#undef PRS__GROUP_MEMBER_TYPED
/* `key` may be NULL when key_len is 0; it only needs to live until prs_group_new. */
void prs_group_member_keyed(prs_group_member *m, prs_keyed *t, const void *key, size_t key_len);

typedef struct prs_group prs_group;

/* Makes a group of members[0..n) (1 <= n <= PRS_GROUP_MAX_MEMBERS). On error
 * *out is NULL and nothing is allocated: PRS_EINVAL (bad count, a member not
 * filled in), PRS_ENOMEM. */
int prs_group_new(const prs_group_member *members, size_t n, const prs_allocator *allocator,
                  prs_group **out);
void prs_group_free(prs_group *g); /* NULL-safe */

/* What a decision reports besides the prs_decision. */
typedef struct prs_group_info {
    int denied_by;    /* the first denying member's index, -1 when admitted */
    int reported;     /* the member whose limit, remaining and reset_after *d holds
                         (the first of its appearances) */
    int64_t max_n;    /* the largest n the group can ever admit: the smallest
                         member limit divided by its number of appearances (a
                         request for more is denied with PRS_NEVER forever) */
} prs_group_info;

/* Decides n at now_ns for every member, taking from all or from none when
 * `consume`, nothing otherwise. *info may be NULL. Same statuses as
 * prs_group_check. */
int prs_group_decide(prs_group *g, int64_t now_ns, int64_t n, int consume, prs_decision *d,
                     prs_group_info *info);
/* Asks every member for n at now_ns; takes from all or from none. *denied_by
 * (may be NULL) is the first denying member's index, -1 when admitted.
 * PRS_OK with *d filled, PRS_EINVAL (n < 1, NULL), PRS_ENOMEM (a new key could
 * not be stored: nothing was taken). */
int prs_group_check(prs_group *g, int64_t now_ns, int64_t n, prs_decision *d, int *denied_by);
/* The yes/no of prs_group_check (taking and counting the same), without the
 * rest of the decision: 1 admitted, 0 refused, or a negative status. */
int prs_group_allow(prs_group *g, int64_t now_ns, int64_t n);
/* The same decision without taking anything. */
int prs_group_peek(prs_group *g, int64_t now_ns, int64_t n, prs_decision *d, int *denied_by);
/* Consuming decisions of the group (check, each step of a wait) that
 * admitted / refused, since creation; the members' own counts do not include
 * them. Exact under threads; 0 for NULL. */
uint64_t prs_group_admitted(const prs_group *g);
uint64_t prs_group_rejected(const prs_group *g);
/* Resets every member (one after the other, not atomically). */
void prs_group_reset(prs_group *g);
/* The smallest of the members' available amounts at now_ns, each divided by
 * its number of appearances. */
double prs_group_available(prs_group *g, int64_t now_ns);
size_t prs_group_size(const prs_group *g);

#ifdef __cplusplus
}
#endif
#endif /* PRS_GROUP_H */
