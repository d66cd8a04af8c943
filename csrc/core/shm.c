/*
 * shm.c - the shared-memory region (prs_shm.h): a file mapped by every
 * process that opens it by name, a versioned header, a table of named entries
 * and a bump allocator; the crash-safe pid lock (shm_internal.h).
 *
 * Layout (all offsets from the start of the mapping, checked against the
 * size before use):
 *   [0, 128)                 shm_header
 *   [table_off, data_off)    max_entries x shm_entry
 *   [data_off, size)         entries' blocks, 64-byte aligned, handed out by `bump`
 * An entry is written whole (block initialised too) while the region's lock
 * is held, then published by storing nentries + 1; `bump` is stored before
 * that, so a holder killed in between leaks the block at worst, and a reader
 * never sees a partial entry.
 */
#include "shm_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAGIC "PRSSHM\0\1"
#define LINE 64

typedef struct shm_header {
    char magic[8];
    uint32_t version;
    uint32_t header_size;
    uint64_t size;
    uint32_t max_entries;
    uint32_t entry_size;
    uint64_t table_off;
    uint64_t data_off;
    _Alignas(LINE) prs__pidlock lock;
    _Atomic uint32_t nentries;
    _Atomic uint64_t bump;
} shm_header;
_Static_assert(sizeof(shm_header) == 128, "header layout");

typedef struct shm_entry {
    char name[PRS_SHM_NAME_MAX + 1];
    char kind[PRS_SHM_KIND_MAX + 1];
    uint32_t config_len;
    uint32_t reserved;
    uint64_t offset;
    uint64_t length;
    unsigned char config[PRS_SHM_CONFIG_MAX];
} shm_entry;
_Static_assert(sizeof(shm_entry) == 248, "entry layout");

struct prs_shm {
    _Atomic long refs;
    unsigned char *base;
    size_t size;
    int created;
    prs_allocator alloc;
    char path[4096];
};

/* ---- the pid lock ------------------------------------------------------ */

static _Atomic int32_t cached_pid;
static pthread_once_t pid_once = PTHREAD_ONCE_INIT;
static void pid_after_fork(void) { atomic_store(&cached_pid, (int32_t)getpid()); }
static void pid_setup(void) {
    atomic_store(&cached_pid, (int32_t)getpid());
    pthread_atfork(NULL, NULL, pid_after_fork);
}
int32_t prs__self_pid(void) {
    int32_t p = atomic_load_explicit(&cached_pid, memory_order_relaxed);
    if (__builtin_expect(p != 0, 1)) return p;
    pthread_once(&pid_once, pid_setup);
    return atomic_load(&cached_pid);
}

static int pid_dead(int32_t pid) {
    return pid > 0 && kill((pid_t)pid, 0) == -1 && errno == ESRCH;
}

void prs__pidlock_lock_slow(prs__pidlock *l, int32_t me) {
    unsigned spins = 0;
    for (;;) {
        int32_t seen = atomic_load_explicit(&l->owner, memory_order_relaxed);
        if (seen == 0) {
            if (atomic_compare_exchange_weak_explicit(&l->owner, &seen, me, memory_order_acquire,
                                                      memory_order_relaxed))
                return;
            continue;
        }
        /* held: look whether the holder still exists every 256 rounds (a
         * system call), or at once when the word holds no valid pid */
        if ((seen < 0 || (++spins & 255) == 0) && seen != me && (seen < 0 || pid_dead(seen))) {
            if (atomic_compare_exchange_strong_explicit(&l->owner, &seen, me, memory_order_acquire,
                                                        memory_order_relaxed))
                return; /* taken over from a dead holder */
            continue;
        }
        prs__spin_yield(spins);
    }
}

int prs__pidlock_trylock(prs__pidlock *l, int32_t me) {
    int32_t seen = atomic_load_explicit(&l->owner, memory_order_relaxed);
    if (seen == me) return 0;
    if (seen != 0 && seen > 0 && !pid_dead(seen)) return 0;
    return atomic_compare_exchange_strong_explicit(&l->owner, &seen, me, memory_order_acquire,
                                                   memory_order_relaxed);
}

unsigned char *prs__shm_base(const prs_shm *r) { return r->base; }

/* ---- names and configs ---------------------------------------------------- */

