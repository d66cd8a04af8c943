/*
 * redis_url.c - the Redis library's headers and library on their own, with no
 * server: parse a URL, check a limiter configuration, and make a backend
 * (which connects lazily, so no I/O happens here).
 *
 * Build by hand (after `make lib` with hiredis installed):
 *   cc -std=c11 -Iinclude/pyresilience -Iinclude/pyresilience_redis examples/c/redis_url.c \
 *      build/c/libpyresilience_redis.a build/c/libpyresilience.a -lhiredis -lm -pthread
 */
#include "pyresilience_redis.h"

#include <stdio.h>

int main(void) {
    prs_redis_url u;
    int rc = prs_redis_url_parse("redis://app:s3cret@127.0.0.1:6380/2", NULL, &u);
    if (rc != PRS_OK) {
        fprintf(stderr, "url: %s\n", prs_redis_last_error());
        return 1;
    }
    printf("host=%s port=%d db=%lld user=%s\n", u.host, u.port, (long long)u.db, u.user);
    prs_redis_url_clear(&u, NULL);

    /* A configuration the library refuses says which field and why. */
    prs_redis_limiter_config lc;
    prs_redis_limiter_config_init(&lc);
    lc.algorithm = prs_redis_algorithm_from_name("gcra");
    lc.rate = 10.0;
    lc.burst = 0;
    prs_config_error why = {0};
    rc = prs_redis_limiter_config_check(&lc, &why);
    printf("burst=0: %s (%s %s)\n", prs_err_name(rc), why.field ? why.field : "?",
           why.reason ? why.reason : "?");
    if (rc == PRS_OK) return 1;

    prs_redis_config bc;
    prs_redis_config_init(&bc);
    bc.url = "redis://127.0.0.1:6379/0";
    prs_redis_backend *b = NULL;
    rc = prs_redis_backend_new(&bc, &b);
    if (rc != PRS_OK) {
        fprintf(stderr, "backend: %s\n", prs_strerror(rc));
        return 1;
    }
    prs_redis_backend_free(b);
    return 0;
}
