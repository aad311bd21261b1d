/*
 * ignite-agent, PUT: a streaming tar reader that unpacks into a folder
 * without ever leaving it.
 *
 * ustar, GNU 'L'/'K' long names, pax 'x' (path, linkpath, size, uid, gid,
 * mtime); regular files, folders, symlinks, hard links. Every name is
 * resolved from the target folder's fd one component at a time with
 * O_NOFOLLOW, so neither "..", an absolute name nor a symlink (from the
 * archive or already there) can lead outside. Files are written under a
 * temporary name and renamed into place when complete; folders get their
 * owner, mode and time at the end, after their contents.
 */
#include "agent.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define META_MAX (1 << 20)

static uint64_t get_num(const char *f, size_t n)
{
    const unsigned char *u = (const unsigned char *)f;
    uint64_t v = 0;
    if (u[0] & 0x80) {              /* GNU base-256 */
        if (u[0] == 0xff)
            return 0;               /* negative: treat as 0 */
        v = u[0] & 0x7f;
        for (size_t i = 1; i < n; i++)
            v = v << 8 | u[i];
        return v;
    }
    size_t i = 0;
    while (i < n && (f[i] == ' ' || f[i] == '\0'))
        i++;
    for (; i < n && f[i] >= '0' && f[i] <= '7'; i++)
        v = v << 3 | (uint64_t)(f[i] - '0');
    return v;
}

enum { T_HDR, T_META, T_FILE, T_SKIP, T_PAD, T_END };

struct dirattr {
    char *name;
    mode_t mode;
    uid_t uid;
    gid_t gid;
    int64_t mtime;
};

struct tar_in {
    int root;
    int state;
    char hdr[BLOCK];
    size_t hlen;
    uint64_t left, pad;
    char meta_type;
    struct buf meta;
    /* overrides from 'L'/'K'/'x' entries for the next header */
    char *next_name, *next_link;
    int64_t next_size, next_uid, next_gid, next_mtime;
    /* the current entry */
    char *name;
    mode_t mode;
    uid_t uid;
    gid_t gid;
    int64_t mtime;
    /* the file being written: parent/tmp, to become parent/base */
    int fd, parent;
    char *base, tmp[64];
    struct dirattr *dirs;
    size_t ndirs, capdirs;
    unsigned seq;
};

static int fail(char *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail(char *err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, ERRLEN, fmt, ap);
    va_end(ap);
    return -1;
}

/*
 * Open the folder that holds `name` (relative to the target) and return its
 * fd, with *base set to the last name in it ("." for the target itself).
 * create: make missing folders on the way.
 */
