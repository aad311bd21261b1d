/*
 * ignite-agent: the guest agent of ignitevm (protocol: docs/agent-protocol.md).
 *
 *   ignite-agent --chroot DIR             serve the virtio-serial agent ports from
 *                                         the image root DIR, in the background
 *   ignite-agent --init DIR REQUESTFILE   be PID 1: make DIR the root, run the
 *                                         image's command, serve the ports
 *   ignite-agent --socket PATH            serve connections to a Unix socket (tests)
 *
 * One thread, one poll() loop over: a signalfd (children, SIGIO, forwarded
 * signals), the channels (ports or accepted connections) and the stdio of the
 * sessions' commands. This file: start modes, channels, frames, shutdown.
 */
#include "agent.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/un.h>
#include <sys/vfs.h>
#include <sys/wait.h>
#include <sched.h>
#include <time.h>
#include <unistd.h>

#define PORT_PREFIX "org.ignitevm.agent."
#define RECHECK_MS 50
#define RAMFS_MAGIC 0x858458f6
#define TMPFS_MAGIC 0x01021994

int agent_mode;
static int log_fd = 2, sig_fd = -1, listen_fd = -1, console_fd = -1;
static const char *socket_path;
static struct channel *channels;
static int nchannels;
static int64_t recheck_at;              /* ports with the host side closed: look again then */
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

static void __attribute__((noreturn, format(printf, 1, 2))) die(const char *fmt, ...)
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

/* ---- buffers and frames ---- */

void buf_reserve(struct buf *b, size_t n)
{
    if (b->off == b->len)
        b->off = b->len = 0;
    if (b->cap - b->len >= n)
        return;
    if (b->off && b->off >= b->len - b->off) {     /* compact when it moves less than it frees */
        memmove(b->p, b->p + b->off, b->len - b->off);
        b->len -= b->off;
        b->off = 0;
        if (b->cap - b->len >= n)
            return;
    }
    size_t cap = b->cap ? b->cap : 4096;
    while (cap - b->len < n)
        cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p)
        die("out of memory");
    b->p = p;
    b->cap = cap;
}

void buf_append(struct buf *b, const void *p, size_t n)
{
    buf_reserve(b, n);
    memcpy(b->p + b->len, p, n);
    b->len += n;
}

void buf_free(struct buf *b)
{
    free(b->p);
    memset(b, 0, sizeof *b);
}

size_t out_pending(const struct channel *ch)
{
    return ch->out.len - ch->out.off;
}

static uint32_t le32(const void *p)
{
    const unsigned char *u = p;
    return u[0] | u[1] << 8 | u[2] << 16 | (uint32_t)u[3] << 24;
}

static void put_le32(char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (char)(v >> (8 * i));
}

static void put_header(char *h, int type, int flags, uint32_t sid, uint32_t n)
{
    h[0] = (char)type;
    h[1] = (char)flags;
    h[2] = h[3] = 0;
    put_le32(h + 4, sid);
    put_le32(h + 8, n);
}

char *frame_begin(struct channel *ch, size_t max)
{
    buf_reserve(&ch->out, HDR_SIZE + max);
    return ch->out.p + ch->out.len + HDR_SIZE;
}

void frame_end(struct channel *ch, int type, int flags, uint32_t sid, size_t n)
{
    if (ch->dead || ch->hup)
        return;
    put_header(ch->out.p + ch->out.len, type, flags, sid, n);
    ch->out.len += HDR_SIZE + n;
}

void send_frame(struct channel *ch, int type, int flags, uint32_t sid, const void *p, size_t n)
{
    char *d = frame_begin(ch, n);
    if (n)
        memcpy(d, p, n);
    frame_end(ch, type, flags, sid, n);
}

void send_u32(struct channel *ch, int type, uint32_t sid, uint32_t v)
{
    char p[4];
    put_le32(p, v);
    send_frame(ch, type, 0, sid, p, 4);
}

