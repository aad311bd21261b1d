/*
 * ignite-agent: the guest agent of ignitevm (protocol: docs/agent-protocol.md).
 *
 *   ignite-agent --chroot DIR             serve the virtio-serial agent ports from
 *                                         the image root DIR, in the background
 *   ignite-agent --init DIR REQUESTFILE   be PID 1: make DIR the root, run the
 *                                         image's command, serve the ports
 *   ignite-agent --socket PATH            serve connections to a Unix socket (tests)
 *
 * One thread, one poll() loop (agent_loop.c) over a signalfd (children,
 * SIGIO, forwarded signals), the channels (ports or accepted connections) and
 * the stdio of the sessions' commands. This file: start modes, ports, signals,
 * shutdown and the PID 1 duties of --init.
 */
#include "agent.h"
#include "wipe.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <linux/netlink.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/un.h>
#include <sys/vfs.h>
#include <sys/wait.h>
#include <sched.h>
#include <time.h>
#include <unistd.h>

#define PORT_PREFIX "org.ignitevm.agent."
#define RAMFS_MAGIC 0x858458f6
#define TMPFS_MAGIC 0x01021994

int agent_mode;
static int log_fd = 2, console_fd = -1;
int nports;
static const char *socket_path;
/* --init: the image's command and the way out */
static pid_t main_pid = -1;
static int ending;                      /* the power-off sequence runs */
static int64_t end_deadline = -1, shutdown_deadline = -1, reboot_at = -1;
static int reboot_cmd = RB_POWER_OFF;

int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void logmsg(const char *fmt, ...)
{
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = snprintf(line, sizeof line, "ignitevm-agent: ");
    n += vsnprintf(line + n, sizeof line - n - 1, fmt, ap);
    va_end(ap);
    if (n > (int)sizeof line - 2)
        n = sizeof line - 2;
    line[n++] = '\n';
    if (write(log_fd, line, n) < 0)
        return;
}

static void power_off(void)
{
    sync();
    reboot(reboot_cmd);
    logmsg("reboot: %s", strerror(errno));
    if (agent_mode == MODE_INIT)    /* PID 1 must not exit */
        for (;;)
            pause();
    exit(1);
}

void die(const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    logmsg("error: %s", msg);
    if (agent_mode == MODE_INIT)
        power_off();
    exit(1);
}

/* ---- guest facts ---- */

static void strset(char *d, size_t n, const char *s)
{
    size_t l = strnlen(s, n - 1);
    memcpy(d, s, l);
    d[l] = '\0';
}

/* A regular file opened for reading, never a FIFO or a device (whose open or
 * read could block the agent: the guest may have made one of the files it
 * reads so); a link is followed only when ``follow``. */
static int open_regular(int dir, const char *path, int follow, struct stat *st)
{
    int fd = openat(dir, path, O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC |
                    (follow ? 0 : O_NOFOLLOW));
    if (fd >= 0 && (fstat(fd, st) < 0 || !S_ISREG(st->st_mode) || blocking(fd) < 0)) {
        close(fd);
        errno = EINVAL;     /* (read as "not a regular file") */
        return -1;
    }
    return fd;
}

/* Clear O_NONBLOCK on ``fd`` (opened so for fear of a FIFO, found to be a file
 * or a device): it is read as such (a network file system's reads must not
 * fail with EAGAIN; a command given it must find it as it would be opened). */
int blocking(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    return fl < 0 ? -1 : fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
}

/* A small text file (its first line), relative to ``dir`` (AT_FDCWD: as is). */
static int read_at(int dir, const char *path, char *out, size_t len)
{
    struct stat st;
    int fd = open_regular(dir, path, 0, &st);
    if (fd < 0)
        return -1;
    ssize_t n = read(fd, out, len - 1);
    close(fd);
    if (n < 0)
        return -1;
    out[n] = '\0';
    out[strcspn(out, "\n")] = '\0';
    return 0;
}

