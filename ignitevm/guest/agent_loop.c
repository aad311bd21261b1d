/*
 * ignite-agent, channels: byte queues, frames, sessions, the frames from the
 * host, and the poll() loop over the channels and the sessions' stdio.
 */
#include "agent.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define RECHECK_MS 1000
#define HUP_GRACE_MS 3000
#define FIRST_PORT_MS 100

int sig_fd = -1, listen_fd = -1;
int64_t recheck_at = -1;                /* ports with the host side closed: look again then */
int host_came;                          /* SIGIO: a host connected to one of the ports */
static struct channel *channels;

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
    /* (kept while the port is hung up: the hang-up may be the previous
       client's, seen late; what is queued is bounded by the windows) */
    if (ch->dead)
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
    s->in_fd = s->out_fd[0] = s->out_fd[1] = s->master = -1;
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
    int fds[] = {s->in_fd, s->out_fd[0] != s->master ? s->out_fd[0] : -1, s->out_fd[1], s->master};
    for (int i = 0; i < 4; i++)
        if (fds[i] >= 0)
            close(fds[i]);
    s->in_fd = s->out_fd[0] = s->out_fd[1] = s->master = -1;
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

/* Forget a channel's host: its sessions end, its bytes in flight are dropped,
 * and the input is skipped up to the next client's HELLO. */
static void channel_drop(struct channel *ch)
{
    channel_reset(ch);
    ch->in.off = ch->in.len = 0;
    ch->out.off = ch->out.len = 0;
    ch->resync = 1;
    ch->reset_at = -1;
}

/* The host side went away: a connection is closed; a port waits for the next
 * client. A port's news comes late and out of order with its data (the
 * kernel hears "closed" and "open" on the control queue, bytes on another),
 * so a hang-up seen now may be the previous client's, with the current one
 * already talking: nothing is thrown away at once. A client that ends says
 * BYE (its sessions end then); one that died without it has its sessions
 * ended after HUP_GRACE_MS if no host came back, or by the next HELLO. */
static void channel_gone(struct channel *ch)
{
    if (!ch->port) {
        channel_reset(ch);
        ch->dead = 1;
        return;
    }
    ch->hup = 1;
    if (recheck_at < 0 || recheck_at > now_ms() + RECHECK_MS)
        recheck_at = now_ms() + RECHECK_MS;
    if (ch->reset_at < 0 && (ch->sessions || ch->in.len > ch->in.off))
        ch->reset_at = now_ms() + HUP_GRACE_MS;
}

void add_channel(int fd, int port, const char *name)
{
    struct channel *ch = calloc(1, sizeof *ch);
    if (!ch)
        die("out of memory");
    ch->fd = fd;
    ch->port = port;
    ch->reset_at = -1;
    snprintf(ch->name, sizeof ch->name, "%s", name);
    ch->next = channels;
    channels = ch;
}

/* SIGIO when a host connects to a port (fcntl must run in the final process). */
void ports_async(void)
{
    for (struct channel *ch = channels; ch; ch = ch->next)
        if (ch->port) {
            fcntl(ch->fd, F_SETOWN, getpid());
            fcntl(ch->fd, F_SETFL, fcntl(ch->fd, F_GETFL) | O_ASYNC);
        }
}

int have_port(const char *name)
{
    for (struct channel *ch = channels; ch; ch = ch->next)
        if (ch->port && strcmp(ch->name, name) == 0)
            return 1;
    return 0;
}

struct session *session_of(pid_t pid)
{
    for (struct channel *ch = channels; ch; ch = ch->next)
        for (struct session *s = ch->sessions; s; s = s->next)
            if (s->kind == S_EXEC && s->pid == pid && !s->exited && !s->dead)
                return s;
    return NULL;
}