int prs_shm_name_check(const char *name) {
    if (!name || !*name) return PRS_EINVAL;
    size_t n = strlen(name);
    if (n > PRS_SHM_NAME_MAX) return PRS_EINVAL;
    if (strstr(name, "..")) return PRS_EINVAL;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)name[i];
        if (c == '/' || c < 0x20 || c == 0x7f) return PRS_EINVAL;
    }
    return PRS_OK;
}

void prs_shm_config_init(prs_shm_config *cfg) {
    cfg->size = PRS_SHM_DEFAULT_SIZE;
    cfg->directory = NULL;
    cfg->mode = 0600;
    cfg->allocator = NULL;
}

static const char *default_dir(void) {
    struct stat st;
    if (stat("/dev/shm", &st) == 0 && S_ISDIR(st.st_mode)) return "/dev/shm";
    return "/tmp";
}

static int make_path(char *out, size_t cap, const char *dir, const char *name, const char *tail) {
    int k = snprintf(out, cap, "%s/pyresilience.%s%s", dir ? dir : default_dir(), name,
                     tail ? tail : "");
    return k < 0 || (size_t)k >= cap ? PRS_EINVAL : PRS_OK;
}

/* ---- the header ------------------------------------------------------------ */

static uint32_t entries_for(size_t size) {
    size_t n = size / 4096;
    if (n < 4) n = 4;
    if (n > 65536) n = 65536;
    return (uint32_t)n;
}

static size_t align_up(size_t x, size_t a) { return (x + a - 1) & ~(a - 1); }

static void header_init(unsigned char *base, size_t size) {
    shm_header *h = (shm_header *)base;
    memset(h, 0, sizeof *h);
    memcpy(h->magic, MAGIC, 8);
    h->version = PRS_SHM_VERSION;
    h->header_size = sizeof(shm_header);
    h->size = size;
    h->max_entries = entries_for(size);
    h->entry_size = sizeof(shm_entry);
    h->table_off = sizeof(shm_header);
    h->data_off = align_up(h->table_off + (uint64_t)h->max_entries * sizeof(shm_entry), LINE);
    atomic_init(&h->lock.owner, 0);
    atomic_init(&h->nentries, 0);
    atomic_init(&h->bump, h->data_off);
}

/* PRS_OK when the mapping of `size` bytes holds a sound header. */
static int header_check(const unsigned char *base, size_t size) {
    const shm_header *h = (const shm_header *)base;
    if (size < sizeof(shm_header)) return PRS_EPROTO;
    if (memcmp(h->magic, MAGIC, 8) != 0) return PRS_EPROTO;
    if (h->version != PRS_SHM_VERSION || h->header_size != sizeof(shm_header) ||
        h->entry_size != sizeof(shm_entry) || h->table_off != sizeof(shm_header))
        return PRS_EPROTO;
    if (h->size != size || h->max_entries != entries_for(size)) return PRS_EPROTO;
    uint64_t table_end = h->table_off + (uint64_t)h->max_entries * sizeof(shm_entry);
    if (h->data_off != align_up(table_end, LINE) || h->data_off > size) return PRS_EPROTO;
    return PRS_OK;
}

/* ---- open / close ------------------------------------------------------------ */

static int sys_fail(int *sys_errno, int e) {
    if (sys_errno) *sys_errno = e;
    return PRS_EBACKEND;
}

/* Maps the open file fd (checked: regular, ours, a sound header). */
static int map_existing(int fd, unsigned char **base, size_t *size, int *sys_errno) {
    struct stat st;
    if (fstat(fd, &st) != 0) return sys_fail(sys_errno, errno);
    if (!S_ISREG(st.st_mode)) return PRS_EPROTO;
    if (st.st_uid != geteuid()) return sys_fail(sys_errno, EPERM);
    if (st.st_size < (off_t)sizeof(shm_header) || (uint64_t)st.st_size > PRS_SHM_MAX_SIZE)
        return PRS_EPROTO;
    size_t sz = (size_t)st.st_size;
    void *p = mmap(NULL, sz, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) return sys_fail(sys_errno, errno);
    int rc = header_check(p, sz);
    if (rc) {
        munmap(p, sz);
        return rc;
    }
    *base = p;
    *size = sz;
    return PRS_OK;
}

static _Atomic unsigned tmp_counter;

/* Makes a new region under a temporary name and links it to `path`:
 * PRS_OK (created), PRS_EAGAIN (someone else's exists now), or an error. */
