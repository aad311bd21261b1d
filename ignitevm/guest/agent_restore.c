/*
 * ignite-agent, RESTORE: give a guest restored from a snapshot its own
 * identity (docs/agent-protocol.md). Every clone of one snapshot wakes with
 * the same RNG state, the clock of the moment it was saved, the source's
 * hostname, machine-id and network address: the host sends fresh values and
 * this applies them, then runs the image's hooks in /etc/ignitevm/restore.d
 * (in name order) so that applications can re-key. What fails is reported as
 * DATA on stream 2 and the rest goes on; EXIT carries the hooks' status.
 */
#include "agent.h"
#include "net.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/random.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <stdarg.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define HOOK_DIR "/etc/ignitevm/restore.d"

static void warn(struct session *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void warn(struct session *s, const char *fmt, ...)
{
    char msg[ERRLEN];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(msg, sizeof msg - 1, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if ((size_t)n > sizeof msg - 2)
        n = sizeof msg - 2;
    msg[n++] = '\n';
    send_frame(s->ch, F_DATA, 2, s->id, msg, n);
    logmsg("restore: %.*s", n - 1, msg);
}

static void net_warn(void *ctx, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void net_warn(void *ctx, const char *fmt, ...)
{
    char msg[ERRLEN];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    warn(ctx, "%s", msg);
}

static int hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

static void reseed(struct session *s, const char *hex)
{
    size_t n = strlen(hex) / 2;
    if (n == 0 || n > 512) {
        warn(s, "rand: want 1 to 512 bytes");
        return;
    }
    struct rand_pool_info *info = calloc(1, sizeof *info + n + 4);
    if (!info)
        die("out of memory");
    unsigned char *b = (unsigned char *)info->buf;
    for (size_t i = 0; i < n; i++) {
        int hi = hexval(hex[2 * i]), lo = hexval(hex[2 * i + 1]);
        if (hi < 0 || lo < 0) {
            warn(s, "rand: not hexadecimal");
            free(info);
            return;
        }
        b[i] = (unsigned char)(hi << 4 | lo);
    }
    info->entropy_count = (int)(8 * n);
    info->buf_size = (int)n;
    int fd = open("/dev/urandom", O_WRONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
    if (fd < 0 || ioctl(fd, RNDADDENTROPY, info) < 0)
        warn(s, "cannot add entropy: %s", strerror(errno));
    else if (ioctl(fd, RNDRESEEDCRNG) < 0)
        warn(s, "cannot reseed the RNG: %s", strerror(errno));
    if (fd >= 0)
        close(fd);
    memset(b, 0, n);
    free(info);
}

static void set_clock(struct session *s, const char *v)
{
    char *end;
    struct timespec ts = {0, 0};
    ts.tv_sec = strtoll(v, &end, 10);
    if (*end == '.')
        ts.tv_nsec = strtol(end + 1, &end, 10);
    if (*end || ts.tv_nsec < 0 || ts.tv_nsec >= 1000000000L || ts.tv_sec <= 0) {
        warn(s, "time: bad value");
        return;
    }
    if (clock_settime(CLOCK_REALTIME, &ts) < 0)
        warn(s, "cannot set the clock: %s", strerror(errno));
}

/* Write ``text`` over what the file ``fd`` (of ``size`` bytes) holds, then
   cut it there. Not O_TRUNC: on ext4 a truncation to 0 makes the close start
   writing the file out at once (auto_da_alloc), ~30 ms of a clone's start
   under TCG; and no truncation at all when the length stays (a new hostname
   or machine-id of the same length: the usual case), which spares the guest
   ext4's setattr path. */
static int overwrite(int fd, const char *text, size_t n, off_t size)
{
    if (pwrite(fd, text, n, 0) != (ssize_t)n)
        return -1;
    return size == (off_t)n || ftruncate(fd, (off_t)n) == 0 ? 0 : -1;
}

/* Replace a file the guest has (never create one, never through a link) with
   the ``n`` bytes of ``data``; ``mode`` >= 0: the file gets that mode too. */
static void rewrite_n(struct session *s, const char *path, const char *data, size_t n, int mode)
{
    struct stat st;
    if (lstat(path, &st) < 0 || !S_ISREG(st.st_mode))
        return;
    /* (O_NONBLOCK: should it be a FIFO by now, the open does not wait for a reader) */
    int fd = open(path, O_WRONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
    if (fd >= 0 && (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode))) {
        close(fd);
        return;
    }
    if (fd < 0 || overwrite(fd, data, n, st.st_size) < 0 ||
        (mode >= 0 && (st.st_mode & 07777) != (mode_t)mode && fchmod(fd, (mode_t)mode) < 0))
        warn(s, "cannot write %s: %s", path, strerror(errno));
    if (fd >= 0)
        close(fd);
}

static void rewrite(struct session *s, const char *path, const char *text)
{
    rewrite_n(s, path, text, strlen(text), -1);
}

/* OpenSSH 9.8 and later (known by their sshd-session program) load the host
   keys once, in the listener, which hands them to each connection's
   sshd-session: that listener is told to load them again (SIGHUP: it
   re-executes itself), found by its pid file (a regular file, not through a
   link at its end). Older ones need nothing (no signal, no file read). */
static void ssh_reload(struct session *s)
{
    static const char *const session_bin[] = {"/usr/lib/openssh/sshd-session",
                                              "/usr/libexec/openssh/sshd-session",
                                              "/usr/libexec/sshd-session"};
    static const char *const pidfile[] = {"/run/sshd.pid", "/var/run/sshd.pid"};
    size_t i = 0;
    while (i < sizeof session_bin / sizeof *session_bin && access(session_bin[i], F_OK) < 0)
        i++;
    if (i == sizeof session_bin / sizeof *session_bin)
        return;
    for (i = 0; i < sizeof pidfile / sizeof *pidfile; i++) {
        char text[24];
        struct stat st;
        int fd = open(pidfile[i], O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
        if (fd < 0)
            continue;
        ssize_t n = fstat(fd, &st) == 0 && S_ISREG(st.st_mode) ? read(fd, text, sizeof text - 1)
                                                              : -1;
        close(fd);
        if (n <= 0)
            continue;
        text[n] = 0;
        char *end;
        long pid = strtol(text, &end, 10);
        if (pid > 1 && pid <= 0x400000 && (*end == '\n' || !*end)) {
            if (kill((pid_t)pid, SIGHUP) < 0)
                warn(s, "cannot tell sshd (%ld) its new host key: %s", pid, strerror(errno));
            return;
        }
    }
}

/* A clone's SSH identity (the host's ssh_* lines, hex): its own host key and
   root's authorized_keys over the snapshot's, where the init put them at boot
   (init.c, apply_files) and with the modes it gives them. Only files the guest
   has are replaced (an image without /etc/ssh had none). sshd up to OpenSSH
   9.7 reads its host keys again for each connection (it re-executes itself):
   no restart (ssh_reload). The decoded bytes (a private key) are wiped. */
#define SSH_FILE_MAX 16384

static void ssh_file(struct session *s, const char *path, const char *hex, int mode)
{
    size_t n = strlen(hex) / 2;
    if (n == 0 || n > SSH_FILE_MAX || strlen(hex) % 2) {
        warn(s, "%s: want 1 to %d bytes in hexadecimal", path, SSH_FILE_MAX);
        return;
    }
    char *b = malloc(n);
    if (!b)
        die("out of memory");
    size_t i = 0;
    for (; i < n; i++) {
        int hi = hexval(hex[2 * i]), lo = hexval(hex[2 * i + 1]);
        if (hi < 0 || lo < 0)
            break;
        b[i] = (char)(hi << 4 | lo);
    }
    if (i < n)
        warn(s, "%s: not hexadecimal", path);
    else
        rewrite_n(s, path, b, n, mode);
    explicit_bzero(b, n);
    free(b);
}

static void set_hostname(struct session *s, const char *name)
{
    char line[HOST_NAME_MAX + 2];
    if (sethostname(name, strlen(name)) < 0)
        warn(s, "cannot set the hostname: %s", strerror(errno));
    snprintf(line, sizeof line, "%s\n", name);
    rewrite(s, "/etc/hostname", line);
}

static void set_machine_id(struct session *s, const char *id)
{
    char line[64];
    struct stat st;
    snprintf(line, sizeof line, "%s\n", id);
    /* (an empty machine-id means "make one at first boot": left so) */
    if (stat("/etc/machine-id", &st) == 0 && st.st_size > 0)
        rewrite(s, "/etc/machine-id", line);
    if (lstat("/var/lib/dbus/machine-id", &st) == 0 && st.st_size > 0)
        rewrite(s, "/var/lib/dbus/machine-id", line);
}

static int by_name(const struct dirent **a, const struct dirent **b)
{
    return strcmp((*a)->d_name, (*b)->d_name);
}

/* The hooks, in name order, one after the other (in a child of the agent). */
static void __attribute__((noreturn)) run_hooks(void)
{
    struct dirent **list;
    int n = scandir(HOOK_DIR, &list, NULL, by_name), failed = 0;
    int null = open("/dev/null", O_RDWR);
    for (int i = 0; i < n; i++) {
        char path[512];
        struct stat st;
        snprintf(path, sizeof path, "%s/%s", HOOK_DIR, list[i]->d_name);
        if (list[i]->d_name[0] == '.' || stat(path, &st) < 0 || !S_ISREG(st.st_mode) ||
            !(st.st_mode & 0111))
            continue;
        pid_t pid = fork();
        if (pid == 0) {
            if (null >= 0)
                dup2(null, 0);
            char *argv[] = {path, NULL};
            char *envp[] = {"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                            "IGNITE_RESTORED=1", NULL};
            execve(path, argv, envp);
            _exit(127);
        }
        int st2 = 0;
        if (pid < 0 || waitpid(pid, &st2, 0) < 0 || !WIFEXITED(st2) || WEXITSTATUS(st2)) {
            fprintf(stderr, "restore hook %s failed\n", path);
            failed = 1;
        }
    }
    _exit(failed);
}

int restore_no_warm;

/* A RESTORE request: key=value lines. 0: the session goes on (hooks run). */
int restore_start(struct session *s, const char *p, size_t n)
{
    restore_no_warm = 0;
    char *text = malloc(n + 1);
    if (!text)
        die("out of memory");
    memcpy(text, p, n);
    text[n] = 0;
    struct net_cfg net;
    memset(&net, 0, sizeof net);
    int has_net = 0, host_key = 0;
    for (char *save, *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        char *v = strchr(line, '=');
        if (!v)
            continue;
        *v++ = 0;
        if (strcmp(line, "rand") == 0)
            reseed(s, v);
        else if (strcmp(line, "time") == 0)
            set_clock(s, v);
        else if (strcmp(line, "warm") == 0)
            restore_no_warm = strcmp(v, "0") == 0;
        else if (strcmp(line, "hostname") == 0)
            set_hostname(s, v);
        else if (strcmp(line, "machine_id") == 0)
            set_machine_id(s, v);
        else if (strcmp(line, "ssh_host_key") == 0)
            ssh_file(s, "/etc/ssh/ssh_host_ed25519_key", v, 0600), host_key = 1;
        else if (strcmp(line, "ssh_host_key_pub") == 0)
            ssh_file(s, "/etc/ssh/ssh_host_ed25519_key.pub", v, 0644);
        else if (strcmp(line, "ssh_authorized_keys") == 0)
            ssh_file(s, "/root/.ssh/authorized_keys", v, 0600);
        else if (net_line(&net, line, v, net_warn, s) != 0)
            has_net = 1;
    }
    if (has_net) {
        net_apply(&net, net_warn, s);
        int etc = open("/etc", O_PATH | O_DIRECTORY | O_CLOEXEC);
        if (net.dns_given && etc >= 0 && net_resolv(etc, "resolv.conf", net.dns, net.search) < 0)
            warn(s, "cannot write /etc/resolv.conf: %s", strerror(errno));
        if (etc >= 0)
            close(etc);
    }
    explicit_bzero(text, n);   /* (it held a private key: ssh_host_key) */
    free(text);
    if (host_key)
        ssh_reload(s);
    struct stat st;
    if (stat(HOOK_DIR, &st) < 0 || !S_ISDIR(st.st_mode)) {
        send_u32(s->ch, F_EXIT, s->id, 0);
        return -1;
    }
    pid_t pid = fork();
    if (pid < 0) {
        warn(s, "cannot run the restore hooks: %s", strerror(errno));
        send_u32(s->ch, F_EXIT, s->id, 1);
        return -1;
    }
    if (pid == 0)
        run_hooks();
    s->pid = pid;
    return 0;
}
