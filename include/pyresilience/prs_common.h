/*
 * prs_common.h - what every pyresilience core module shares: status codes,
 * the allocator hook, the time base and the decision out-struct.
 *
 * Conventions (see DESIGN.md):
 *   - Time is int64 nanoseconds of a monotonic clock, always passed in
 *     explicitly (`now_ns`). Core objects never read a clock by themselves.
 *   - Functions return 0 (PRS_OK) or a negative status from PRS_ERRNO_MAP.
 *     A limiter's denial is not an error: it is reported in prs_decision.
 *   - Objects are opaque, made by prs_X_new() and freed by prs_X_free()
 *     (NULL-safe). Every object copies the allocator it was made with.
 */
#ifndef PRS_COMMON_H
#define PRS_COMMON_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define PRS_VERSION_MAJOR 0
#define PRS_VERSION_MINOR 1
#define PRS_VERSION_PATCH 0

/* ---- status codes ---------------------------------------------------- */

/* One list: the enum, prs_strerror() and prs_err_name() are all made from it.
 * Every status here is returned by some function. Numbers are stable: a
 * status that went out of use leaves its number unused (-9, -13, -15 were
 * EBUSY, ENOSCRIPT and EINTR), never re-assigned. */
#define PRS_ERRNO_MAP(XX)                                                     \
    XX(OK,        0,  "success")                                              \
    XX(EINVAL,   -1,  "invalid argument")                                     \
    XX(ENOMEM,   -2,  "out of memory")                                        \
    XX(ERANGE,   -3,  "value out of range")                                   \
    XX(EAGAIN,   -4,  "resource temporarily unavailable")                     \
    XX(ETIMEDOUT,-5,  "timed out")                                            \
    XX(ECLOSED,  -6,  "closed")                                               \
    XX(EFULL,    -7,  "full")                                                 \
    XX(EEMPTY,   -8,  "empty")                                                \
    XX(ENOTSUP, -10,  "operation not supported")                              \
    XX(EBACKEND,-11,  "backend failure")                                      \
    XX(EPROTO,  -12,  "protocol error")                                       \
    XX(ESTATE,  -14,  "invalid state")                                        \
    XX(ECONN,   -16,  "connection failed")                                    \
    XX(ENEVER,  -17,  "request can never be admitted")                        \
    XX(EBACKENDCLOSED, -18, "backend is closed")

typedef enum prs_status {
#define PRS__XX(name, value, msg) PRS_##name = value,
    PRS_ERRNO_MAP(PRS__XX)
#undef PRS__XX
    PRS__STATUS_MIN = -19
} prs_status;

/* A static message for `status` ("unknown status" for codes not in the list). */
const char *prs_strerror(int status);
/* The symbolic name, e.g. "PRS_EINVAL" ("PRS_UNKNOWN" for codes not in the list). */
const char *prs_err_name(int status);

/* ---- configuration errors ----------------------------------------------- */

/* Why a config was refused: which field and why, so a binding can word its
 * own error ("capacity must be > 0, got -1") without validating again.
 * Validators take an optional `prs_config_error *why` (NULL: not wanted) and
 * fill it whenever they return an error; both strings are static. */
typedef struct prs_config_error {
    const char *field;  /* the config field's name, e.g. "capacity"; NULL if none */
    const char *reason; /* e.g. "must be > 0", "must be <= 1e15" */
} prs_config_error;

/* Fills *why (when not NULL) and returns status: `return prs_config_fail(why,
 * PRS_EINVAL, "capacity", "must be > 0");` */
static inline int prs_config_fail(prs_config_error *why, int status, const char *field,
                                  const char *reason) {
    if (why) {
        why->field = field;
        why->reason = reason;
    }
    return status;
}

/* ---- allocator -------------------------------------------------------- */

/* A replaceable allocator, passed per object (config.allocator; NULL means the
 * C library's). `ctx` is handed back to every call. calloc must check
 * nmemb * size for overflow itself (the default one does). */
typedef struct prs_allocator {
    void *(*malloc_fn)(void *ctx, size_t size);
    void *(*calloc_fn)(void *ctx, size_t nmemb, size_t size);
    void *(*realloc_fn)(void *ctx, void *ptr, size_t size);
    void (*free_fn)(void *ctx, void *ptr);
    void *ctx;
} prs_allocator;

/* The allocator over malloc/calloc/realloc/free. Never NULL. */
const prs_allocator *prs_default_allocator(void);

/* ---- time ------------------------------------------------------------- */

#define PRS_NS_PER_US  INT64_C(1000)
#define PRS_NS_PER_MS  INT64_C(1000000)
#define PRS_NS_PER_SEC INT64_C(1000000000)
/* "Never": a retry_after/reset_after that no amount of waiting reaches. */
#define PRS_NEVER      INT64_MAX

/* CLOCK_MONOTONIC in nanoseconds (for callers who want a clock; core objects
 * never call it themselves). */
int64_t prs_monotonic_ns(void);
/* Sleep for `ns` nanoseconds (<= 0 returns at once). Restarts on EINTR until
 * the time has passed. */
void prs_sleep_ns(int64_t ns);
/* Seconds (double) to nanoseconds, saturating: NaN -> 0, >= 2^63 ns -> INT64_MAX,
 * <= -2^63 ns -> INT64_MIN. Rounds to nearest. */
int64_t prs_seconds_to_ns(double seconds);

/* ---- decisions -------------------------------------------------------- */

/* The outcome of asking a limiter. A denial is a decision, not an error. */
typedef struct prs_decision {
    int allowed;            /* 1 admitted (and consumed, for check), 0 denied */
    int64_t limit;          /* the limiter's capacity / limit / burst */
    int64_t remaining;      /* requests of weight 1 still admissible now (after this one) */
    int64_t retry_after_ns; /* 0 when allowed; when denied, the wait after which this
                               request is admitted; PRS_NEVER if it never can be */
    int64_t reset_after_ns; /* until the limiter is back to its initial (full) state;
                               PRS_NEVER if it never gets there */
} prs_decision;

/* The HTTP headers of a decision, in this order: X-RateLimit-Limit,
 * X-RateLimit-Remaining (clamped at 0), X-RateLimit-Reset and, when denied,
 * Retry-After (whole seconds, rounded up). A time that never comes is left
 * out: a request that can never be admitted gets neither Retry-After nor
 * X-RateLimit-Reset. Fills name[i] and value[i] for i below the count
 * returned (at most PRS_DECISION_HEADERS_MAX). */
#define PRS_DECISION_HEADERS_MAX 4
int prs_decision_headers(const prs_decision *d, const char *name[PRS_DECISION_HEADERS_MAX],
                         int64_t value[PRS_DECISION_HEADERS_MAX]);

#ifdef __cplusplus
}
#endif
#endif /* PRS_COMMON_H */
