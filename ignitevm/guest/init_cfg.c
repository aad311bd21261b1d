/*
 * ignite-init: the VM config disk, read in place.
 *
 * The host writes a tar (ignitevm/operations/guestconfig.py): vm.env, hosts,
 * ssh/..., entrypoint, and files/... to lay over the image's root. The disk
 * is read once, straight from the block device: files/... land in the new
 * root as `cp -a` of them would put them (modes, owners, times, links, device
 * nodes; an existing file is written through, a folder keeps its contents and
 * takes the entry's mode and owner), the rest in the initramfs's /cfg.
 */
#include "init.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

/* ---- the tar ---- */

struct reader {
    int fd;
    size_t off, len;
    char buf[65536];
};

/* The next n bytes (n <= sizeof buf), or NULL at the end or on an error. */
static const char *take(struct reader *r, size_t n)
{
    if (r->len - r->off < n) {
        memmove(r->buf, r->buf + r->off, r->len - r->off);
        r->len -= r->off;
        r->off = 0;
        while (r->len < n) {
            ssize_t got = read(r->fd, r->buf + r->len, sizeof r->buf - r->len);
            if (got < 0 && errno == EINTR)
                continue;
            if (got <= 0)
                return NULL;
            r->len += (size_t)got;
        }
    }
    r->off += n;
    return r->buf + r->off - n;
}

static uint64_t number(const char *p, size_t n)
{
    uint64_t v = 0;
    if ((unsigned char)p[0] & 0x80) {                   /* GNU base-256 */
        v = (unsigned char)p[0] & 0x3f;
        for (size_t i = 1; i < n; i++)
            v = v << 8 | (unsigned char)p[i];
        return v;
    }
    size_t i = 0;
    while (i < n && p[i] == ' ')
        i++;
    for (; i < n && p[i] >= '0' && p[i] <= '7'; i++)
        v = v * 8 + (uint64_t)(p[i] - '0');
    return v;
}

static int checksum_ok(const char *h)
{
    unsigned long sum = 0;
    long ssum = 0;
    for (int i = 0; i < 512; i++) {
        char c = i >= 148 && i < 156 ? ' ' : h[i];
        sum += (unsigned char)c;
        ssum += (signed char)c;
    }
    uint64_t want = number(h + 148, 8);
    return want == sum || (long)want == ssum;
}

/* Read an entry's data (size bytes, padded to 512) into out (malloc'd, NUL
 * ended), or pass it to sink (fd >= 0), or skip it (fd < 0). */
static int data(struct reader *r, uint64_t size, char **out, int fd, int *write_err)
{
    if (out && !(*out = malloc(size + 1)))
        return -1;
    uint64_t left = (size + 511) & ~(uint64_t)511, pos = 0;
    while (left > 0) {
        size_t n = left > 32768 ? 32768 : (size_t)left;
        const char *p = take(r, n);
        if (!p)
            return -1;
        size_t useful = pos >= size ? 0 : (size - pos < n ? (size_t)(size - pos) : n);
        if (out)
            memcpy(*out + pos, p, useful);
        else if (fd >= 0 && useful && !*write_err && write(fd, p, useful) != (ssize_t)useful)
            *write_err = errno ? errno : EIO;
        pos += n;
        left -= n;
    }
    if (out)
        (*out)[size] = '\0';
    return 0;
}

struct entry {
    char name[4096], link[4096];
    int type;
    mode_t mode;
    uid_t uid;
    gid_t gid;
    uint64_t size, mtime;
    unsigned major, minor;
};

/* "path=..." and "linkpath=..." (and "size=...") of a pax header. */
static void pax(const char *p, size_t n, struct entry *e, uint64_t *size)
{
    const char *end = p + n;
    while (p < end) {
        char *sp;
        unsigned long len = strtoul(p, &sp, 10);
        if (len == 0 || *sp != ' ' || len > (unsigned long)(end - p))
            return;
        const char *kv = sp + 1, *rec_end = p + len - 1;      /* (the '\n') */
        const char *eq = memchr(kv, '=', (size_t)(rec_end - kv));
        if (eq) {
            size_t vlen = (size_t)(rec_end - eq - 1);
            char *dst = NULL;
            if (eq - kv == 4 && memcmp(kv, "path", 4) == 0)
                dst = e->name;
            else if (eq - kv == 8 && memcmp(kv, "linkpath", 8) == 0)
                dst = e->link;
            else if (eq - kv == 4 && memcmp(kv, "size", 4) == 0)
                *size = strtoull(eq + 1, NULL, 10);
            if (dst && vlen < 4096) {
                memcpy(dst, eq + 1, vlen);
                dst[vlen] = '\0';
            }
        }
        p += len;
    }
}