void send_error(struct channel *ch, uint32_t sid, uint32_t code, const char *msg)
{
    size_t n = strlen(msg);
    char *d = frame_begin(ch, 4 + n);
    put_le32(d, code);
    memcpy(d + 4, msg, n);
    frame_end(ch, F_ERROR, 0, sid, 4 + n);
}

/* The host consumed n more bytes it sent: give them back once half the window is used. */
void credit(struct session *s, size_t n)
{
    s->consumed += n;
    if (s->consumed >= INIT_WINDOW / 2) {
        send_u32(s->ch, F_WINDOW, s->id, s->consumed);
        s->consumed = 0;
    }
}

/* ---- sessions and channels ---- */

static struct session *find_session(struct channel *ch, uint32_t id)
{
    for (struct session *s = ch->sessions; s; s = s->next)
        if (s->id == id && !s->dead)
            return s;
    return NULL;
}

static struct session *new_session(struct channel *ch, uint32_t id, int kind)
{
    struct session *s = calloc(1, sizeof *s);
    if (!s)
        die("out of memory");
    s->ch = ch;
    s->id = id;
    s->kind = kind;
    s->in_fd = s->out_fd[0] = s->out_fd[1] = -1;
    s->window = INIT_WINDOW;
    s->next = ch->sessions;
    ch->sessions = s;
    return s;
}

/* Release what the session holds; the struct is freed at the end of the loop turn. */
void session_end(struct session *s)
{
    if (s->dead)
        return;
    s->dead = 1;
    int fds[] = {s->in_fd, s->out_fd[0], s->out_fd[1]};
    for (int i = 0; i < 3; i++)
        if (fds[i] >= 0)
            close(fds[i]);
    s->in_fd = s->out_fd[0] = s->out_fd[1] = -1;
    buf_free(&s->inq);
    tar_in_close(s->tin);
    tar_out_close(s->tout);
    s->tin = NULL;
    s->tout = NULL;
}

/* End every session of the channel: its host is gone or a new one said HELLO. */
static void channel_reset(struct channel *ch)
{
    for (struct session *s = ch->sessions; s; s = s->next) {
        if (s->kind == S_EXEC && !s->dead)
            exec_kill(s);
        session_end(s);
    }
}

/* The host side went away: a port waits for the next one, a connection is closed. */
static void channel_gone(struct channel *ch)
{
    channel_reset(ch);
    ch->in.off = ch->in.len = 0;
    ch->out.off = ch->out.len = 0;
    if (ch->port) {
        ch->hup = 1;
        recheck_at = now_ms() + RECHECK_MS;
    } else {
        ch->dead = 1;
    }
}

static void add_channel(int fd, int port, const char *name)
{
    struct channel *ch = calloc(1, sizeof *ch);
    if (!ch)
        die("out of memory");
    ch->fd = fd;
    ch->port = port;
    snprintf(ch->name, sizeof ch->name, "%s", name);
    ch->next = channels;
    channels = ch;
    nchannels += port;
}

static void flush(struct channel *ch)
{
    while (!ch->dead && !ch->hup && out_pending(ch)) {
        ssize_t n = write(ch->fd, ch->out.p + ch->out.off, out_pending(ch));
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN)
            return;
        if (n <= 0) {
            channel_gone(ch);
            return;
        }
        ch->out.off += n;
    }
}

/* ---- guest facts ---- */

static void strset(char *d, size_t n, const char *s)
{
    size_t l = strnlen(s, n - 1);
    memcpy(d, s, l);
    d[l] = '\0';
}

