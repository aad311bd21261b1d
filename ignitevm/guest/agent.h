/*
 * ignite-agent: the guest agent of ignitevm. Shared declarations of its parts:
 * agent.c (start modes, ports, signals, shutdown), agent_loop.c (frames,
 * channels, sessions, the poll loop), agent_exec.c (EXEC sessions: requests,
 * users, spawning, stdio), agent_untar.c (PUT: unpacking), agent_tar.c (GET:
 * archiving, and the tar helpers both use), agent_restore.c (RESTORE: a clone's
 * fresh identity).
 * The wire protocol is docs/agent-protocol.md.
 */
#ifndef IGNITE_AGENT_H
#define IGNITE_AGENT_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

enum {
    F_HELLO = 1, F_READY, F_EXEC, F_STARTED, F_DATA, F_EOF, F_EXIT, F_ERROR,
    F_WINDOW, F_SIGNAL, F_RESIZE, F_SHUTDOWN, F_PUT, F_GET, F_PING, F_PONG, F_BYE, F_RESTORE,
};

#define HDR_SIZE 12
#define MAX_PAYLOAD 65536
#define INIT_WINDOW 262144
/* Stop reading command output for a channel while this much waits to be sent. */
#define OUT_HIGH (512 * 1024)
/* Stop reading a channel's input while its output backlog is this large. */
#define IN_STOP (4 * 1024 * 1024)
#define ERRLEN 512

enum { MODE_SOCKET, MODE_CHROOT, MODE_INIT };
enum { S_EXEC = 1, S_PUT, S_GET };

/* A byte queue: the bytes in p[off..len). */
struct buf {
    char *p;
    size_t off, len, cap;
};

struct tar_in;
struct tar_out;
struct channel;

struct session {
    struct session *next;
    struct channel *ch;
    uint32_t id;
    int kind;
    int dead;
    /* EXEC */
    pid_t pid;
    int exited, status, tty;
    int in_fd;          /* command's stdin (pipe or a dup of the pty master), -1 once closed */
    int out_fd[2];      /* stdout, stderr (TTY: master in [0], [1] unused); -1 after EOF */
    int master;         /* TTY: the pty master, kept open until the session ends (closing
                         * it hangs the terminal up: SIGHUP) */
    int in_eof;         /* the host sent EOF on stdin */
    char tty_last;      /* TTY: the last byte typed (to end a partial line on EOF) */
    int64_t grace;      /* TTY: when to stop waiting for output after the exit */
    struct buf inq;     /* stdin bytes received, not yet written */
    /* flow control */
    int64_t window;     /* DATA bytes we may still send to the host */
    uint32_t consumed;  /* host bytes consumed since our last WINDOW */
    /* PUT / GET */
    struct tar_in *tin;
    struct tar_out *tout;
};

struct channel {
    struct channel *next;
    int fd;
    int port;           /* a virtio-serial port (1) or an accepted socket (0) */
    int hup;            /* port: the host side is closed, fd not polled */
    int dead;
    int resync;         /* framing lost: skipping input up to the next HELLO */
    int64_t reset_at;   /* port hung up with work left: end it then, unless a host is back */
    char name[64];
    struct buf in, out;
    struct session *sessions;
};

/* A parsed EXEC/PUT/GET request (strings point into mem). */
struct request {
    char *mem;
    char **argv, **env;
    int argc, envc;
    const char *cwd, *user, *path;
    int tty, rows, cols, want_stdin;
};

/* agent.c: start modes, signals, shutdown */
extern int agent_mode;
int64_t now_ms(void);
char *read_small(const char *path, size_t max, size_t *len);
int blocking(int fd);
void logmsg(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void die(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));
void on_signals(void);
int64_t system_timers(int64_t now);
void send_ready(struct channel *ch, uint32_t sid);
void shutdown_request(struct channel *ch, uint32_t sid, uint32_t mode);
extern int uevent_fd, nports;
int open_ports(const char *alt);
void on_uevent(void);

/* agent_loop.c: frames, channels, the loop */
extern int sig_fd, listen_fd;
extern int64_t recheck_at;
extern int host_came;
void loop(void) __attribute__((noreturn));
void add_channel(int fd, int port, const char *name);
void ports_async(void);
int have_port(const char *name);
void reset_all(void);
struct session *session_of(pid_t pid);
void buf_reserve(struct buf *b, size_t n);
void buf_append(struct buf *b, const void *p, size_t n);
void buf_free(struct buf *b);
size_t out_pending(const struct channel *ch);
void send_frame(struct channel *ch, int type, int flags, uint32_t sid, const void *p, size_t n);
void send_u32(struct channel *ch, int type, uint32_t sid, uint32_t v);
void send_error(struct channel *ch, uint32_t sid, uint32_t code, const char *msg);
char *frame_begin(struct channel *ch, size_t max);
void frame_end(struct channel *ch, int type, int flags, uint32_t sid, size_t n);
void credit(struct session *s, size_t n);
void session_end(struct session *s);

/* agent_exec.c */
int request_parse(struct request *r, const char *p, size_t n, char *err);
void request_free(struct request *r);
pid_t spawn(const struct request *r, int console, int *master, int *in_w, int out_r[2],
            uint32_t *code, char *err);
int exec_start(struct session *s, const char *p, size_t n);
void exec_warm_init(void);
void exec_warm(void);
void exec_stdin(struct session *s, const char *p, size_t n);
void exec_stdin_eof(struct session *s);
void exec_write_stdin(struct session *s);
int exec_read(struct session *s, int which);
void exec_drain(struct session *s, int64_t now);
void exec_signal(struct session *s, int sig);
void exec_resize(struct session *s, const char *p, size_t n);
void exec_kill(struct session *s);
void exec_exited(struct session *s, int status);

/* agent_restore.c */
int restore_start(struct session *s, const char *p, size_t n);
/* Set by restore_start: the request said warm=0 (no warm-up exec after it). */
extern int restore_no_warm;

/* agent_untar.c */
struct tar_in *tar_in_open(const char *path, char *err);
int tar_in_feed(struct tar_in *t, const char *p, size_t n, char *err);
int tar_in_finish(struct tar_in *t, char *err);
void tar_in_close(struct tar_in *t);

/* agent_tar.c */
#define BLOCK 512
uint64_t tar_padding(uint64_t size);
unsigned tar_checksum(const char *h, long *sig);
struct tar_out *tar_out_open(const char *path, uint32_t *code, char *err);
ssize_t tar_out_read(struct tar_out *t, char *p, size_t max, char *err);
void tar_out_close(struct tar_out *t);

#endif