/* The next member (long names and pax headers applied): 1, 0 at the end, -1 bad. */
static int next_entry(struct reader *r, struct entry *e, char *why, size_t whylen)
{
    int have_name = 0, have_link = 0;
    uint64_t pax_size = UINT64_MAX;
    struct entry ext = {0};
    for (;;) {
        const char *h = take(r, 512);
        if (!h)
            return 0;                   /* (the end of the disk: no end blocks, still fine) */
        int zero = 1;
        for (int i = 0; i < 512 && zero; i++)
            zero = h[i] == 0;
        if (zero)
            return 0;
        if (!checksum_ok(h)) {
            snprintf(why, whylen, "a damaged tar header");
            return -1;
        }
        char hdr[512];
        memcpy(hdr, h, 512);
        uint64_t size = number(hdr + 124, 12);
        int type = hdr[156] ? hdr[156] : '0';
        if (type == 'L' || type == 'K' || type == 'x') {
            char *text = NULL;
            if (size > 65536 || data(r, size, &text, -1, NULL) < 0) {
                free(text);
                snprintf(why, whylen, "a bad long name");
                return -1;
            }
            if (type == 'x') {
                pax(text, (size_t)size, &ext, &pax_size);
                have_name |= ext.name[0] != 0;
                have_link |= ext.link[0] != 0;
            } else {
                snprintf(type == 'L' ? ext.name : ext.link, sizeof ext.name, "%s", text);
                (type == 'L' ? (have_name = 1) : (have_link = 1));
            }
            free(text);
            continue;
        }
        if (type == 'g') {
            if (data(r, size, NULL, -1, NULL) < 0)
                return -1;
            continue;
        }
        memset(e, 0, sizeof *e);
        if (have_name) {
            snprintf(e->name, sizeof e->name, "%s", ext.name);
        } else if (memcmp(hdr + 257, "ustar\0", 6) == 0 && hdr[345]) {
            snprintf(e->name, sizeof e->name, "%.155s/%.100s", hdr + 345, hdr);
        } else {
            snprintf(e->name, sizeof e->name, "%.100s", hdr);
        }
        if (have_link)
            snprintf(e->link, sizeof e->link, "%s", ext.link);
        else
            snprintf(e->link, sizeof e->link, "%.100s", hdr + 157);
        e->type = type;
        e->mode = (mode_t)number(hdr + 100, 8) & 07777;
        e->uid = (uid_t)number(hdr + 108, 8);
        e->gid = (gid_t)number(hdr + 116, 8);
        e->size = pax_size != UINT64_MAX ? pax_size : size;
        e->mtime = number(hdr + 136, 12);
        e->major = (unsigned)number(hdr + 329, 8);
        e->minor = (unsigned)number(hdr + 337, 8);
        return 1;
    }
}

/* "./a//b/" -> "a/b"; -1 for a name with a ".." part. */
static int clean(char *name)
{
    char *out = name, *p = name;
    while (*p) {
        while (*p == '/')
            p++;
        size_t n = strcspn(p, "/");
        if (n == 0)
            break;
        if (n == 2 && p[0] == '.' && p[1] == '.')
            return -1;
        if (!(n == 1 && p[0] == '.')) {
            if (out != name)
                *out++ = '/';
            memmove(out, p, n);
            out += n;
        }
        p += n;
    }
    *out = '\0';
    return 0;
}