/* The whole of a regular file of at most max bytes (links followed), NUL-
 * terminated, *len bytes; NULL with errno set (ENOENT..., EINVAL: not a regular
 * file, EFBIG: larger than max). The caller frees it. */
char *read_small(const char *path, size_t max, size_t *len)
{
    struct stat st;
    int fd = open_regular(AT_FDCWD, path, 1, &st);
    if (fd < 0)
        return NULL;
    char *text = (uint64_t)st.st_size <= max ? malloc(max + 2) : NULL;
    size_t n = 0;
    int err = text ? 0 : (uint64_t)st.st_size > max ? EFBIG : ENOMEM;
    while (!err && n <= max) {      /* (one byte more than max tells a file that grew) */
        ssize_t k = read(fd, text + n, max + 1 - n);
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0)
            err = errno;
        if (k <= 0)
            break;
        n += (size_t)k;
    }
    close(fd);
    if (!err && n > max)
        err = EFBIG;
    if (err) {
        free(text);
        errno = err;
        return NULL;
    }
    text[n] = '\0';
    *len = n;
    return text;
}

/* PID 1's comm and the basename of its executable. Without /proc (--chroot,
 * early), look through a proc mounted in a private mount namespace. */
static void pid1_info(char *comm, size_t clen, char *exe, size_t elen)
{
    char path[PATH_MAX];
    ssize_t n;
    snprintf(comm, clen, "unknown");
    if (elen)
        exe[0] = '\0';
    if (read_at(AT_FDCWD, "/proc/1/comm", comm, clen) == 0) {
        if (elen && (n = readlink("/proc/1/exe", path, sizeof path - 1)) > 0) {
            path[n] = '\0';
            strset(exe, elen, strrchr(path, '/') ? strrchr(path, '/') + 1 : path);
        }
        return;
    }
    int p[2];
    if (agent_mode != MODE_CHROOT || pipe2(p, O_CLOEXEC) < 0)
        return;
    pid_t pid = fork();
    if (pid == 0) {
        agent_mode = MODE_SOCKET;   /* no second attempt in here */
        if (unshare(CLONE_NEWNS) == 0 && mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) == 0 &&
            mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) == 0) {
            pid1_info(comm, clen, exe, elen);
            dprintf(p[1], "%s\n%s", comm, elen ? exe : "");
        }
        _exit(0);
    }
    close(p[1]);
    char buf[512];
    n = pid > 0 ? read(p[0], buf, sizeof buf - 1) : -1;
    close(p[0]);
    if (pid > 0)
        waitpid(pid, NULL, 0);
    if (n > 0) {
        buf[n] = '\0';
        char *nl = strchr(buf, '\n');
        if (nl) {
            *nl = '\0';
            if (elen)
                strset(exe, elen, nl + 1);
        }
        strset(comm, clen, buf);
    }
}

