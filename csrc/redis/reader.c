/*
 * reader.c - the replies of a transport that is not the backend's pool (the
 * asyncio connection): hiredis's redisReader over the bytes it reads, so
 * every transport parses RESP with the same code as the blocking calls.
 */
#include <stdlib.h>

#include "prs_redis_internal.h"
#include "prs_redis_ops.h"

struct prs_redis_reader {
    redisReader *r;
};

int prs_redis_reader_new(prs_redis_reader **out) {
    if (!out) return PRS_EINVAL;
    *out = NULL;
    prs_redis_reader *rd = calloc(1, sizeof *rd);
    if (!rd) return PRS_ENOMEM;
    if (!(rd->r = redisReaderCreate())) {
        free(rd);
        return PRS_ENOMEM;
    }
    *out = rd;
    return PRS_OK;
}

void prs_redis_reader_free(prs_redis_reader *rd) {
    if (!rd) return;
    redisReaderFree(rd->r);
    free(rd);
}

/* A broken stream stays broken: hiredis keeps its error, so every later
 * feed or next fails too (the transport drops the connection). */
static int reader_failed(prs_redis_reader *rd) {
    prs_redis__set_error("redis: protocol error: %.200s", rd->r->errstr[0] ? rd->r->errstr : "bad reply");
    return PRS_EPROTO;
}

int prs_redis_reader_feed(prs_redis_reader *rd, const char *buf, size_t len) {
    if (!rd || (!buf && len)) return PRS_EINVAL;
    if (rd->r->err || redisReaderFeed(rd->r, buf, len) != REDIS_OK) return rd->r->err ? reader_failed(rd) : PRS_ENOMEM;
    return PRS_OK;
}

int prs_redis_reader_next(prs_redis_reader *rd, redisReply **out) {
    if (!rd || !out) return PRS_EINVAL;
    void *reply = NULL;
    *out = NULL;
    if (rd->r->err || redisReaderGetReply(rd->r, &reply) != REDIS_OK) return reader_failed(rd);
    *out = reply;
    return PRS_OK;
}
