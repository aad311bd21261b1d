/*
 * ignite-agent, GET: a streaming tar writer. GNU format (long names as
 * 'L'/'K' entries, big numbers in base-256); files are read in chunks as the
 * session's window allows; hard links are kept. Also the helpers both
 * directions use.
 */
#include "agent.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

uint64_t tar_padding(uint64_t size)
{
    return (BLOCK - size % BLOCK) % BLOCK;
}

unsigned tar_checksum(const char *h, long *sig)
{
    unsigned sum = 0;
    long s = 0;
    for (int i = 0; i < BLOCK; i++) {
        char c = i >= 148 && i < 156 ? ' ' : h[i];
        sum += (unsigned char)c;
        s += (signed char)c;
    }
    if (sig)
        *sig = s;
    return sum;
}

static void put_num(char *f, size_t n, uint64_t v)
{
    if (v < (1ULL << (3 * (n - 1)))) {
        snprintf(f, n, "%0*llo", (int)(n - 1), (unsigned long long)v);
        return;
    }
    memset(f, 0, n);
    f[0] = (char)0x80;
    for (size_t i = n - 1; i > 0 && v; i--, v >>= 8)
        f[i] = (char)(v & 0xff);
}

struct level {
    DIR *d;
    char *name;             /* archive name of this folder */
};

struct hardlink {
    dev_t dev;
    ino_t ino;
    char *name;
};

/* The most read from a file that says it is empty (a /proc or /sys file). */
#define PSEUDO_MAX (64u << 20)

struct tar_out {
    char *path, *top;
    struct stat top_st;
    int started, trailer, in_file, fd;
    uint64_t left, fsize;   /* the file being sent: bytes left, its size */
    char *cur;              /* and its archive name */
    struct buf pend;        /* header and padding bytes not yet handed out */
    struct level *stack;
    int depth, cap;
    struct hardlink *links;
    size_t nlinks, caplinks;
    int errors;
    char first_err[ERRLEN];
};

static void note_error(struct tar_out *t, const char *what, const char *name)
{
    if (t->errors++ == 0)
        snprintf(t->first_err, ERRLEN, "%s: %s: %s", name, what, strerror(errno));
}

static void raw_header(struct tar_out *t, const char *name, char type, mode_t mode,
                       const struct stat *st, uint64_t size, const char *link)
{
    buf_reserve(&t->pend, BLOCK);
    char *h = t->pend.p + t->pend.len;
    memset(h, 0, BLOCK);
    memcpy(h, name, strnlen(name, 100));
    put_num(h + 100, 8, mode & 07777);
    put_num(h + 108, 8, st ? st->st_uid : 0);
    put_num(h + 116, 8, st ? st->st_gid : 0);
    put_num(h + 124, 12, size);
    put_num(h + 136, 12, st && st->st_mtime > 0 ? (uint64_t)st->st_mtime : 0);
    h[156] = type;
    if (link)
        memcpy(h + 157, link, strnlen(link, 100));
    memcpy(h + 257, "ustar  ", 8);         /* GNU magic + version, NUL included */
    snprintf(h + 148, 8, "%06o", tar_checksum(h, NULL));
    h[155] = ' ';
    t->pend.len += BLOCK;
}

static void zeros(struct tar_out *t, size_t n)
{
    buf_reserve(&t->pend, n);
    memset(t->pend.p + t->pend.len, 0, n);
    t->pend.len += n;
}

static void long_name(struct tar_out *t, char type, const char *s)
{
    size_t n = strlen(s) + 1;
    raw_header(t, "././@LongLink", type, 0, NULL, n, NULL);
    buf_append(&t->pend, s, n);
    zeros(t, tar_padding(n));
}

static void header(struct tar_out *t, const char *name, char type, const struct stat *st,
                   uint64_t size, const char *link)
{
    if (strlen(name) > 100)
        long_name(t, 'L', name);
    if (link && strlen(link) > 100)
        long_name(t, 'K', link);
    raw_header(t, name, type, st->st_mode, st, size, link);
}