void send_ready(struct channel *ch, uint32_t sid)
{
    /* PID 1's comm as first read (a READY after it says the same: it is read
       again only while it is "unknown"). Under TCG a clone's first READY
       would translate the kernel's open and /proc paths anew, ~1,300 blocks
       (~8 ms of the clone's start), for a field the host only shows. Not
       its executable: READY does not say it. */
    static char comm[64];
    char msg[256];
    struct timespec ts;
    if (!comm[0] || strcmp(comm, "unknown") == 0)
        pid1_info(comm, sizeof comm, NULL, 0);
    clock_gettime(CLOCK_BOOTTIME, &ts);
    int n = snprintf(msg, sizeof msg, "version=1\nrestore=3\npid1=%s\nuptime_ms=%lld\n", comm,
                     (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000);
    send_frame(ch, F_READY, 0, sid, msg, n);
}

/* ---- shutdown and the --init end ---- */

static void start_ending(void)
{
    if (ending)
        return;
    ending = 1;
    kill(-1, SIGTERM);
    end_deadline = now_ms() + 2000;
}

void shutdown_request(struct channel *ch, uint32_t sid, uint32_t mode)
{
    reboot_cmd = mode == 1 ? RB_AUTOBOOT : RB_POWER_OFF;
    send_u32(ch, F_EXIT, sid, 0);
    if (agent_mode == MODE_SOCKET) {    /* tests: "power off" is the agent leaving */
        reboot_at = now_ms() + 100;
        return;
    }
    if (agent_mode == MODE_INIT) {
        if (main_pid > 0 && !ending && shutdown_deadline < 0) {
            kill(main_pid, SIGTERM);
            shutdown_deadline = now_ms() + 10000;
        } else if (main_pid <= 0) {
            start_ending();
        }
        return;
    }
    char comm[64], exe[64];
    int sig = 0;
    pid1_info(comm, sizeof comm, exe, sizeof exe);
    if (strcmp(comm, "systemd") == 0)
        sig = mode == 1 ? SIGINT : SIGRTMIN + 4;
    else if (strcmp(comm, "init") == 0 && strcmp(exe, "busybox") == 0)
        sig = mode == 1 ? SIGTERM : SIGUSR2;
    if (sig && kill(1, sig) == 0) {
        logmsg("asked %s (PID 1) to %s", comm, mode == 1 ? "reboot" : "power off");
        shutdown_deadline = now_ms() + 10000;
    } else {
        reboot_at = now_ms() + 100;     /* let the reply go out first */
    }
}

static void main_exited(int status)
{
    int code = WIFSIGNALED(status) ? 128 + WTERMSIG(status) : WEXITSTATUS(status);
    logmsg("command exited with status %d", code);
    main_pid = -1;
    start_ending();
}

static void reap(void)
{
    int st;
    pid_t pid;
    while ((pid = waitpid(-1, &st, WNOHANG)) > 0) {
        struct session *s;
        if (pid == main_pid)
            main_exited(st);
        else if ((s = session_of(pid)))
            exec_exited(s, st);
    }
}

static void quit(void)
{
    reset_all();
    if (socket_path)
        unlink(socket_path);
    exit(0);
}

void on_signals(void)
{
    struct signalfd_siginfo si;
    while (read(sig_fd, &si, sizeof si) == sizeof si) {
        int sig = si.ssi_signo;
        if (sig == SIGIO)
            host_came = 1;      /* (agent_loop.c: prepare) */
        else if (agent_mode == MODE_INIT && sig != SIGCHLD && main_pid > 0)
            kill(main_pid, sig);        /* PID 1 passes signals on to the image's command */
        else if (agent_mode != MODE_INIT && (sig == SIGTERM || sig == SIGINT || sig == SIGHUP))
            quit();
    }
    reap();
}

/* Run the timers that are due; returns the next deadline, or -1. */
int64_t system_timers(int64_t now)
{
    if (reboot_at >= 0 && now >= reboot_at) {
        if (agent_mode == MODE_SOCKET)
            quit();
        power_off();
    }
    if (shutdown_deadline >= 0 && now >= shutdown_deadline) {
        shutdown_deadline = -1;
        if (agent_mode == MODE_INIT)
            start_ending();
        else
            power_off();
    }
    siginfo_t si;
    if (ending && waitid(P_ALL, 0, &si, WEXITED | WNOHANG | WNOWAIT) < 0 && errno == ECHILD)
        power_off();            /* everything else is gone */
    if (ending && now >= end_deadline) {
        kill(-1, SIGKILL);
        power_off();
    }
    int64_t next = ending ? end_deadline : -1;
    if (reboot_at >= 0 && (next < 0 || reboot_at < next))
        next = reboot_at;
    if (shutdown_deadline >= 0 && (next < 0 || shutdown_deadline < next))
        next = shutdown_deadline;
    return next;
}

/* ---- start modes ---- */

/* Open a device node by path; else under alt (the new root); else through a
 * temporary node made from the device number. */
static int open_dev(const char *name, const char *alt, dev_t dev, int flags)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "/dev/%s", name);
    int fd = open(path, flags | O_CLOEXEC | O_NOCTTY);
    if (fd < 0 && alt) {
        snprintf(path, sizeof path, "%s/dev/%s", alt, name);
        fd = open(path, flags | O_CLOEXEC | O_NOCTTY);
    }
    if (fd < 0 && dev) {
        snprintf(path, sizeof path, "/.ignite-dev.%d", (int)getpid());
        if (mknod(path, S_IFCHR | 0600, dev) == 0) {
            fd = open(path, flags | O_CLOEXEC | O_NOCTTY);
            unlink(path);
        }
    }
    return fd;
}

