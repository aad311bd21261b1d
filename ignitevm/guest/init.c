/*
 * ignite-init: the initramfs's /init. Loads the virtio drivers, mounts the VM
 * disk, applies the per-VM config the host handed in on the config disk,
 * starts the guest agent, then hands over to the image's init (or, for an
 * image without one, lets the agent run its command as PID 1).
 *
 * One process, no shell: under TCG every fork and exec costs 10-20 ms, so the
 * whole boot path is system calls. The modules beyond the disks load, and
 * the root filesystem grows, in threads beside the rest.
 * Every step that fails says so on the console; a
 * step the VM cannot run without powers it off (the host then reports it
 * stopped). ignite.debug=1 on the kernel command line adds a line per step
 * with the seconds since boot; ignite.probe=1 powers off at once (the host's
 * KVM probe).
 */
#include "init.h"
#include "net.h"
#include "wipe.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <linux/netlink.h>
#include <poll.h>
#include <pthread.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/vfs.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define EXT4_IOC_RESIZE_FS _IOW('f', 16, uint64_t)
#define RAMFS_MAGIC 0x858458f6
#define TMPFS_MAGIC 0x01021994
#define AGENT "/bin/ignite-agent"
#define NEWROOT "/newroot"

extern char **environ;
int debug;

static void vsay(const char *prefix, const char *fmt, va_list ap)
{
    char line[1024];
    int n = snprintf(line, sizeof line, "ignitevm-init: %s", prefix);
    n += vsnprintf(line + n, sizeof line - (size_t)n - 1, fmt, ap);
    if (n > (int)sizeof line - 2)
        n = sizeof line - 2;
    line[n++] = '\n';
    if (write(1, line, (size_t)n) < 0)
        return;
}

void say(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsay("", fmt, ap);
    va_end(ap);
}

__attribute__((noreturn)) static void power_off(void)
{
    sync();
    reboot(RB_POWER_OFF);
    for (;;)                    /* (PID 1 must not exit: that is a kernel panic) */
        pause();
}

void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsay("error: ", fmt, ap);
    va_end(ap);
    power_off();
}

void trace(const char *fmt, ...)
{
    if (!debug)
        return;
    struct timespec ts;
    clock_gettime(CLOCK_BOOTTIME, &ts);
    char prefix[32];
    snprintf(prefix, sizeof prefix, "%ld.%03ld ", (long)ts.tv_sec, ts.tv_nsec / 1000000);
    va_list ap;
    va_start(ap, fmt);
    vsay(prefix, fmt, ap);
    va_end(ap);
}

static void mount_or_warn(const char *src, const char *dst, const char *type,
                          unsigned long flags, const char *opts)
{
    if (mount(src, dst, type, flags, opts) < 0)
        say("warning: mount %s on %s: %s", type, dst, strerror(errno));
}

static void read_cmdline(void)
{
    char buf[4096];
    int fd = open("/proc/cmdline", O_RDONLY | O_CLOEXEC);
    ssize_t n = fd < 0 ? -1 : read(fd, buf, sizeof buf - 1);
    if (fd >= 0)
        close(fd);
    buf[n > 0 ? n : 0] = '\0';
    const char *pos = buf;
    char word[256];
    while (next_word(&pos, word, sizeof word)) {
        if (strcmp(word, "ignite.probe=1") == 0) {
            say("probe ok");
            power_off();
        }
        if (strcmp(word, "ignite.debug=1") == 0)
            debug = 1;
    }
}

/* ---- disks, found by their serial ---- */