static char *read_link(int dirfd, const char *name, size_t hint)
{
    for (size_t cap = hint + 2;; cap *= 2) {
        char *s = malloc(cap);
        ssize_t n = s ? readlinkat(dirfd, name, s, cap) : -1;
        if (n >= 0 && (size_t)n < cap) {
            s[n] = '\0';
            return s;
        }
        free(s);
        if (n < 0)
            return NULL;
    }
}

/* Queue one entry's header; returns 0, or -1 if it is skipped. */
static int add_entry(struct tar_out *t, int dirfd, const char *name, const char *arch,
                     const struct stat *st)
{
    if (S_ISDIR(st->st_mode)) {
        size_t n = strlen(arch);
        char *d = malloc(n + 2);
        if (!d)
            return -1;
        memcpy(d, arch, n);
        if (!n || arch[n - 1] != '/')
            d[n++] = '/';
        d[n] = '\0';
        header(t, d, '5', st, 0, NULL);
        free(d);
        return 0;
    }
    if (S_ISLNK(st->st_mode)) {
        char *target = read_link(dirfd, name, st->st_size);
        if (!target) {
            note_error(t, "readlink", arch);
            return -1;
        }
        header(t, arch, '2', st, 0, target);
        free(target);
        return 0;
    }
    if (!S_ISREG(st->st_mode))
        return -1;          /* devices, fifos, sockets are not copied */
    if (st->st_nlink > 1) {
        for (size_t i = 0; i < t->nlinks; i++)
            if (t->links[i].dev == st->st_dev && t->links[i].ino == st->st_ino) {
                header(t, arch, '1', st, 0, t->links[i].name);
                return 0;
            }
    }
    /* (O_NONBLOCK: made a FIFO since the lstat, it must not block the agent) */
    int fd = openat(dirfd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
    struct stat now;
    if (fd >= 0 && (fstat(fd, &now) < 0 || !S_ISREG(now.st_mode) || blocking(fd) < 0)) {
        close(fd);
        return -1;
    }
    if (fd < 0) {
        note_error(t, "open", arch);
        return -1;
    }
    if (st->st_nlink > 1) {
        if (t->nlinks == t->caplinks) {
            t->caplinks = t->caplinks ? 2 * t->caplinks : 16;
            t->links = realloc(t->links, t->caplinks * sizeof *t->links);
            if (!t->links)
                abort();
        }
        t->links[t->nlinks++] = (struct hardlink){st->st_dev, st->st_ino, strdup(arch)};
    }
    if (st->st_size == 0) {
        /* Pseudo-files (/proc, /sys) say 0 bytes yet have content: read it
           first, the header needs the size. */
        struct buf data = {0};
        char chunk[16384];
        ssize_t k;
        while (data.len < PSEUDO_MAX && (k = read(fd, chunk, sizeof chunk)) != 0) {
            if (k < 0 && errno == EINTR)
                continue;
            if (k < 0) {
                note_error(t, "read", arch);
                break;
            }
            buf_append(&data, chunk, k);
        }
        close(fd);
        header(t, arch, '0', st, data.len, NULL);
        buf_append(&t->pend, data.p + data.off, data.len - data.off);
        zeros(t, tar_padding(data.len));
        buf_free(&data);
        return 0;
    }
    header(t, arch, '0', st, st->st_size, NULL);
    t->fd = fd;
    t->left = t->fsize = st->st_size;
    t->in_file = 1;
    free(t->cur);
    t->cur = strdup(arch);
    return 0;
}

static void push(struct tar_out *t, int fd, char *arch)
{
    DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
    if (!d) {
        note_error(t, "open", arch);
        if (fd >= 0)
            close(fd);
        free(arch);
        return;
    }
    if (t->depth == t->cap) {
        t->cap = t->cap ? 2 * t->cap : 16;
        t->stack = realloc(t->stack, t->cap * sizeof *t->stack);
        if (!t->stack)
            abort();
    }
    t->stack[t->depth++] = (struct level){d, arch};
}

/* Queue the next entry; returns 0 once every entry is done. */
static int next_entry(struct tar_out *t)
{
    if (!t->started) {
        t->started = 1;
        if (add_entry(t, AT_FDCWD, t->path, t->top, &t->top_st) == 0 &&
            S_ISDIR(t->top_st.st_mode))
            push(t, open(t->path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC),
                 strdup(t->top));
        return 1;
    }
    if (t->depth == 0)
        return 0;
    struct level *lv = &t->stack[t->depth - 1];
    struct dirent *e = readdir(lv->d);
    if (!e) {
        closedir(lv->d);
        free(lv->name);
        t->depth--;
        return 1;
    }
    if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
        return 1;
    size_t nl = strlen(lv->name), el = strlen(e->d_name);
    char *arch = malloc(nl + el + 2);
    if (!arch)
        abort();
    memcpy(arch, lv->name, nl);
    arch[nl] = '/';
    memcpy(arch + nl + 1, e->d_name, el + 1);
    struct stat st;
    int dfd = dirfd(lv->d);
    if (fstatat(dfd, e->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
        note_error(t, "stat", arch);
        free(arch);
        return 1;
    }
    if (add_entry(t, dfd, e->d_name, arch, &st) == 0 && S_ISDIR(st.st_mode)) {
        push(t, openat(dfd, e->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC), arch);
        return 1;
    }
    free(arch);
    return 1;
}

struct tar_out *tar_out_open(const char *path, uint32_t *code, char *err)
{
    struct tar_out *t = calloc(1, sizeof *t);
    if (!t || !path || !*path) {
        *code = 1;
        snprintf(err, ERRLEN, "%s", t ? "no path given (P:)" : "out of memory");
        free(t);
        return NULL;
    }
    if (lstat(path, &t->top_st) < 0) {
        *code = errno == ENOENT || errno == ENOTDIR ? 2 : 1;
        snprintf(err, ERRLEN, "%s: %s", path, *code == 2 ? "No such file or directory" : strerror(errno));
        free(t);
        return NULL;
    }
    t->path = strdup(path);
    size_t n = strlen(t->path);
    while (n > 1 && t->path[n - 1] == '/')
        t->path[--n] = '\0';
    const char *slash = strrchr(t->path, '/');
    t->top = strdup(strcmp(t->path, "/") == 0 ? "." : slash ? slash + 1 : t->path);
    t->fd = -1;
    return t;
}

ssize_t tar_out_read(struct tar_out *t, char *p, size_t max, char *err)
{
    size_t n = 0;
    while (n < max) {
        size_t have = t->pend.len - t->pend.off;
        if (have) {
            size_t k = have < max - n ? have : max - n;
            memcpy(p + n, t->pend.p + t->pend.off, k);
            t->pend.off += k;
            n += k;
            continue;
        }
        if (t->in_file && t->left > 0) {
            size_t want = t->left < max - n ? t->left : max - n;
            ssize_t k = t->fd >= 0 ? read(t->fd, p + n, want) : 0;
            if (k < 0 && errno == EINTR)
                continue;
            if (k <= 0) {           /* an error, or the file shrank: keep the size, send zeros */
                if (k < 0)
                    note_error(t, "read", t->cur ? t->cur : t->top);
                if (t->fd >= 0)
                    close(t->fd);
                t->fd = -1;
                memset(p + n, 0, want);
                k = want;
            }
            n += k;
            t->left -= k;
            continue;
        }
        if (t->in_file) {
            if (t->fd >= 0)
                close(t->fd);
            t->fd = -1;
            t->in_file = 0;
            zeros(t, tar_padding(t->fsize));
            continue;
        }
        if (next_entry(t))
            continue;
        if (t->trailer)
            break;
        zeros(t, 2 * BLOCK);
        t->trailer = 1;
    }
    if (n == 0 && t->errors) {
        if (t->errors > 1)
            snprintf(err, ERRLEN, "%.400s (and %d more errors)", t->first_err, t->errors - 1);
        else
            snprintf(err, ERRLEN, "%s", t->first_err);
        return -1;
    }
    return n;
}

void tar_out_close(struct tar_out *t)
{
    if (!t)
        return;
    if (t->fd >= 0)
        close(t->fd);
    while (t->depth > 0) {
        closedir(t->stack[t->depth - 1].d);
        free(t->stack[--t->depth].name);
    }
    for (size_t i = 0; i < t->nlinks; i++)
        free(t->links[i].name);
    free(t->links);
    free(t->stack);
    buf_free(&t->pend);
    free(t->path);
    free(t->top);
    free(t->cur);
    free(t);
}