static int by_name(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The agent's ports: virtio-serial ports named org.ignitevm.agent.*. The host
 * may hot-plug more while the VM runs (one per concurrent client), so the
 * sysfs class directory stays open (it outlives the chroot and the unmount of
 * /sys) and a kernel uevent socket says when to look again. */
static int ports_dir = -1;
int uevent_fd = -1;

/* Open the agent ports not yet open; returns how many were added. */
int open_ports(const char *alt)
{
    if (ports_dir < 0) {
        int mounted = access("/sys/class", F_OK) < 0 &&
                      mount("sysfs", "/sys", "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) == 0;
        ports_dir = open("/sys/class/virtio-ports", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (mounted)
            umount2("/sys", MNT_DETACH);
        uevent_fd = socket(AF_NETLINK, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
                           NETLINK_KOBJECT_UEVENT);
        struct sockaddr_nl sa = {.nl_family = AF_NETLINK, .nl_groups = 1};
        if (uevent_fd >= 0 && bind(uevent_fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
            close(uevent_fd);
            uevent_fd = -1;
        }
        if (ports_dir < 0)
            return 0;
    }
    int dup_fd = dup(ports_dir);
    DIR *d = dup_fd >= 0 ? fdopendir(dup_fd) : NULL;
    if (!d)
        return 0;
    rewinddir(d);
    struct dirent *e;
    char *names[64];
    int n = 0, added = 0;
    while ((e = readdir(d)) && n < 64)
        if (strncmp(e->d_name, "vport", 5) == 0)
            names[n++] = strdup(e->d_name);
    closedir(d);
    qsort(names, n, sizeof *names, by_name);
    for (int i = 0; i < n; i++) {
        char path[PATH_MAX], name[128] = "", devno[32] = "";
        unsigned maj = 0, min = 0;
        snprintf(path, sizeof path, "%s/name", names[i]);
        /* (a port just plugged in has no name until the host's next message) */
        if (read_at(ports_dir, path, name, sizeof name) == 0 &&
            strncmp(name, PORT_PREFIX, strlen(PORT_PREFIX)) == 0 && !have_port(name)) {
            snprintf(path, sizeof path, "%s/dev", names[i]);
            if (read_at(ports_dir, path, devno, sizeof devno) == 0)
                sscanf(devno, "%u:%u", &maj, &min);
            int fd = open_dev(names[i], alt, maj ? makedev(maj, min) : 0, O_RDWR | O_NONBLOCK);
            if (fd < 0) {
                logmsg("cannot open the agent port %s (%s): %s", names[i], name, strerror(errno));
            } else {
                add_channel(fd, 1, name);
                nports++, added++;
            }
        }
        free(names[i]);
    }
    return added;
}

/* The kernel said something happened to a device: new agent ports? */
void on_uevent(void)
{
    char msg[4096];
    int ours = 0;
    ssize_t n;
    while ((n = recv(uevent_fd, msg, sizeof msg - 1, 0)) != 0) {
        if (n < 0) {
            if (errno == ENOBUFS) {     /* events were lost: look anyway */
                ours = 1;
                continue;
            }
            break;
        }
        msg[n] = '\0';
        /* NUL-separated KEY=value lines after an "action@devpath" header */
        for (char *p = msg; p < msg + n; p += strlen(p) + 1)
            if (strcmp(p, "SUBSYSTEM=virtio-ports") == 0)
                ours = 1;
    }
    if (ours && open_ports(NULL) > 0)
        ports_async();
}

static void start_socket(const char *path)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof sa.sun_path)
        die("socket path too long: %s", path);
    strcpy(sa.sun_path, path);
    listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    unlink(path);
    if (listen_fd < 0 || bind(listen_fd, (struct sockaddr *)&sa, sizeof sa) < 0 ||
        listen(listen_fd, 64) < 0)
        die("%s: %s", path, strerror(errno));
    socket_path = path;
    logmsg("ready (socket %s)", path);
}

static void start_chroot(const char *dir)
{
    console_fd = open_dev("console", dir, makedev(5, 1), O_WRONLY);
    int null = open_dev("null", dir, makedev(1, 3), O_RDWR);
    if (console_fd >= 0)
        log_fd = console_fd;
    open_ports(dir);
    if (ports_dir < 0)
        die("no virtio-serial ports in this guest (no /sys/class/virtio-ports)");
    if (chdir(dir) < 0 || chroot(".") < 0 || chdir("/") < 0)
        die("cannot enter %s: %s", dir, strerror(errno));
    logmsg("ready (%d channels)", nports);
    pid_t pid = fork();
    if (pid < 0)
        die("fork: %s", strerror(errno));
    if (pid > 0)
        _exit(0);
    setsid();
    if (null >= 0) {
        dup2(null, 0);
        dup2(null, 1);
        dup2(null, 2);
        close(null);
    }
}

static void start_init(const char *dir, const char *reqfile)
{
    static struct request req;
    char err[ERRLEN], *data = malloc(1 << 20);
    int fd = open(reqfile, O_RDONLY | O_CLOEXEC);
    ssize_t n = fd >= 0 && data ? read(fd, data, (1 << 20) - 1) : -1;
    if (fd >= 0)
        close(fd);
    if (n < 0)
        die("cannot read %s: %s", reqfile, strerror(errno));
    if (request_parse(&req, data, n, err) < 0 || req.argc == 0)
        die("%s: %s", reqfile, req.argc ? err : "no command in the request");
    free(data);

    struct stat root, nroot;
    struct statfs fs;
    if (getpid() == 1 && stat("/", &root) == 0 && stat(dir, &nroot) == 0 && root.st_dev != nroot.st_dev &&
        statfs("/", &fs) == 0 && (fs.f_type == RAMFS_MAGIC || fs.f_type == TMPFS_MAGIC))
        wipe(open("/", O_RDONLY | O_DIRECTORY | O_CLOEXEC), root.st_dev);
    if (chdir(dir) < 0 || mount(".", "/", NULL, MS_MOVE, NULL) < 0 || chroot(".") < 0 ||
        chdir("/") < 0)
        die("cannot make %s the root: %s", dir, strerror(errno));

    static const struct { const char *src, *dst, *type, *opts; unsigned long flags; } mounts[] = {
        {"proc", "/proc", "proc", NULL, MS_NOSUID | MS_NODEV | MS_NOEXEC},
        {"sysfs", "/sys", "sysfs", NULL, MS_NOSUID | MS_NODEV | MS_NOEXEC},
        {"devpts", "/dev/pts", "devpts", "newinstance,ptmxmode=0666,mode=0620,gid=5",
         MS_NOSUID | MS_NOEXEC},
        {"shm", "/dev/shm", "tmpfs", "mode=1777", MS_NOSUID | MS_NODEV},
        {"tmpfs", "/run", "tmpfs", "mode=0755", MS_NOSUID | MS_NODEV},
    };
    for (size_t i = 0; i < sizeof mounts / sizeof *mounts; i++) {
        mkdir(mounts[i].dst, 0755);
        if (mount(mounts[i].src, mounts[i].dst, mounts[i].type, mounts[i].flags,
                  mounts[i].opts) < 0)
            logmsg("warning: mount %s on %s: %s", mounts[i].type, mounts[i].dst, strerror(errno));
    }
    int ptmx = open("/dev/ptmx", O_RDWR | O_NOCTTY | O_CLOEXEC);
    if (ptmx < 0) {
        unlink("/dev/ptmx");
        if (symlink("pts/ptmx", "/dev/ptmx") < 0)
            logmsg("warning: /dev/ptmx: %s", strerror(errno));
    } else {
        close(ptmx);
    }
    static const char *links[][2] = {{"/proc/self/fd", "/dev/fd"}, {"/proc/self/fd/0", "/dev/stdin"},
                                     {"/proc/self/fd/1", "/dev/stdout"},
                                     {"/proc/self/fd/2", "/dev/stderr"}};
    for (size_t i = 0; i < 4; i++)
        if (symlink(links[i][0], links[i][1]) < 0 && errno != EEXIST)
            logmsg("warning: %s: %s", links[i][1], strerror(errno));
    console_fd = open("/dev/console", O_WRONLY | O_NOCTTY | O_CLOEXEC);
    if (console_fd >= 0)
        log_fd = console_fd;
    for (int nfd; (nfd = open("/dev/null", O_RDWR)) >= 0;)    /* keep 0-2 taken */
        if (nfd > 2) {
            close(nfd);
            break;
        }
    open_ports(NULL);
    logmsg("ready (%d channels)", nports);

    uint32_t code;
    main_pid = spawn(&req, console_fd >= 0 ? console_fd : 2, NULL, NULL, NULL, &code, err);
    if (main_pid < 0) {
        logmsg("%s", err);
        main_exited(code << 8);
    }
}

int main(int argc, char **argv)
{
    if (argc == 2 && strcmp(argv[1], "--warm") == 0)
        return 0;               /* (agent_exec.c: exec_warm) */
    for (int fd; (fd = open("/dev/null", O_RDWR)) >= 0;)    /* keep 0-2 taken */
        if (fd > 2) {
            close(fd);
            break;
        }
    if (argc == 3 && strcmp(argv[1], "--socket") == 0)
        agent_mode = MODE_SOCKET;
    else if (argc == 3 && strcmp(argv[1], "--chroot") == 0)
        agent_mode = MODE_CHROOT;
    else if (argc == 4 && strcmp(argv[1], "--init") == 0)
        agent_mode = MODE_INIT;
    else {
        fprintf(stderr, "usage: ignite-agent --chroot DIR | --init DIR REQUESTFILE | "
                        "--socket PATH\n");
        return 2;
    }
    sigset_t mask;
    sigemptyset(&mask);
    int sigs[] = {SIGCHLD, SIGIO, SIGTERM, SIGINT, SIGHUP, SIGUSR1, SIGUSR2};
    for (size_t i = 0; i < sizeof sigs / sizeof *sigs; i++)
        if (sigs[i] != SIGHUP || agent_mode != MODE_CHROOT)
            sigaddset(&mask, sigs[i]);
    sigprocmask(SIG_BLOCK, &mask, NULL);
    signal(SIGPIPE, SIG_IGN);
    if (agent_mode == MODE_CHROOT)
        signal(SIGHUP, SIG_IGN);

    if (agent_mode == MODE_SOCKET)
        start_socket(argv[2]);
    else if (agent_mode == MODE_CHROOT)
        start_chroot(argv[2]);
    else
        start_init(argv[2], argv[3]);
    sig_fd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
    if (sig_fd < 0)
        die("signalfd: %s", strerror(errno));
    exec_warm_init();
    ports_async();
    if (nports == 0)            /* look for the first port soon (see recheck_ports) */
        recheck_at = now_ms();
    reap();                     /* a child may have gone before the signalfd existed */
    loop();
}