static int create_region(prs_shm *r, const prs_shm_config *cfg, const char *name,
                         int *sys_errno) {
    char tmp[sizeof r->path];
    char tail[64];
    snprintf(tail, sizeof tail, ".tmp.%d.%u", (int)getpid(),
             atomic_fetch_add(&tmp_counter, 1u));
    if (make_path(tmp, sizeof tmp, cfg->directory, name, tail)) return PRS_EINVAL;
    int fd = open(tmp, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, (mode_t)cfg->mode);
    if (fd < 0) return sys_fail(sys_errno, errno);
    int rc = PRS_OK;
    void *p = MAP_FAILED;
    if (fchmod(fd, (mode_t)cfg->mode) != 0 || ftruncate(fd, (off_t)cfg->size) != 0) {
        rc = sys_fail(sys_errno, errno);
        goto out;
    }
    p = mmap(NULL, cfg->size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) {
        rc = sys_fail(sys_errno, errno);
        goto out;
    }
    header_init(p, cfg->size);
    if (link(tmp, r->path) != 0) {
        rc = errno == EEXIST ? PRS_EAGAIN : sys_fail(sys_errno, errno);
        munmap(p, cfg->size);
        goto out;
    }
    r->base = p;
    r->size = cfg->size;
    r->created = 1;
out:
    unlink(tmp);
    close(fd);
    return rc;
}

int prs_shm_open(const char *name, const prs_shm_config *cfg, prs_shm **out, int *sys_errno) {
    prs_shm_config dflt;
    if (sys_errno) *sys_errno = 0;
    if (!out) return PRS_EINVAL;
    *out = NULL;
    if (!cfg) {
        prs_shm_config_init(&dflt);
        cfg = &dflt;
    }
    if (prs_shm_name_check(name)) return PRS_EINVAL;
    if (cfg->size < PRS_SHM_MIN_SIZE || cfg->size > PRS_SHM_MAX_SIZE || (cfg->mode & ~0777u))
        return PRS_EINVAL;
    if (cfg->directory && !*cfg->directory) return PRS_EINVAL;
    const prs_allocator *a = prs__alloc_or_default(cfg->allocator);
    prs_shm *r = prs__malloc(a, sizeof *r);
    if (!r) return PRS_ENOMEM;
    memset(r, 0, sizeof *r);
    r->alloc = *a;
    atomic_init(&r->refs, 1);
    int rc = make_path(r->path, sizeof r->path, cfg->directory, name, NULL);
    for (int tries = 0; rc == PRS_OK && tries < 8; tries++) {
        int fd = open(r->path, O_RDWR | O_CLOEXEC | O_NOFOLLOW);
        if (fd >= 0) {
            rc = map_existing(fd, &r->base, &r->size, sys_errno);
            close(fd);
            break;
        }
        if (errno == ELOOP) {
            rc = PRS_EPROTO; /* a symbolic link where the region should be */
            break;
        }
        if (errno != ENOENT) {
            rc = sys_fail(sys_errno, errno);
            break;
        }
        rc = create_region(r, cfg, name, sys_errno);
        if (rc != PRS_EAGAIN) break;
        rc = PRS_OK; /* lost the race: open the winner's */
    }
    if (rc == PRS_OK && !r->base) rc = sys_fail(sys_errno, EAGAIN);
    if (rc) {
        prs__free(a, r);
        return rc;
    }
    *out = r;
    return PRS_OK;
}

void prs__shm_ref(prs_shm *r) { atomic_fetch_add_explicit(&r->refs, 1, memory_order_relaxed); }

void prs__shm_unref(prs_shm *r) {
    if (!r || atomic_fetch_sub_explicit(&r->refs, 1, memory_order_acq_rel) != 1) return;
    munmap(r->base, r->size);
    prs_allocator a = r->alloc;
    prs__free(&a, r);
}

void prs_shm_close(prs_shm *r) { prs__shm_unref(r); }

int prs_shm_unlink(const char *name, const char *directory, int *sys_errno) {
    char path[4096];
    if (prs_shm_name_check(name) || (directory && !*directory)) return PRS_EINVAL;
    if (make_path(path, sizeof path, directory, name, NULL)) return PRS_EINVAL;
    if (unlink(path) != 0) return sys_fail(sys_errno, errno);
    return PRS_OK;
}

int prs_shm_created(const prs_shm *r) { return r ? r->created : 0; }
size_t prs_shm_size(const prs_shm *r) { return r ? r->size : 0; }
const char *prs_shm_path(const prs_shm *r) { return r ? r->path : NULL; }
int prs_shm_path_for(const char *name, const char *directory, char *buf, size_t cap) {
    return name && buf ? make_path(buf, cap, directory, name, NULL) : PRS_EINVAL;
}