static int walk(struct tar_in *t, const char *name, int create, char **base, char *err)
{
    *base = NULL;
    if (name[0] == '/')
        return fail(err, "%s: absolute names are refused", name);
    char *copy = strdup(name), *comp[2] = {NULL, NULL}, *save = NULL;
    int fd = fcntl(t->root, F_DUPFD_CLOEXEC, 3);
    if (!copy || fd < 0) {
        free(copy);
        if (fd >= 0)
            close(fd);
        return fail(err, "%s: %s", name, strerror(errno ? errno : ENOMEM));
    }
    /* comp[0] is the folder to enter next, comp[1] the name after it */
    for (char *c = strtok_r(copy, "/", &save); ; c = strtok_r(NULL, "/", &save)) {
        if (c && strcmp(c, ".") == 0)
            continue;
        if (c && strcmp(c, "..") == 0) {
            close(fd);
            free(copy);
            return fail(err, "%s: names with \"..\" are refused", name);
        }
        if (!c)
            break;
        if (comp[0]) {
            int nfd = openat(fd, comp[0], O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            if (nfd < 0 && errno == ENOENT && create && mkdirat(fd, comp[0], 0755) == 0)
                nfd = openat(fd, comp[0], O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            if (nfd < 0) {
                int e = errno;
                struct stat st;
                int link = fstatat(fd, comp[0], &st, AT_SYMLINK_NOFOLLOW) == 0 &&
                           S_ISLNK(st.st_mode);
                close(fd);
                fail(err, link ? "%s: refusing to write through the symbolic link %s"
                               : "%s: %s", name, link ? comp[0] : strerror(e));
                free(copy);
                return -1;
            }
            close(fd);
            fd = nfd;
        }
        comp[0] = c;
    }
    *base = strdup(comp[0] ? comp[0] : ".");
    free(copy);
    if (!*base) {
        close(fd);
        return fail(err, "out of memory");
    }
    return fd;
}

static void set_owner_mode_time(struct tar_in *t, int fd, int with_mode, char *err)
{
    struct timespec ts[2] = {{0, UTIME_OMIT}, {t->mtime, 0}};
    if (fchown(fd, t->uid, t->gid) < 0 && errno != EPERM)
        fail(err, "%s: chown: %s", t->name, strerror(errno));
    if (with_mode)
        fchmod(fd, t->mode);
    futimens(fd, ts);
}

/* Rename parent/tmp to parent/base; on failure remove tmp. */
static int put_in_place(struct tar_in *t, int parent, const char *base, char *err)
{
    int r = 0;
    if (renameat(parent, t->tmp, parent, base) < 0)
        r = fail(err, "%s: %s", t->name,
                 errno == EISDIR || errno == ENOTEMPTY ? "a folder is in the way" : strerror(errno));
    unlinkat(parent, t->tmp, 0);    /* left over when tmp and base were one file already */
    return r;
}

static void new_tmp(struct tar_in *t)
{
    snprintf(t->tmp, sizeof t->tmp, ".ignite-put.%d.%u", (int)getpid(), t->seq++);
}

static int begin_file(struct tar_in *t, char *err)
{
    t->parent = walk(t, t->name, 1, &t->base, err);
    if (t->parent < 0)
        return -1;
    if (strcmp(t->base, ".") == 0)
        return fail(err, "%s: not a file name", t->name);
    new_tmp(t);
    t->fd = openat(t->parent, t->tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (t->fd < 0)
        return fail(err, "%s: %s", t->name, strerror(errno));
    return 0;
}

static void drop_file(struct tar_in *t)
{
    if (t->fd >= 0) {
        close(t->fd);
        unlinkat(t->parent, t->tmp, 0);
    }
    if (t->parent >= 0)
        close(t->parent);
    free(t->base);
    t->fd = t->parent = -1;
    t->base = NULL;
}

static int end_file(struct tar_in *t, char *err)
{
    err[0] = '\0';
    set_owner_mode_time(t, t->fd, 1, err);
    if (close(t->fd) < 0 && !err[0])
        fail(err, "%s: %s", t->name, strerror(errno));
    t->fd = -1;
    int r = err[0] ? -1 : put_in_place(t, t->parent, t->base, err);
    unlinkat(t->parent, t->tmp, 0);
    drop_file(t);
    return r;
}

static int make_dir(struct tar_in *t, char *err)
{
    char *base;
    int parent = walk(t, t->name, 1, &base, err), r = 0;
    if (parent < 0)
        return -1;
    struct stat st;
    if (strcmp(base, ".") == 0)
        goto out;           /* the target itself ("./"): keep it as it is */
    if (mkdirat(parent, base, 0700) < 0) {
        if (errno != EEXIST || fstatat(parent, base, &st, AT_SYMLINK_NOFOLLOW) < 0)
            r = fail(err, "%s: %s", t->name, strerror(errno));
        else if (S_ISLNK(st.st_mode))
            r = fail(err, "%s: refusing to replace the symbolic link with a folder", t->name);
        else if (!S_ISDIR(st.st_mode) &&
                 (unlinkat(parent, base, 0) < 0 || mkdirat(parent, base, 0700) < 0))
            r = fail(err, "%s: %s", t->name, strerror(errno));
    }
    if (r == 0) {           /* owner, mode and time are set at the end, after the contents */
        if (t->ndirs == t->capdirs) {
            t->capdirs = t->capdirs ? 2 * t->capdirs : 64;
            t->dirs = realloc(t->dirs, t->capdirs * sizeof *t->dirs);
            if (!t->dirs)
                abort();
        }
        struct dirattr *d = &t->dirs[t->ndirs++];
        *d = (struct dirattr){strdup(t->name), t->mode, t->uid, t->gid, t->mtime};
    }
out:
    close(parent);
    free(base);
    return r;
}

static int make_link(struct tar_in *t, const char *target, int hard, char *err)
{
    char *base, *sbase = NULL;
    int parent = walk(t, t->name, 1, &base, err), sparent = -1, r = -1;
    if (parent < 0)
        return -1;
    new_tmp(t);
    if (strcmp(base, ".") == 0) {
        fail(err, "%s: not a file name", t->name);
    } else if (hard) {
        sparent = walk(t, target, 0, &sbase, err);
        if (sparent >= 0 && linkat(sparent, sbase, parent, t->tmp, 0) < 0)
            fail(err, "%s: link to %s: %s", t->name, target, strerror(errno));
        else if (sparent >= 0)
            r = put_in_place(t, parent, base, err);
    } else if (symlinkat(target, parent, t->tmp) < 0) {
        fail(err, "%s: %s", t->name, strerror(errno));
    } else {
        struct timespec ts[2] = {{0, UTIME_OMIT}, {t->mtime, 0}};
        if (fchownat(parent, t->tmp, t->uid, t->gid, AT_SYMLINK_NOFOLLOW) < 0 && errno != EPERM)
            fail(err, "%s: chown: %s", t->name, strerror(errno));
        utimensat(parent, t->tmp, ts, AT_SYMLINK_NOFOLLOW);
        r = put_in_place(t, parent, base, err);
    }
    if (sparent >= 0)
        close(sparent);
    close(parent);
    free(base);
    free(sbase);
    return r;
}

/* pax records: "<len> <key>=<value>\n" */
static void parse_pax(struct tar_in *t)
{
    char *p = t->meta.p, *end = t->meta.p + t->meta.len;
    while (p < end) {
        char *sp;
        unsigned long len = strtoul(p, &sp, 10);
        if (*sp != ' ' || len < 5 || len > (unsigned long)(end - p))
            return;
        char *key = sp + 1, *rec_end = p + len - 1, *eq = memchr(key, '=', rec_end - key);
        if (eq && *rec_end == '\n') {
            char *val = strndup(eq + 1, rec_end - eq - 1);
            size_t kl = eq - key;
            if (kl == 4 && memcmp(key, "path", 4) == 0) {
                free(t->next_name);
                t->next_name = val, val = NULL;
            } else if (kl == 8 && memcmp(key, "linkpath", 8) == 0) {
                free(t->next_link);
                t->next_link = val, val = NULL;
            } else if (val && kl == 4 && memcmp(key, "size", 4) == 0) {
                t->next_size = strtoll(val, NULL, 10);
            } else if (val && kl == 3 && memcmp(key, "uid", 3) == 0) {
                t->next_uid = strtoll(val, NULL, 10);
            } else if (val && kl == 3 && memcmp(key, "gid", 3) == 0) {
                t->next_gid = strtoll(val, NULL, 10);
            } else if (val && kl == 5 && memcmp(key, "mtime", 5) == 0) {
                t->next_mtime = strtoll(val, NULL, 10);
            }
            free(val);
        }
        p += len;
    }
}

static void end_meta(struct tar_in *t)
{
    buf_append(&t->meta, "", 1);
    t->meta.len--;
    if (t->meta_type == 'L') {
        free(t->next_name);
        t->next_name = strdup(t->meta.p);
    } else if (t->meta_type == 'K') {
        free(t->next_link);
        t->next_link = strdup(t->meta.p);
    } else if (t->meta_type == 'x') {
        parse_pax(t);
    }
    buf_free(&t->meta);
}

static char *field(const char *f, size_t n)
{
    return strndup(f, strnlen(f, n));
}

static int on_header(struct tar_in *t, char *err)
{
    const char *h = t->hdr;
    long sig;
    int zero = 1;
    for (int i = 0; i < BLOCK && zero; i++)
        zero = h[i] == 0;
    if (zero) {
        t->state = T_END;
        return 0;
    }
    uint64_t want = get_num(h + 148, 8);
    if (want != tar_checksum(h, &sig) && (long)want != sig)
        return fail(err, "not a tar archive (bad header checksum)");
    char type = h[156] ? h[156] : '0';
    uint64_t size = get_num(h + 124, 12);
    t->left = size;
    t->pad = tar_padding(size);
    if (type == 'L' || type == 'K' || type == 'x' || type == 'g') {
        if (size > META_MAX)
            return fail(err, "a tar header extension is too large (%llu bytes)",
                        (unsigned long long)size);
        t->meta_type = type;
        t->state = T_META;
        return 0;
    }
    if (t->next_size >= 0)
        t->left = t->next_size, t->pad = tar_padding(t->left);
    free(t->name);
    if (t->next_name) {
        t->name = t->next_name;
    } else if (memcmp(h + 257, "ustar\0", 6) == 0 && h[345]) {
        char *pre = field(h + 345, 155), *nm = field(h, 100);
        t->name = malloc(strlen(pre) + strlen(nm) + 2);
        if (t->name)
            sprintf(t->name, "%s/%s", pre, nm);
        free(pre);
        free(nm);
    } else {
        t->name = field(h, 100);
    }
    char *link = t->next_link ? t->next_link : field(h + 157, 100);
    t->mode = get_num(h + 100, 8) & 07777;
    t->uid = t->next_uid >= 0 ? t->next_uid : (int64_t)get_num(h + 108, 8);
    t->gid = t->next_gid >= 0 ? t->next_gid : (int64_t)get_num(h + 116, 8);
    t->mtime = t->next_mtime >= 0 ? t->next_mtime : (int64_t)get_num(h + 136, 12);
    t->next_name = t->next_link = NULL;
    t->next_size = t->next_uid = t->next_gid = t->next_mtime = -1;
    if (!t->name || !link) {
        free(link);
        return fail(err, "out of memory");
    }
    int r = 0;
    t->state = T_SKIP;
    switch (type) {
    case '0': case '7':
        r = begin_file(t, err);
        t->state = T_FILE;
        break;
    case '1': case '2':
        r = make_link(t, link, type == '1', err);
        break;
    case '5':
        r = make_dir(t, err);
        break;
    case '3': case '4': case '6':
        break;              /* devices and fifos are not copied */
    default:
        r = fail(err, "%s: unsupported tar entry type '%c'", t->name, type);
    }
    free(link);
    return r;
}

static int write_all(struct tar_in *t, const char *p, size_t n, char *err)
{
    while (n > 0) {
        ssize_t w = write(t->fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            return fail(err, "%s: %s", t->name, strerror(errno));
        p += w;
        n -= w;
    }
    return 0;
}

/* Finish the entry whose data has all arrived. */
static int end_data(struct tar_in *t, char *err)
{
    int r = 0;
    if (t->state == T_FILE)
        r = end_file(t, err);
    else if (t->state == T_META)
        end_meta(t);
    t->state = T_PAD;
    return r;
}

int tar_in_feed(struct tar_in *t, const char *p, size_t n, char *err)
{
    for (;;) {
        size_t take;
        switch (t->state) {
        case T_END:
            return 0;           /* anything after the end blocks is ignored */
        case T_HDR:
            if (n == 0)
                return 0;
            take = BLOCK - t->hlen < n ? BLOCK - t->hlen : n;
            memcpy(t->hdr + t->hlen, p, take);
            t->hlen += take;
            if (t->hlen == BLOCK) {
                t->hlen = 0;
                if (on_header(t, err) < 0)
                    return -1;
            }
            break;
        case T_PAD:
            if (t->pad == 0) {
                t->state = T_HDR;
                continue;
            }
            if (n == 0)
                return 0;
            take = t->pad < n ? t->pad : n;
            t->pad -= take;
            break;
        default:                /* T_META, T_FILE, T_SKIP */
            if (t->left == 0) {
                if (end_data(t, err) < 0)
                    return -1;
                continue;
            }
            if (n == 0)
                return 0;
            take = t->left < n ? t->left : n;
            if (t->state == T_META)
                buf_append(&t->meta, p, take);
            else if (t->state == T_FILE && write_all(t, p, take, err) < 0)
                return -1;
            t->left -= take;
        }
        p += take;
        n -= take;
    }
}

struct tar_in *tar_in_open(const char *path, char *err)
{
    if (!path || !*path) {
        fail(err, "no target folder given (P:)");
        return NULL;
    }
    char *dir = strdup(path);
    for (char *s = dir + 1; dir && *s; s++)      /* mkdir -p */
        if (*s == '/') {
            *s = '\0';
            mkdir(dir, 0755);
            *s = '/';
        }
    if (dir)
        mkdir(dir, 0755);
    free(dir);
    struct tar_in *t = calloc(1, sizeof *t);
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0 || !t) {
        fail(err, "%s: %s", path, strerror(errno));
        if (fd >= 0)
            close(fd);
        free(t);
        return NULL;
    }
    t->root = fd;
    t->fd = t->parent = -1;
    t->next_size = t->next_uid = t->next_gid = t->next_mtime = -1;
    return t;
}

int tar_in_finish(struct tar_in *t, char *err)
{
    if (t->state != T_END && !(t->state == T_HDR && t->hlen == 0))
        return fail(err, "the archive ends in the middle of an entry");
    int r = 0;
    free(t->name);
    t->name = NULL;
    for (size_t i = t->ndirs; i-- > 0;) {      /* innermost first */
        struct dirattr *d = &t->dirs[i];
        char *base;
        int parent = walk(t, d->name, 0, &base, err);
        if (parent < 0)
            return -1;
        int fd = openat(parent, base, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (fd >= 0) {
            t->name = d->name, t->mode = d->mode, t->uid = d->uid, t->gid = d->gid;
            t->mtime = d->mtime;
            err[0] = '\0';
            set_owner_mode_time(t, fd, 1, err);
            t->name = NULL;
            close(fd);
            r = err[0] ? -1 : r;
        }
        close(parent);
        free(base);
        if (r < 0)
            return -1;
    }
    return 0;
}

void tar_in_close(struct tar_in *t)
{
    if (!t)
        return;
    drop_file(t);
    close(t->root);
    for (size_t i = 0; i < t->ndirs; i++)
        free(t->dirs[i].name);
    free(t->dirs);
    free(t->name);
    free(t->next_name);
    free(t->next_link);
    buf_free(&t->meta);
    free(t);
}