/* Make room for a non-folder at dir/name: remove what is there unless it is a folder. */
static int clear(int dir, const char *name)
{
    struct stat st;
    if (fstatat(dir, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
        return errno == ENOENT ? 0 : -1;
    if (S_ISDIR(st.st_mode)) {
        errno = EISDIR;
        return -1;
    }
    return unlinkat(dir, name, 0);
}

/* The folder an entry goes in, made if missing (as tar makes it). */
static int parent_made(int root_fd, const char *path, const char **name)
{
    int fd = parent_in(root_fd, path, name);
    if (fd < 0 && errno == ENOENT) {
        char dir[4096];
        snprintf(dir, sizeof dir, "%.*s", (int)(*name - path), path);
        int made = mkdirs_in(root_fd, dir, 0755);
        if (made < 0)
            return -1;
        close(made);
        fd = parent_in(root_fd, path, name);
    }
    return fd;
}

/* Put one entry at path inside the root at root_fd; its data is read here. */
static int place(struct reader *r, int root_fd, const char *path, struct entry *e,
                 int *read_failed)
{
    int rc = -1, dir = -1, fd = -1, werr = 0, done_data = 0;
    const char *name = ".";
    if (*path == '\0' || e->type == '5') {
        if (*path != '\0') {
            if ((dir = parent_made(root_fd, path, &name)) < 0)
                goto out;
            if (mkdirat(dir, name, e->mode | 0700) < 0 && errno != EEXIST)
                goto out;
        }
        if (e->type != '5') {
            errno = EISDIR;
            goto out;
        }
        fd = open_in(root_fd, path, O_RDONLY | O_DIRECTORY, 0);
        rc = fd < 0 || fchown(fd, e->uid, e->gid) < 0 || fchmod(fd, e->mode) < 0 ? -1 : 0;
        goto out;
    }
    if ((dir = parent_made(root_fd, path, &name)) < 0)
        goto out;
    if (e->type == '0' || e->type == '7') {
        /* Written through an existing file or link, as cp does. */
        fd = open_in(root_fd, path, O_WRONLY | O_CREAT | O_TRUNC | O_NOCTTY, 0600);
        done_data = 1;
        if (data(r, e->size, NULL, fd, &werr) < 0)
            *read_failed = 1;
        if (fd < 0)
            goto out;
        if (werr) {
            errno = werr;
            goto out;
        }
        struct timespec t[2] = {{.tv_nsec = UTIME_OMIT}, {.tv_sec = (time_t)e->mtime}};
        rc = fchown(fd, e->uid, e->gid) < 0 || fchmod(fd, e->mode) < 0 ||
             futimens(fd, t) < 0 ? -1 : 0;
    } else if (e->type == '2') {
        rc = clear(dir, name) < 0 || symlinkat(e->link, dir, name) < 0 ||
             fchownat(dir, name, e->uid, e->gid, AT_SYMLINK_NOFOLLOW) < 0 ? -1 : 0;
    } else if (e->type == '1') {
        const char *tname;
        if (clean(e->link) < 0 || strncmp(e->link, "files/", 6) != 0) {
            errno = EINVAL;
            goto out;
        }
        int tdir = parent_in(root_fd, e->link + 6, &tname);
        rc = tdir < 0 || clear(dir, name) < 0 || linkat(tdir, tname, dir, name, 0) < 0 ? -1 : 0;
        if (tdir >= 0) {
            int saved = errno;
            close(tdir);
            errno = saved;
        }
    } else if (e->type == '3' || e->type == '4' || e->type == '6') {
        mode_t kind = e->type == '3' ? S_IFCHR : e->type == '4' ? S_IFBLK : S_IFIFO;
        rc = clear(dir, name) < 0 ||
             mknodat(dir, name, kind | e->mode, makedev(e->major, e->minor)) < 0 ||
             fchownat(dir, name, e->uid, e->gid, AT_SYMLINK_NOFOLLOW) < 0 ||
             fchmodat(dir, name, e->mode, 0) < 0 ? -1 : 0;
    } else {
        say("warning: config disk: %s: unknown kind of entry '%c', skipped", path, e->type);
        rc = 0;
    }
out:;
    int saved = errno;
    if (!done_data && data(r, e->size, NULL, -1, NULL) < 0)
        *read_failed = 1;
    if (fd >= 0)
        close(fd);
    if (dir >= 0)
        close(dir);
    errno = saved;
    return rc;
}

int cfg_unpack(const char *dev, int root_fd, int cfg_fd)
{
    static struct reader r;
    static struct entry e;
    char why[256];
    r.fd = open(dev, O_RDONLY | O_CLOEXEC);
    r.off = r.len = 0;
    if (r.fd < 0) {
        say("%s: %s", dev, strerror(errno));
        return -1;
    }
    int failed = 0, read_failed = 0, got;
    while (!read_failed && (got = next_entry(&r, &e, why, sizeof why)) > 0) {
        if (clean(e.name) < 0) {
            say("warning: config disk: %s: a name with '..', skipped", e.name);
            if (data(&r, e.size, NULL, -1, NULL) < 0)
                read_failed = 1;
            continue;
        }
        int in_root = strcmp(e.name, "files") == 0 || strncmp(e.name, "files/", 6) == 0;
        const char *path = in_root ? e.name + (e.name[5] ? 6 : 5) : e.name;
        if (place(&r, in_root ? root_fd : cfg_fd, path, &e, &read_failed) < 0 && !read_failed) {
            say("cannot put %s%s in place: %s", in_root ? "/" : "/cfg/", path, strerror(errno));
            failed = 1;
        }
    }
    close(r.fd);
    if (read_failed || got < 0) {
        say("%s: %s", dev, read_failed ? "cannot read it to the end" : why);
        return -1;
    }
    return failed;
}
