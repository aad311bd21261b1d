/*
 * ignite-init: the initramfs init of ignitevm. Shared declarations of its
 * parts: init.c (the boot sequence, from /init to the image's init),
 * init_cfg.c (the VM config disk, read in place: vm.env, keys, files),
 * init_fs.c (paths resolved inside the new root, modules, mounts); the
 * network is net.c's, shared with the agent.
 */
#ifndef IGNITE_INIT_H
#define IGNITE_INIT_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <stddef.h>
#include <sys/types.h>

/* The console lines every step writes ("ignitevm-init: ..."). */
void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Say "error: ...", then power the VM off (the host sees it stopped). */
void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
/* With ignite.debug=1: the step and the seconds since boot. */
void trace(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
extern int debug;

/* ---- vm.env: KEY=value lines, values quoted as POSIX sh reads them ---- */
#define ENV_MAX 32
struct env {
    int n;
    char *key[ENV_MAX], *val[ENV_MAX];
};
/* Parse ``text`` (len bytes); 0, or -1 with a reason in err. */
int env_parse(struct env *e, const char *text, size_t len, char *err, size_t errlen);
/* The value of key, "" when it is not set. */
const char *env_get(const struct env *e, const char *key);
/* The next word of a space-separated list (as sh splits $VAR), or NULL;
 * *pos moves past it. The word is copied into buf (size len). */
const char *next_word(const char **pos, char *buf, size_t len);

/* ---- the config disk: a tar the host wrote ---- */
/* Unpack ``dev``: files/... into the new root (as `cp -a` of them would),
 * everything else into cfg_dir. 0 on success; -1 if the disk cannot be read
 * (a message said why); 1 if some file could not be put in place. */
int cfg_unpack(const char *dev, int root_fd, int cfg_fd);

/* ---- the new root: paths resolved inside it, as if it were / ---- */
/* Open path (absolute or relative) inside the root at root_fd, with
 * symbolic links resolved within it. */
int open_in(int root_fd, const char *path, int flags, mode_t mode);
/* `mkdir -p` inside the root; an fd of the folder, or -1. */
int mkdirs_in(int root_fd, const char *path, mode_t mode);
/* The folder of path's last part, opened inside the root, and that part. */
int parent_in(int root_fd, const char *path, const char **name);
/* Copy the file at src (a path of the initramfs) to path in the root. */
int copy_in(int root_fd, const char *src, const char *path, mode_t mode);
/* Mount over a folder given as an fd (through /proc/self/fd). */
int mount_on(const char *src, int dir_fd, const char *type, unsigned long flags,
             const char *opts);
/* Mount a device, trying each block filesystem the kernel knows. */
int mount_any(const char *dev, int dir_fd);
/* The modules dir/load.order lists, in the order to load them. */
#define MODULES_MAX 64
struct modules {
    int dfd, n;
    char name[MODULES_MAX][64];
};
int modules_open(struct modules *m, const char *dir);
/* The index of a module in the list, or -1. */
int modules_find(const struct modules *m, const char *name);
/* Load modules [from, to) in order; 0 if all loaded (each failure says so). */
int modules_load(const struct modules *m, int from, int to);

#endif