/* The /dev name of the virtio disk whose serial is want, into dev; 1 if found. */
static int find_disk(const char *want, char *dev, size_t len)
{
    DIR *d = opendir("/sys/block");
    struct dirent *e;
    int found = 0;
    while (d && !found && (e = readdir(d))) {
        if (strncmp(e->d_name, "vd", 2) != 0)
            continue;
        char path[300], serial[64];
        snprintf(path, sizeof path, "/sys/block/%s/serial", e->d_name);
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        ssize_t n = fd < 0 ? -1 : read(fd, serial, sizeof serial - 1);
        if (fd >= 0)
            close(fd);
        if (n < 0)
            continue;
        serial[n] = '\0';
        serial[strcspn(serial, "\n")] = '\0';        /* (virtio-blk's has none) */
        if (strcmp(serial, want) == 0) {
            snprintf(dev, len, "/dev/%.26s", e->d_name);
            found = 1;
        }
    }
    if (d)
        closedir(d);
    return found;
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Find the disks with serials want[0..n); wait for the kernel to announce
 * more devices (uevents) while some are missing, up to timeout_ms. The
 * number of disks found. */
static int find_disks(const char **want, char (*dev)[32], int n, int timeout_ms)
{
    int found = 0, sock = -1;           /* -1: not opened yet, -2: no uevents here */
    int64_t deadline = now_ms() + timeout_ms;
    for (;;) {
        found = 0;
        for (int i = 0; i < n; i++)
            found += dev[i][0] || find_disk(want[i], dev[i], sizeof dev[i]);
        int64_t left = deadline - now_ms();
        if (found == n || left <= 0)
            break;
        if (sock == -1) {       /* (then look once more: one may have come meanwhile) */
            sock = socket(AF_NETLINK, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
                          NETLINK_KOBJECT_UEVENT);
            struct sockaddr_nl sa = {.nl_family = AF_NETLINK, .nl_groups = 1};
            if (sock >= 0 && bind(sock, (struct sockaddr *)&sa, sizeof sa) < 0)
                close(sock), sock = -1;
            if (sock < 0)
                sock = -2;
            continue;
        }
        if (sock >= 0) {
            struct pollfd p = {.fd = sock, .events = POLLIN};
            poll(&p, 1, (int)left);
            char drain[4096];
            while (recv(sock, drain, sizeof drain, 0) > 0)
                ;
        } else {                /* no uevents: look again every 10 ms */
            struct timespec ts = {0, (left < 10 ? left : 10) * 1000 * 1000};
            nanosleep(&ts, NULL);
        }
    }
    if (sock >= 0)
        close(sock);
    return found;
}

/* ---- the modules beyond the disks', in a thread ---- */

static pthread_t loader;
static int loading;

static void *load_rest(void *arg)
{
    const struct modules *m = arg;
    modules_load(m, modules_find(m, "virtio_blk.ko") + 1, m->n);
    return NULL;
}

static void modules_wait(void)
{
    if (loading)
        pthread_join(loader, NULL);
    loading = 0;
}

/* ---- growing the root filesystem, beside the rest ---- */

static pthread_t resizer;
static int resizing;
static char resize_dev[32], resize_err[160];

static void *resize(void *arg)
{
    (void)arg;
    uint64_t bytes = 0, blocks;
    struct statvfs st;
    int dev = open(resize_dev, O_RDONLY | O_CLOEXEC);
    if (dev < 0 || ioctl(dev, BLKGETSIZE64, &bytes) < 0) {
        snprintf(resize_err, sizeof resize_err, "size of %s: %s", resize_dev, strerror(errno));
    } else {
        int fd = open(NEWROOT, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0 || fstatvfs(fd, &st) < 0)
            snprintf(resize_err, sizeof resize_err, "%s: %s", NEWROOT, strerror(errno));
        else if ((blocks = bytes / st.f_frsize) > st.f_blocks &&
                 ioctl(fd, EXT4_IOC_RESIZE_FS, &blocks) < 0)
            snprintf(resize_err, sizeof resize_err, "resize: %s", strerror(errno));
        if (fd >= 0)
            close(fd);
    }
    if (dev >= 0)
        close(dev);
    trace("root filesystem grown");
    return NULL;
}

static void resize_wait(void)
{
    if (resizing)
        pthread_join(resizer, NULL);
    resizing = 0;
    if (resize_err[0])
        say("warning: could not grow the root filesystem (%s)", resize_err);
}

/* ---- the per-VM settings ---- */

static void chmod_in(int root_fd, const char *path, mode_t mode)
{
    int fd = open_in(root_fd, path, O_PATH, 0);
    char proc[64];
    snprintf(proc, sizeof proc, "/proc/self/fd/%d", fd);
    if (fd < 0 || chmod(proc, mode) < 0)
        say("warning: chmod %s: %s", path, strerror(errno));
    if (fd >= 0)
        close(fd);
}

static int is_dir_in(int root_fd, const char *path)
{
    int fd = open_in(root_fd, path, O_PATH | O_DIRECTORY, 0);
    if (fd >= 0)
        close(fd);
    return fd >= 0;
}

static void copy_or_warn(int root_fd, const char *src, const char *path, mode_t mode)
{
    if (copy_in(root_fd, src, path, mode) < 0)
        say("warning: cannot copy %s to %s: %s", src, path, strerror(errno));
}

static void apply_files(int root_fd, const struct env *env)
{
    struct stat st;
    /* /etc/hosts only where the image has none (or an empty one). */
    int hosts = open_in(root_fd, "/etc/hosts", O_PATH, 0);
    int has_hosts = hosts >= 0 && fstat(hosts, &st) == 0 && st.st_size > 0;
    if (hosts >= 0)
        close(hosts);
    if (!has_hosts && stat("/cfg/hosts", &st) == 0 && S_ISREG(st.st_mode))
        copy_or_warn(root_fd, "/cfg/hosts", "/etc/hosts", st.st_mode & 0777);
    const char *hostname = env_get(env, "IGNITE_HOSTNAME");
    if (*hostname && sethostname(hostname, strlen(hostname)) < 0)
        say("warning: hostname %s: %s", hostname, strerror(errno));

    /* SSH: the VM's own host key (made on the host), and root's authorized key. */
    if (stat("/cfg/ssh", &st) == 0 && S_ISDIR(st.st_mode) && is_dir_in(root_fd, "/etc/ssh")) {
        copy_or_warn(root_fd, "/cfg/ssh/ssh_host_ed25519_key", "/etc/ssh/ssh_host_ed25519_key",
                     0600);
        copy_or_warn(root_fd, "/cfg/ssh/ssh_host_ed25519_key.pub",
                     "/etc/ssh/ssh_host_ed25519_key.pub", 0644);
        chmod_in(root_fd, "/etc/ssh/ssh_host_ed25519_key", 0600);
    }
    if (stat("/cfg/ssh/authorized_keys", &st) == 0 && S_ISREG(st.st_mode)) {
        int dir = mkdirs_in(root_fd, "/root/.ssh", 0755);
        if (dir < 0 || fchmod(dir, 0700) < 0) {
            say("warning: /root/.ssh: %s", strerror(errno));
        } else {
            copy_or_warn(root_fd, "/cfg/ssh/authorized_keys", "/root/.ssh/authorized_keys",
                         0600);
            chmod_in(root_fd, "/root/.ssh/authorized_keys", 0600);
        }
        if (dir >= 0)
            close(dir);
    }
}

/* Volumes: host block devices, mounted where the VM spec says ("id:path ...": the
 * disk with serial "ignite-vol-<id>", a short id of the volume's name). */
static void mount_volumes(int root_fd, const char *list)
{
    char vol[512], serial[600], dev[1][32];
    for (const char *pos = list; next_word(&pos, vol, sizeof vol);) {
        char *colon = strchr(vol, ':');
        const char *path = colon ? colon + 1 : vol;
        if (colon)
            *colon = '\0';
        snprintf(serial, sizeof serial, "ignite-vol-%s", vol);
        const char *want[1] = {serial};
        dev[0][0] = '\0';
        if (find_disks(want, dev, 1, 3000) == 0) {
            say("warning: volume %s did not appear", vol);
            continue;
        }
        int dir = mkdirs_in(root_fd, path, 0755);
        if (dir < 0 || mount_any(dev[0], dir) < 0)
            say("warning: could not mount volume %s on %s (%s)", vol, path, strerror(errno));
        if (dir >= 0)
            close(dir);
        trace("volume %s", vol);
    }
}

/* The network as the host planned it (/cfg/net: the lines of a clone's
 * RESTORE, see net.h; the kernel has no ip= autoconfiguration). */
static void net_warn(void *ctx, const char *fmt, ...)
{
    char msg[256];
    va_list ap;
    (void)ctx;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    say("warning: %s", msg);
}

static void read_network(struct net_cfg *net)
{
    static char text[8192];
    int fd = open("/cfg/net", O_RDONLY | O_CLOEXEC);
    ssize_t n = fd < 0 ? 0 : read(fd, text, sizeof text - 1);
    if (fd >= 0)
        close(fd);
    text[n > 0 ? n : 0] = '\0';
    net_parse(net, text, net_warn, NULL);
}

/* /etc/resolv.conf of the new root (with the other files: the resize below
 * holds the filesystem's journal while it runs). */
static void write_resolv_conf(int root_fd, const struct net_cfg *net)
{
    const char *name;
    if (!net->n || !net->dns_given || !is_dir_in(root_fd, "/etc"))
        return;
    int etc = parent_in(root_fd, "/etc/resolv.conf", &name);
    if (etc < 0)
        return;
    if (net_resolv(etc, name, net->dns, net->search) < 0)
        say("warning: /etc/resolv.conf: %s", strerror(errno));
    close(etc);
}

/* devtmpfs in the new root too; the initramfs keeps its own /dev mount (the
 * agent holds its virtio ports open there). Pseudo-terminals from the first
 * moment: `exec -t` may come before the image's init mounts its own (systemd
 * then keeps this one). /proc and /sys too, for the same reason (an image's
 * init that mounts its own mounts over them; systemd keeps these). */
static void mount_newroot_fs(int root_fd)
{
    static const struct {
        const char *path, *type, *opts;
        unsigned long flags;
    } fs[] = {
        {"/dev", "devtmpfs", "mode=0755", MS_NOSUID},
        {"/dev/pts", "devpts", "gid=5,mode=620,ptmxmode=0666", MS_NOSUID | MS_NOEXEC},
        {"/proc", "proc", NULL, MS_NOSUID | MS_NOEXEC | MS_NODEV},
        {"/sys", "sysfs", NULL, MS_NOSUID | MS_NOEXEC | MS_NODEV},
    };
    if (!is_dir_in(root_fd, "/dev")) {
        int made = mkdirs_in(root_fd, "/dev/pts", 0755);
        if (made >= 0)
            close(made);
    }
    for (size_t i = 0; i < sizeof fs / sizeof *fs; i++) {
        int dir = open_in(root_fd, fs[i].path, O_PATH | O_DIRECTORY, 0);
        if (dir < 0) {
            if (i == 1)         /* (the others only where the image has the folder) */
                say("warning: mount %s on %s: %s", fs[i].type, fs[i].path, strerror(errno));
            continue;
        }
        if (mount_on(fs[i].type, dir, fs[i].type, fs[i].flags, fs[i].opts) < 0)
            say("warning: mount %s on %s: %s", fs[i].type, fs[i].path, strerror(errno));
        close(dir);
    }
}

/* ---- the handover ---- */

/* The environment the next program gets: ours, with PATH set. */
static char **handover_env(void)
{
    static char *envp[64];
    int n = 0;
    envp[n++] = "PATH=/bin:/sbin:/usr/bin:/usr/sbin";
    for (char **e = environ; *e && n < 63; e++)
        if (strncmp(*e, "PATH=", 5) != 0)
            envp[n++] = *e;
    envp[n] = NULL;
    return envp;
}

static int has_init(int root_fd, const char *init)
{
    const char *name;
    struct stat st;
    int dir = parent_in(root_fd, init, &name);
    int ok = dir >= 0 && fstatat(dir, name, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
             (S_ISLNK(st.st_mode) || (!S_ISDIR(st.st_mode) && (st.st_mode & 0111)));
    if (dir >= 0)
        close(dir);
    return ok;
}

static void start_agent(void)
{
    pid_t pid;
    int status;
    char *argv[] = {"ignite-agent", "--chroot", NEWROOT, NULL};
    /* (vfork-like: no copy of our memory; it detaches itself once ready) */
    if (posix_spawn(&pid, AGENT, NULL, NULL, argv, handover_env()) != 0 ||
        waitpid(pid, &status, 0) < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
        say("warning: the guest agent did not start");
    trace("agent started");
}

static void switch_root(const char *init)
{
    struct statfs fs;
    struct stat st;
    if (statfs("/", &fs) == 0 && (fs.f_type == RAMFS_MAGIC || fs.f_type == TMPFS_MAGIC) &&
        stat("/", &st) == 0)
        wipe(open("/", O_RDONLY | O_DIRECTORY | O_CLOEXEC), st.st_dev);
    if (chdir(NEWROOT) < 0 || mount(".", "/", NULL, MS_MOVE, NULL) < 0 || chroot(".") < 0 ||
        chdir("/") < 0)
        die("cannot make %s the root: %s", NEWROOT, strerror(errno));
    char *argv[] = {(char *)init, NULL};
    execve(init, argv, handover_env());
    die("cannot run %s: %s", init, strerror(errno));
}

int main(void)
{
    umask(022);
    mount_or_warn("devtmpfs", "/dev", "devtmpfs", MS_NOSUID, "mode=0755");
    mount_or_warn("proc", "/proc", "proc", MS_NOSUID | MS_NOEXEC | MS_NODEV, NULL);
    mount_or_warn("sysfs", "/sys", "sysfs", MS_NOSUID | MS_NOEXEC | MS_NODEV, NULL);
    read_cmdline();
    trace("start");

    /* Those that fail say so; what they drive then does not appear below.
     * The disks first; the others (console, network, button) load in a
     * thread while the disks are mounted and read, and are waited for before
     * the network is configured. */
    static struct modules mods;
    if (modules_open(&mods, "/lib/modules") == 0) {
        int disk = modules_find(&mods, "virtio_blk.ko");
        modules_load(&mods, 0, disk < 0 ? mods.n : disk + 1);
        if (disk >= 0 && (loading = pthread_create(&loader, NULL, load_rest, &mods) == 0) == 0)
            load_rest(&mods);
    }

    const char *want[2] = {"ignite-root", "ignite-cfg"};
    char dev[2][32] = {"", ""};
    if (find_disks(want, dev, 2, 5000) < 2)
        die("the VM disks did not appear (root=%s config=%s)", dev[0][0] ? dev[0] : "none",
            dev[1][0] ? dev[1] : "none");
    trace("disks %s %s", dev[0], dev[1]);

    /* (devtmpfs is one instance: /dev/pts made here is there in /newroot/dev too) */
    mkdir("/dev/pts", 0755);
    if (mount(dev[0], NEWROOT, "ext4", 0, NULL) < 0)
        die("cannot mount the VM disk %s: %s", dev[0], strerror(errno));
    trace("root mounted");

    /* Per-VM files: hostname, copied files, keys. The shared image is never
     * written: these land in the VM's own copy-on-write layer. */
    int root_fd = open(NEWROOT, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    int cfg_fd = open("/cfg", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (root_fd < 0 || cfg_fd < 0)
        die("cannot open %s: %s", root_fd < 0 ? NEWROOT : "/cfg", strerror(errno));
    int unpacked = cfg_unpack(dev[1], root_fd, cfg_fd);
    if (unpacked < 0)
        die("cannot read the VM config disk %s", dev[1]);
    if (unpacked > 0)
        die("cannot copy the VM files into place");
    static char text[65536];
    char err[160];
    static struct env env;
    int fd = open("/cfg/vm.env", O_RDONLY | O_CLOEXEC);
    ssize_t n = fd < 0 ? -1 : read(fd, text, sizeof text - 1);
    if (fd >= 0)
        close(fd);
    if (n < 0)
        die("cannot read the VM settings /cfg/vm.env: %s", strerror(errno));
    if (env_parse(&env, text, (size_t)n, err, sizeof err) < 0)
        die("cannot read the VM settings /cfg/vm.env: %s", err);
    trace("config disk read");

    apply_files(root_fd, &env);
    static struct net_cfg net;
    read_network(&net);
    write_resolv_conf(root_fd, &net);
    mount_volumes(root_fd, env_get(&env, "IGNITE_VOLUMES"));
    /* Grow the root filesystem in a thread while the network, the new root's
     * mounts and the agent are set up; waited for before the handover. */
    snprintf(resize_dev, sizeof resize_dev, "%s", dev[0]);
    resizing = pthread_create(&resizer, NULL, resize, NULL) == 0;
    if (!resizing)
        resize(NULL);
    modules_wait();
    net_apply(&net, net_warn, NULL);
    trace("network");
    mount_newroot_fs(root_fd);
    trace("new root ready");

    const char *init = env_get(&env, "IGNITE_INIT");
    if (*init && has_init(root_fd, init)) {
        /* The agent serves exec/cp/shutdown from the image's root, beside its init. */
        start_agent();
        resize_wait();
        umount2("/sys", MNT_DETACH);
        umount2("/proc", MNT_DETACH);
        umount2("/dev", MNT_DETACH);
        say("starting %s", init);
        switch_root(init);
    }
    resize_wait();
    if (access("/cfg/entrypoint", F_OK) == 0) {
        /* No init in the image: the agent is PID 1 and runs its Entrypoint/Cmd. */
        say("no init in the image, the agent runs its command");
        char *argv[] = {"ignite-agent", "--init", NEWROOT, "/cfg/entrypoint", NULL};
        execve(AGENT, argv, handover_env());
        die("cannot run %s: %s", AGENT, strerror(errno));
    }
    die("the image has no %s and no command to run", *init ? init : "init");
}