size_t prs_shm_entries(const prs_shm *r) {
    if (!r) return 0;
    return atomic_load_explicit(&((shm_header *)r->base)->nentries, memory_order_acquire);
}

size_t prs_shm_free_bytes(const prs_shm *r) {
    if (!r) return 0;
    uint64_t b = atomic_load_explicit(&((shm_header *)r->base)->bump, memory_order_acquire);
    return b < r->size ? (size_t)(r->size - b) : 0;
}

/* ---- entries ------------------------------------------------------------------- */

static shm_entry *entry_at(prs_shm *r, uint32_t i) {
    shm_header *h = (shm_header *)r->base;
    return (shm_entry *)(r->base + h->table_off + (uint64_t)i * sizeof(shm_entry));
}

/* PRS_OK when the published entry e is sound in this mapping. */
static int entry_check(const prs_shm *r, const shm_entry *e) {
    const shm_header *h = (const shm_header *)r->base;
    if (memchr(e->name, 0, sizeof e->name) == NULL) return PRS_EPROTO;
    if (memchr(e->kind, 0, sizeof e->kind) == NULL) return PRS_EPROTO;
    if (e->config_len > PRS_SHM_CONFIG_MAX) return PRS_EPROTO;
    if (e->offset < h->data_off || e->offset % LINE || e->offset > r->size ||
        e->length > r->size - e->offset)
        return PRS_EPROTO;
    return PRS_OK;
}

int prs_shm_entry(prs_shm *r, const char *name, const char *kind, const void *config,
                  size_t config_len, size_t length, void (*init)(void *ctx, void *block),
                  void *ctx, void **block, int *created, char *found_kind, void *found_config) {
    if (!r || !block || prs_shm_name_check(name) || !kind || !*kind ||
        strlen(kind) > PRS_SHM_KIND_MAX || config_len > PRS_SHM_CONFIG_MAX ||
        (config_len && !config) || length == 0)
        return PRS_EINVAL;
    shm_header *h = (shm_header *)r->base;
    int rc = PRS_OK;
    if (created) *created = 0;
    prs__pidlock_lock(&h->lock);
    uint32_t n = atomic_load_explicit(&h->nentries, memory_order_acquire);
    if (n > h->max_entries) {
        rc = PRS_EPROTO;
        goto done;
    }
    for (uint32_t i = 0; i < n; i++) {
        shm_entry *e = entry_at(r, i);
        if (strncmp(e->name, name, sizeof e->name) != 0) continue;
        if ((rc = entry_check(r, e))) goto done;
        if (strcmp(e->kind, kind) != 0 || e->config_len != config_len ||
            (config_len && memcmp(e->config, config, config_len) != 0)) {
            if (found_kind) memcpy(found_kind, e->kind, sizeof e->kind);
            if (found_config) memcpy(found_config, e->config, sizeof e->config);
            rc = PRS_ESTATE;
            goto done;
        }
        if (e->length < length) {
            rc = PRS_EPROTO;
            goto done;
        }
        *block = r->base + e->offset;
        goto done;
    }
    if (n == h->max_entries) {
        rc = PRS_EFULL;
        goto done;
    }
    uint64_t bump = atomic_load_explicit(&h->bump, memory_order_relaxed);
    if (bump < h->data_off || bump > r->size || bump % LINE) {
        rc = PRS_EPROTO;
        goto done;
    }
    size_t len = align_up(length, LINE);
    if (len < length || len > r->size - bump) {
        rc = PRS_EFULL;
        goto done;
    }
    shm_entry *e = entry_at(r, n);
    memset(e, 0, sizeof *e);
    memcpy(e->name, name, strlen(name));
    memcpy(e->kind, kind, strlen(kind));
    e->config_len = (uint32_t)config_len;
    if (config_len) memcpy(e->config, config, config_len);
    e->offset = bump;
    e->length = len;
    memset(r->base + bump, 0, len);
    if (init) init(ctx, r->base + bump);
    atomic_store_explicit(&h->bump, bump + len, memory_order_release); /* first: a leak at worst */
    atomic_store_explicit(&h->nentries, n + 1, memory_order_release);  /* publishes it */
    *block = r->base + bump;
    if (created) *created = 1;
done:
    prs__pidlock_unlock(&h->lock);
    return rc;
}
