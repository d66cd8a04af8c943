/*
 * shm_owner.c - who holds a record in a shared-memory region (a bulkhead
 * permit, a half-open trial slot): a token of the holder's pid and start
 * time, so that a dead holder is told apart from a live process that reused
 * its pid. Linux reads the start time from /proc/<pid>/stat (field 22, clock
 * ticks since boot); elsewhere the token holds the pid alone and a reused pid
 * looks alive until that process exits (prs_shm.h states the limit).
 */
#include "shm_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

/* The start time of `pid` (low 32 bits), or 0 when it cannot be read; -1
 * when /proc says there is no such process, or only its zombie (killed and
 * not yet waited for: it holds nothing any more). */
static int64_t start_time_of(int32_t pid) {
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return errno == ENOENT && access("/proc/self/stat", R_OK) == 0 ? -1 : 0;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0) return 0;
    buf[n] = 0;
    char *p = strrchr(buf, ')'); /* the command name may hold spaces and parentheses */
    if (!p) return 0;
    p++;
    if (p[0] == ' ' && (p[1] == 'Z' || p[1] == 'X')) return -1; /* a zombie holds nothing */
    /* p: the space before field 3; move it to the space before field 22 */
    for (int field = 3; field < 22 && p; field++) p = strchr(p + 1, ' ');
    if (!p) return 0;
    unsigned long long t = strtoull(p + 1, NULL, 10);
    return (int64_t)(t & 0xffffffffu);
}

static _Atomic uint64_t cached_token; /* of cached_for */
static _Atomic int32_t cached_for;

uint64_t prs__self_token(void) {
    int32_t pid = prs__self_pid();
    if (__builtin_expect(atomic_load_explicit(&cached_for, memory_order_acquire) == pid, 1))
        return atomic_load_explicit(&cached_token, memory_order_relaxed);
    int64_t st = start_time_of(pid);
    uint64_t tok = (uint64_t)(uint32_t)pid << 32 | (uint64_t)(st > 0 ? st : 0);
    atomic_store_explicit(&cached_token, tok, memory_order_relaxed);
    atomic_store_explicit(&cached_for, pid, memory_order_release);
    return tok;
}

int prs__token_dead(uint64_t token) {
    token &= ~PRS__TOKEN_FLAG;
    int32_t pid = (int32_t)(token >> 32);
    uint32_t start = (uint32_t)token;
    if (pid <= 0) return 1; /* not a token: a torn or corrupt record */
    if (pid == prs__self_pid()) return (prs__self_token() & ~PRS__TOKEN_FLAG) != token;
    if (kill((pid_t)pid, 0) == -1 && errno == ESRCH) return 1;
    int64_t now = start_time_of(pid);
    if (now < 0) return 1;
    if (start == 0) return 0; /* no start time recorded: the pid alone */
    return now > 0 && (uint32_t)now != start;
}