void reset_all(void)
{
    for (struct channel *ch = channels; ch; ch = ch->next)
        channel_reset(ch);
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

static int warm_pending;     /* exec_warm due (after a RESTORE with no hooks) */

static void on_frame(struct channel *ch, int type, int flags, uint32_t sid, const char *p,
                     uint32_t n)
{
    struct session *s = sid ? find_session(ch, sid) : NULL;
    switch (type) {
    case F_HELLO:
        channel_reset(ch);
        ch->reset_at = -1;
        send_ready(ch, sid);
        break;
    case F_RESTORE:
        if (!sid || s) {
            send_error(ch, sid, 1, sid ? "session id already in use" : "session id 0 is reserved");
        } else {
            s = new_session(ch, sid, S_EXEC);   /* (its hooks: a child, reaped as a command) */
            int hooks = restore_start(s, p, n);
            explicit_bzero((char *)p, n);   /* (the request may hold a private key) */
            if (hooks < 0) {
                session_end(s);
                warm_pending = !restore_no_warm;   /* (once the reply is out: see loop) */
            }
        }
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
    case F_BYE:
        /* The client is done: end its sessions, drop what it did not read.
           What follows is the next client's. */
        channel_reset(ch);
        ch->out.off = ch->out.len = 0;
        ch->reset_at = -1;
        break;
    case F_READY: case F_STARTED: case F_EXIT: case F_ERROR: case F_PONG:
        break;                  /* replies: nothing to do */
    default:
        send_error(ch, sid, 1, "unknown frame type");
    }
}

/* Lost framing: skip to the next HELLO header (docs: "Resynchronising"). */
static int resync(struct channel *ch)
{
    static const char hello[HDR_SIZE] = {F_HELLO};
    size_t avail = ch->in.len - ch->in.off;
    char *at = memmem(ch->in.p + ch->in.off, avail, hello, HDR_SIZE);
    if (!at) {      /* keep a tail that may start one */
        ch->in.off = ch->in.len - (avail < HDR_SIZE - 1 ? avail : HDR_SIZE - 1);
        return 0;
    }
    ch->in.off = at - ch->in.p;
    ch->resync = 0;
    return 1;
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
    for (;;) {
        /* Zero bytes where a frame would start are padding (no frame type is 0):
           a client sends a run of them to complete a dead client's partial frame. */
        while (ch->in.off < ch->in.len && ch->in.p[ch->in.off] == 0)
            ch->in.off++;
        if (ch->dead || ch->hup || ch->in.len - ch->in.off < HDR_SIZE)
            break;
        if (ch->resync && !resync(ch))
            break;
        const char *h = ch->in.p + ch->in.off;
        uint32_t len = le32(h + 8);
        int type = (unsigned char)h[0];
        if (len > MAX_PAYLOAD || ((type < F_HELLO || type > F_RESTORE) && (h[2] || h[3]))) {
            logmsg("%s: bad frame (type %d, %u bytes): waiting for HELLO", ch->name, type, len);
            ch->resync = 1;
            continue;
        }
        if (ch->in.len - ch->in.off < HDR_SIZE + len)
            break;
        ch->in.off += HDR_SIZE + len;
        on_frame(ch, type, (unsigned char)h[1], le32(h + 4), h + HDR_SIZE, len);
    }
}

/* ---- the loop ---- */

static struct pollfd *pfd;
static struct { struct channel *ch; struct session *s; int what; } *pref;
static size_t npfd, cappfd;

enum { W_SIG, W_LISTEN, W_UEVENT, W_CHAN, W_IN, W_OUT0, W_OUT1 };

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

/* The ports whose host side was closed: is a host there again? */
static void recheck_hup(void)
{
    for (struct channel *ch = channels; ch; ch = ch->next) {
        if (!ch->hup)
            continue;
        /* A port with no host polls POLLIN|POLLHUP (read would not block: it
           returns 0). Read anyway: bytes of the next client can be there
           before the kernel hears that it connected; a read of 0 hangs the
           port up again. */
        struct pollfd p = {ch->fd, POLLIN, 0};
        poll(&p, 1, 0);
        ch->hup = 0;
        if (!(p.revents & POLLHUP))
            ch->reset_at = -1;      /* a host is there again */
    }
}

static void recheck_ports(void)
{
    recheck_at = -1;
    if (open_ports(NULL) > 0)   /* (a port whose uevent was lost) */
        ports_async();
    if (nports == 0)            /* none named yet: the host's names can come late */
        recheck_at = now_ms() + FIRST_PORT_MS;
    recheck_hup();
}

/* Timers, work that needs no event, and the poll set; returns the poll timeout. */
static int prepare(void)
{
    int64_t now = now_ms(), next = -1;
#define AT(t) do { if ((t) >= 0 && (next < 0 || (t) < next)) next = (t); } while (0)
    if (recheck_at >= 0 && now >= recheck_at)
        recheck_ports();
    else if (host_came) {
        /* SIGIO: a host connected to a port the agent holds open. Only the
           hung-up ports are looked at; new ports come with a uevent (and the
           timer above scans for them). Under TCG the scan of sysfs would be
           a clone's first HELLO's to translate. */
        if (nports > 0)
            recheck_at = -1;    /* (as after a scan: a port still hung up says so again) */
        recheck_hup();
    }
    host_came = 0;
    AT(recheck_at);
    AT(system_timers(now));

    npfd = 0;
    watch(sig_fd, POLLIN, W_SIG, NULL, NULL);
    if (listen_fd >= 0)
        watch(listen_fd, POLLIN, W_LISTEN, NULL, NULL);
    if (uevent_fd >= 0)
        watch(uevent_fd, POLLIN, W_UEVENT, NULL, NULL);
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
        if (ch->reset_at >= 0 && now >= ch->reset_at) {
            struct pollfd p = {ch->fd, 0, 0};
            poll(&p, 1, 0);
            ch->reset_at = -1;
            if (p.revents & POLLHUP)
                channel_drop(ch);   /* no host came back: its sessions end */
        } else if (ch->reset_at >= 0) {
            AT(ch->reset_at);
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

void loop(void)
{
    for (;;) {
        int timeout = prepare();
        if (warm_pending) {         /* (prepare has flushed RESTORE's reply) */
            warm_pending = 0;
            exec_warm();
            continue;
        }
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
            case W_UEVENT:
                on_uevent();
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

