/*
 * ignite-init: paths inside the new root, modules and mounts.
 *
 * Every path of the image is resolved inside the new root (openat2 with
 * RESOLVE_IN_ROOT): an absolute symbolic link of the image (/etc -> /usr/etc,
 * /bin -> usr/bin) leads where it would once the image's init runs, never to
 * the initramfs.
 */
#include "init.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

int open_in(int root_fd, const char *path, int flags, mode_t mode)
{
    struct open_how how = {
        .flags = (unsigned)(flags | O_CLOEXEC),
        .mode = (flags & O_CREAT) ? mode : 0,
        .resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS,
    };
    static int no_openat2;
    while (*path == '/')
        path++;
    if (!*path)
        path = ".";
    if (!no_openat2) {
        int fd = (int)syscall(SYS_openat2, root_fd, path, &how, sizeof how);
        if (fd >= 0 || errno != ENOSYS)
            return fd;
        no_openat2 = 1;
    }
    /* (a kernel older than 5.6: links are followed as they are, as `cp` did) */
    return openat(root_fd, path, (int)how.flags, how.mode);
}

int parent_in(int root_fd, const char *path, const char **name)
{
    char dir[4096];
    const char *slash = strrchr(path, '/');
    *name = slash ? slash + 1 : path;
    if (**name == '\0' || strcmp(*name, ".") == 0 || strcmp(*name, "..") == 0) {
        errno = EINVAL;
        return -1;
    }
    size_t n = slash ? (size_t)(slash - path) : 0;
    if (n >= sizeof dir) {
        errno = ENAMETOOLONG;
        return -1;
    }
    memcpy(dir, path, n);
    dir[n] = '\0';
    return open_in(root_fd, dir, O_PATH | O_DIRECTORY, 0);
}

int mkdirs_in(int root_fd, const char *path, mode_t mode)
{
    char prefix[4096];
    size_t len = strlen(path);
    if (len >= sizeof prefix) {
        errno = ENAMETOOLONG;
        return -1;
    }
    int fd = open_in(root_fd, path, O_RDONLY | O_DIRECTORY, 0);
    if (fd >= 0 || errno != ENOENT)
        return fd;
    /* Make each missing folder, from the top. */
    for (size_t i = 1; i <= len; i++) {
        if (i < len && path[i] != '/')
            continue;
        memcpy(prefix, path, i);
        prefix[i] = '\0';
        const char *name;
        int parent = parent_in(root_fd, prefix, &name);
        if (parent < 0) {
            if (errno == EINVAL)        /* "a//b", "a/./b": nothing to make */
                continue;
            return -1;
        }
        int rc = mkdirat(parent, name, mode);
        int saved = errno;
        close(parent);
        if (rc < 0 && saved != EEXIST) {
            errno = saved;
            return -1;
        }
    }
    return open_in(root_fd, path, O_RDONLY | O_DIRECTORY, 0);
}

int copy_in(int root_fd, const char *src, const char *path, mode_t mode)
{
    int in = open(src, O_RDONLY | O_CLOEXEC);
    if (in < 0)
        return -1;
    int out = open_in(root_fd, path, O_WRONLY | O_CREAT | O_TRUNC | O_NOCTTY, mode);
    if (out < 0) {
        int saved = errno;
        close(in);
        errno = saved;
        return -1;
    }
    char buf[8192];
    ssize_t n;
    int rc = 0;
    while ((n = read(in, buf, sizeof buf)) > 0)
        if (write(out, buf, (size_t)n) != n) {
            rc = -1;
            break;
        }
    if (n < 0)
        rc = -1;
    int saved = errno;
    close(in);
    if (close(out) < 0)
        rc = -1;
    else
        errno = saved;
    return rc;
}

int mount_on(const char *src, int dir_fd, const char *type, unsigned long flags,
             const char *opts)
{
    char target[64];
    snprintf(target, sizeof target, "/proc/self/fd/%d", dir_fd);
    return mount(src, target, type, flags, opts);
}

int mount_any(const char *dev, int dir_fd)
{
    FILE *f = fopen("/proc/filesystems", "re");
    if (!f)
        return -1;
    char line[128];
    int err = ENODEV;
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, "nodev", 5) == 0)
            continue;
        char *type = line + strspn(line, " \t");
        type[strcspn(type, " \t\n")] = '\0';
        if (*type == '\0')
            continue;
        if (mount_on(dev, dir_fd, type, MS_SILENT, NULL) == 0) {
            fclose(f);
            return 0;
        }
        if (errno != EINVAL && errno != ENODEV)
            err = errno;            /* (EINVAL: not this type; keep the telling one) */
        else if (err == ENODEV)
            err = errno;
    }
    fclose(f);
    errno = err;
    return -1;
}

int modules_open(struct modules *m, const char *dir)
{
    m->n = 0;
    m->dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    int list = m->dfd < 0 ? -1 : openat(m->dfd, "load.order", O_RDONLY | O_CLOEXEC);
    FILE *f = list < 0 ? NULL : fdopen(list, "r");
    if (f == NULL) {
        say("warning: %s/load.order: %s", dir, strerror(errno));
        return -1;
    }
    char name[256];
    while (m->n < MODULES_MAX && fgets(name, sizeof name, f) != NULL) {
        name[strcspn(name, "\n")] = '\0';
        if (name[0] == '\0' || strchr(name, '/') != NULL || strlen(name) >= sizeof m->name[0])
            continue;
        strcpy(m->name[m->n++], name);
    }
    fclose(f);
    return 0;
}

int modules_find(const struct modules *m, const char *name)
{
    for (int i = 0; i < m->n; i++)
        if (strcmp(m->name[i], name) == 0)
            return i;
    return -1;
}

int modules_load(const struct modules *m, int from, int to)
{
    int failed = 0;
    for (int i = from; i < to && i < m->n; i++) {
        int fd = openat(m->dfd, m->name[i], O_RDONLY | O_CLOEXEC);
        /* (one the kernel has already, built in or loaded, is no error) */
        if (fd < 0 || (syscall(SYS_finit_module, fd, "", 0) != 0 && errno != EEXIST)) {
            say("warning: module %s: %s", m->name[i], strerror(errno));
            failed = 1;
        }
        if (fd >= 0)
            close(fd);
        trace("module %s", m->name[i]);
    }
    return failed;
}