static int read_small(const char *path, char *out, size_t len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
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

/* PID 1's comm and the basename of its executable. Without /proc (--chroot,
 * early), look through a proc mounted in a private mount namespace. */
static void pid1_info(char *comm, size_t clen, char *exe, size_t elen)
{
    char path[PATH_MAX];
    ssize_t n;
    snprintf(comm, clen, "unknown");
    exe[0] = '\0';
    if (read_small("/proc/1/comm", comm, clen) == 0) {
        if ((n = readlink("/proc/1/exe", path, sizeof path - 1)) > 0) {
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
            dprintf(p[1], "%s\n%s", comm, exe);
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
            strset(exe, elen, nl + 1);
        }
        strset(comm, clen, buf);
    }
}

static void send_ready(struct channel *ch, uint32_t sid)
{
    char comm[64], exe[64], msg[256];
    struct timespec ts;
    pid1_info(comm, sizeof comm, exe, sizeof exe);
    clock_gettime(CLOCK_BOOTTIME, &ts);
    int n = snprintf(msg, sizeof msg, "version=1\npid1=%s\nuptime_ms=%lld\n", comm,
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

static void shutdown_request(struct channel *ch, uint32_t sid, uint32_t mode)
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

static struct session *session_of(pid_t pid)
{
    for (struct channel *ch = channels; ch; ch = ch->next)
        for (struct session *s = ch->sessions; s; s = s->next)
            if (s->kind == S_EXEC && s->pid == pid && !s->exited && !s->dead)
                return s;
    return NULL;
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
    if (ending && pid < 0 && errno == ECHILD)
        power_off();            /* everything else is gone */
}

static void quit(void)
{
    for (struct channel *ch = channels; ch; ch = ch->next)
        channel_reset(ch);
    if (socket_path)
        unlink(socket_path);
    exit(0);
}

static void on_signals(void)
{
    struct signalfd_siginfo si;
    while (read(sig_fd, &si, sizeof si) == sizeof si) {
        int sig = si.ssi_signo;
        if (sig == SIGIO)
            recheck_at = now_ms();
        else if (sig != SIGCHLD && agent_mode == MODE_INIT)
            kill(main_pid > 0 ? main_pid : 0, main_pid > 0 ? sig : 0);
        else if (sig == SIGTERM || sig == SIGINT || (sig == SIGHUP && agent_mode == MODE_SOCKET))
            quit();
    }
    reap();
}

/* ---- frames from the host ---- */

static void start_session(struct channel *ch, int type, uint32_t sid, const char *p, uint32_t n)
{
    struct session *s = new_session(ch, sid, type == F_EXEC ? S_EXEC : type == F_PUT ? S_PUT : S_GET);
    if (type == F_EXEC) {
        if (exec_start(s, p, n) < 0)
            session_end(s);
        return;
    }
    struct request r;
    char err[ERRLEN];
    uint32_t code = 1;
    if (request_parse(&r, p, n, err) == 0) {
        if (type == F_PUT)
            s->tin = tar_in_open(r.path, err);
        else
            s->tout = tar_out_open(r.path, &code, err);
    }
    request_free(&r);
    if (!s->tin && !s->tout) {
        send_error(ch, sid, code, err);
        session_end(s);
    }
}

static void put_data(struct session *s, const char *p, uint32_t n, int eof)
{
    char err[ERRLEN];
    if (eof ? tar_in_finish(s->tin, err) : tar_in_feed(s->tin, p, n, err)) {
        send_error(s->ch, s->id, 1, err);
        session_end(s);
    } else if (eof) {
        send_u32(s->ch, F_EXIT, s->id, 0);
        session_end(s);
    } else {
        credit(s, n);
    }
}

static void on_frame(struct channel *ch, int type, int flags, uint32_t sid, const char *p,
                     uint32_t n)
{
    struct session *s = sid ? find_session(ch, sid) : NULL;
    switch (type) {
    case F_HELLO:
        channel_reset(ch);
        send_ready(ch, sid);
        break;
    case F_EXEC: case F_PUT: case F_GET:
        if (!sid || s)
            send_error(ch, sid, 1, sid ? "session id already in use" : "session id 0 is reserved");
        else
            start_session(ch, type, sid, p, n);
        break;
    case F_DATA: case F_EOF:
        if (s && flags == 0 && s->kind == S_EXEC)
            type == F_DATA ? exec_stdin(s, p, n) : exec_stdin_eof(s);
        else if (s && flags == 0 && s->kind == S_PUT)
            put_data(s, p, n, type == F_EOF);
        break;
    case F_WINDOW:
        if (s && n >= 4)
            s->window += le32(p);
        break;
    case F_SIGNAL:
        if (s && s->kind == S_EXEC && n >= 4)
            exec_signal(s, le32(p));
        break;
    case F_RESIZE:
        if (s && s->kind == S_EXEC)
            exec_resize(s, p, n);
        break;
    case F_SHUTDOWN:
        shutdown_request(ch, sid, n >= 4 ? le32(p) : 0);
        break;
    case F_PING:
        send_frame(ch, F_PONG, flags, sid, p, n);
        break;
    case F_READY: case F_STARTED: case F_EXIT: case F_ERROR: case F_PONG:
        break;                  /* replies: nothing to do */
    default:
        send_error(ch, sid, 1, "unknown frame type");
    }
}

static void on_input(struct channel *ch)
{
    buf_reserve(&ch->in, HDR_SIZE + MAX_PAYLOAD);
    ssize_t n = read(ch->fd, ch->in.p + ch->in.len, ch->in.cap - ch->in.len);
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (n <= 0) {
        channel_gone(ch);
        return;
    }
    ch->in.len += n;
    while (!ch->dead && !ch->hup && ch->in.len - ch->in.off >= HDR_SIZE) {
        const char *h = ch->in.p + ch->in.off;
        uint32_t len = le32(h + 8);
        if (len > MAX_PAYLOAD) {    /* lost framing: start over with the next HELLO */
            logmsg("%s: bad frame (payload %u bytes), resetting", ch->name, len);
            channel_reset(ch);
            ch->in.off = ch->in.len = 0;
            if (!ch->port)
                ch->dead = 1;
            return;
        }
        if (ch->in.len - ch->in.off < HDR_SIZE + len)
            break;
        ch->in.off += HDR_SIZE + len;
        on_frame(ch, (unsigned char)h[0], (unsigned char)h[1], le32(h + 4), h + HDR_SIZE, len);
    }
}

/* ---- the loop ---- */

static struct pollfd *pfd;
static struct { struct channel *ch; struct session *s; int what; } *pref;
static size_t npfd, cappfd;

enum { W_SIG, W_LISTEN, W_CHAN, W_IN, W_OUT0, W_OUT1 };

static void watch(int fd, short events, int what, struct channel *ch, struct session *s)
{
    if (npfd == cappfd) {
        cappfd = cappfd ? 2 * cappfd : 64;
        pfd = realloc(pfd, cappfd * sizeof *pfd);
        pref = realloc(pref, cappfd * sizeof *pref);
        if (!pfd || !pref)
            die("out of memory");
    }
    pfd[npfd] = (struct pollfd){fd, events, 0};
    pref[npfd].ch = ch;
    pref[npfd].s = s;
    pref[npfd++].what = what;
}

static int runnable(struct session *s)
{
    if (s->dead || s->window <= 0 || out_pending(s->ch) >= OUT_HIGH)
        return 0;
    if (s->kind == S_GET)
        return 1;
    return s->kind == S_EXEC && s->exited && !s->tty && (s->out_fd[0] >= 0 || s->out_fd[1] >= 0);
}

static void get_pump(struct session *s)
{
    char err[ERRLEN];
    while (runnable(s)) {
        size_t max = s->window < MAX_PAYLOAD ? (size_t)s->window : MAX_PAYLOAD;
        char *p = frame_begin(s->ch, max);
        ssize_t n = tar_out_read(s->tout, p, max, err);
        if (n > 0) {
            frame_end(s->ch, F_DATA, 1, s->id, n);
            s->window -= n;
            continue;
        }
        if (n == 0) {
            send_frame(s->ch, F_EOF, 1, s->id, NULL, 0);
            send_u32(s->ch, F_EXIT, s->id, 0);
        } else {
            send_error(s->ch, s->id, 1, err);
        }
        session_end(s);
    }
}

static void recheck_ports(int64_t now)
{
    recheck_at = -1;
    for (struct channel *ch = channels; ch; ch = ch->next) {
        if (!ch->hup)
            continue;
        struct pollfd p = {ch->fd, POLLIN, 0};
        if (poll(&p, 1, 0) == 1 && (p.revents & POLLHUP) && !(p.revents & POLLIN))
            recheck_at = now + RECHECK_MS;
        else
            ch->hup = 0;        /* a host is there again */
    }
}

/* Timers, work that needs no event, and the poll set; returns the poll timeout. */
static int prepare(void)
{
    int64_t now = now_ms(), next = -1;
#define AT(t) do { if ((t) >= 0 && (next < 0 || (t) < next)) next = (t); } while (0)
    if (recheck_at >= 0 && now >= recheck_at)
        recheck_ports(now);
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
    if (ending && now >= end_deadline) {
        kill(-1, SIGKILL);
        power_off();
    }
    AT(recheck_at);
    AT(reboot_at);
    AT(shutdown_deadline);
    AT(ending ? end_deadline : -1);

    npfd = 0;
    watch(sig_fd, POLLIN, W_SIG, NULL, NULL);
    if (listen_fd >= 0)
        watch(listen_fd, POLLIN, W_LISTEN, NULL, NULL);
    for (struct channel **pp = &channels, *ch; (ch = *pp);) {
        for (struct session **sp = &ch->sessions, *s; (s = *sp);) {
            if (s->kind == S_GET || (s->kind == S_EXEC && runnable(s)))
                s->kind == S_GET ? get_pump(s) : exec_drain(s, now);
            if (s->kind == S_EXEC && s->exited && s->tty && s->out_fd[0] >= 0 && s->window > 0) {
                if (now >= s->grace)
                    exec_drain(s, now);
                else
                    AT(s->grace);
            }
            if (s->dead) {
                *sp = s->next;
                free(s);
            } else {
                sp = &s->next;
            }
        }
        flush(ch);
        if (ch->dead) {
            channel_reset(ch);
            for (struct session *s; (s = ch->sessions);) {
                ch->sessions = s->next;
                free(s);
            }
            close(ch->fd);
            buf_free(&ch->in);
            buf_free(&ch->out);
            *pp = ch->next;
            free(ch);
            continue;
        }
        pp = &ch->next;
        if (ch->hup)
            continue;
        short ev = (out_pending(ch) < IN_STOP ? POLLIN : 0) | (out_pending(ch) ? POLLOUT : 0);
        watch(ch->fd, ev, W_CHAN, ch, NULL);
        for (struct session *s = ch->sessions; s; s = s->next) {
            if (s->dead)
                continue;
            if (runnable(s))
                next = now;
            if (s->in_fd >= 0 && s->inq.len > s->inq.off)
                watch(s->in_fd, POLLOUT, W_IN, ch, s);
            for (int i = 0; i < 2; i++)
                if (s->out_fd[i] >= 0 && s->window > 0 && out_pending(ch) < OUT_HIGH)
                    watch(s->out_fd[i], POLLIN, W_OUT0 + i, ch, s);
        }
    }
#undef AT
    return next < 0 ? -1 : next <= now ? 0 : (int)(next - now);
}

static void loop(void)
{
    for (;;) {
        int timeout = prepare();
        int n = poll(pfd, npfd, timeout);
        if (n < 0 && errno != EINTR)
            die("poll: %s", strerror(errno));
        for (size_t i = 0; n > 0 && i < npfd; i++) {
            if (!pfd[i].revents)
                continue;
            struct channel *ch = pref[i].ch;
            struct session *s = pref[i].s;
            if ((ch && (ch->dead || ch->hup)) || (s && s->dead))
                continue;
            switch (pref[i].what) {
            case W_SIG:
                on_signals();
                break;
            case W_LISTEN: {
                int fd = accept4(listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
                if (fd >= 0)
                    add_channel(fd, 0, "socket");
                break;
            }
            case W_CHAN:
                if (pfd[i].revents & POLLOUT)
                    flush(ch);
                if (pfd[i].revents & (POLLIN | POLLHUP | POLLERR))
                    on_input(ch);
                break;
            case W_IN:
                if (pfd[i].fd == s->in_fd)
                    exec_write_stdin(s);
                break;
            default:
                if (pfd[i].fd == s->out_fd[pref[i].what - W_OUT0])
                    exec_read(s, pref[i].what - W_OUT0);
            }
        }
    }
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

/* Open every virtio-serial port named org.ignitevm.agent.* (mounting sysfs for
 * the look-up if it is not mounted). */
static void open_ports(const char *alt)
{
    int mounted = access("/sys/class", F_OK) < 0 &&
                  mount("sysfs", "/sys", "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) == 0;
    DIR *d = opendir("/sys/class/virtio-ports");
    struct dirent *e;
    char *names[64];
    int n = 0;
    while (d && (e = readdir(d)) && n < 64)
        if (strncmp(e->d_name, "vport", 5) == 0)
            names[n++] = strdup(e->d_name);
    if (d)
        closedir(d);
    qsort(names, n, sizeof *names, by_name);
    for (int i = 0; i < n; i++) {
        char path[PATH_MAX], name[128] = "", devno[32] = "";
        unsigned maj = 0, min = 0;
        snprintf(path, sizeof path, "/sys/class/virtio-ports/%s/name", names[i]);
        if (read_small(path, name, sizeof name) == 0 &&
            strncmp(name, PORT_PREFIX, strlen(PORT_PREFIX)) == 0) {
            snprintf(path, sizeof path, "/sys/class/virtio-ports/%s/dev", names[i]);
            if (read_small(path, devno, sizeof devno) == 0)
                sscanf(devno, "%u:%u", &maj, &min);
            int fd = open_dev(names[i], alt, maj ? makedev(maj, min) : 0, O_RDWR | O_NONBLOCK);
            if (fd < 0)
                logmsg("cannot open the agent port %s (%s): %s", names[i], name, strerror(errno));
            else
                add_channel(fd, 1, name);
        }
        free(names[i]);
    }
    if (mounted)
        umount2("/sys", MNT_DETACH);
}

/* SIGIO when a host connects to a port (fcntl must run in the final process). */
static void ports_async(void)
{
    for (struct channel *ch = channels; ch; ch = ch->next)
        if (ch->port) {
            fcntl(ch->fd, F_SETOWN, getpid());
            fcntl(ch->fd, F_SETFL, fcntl(ch->fd, F_GETFL) | O_ASYNC);
        }
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
    if (chdir(dir) < 0 || chroot(".") < 0 || chdir("/") < 0)
        die("cannot enter %s: %s", dir, strerror(errno));
    logmsg("ready (%d channels)", nchannels);
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

/* Free the initramfs (as switch_root does): delete what is on its device. */
static void wipe(int dfd, dev_t dev)
{
    DIR *d = fdopendir(dfd);
    struct dirent *e;
    struct stat st;
    while (d && (e = readdir(d))) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0 ||
            fstatat(dfd, e->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0 || st.st_dev != dev)
            continue;
        if (S_ISDIR(st.st_mode)) {
            int sub = openat(dfd, e->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            if (sub >= 0)
                wipe(sub, dev);
            unlinkat(dfd, e->d_name, AT_REMOVEDIR);
        } else {
            unlinkat(dfd, e->d_name, 0);
        }
    }
    if (d)
        closedir(d);
    else
        close(dfd);
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
            break;
    console_fd = open("/dev/console", O_WRONLY | O_NOCTTY | O_CLOEXEC);
    if (console_fd >= 0)
        log_fd = console_fd;
    for (int fd; (fd = open("/dev/null", O_RDWR)) >= 0;)    /* keep 0-2 taken */
        if (fd > 2) {
            close(fd);
            break;
        }
    open_ports(NULL);
    logmsg("ready (%d channels)", nchannels);

    uint32_t code;
    main_pid = spawn(&req, console_fd >= 0 ? console_fd : 2, NULL, NULL, NULL, &code, err);
    if (main_pid < 0) {
        logmsg("%s", err);
        main_exited(code << 8);
    }
}

int main(int argc, char **argv)
{
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
    ports_async();
    reap();                     /* a child may have gone before the signalfd existed */
    loop();
}
