/*
 * ignite-agent, EXEC sessions: request parsing, users from /etc/passwd and
 * /etc/group, spawning a command (pty or pipes, credentials, cwd, env, PATH
 * search, exec failures reported through a CLOEXEC status pipe), and moving
 * its stdio with flow control.
 */
#include "agent.h"

#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#define DEFAULT_PATH "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#define MAX_GROUPS 256
/* The most of /etc/passwd or /etc/group read (they are the guest's: one that
 * is huge, or a FIFO, must not hold up the agent, which reads them itself). */
#define DB_MAX (4 << 20)
#define TTY_GRACE_MS 200

int request_parse(struct request *r, const char *p, size_t n, char *err)
{
    memset(r, 0, sizeof *r);
    if (n && p[n - 1] != '\0') {
        snprintf(err, ERRLEN, "malformed request: strings must end with NUL");
        return -1;
    }
    int count = 0;
    for (size_t i = 0; i < n; i++)
        count += p[i] == '\0';
    r->mem = malloc(n + 1);
    r->argv = calloc(count + 1, sizeof(char *));
    r->env = calloc(count + 1, sizeof(char *));
    if (!r->mem || !r->argv || !r->env) {
        snprintf(err, ERRLEN, "out of memory");
        return -1;
    }
    memcpy(r->mem, p, n);
    r->mem[n] = '\0';
    for (char *s = r->mem; s < r->mem + n; s += strlen(s) + 1) {
        if (strlen(s) < 2 || s[1] != ':') {
            snprintf(err, ERRLEN, "malformed request entry \"%.40s\"", s);
            return -1;
        }
        char *v = s + 2;
        switch (s[0]) {
        case 'A': r->argv[r->argc++] = v; break;
        case 'E': r->env[r->envc++] = v; break;
        case 'W': r->cwd = v; break;
        case 'U': r->user = v; break;
        case 'P': r->path = v; break;
        case 'I': r->want_stdin = strcmp(v, "1") == 0; break;
        case 'T':
            if (sscanf(v, "%dx%d", &r->rows, &r->cols) != 2 || r->rows < 0 || r->cols < 0 ||
                r->rows > 65535 || r->cols > 65535) {
                snprintf(err, ERRLEN, "bad terminal size \"%.40s\" (want ROWSxCOLS)", v);
                return -1;
            }
            r->tty = 1;
            break;
        default: break; /* unknown tags are ignored: newer hosts may add some */
        }
    }
    return 0;
}

void request_free(struct request *r)
{
    free(r->mem);
    free(r->argv);
    free(r->env);
    memset(r, 0, sizeof *r);
}

/* ---- users ---- */

struct ident {
    uid_t uid;
    gid_t gid;
    int known;                  /* found in /etc/passwd */
    char name[256], home[1024];
    gid_t groups[MAX_GROUPS];
    int ngroups;
};

static int number(const char *s, unsigned long *v)
{
    if (!*s)
        return 0;
    char *end;
    errno = 0;
    *v = strtoul(s, &end, 10);
    return *end == '\0' && errno == 0 && *s != '-' && *v < 0xffffffffUL;
}

/* Split a colon-separated database line in place; returns the field count. */
static int fields(char *line, char **f, int max)
{
    int n = 0;
    line[strcspn(line, "\n")] = '\0';
    f[n++] = line;
    for (char *c = line; *c && n < max; c++)
        if (*c == ':') {
            *c = '\0';
            f[n++] = c + 1;
        }
    return n;
}

/* A passwd/group file, whole (read_small: a regular file, at most DB_MAX);
 * *end: where it ends (a NUL byte in it ends only its own line). */
static char *db_load(const char *file, char **end)
{
    size_t n;
    char *text = read_small(file, DB_MAX, &n);
    *end = text ? text + n : NULL;
    return text;
}

/* The next line of *cur (up to end) with at least nf fields, split into f[]
 * (up to a NUL byte in it); 0 at the end. */
static int db_line(char **cur, char *end, char **f, int nf)
{
    while (*cur && *cur < end) {
        char *line = *cur, *nl = memchr(line, '\n', (size_t)(end - line));
        *cur = nl ? nl + 1 : end;
        if (nl)
            *nl = '\0';
        if (fields(line, f, nf) >= nf)
            return 1;
    }
    return 0;
}

/* Find a passwd/group entry by name (key) or by id; fills f[] (pointing into
 * *mem, which the caller frees), returns 1 if found, 0 if not, -1 if the file
 * cannot be read (errno). */
static int db_find(const char *file, const char *key, unsigned long id, int idfield,
                   char **mem, char **f, int nf)
{
    char *end;
    free(*mem);
    if (!(*mem = db_load(file, &end)))
        return -1;
    unsigned long v;
    for (char *cur = *mem; db_line(&cur, end, f, nf);)
        if (key ? strcmp(f[0], key) == 0 : (number(f[idfield], &v) && v == id))
            return 1;
    return 0;
}

static const char *db_why(int e)
{
    return e == EINVAL ? "not a regular file" : e == EFBIG ? "larger than 4 MiB" : strerror(e);
}

static int user_lookup(const char *spec, struct ident *id, char *err)
{
    char user[256], *group = NULL, *mem = NULL, *f[7];
    unsigned long v;
    memset(id, 0, sizeof *id);
    snprintf(user, sizeof user, "%s", spec);
    if ((group = strchr(user, ':')))
        *group++ = '\0';
    int numeric = number(user, &v);
    int found = db_find("/etc/passwd", numeric ? NULL : user, v, 2, &mem, f, 7);
    if (found == 1) {
        unsigned long uid = 0, gid = 0;
        if (!number(f[2], &uid) || !number(f[3], &gid)) {   /* (never root by mistake) */
            snprintf(err, ERRLEN, "invalid uid or gid for user %.200s in /etc/passwd", f[0]);
            free(mem);
            return -1;
        }
        id->uid = uid;
        id->gid = gid;
        id->known = 1;
        snprintf(id->name, sizeof id->name, "%s", f[0]);
        snprintf(id->home, sizeof id->home, "%s", f[5]);
    } else if (numeric) {
        id->uid = v;    /* a uid without an entry: group root, home / (as Docker does) */
        snprintf(id->home, sizeof id->home, "/");
    } else {
        if (found < 0 && errno != ENOENT)
            snprintf(err, ERRLEN, "unable to find user %s: /etc/passwd: %s", user,
                     db_why(errno));
        else
            snprintf(err, ERRLEN, "unable to find user %s: no matching entries in /etc/passwd",
                     user);
        free(mem);
        return -1;
    }
    if (group && *group) {
        if (number(group, &v)) {
            id->gid = v;
        } else if ((found = db_find("/etc/group", group, 0, 2, &mem, f, 4)) == 1
                   && number(f[2], &v)) {
            id->gid = v;
        } else {
            if (found < 0 && errno != ENOENT)
                snprintf(err, ERRLEN, "unable to find group %s: /etc/group: %s", group,
                         db_why(errno));
            else
                snprintf(err, ERRLEN, "unable to find group %s: no matching entries in "
                         "/etc/group", group);
            free(mem);
            return -1;
        }
    }
    free(mem);
    id->groups[id->ngroups++] = id->gid;
    char *end = NULL, *groups = id->known ? db_load("/etc/group", &end) : NULL;
    for (char *cur = groups; id->ngroups < MAX_GROUPS && db_line(&cur, end, f, 4);) {
        if (!number(f[2], &v) || v == id->gid)
            continue;
        for (char *m = strtok(f[3], ","); m; m = strtok(NULL, ","))
            if (strcmp(m, id->name) == 0) {
                id->groups[id->ngroups++] = v;
                break;
            }
    }
    free(groups);
    return 0;
}

/* ---- the child side of spawn ----
 *
 * The child shares the agent's memory (clone with CLONE_VM | CLONE_VFORK, as
 * posix_spawn does): no page tables are copied and the agent's pages are not
 * made copy-on-write, which under TCG spares the guest kernel's fork paths
 * (every one of them translated anew after a restore) and the agent the
 * faults that follow a fork. The agent is suspended until the child has
 * called execve or _exit. So the child runs on a stack of its own and does
 * system calls only (no malloc, no stdio, no locks, nothing that writes the
 * agent's memory but the child's own stack): the user lookup, the
 * environment and every message are made by the agent, before and after.
 * The credentials are set by raw system calls: glibc's wrappers would take
 * its locks and broadcast to every thread of the process, which the child is
 * not. A command that runs as another user gets a forked child instead
 * (spawn): a task that shares root's memory must never run as another user,
 * who could trace it until it has called execve. (The child's own string
 * lookups write nothing shared.) */

/* What failed in the child (the agent writes the message). */
enum { C_TTY = 1, C_STDIO, C_CRED, C_CWD, C_ROOTDIR, C_EMPTY, C_NOTFOUND, C_ISDIR, C_NOEXEC,
       C_ACCES, C_EXEC };

struct child_fail_msg {
    uint32_t code;
    int32_t what, err;
};

struct child_args {
    const struct request *r;
    int console, st, m, in, out, er;
    const char *pts;
    const struct ident *id;
    char **env;
    const char *path;
};

static void __attribute__((noreturn)) child_fail(int st, uint32_t code, int what, int e)
{
    struct child_fail_msg msg = {code, what, e};
    if (write(st, &msg, sizeof msg) < 0)
        _exit(code);
    _exit(code);
}

static void __attribute__((noreturn)) exec_failed(int st, const char *cmd, int e)
{
    struct stat sb;
    if (e == ENOENT || e == ENOTDIR)
        child_fail(st, 127, C_NOTFOUND, e);
    if (e == EACCES && strchr(cmd, '/') && stat(cmd, &sb) == 0 && S_ISDIR(sb.st_mode))
        child_fail(st, 126, C_ISDIR, e);
    if (e == ENOEXEC)
        child_fail(st, 126, C_NOEXEC, e);
    if (e == EACCES)
        child_fail(st, 126, C_ACCES, e);
    child_fail(st, 126, C_EXEC, e);
}

/* A command given as one string of shell words ("mkdir -p /x", as scripts
 * written for SSH-based exec pass it) that names no program: let the image's
 * shell run it, as SSH's remote shell did. */
static void __attribute__((noreturn)) not_found(int st, char **argv, char **envp, int e)
{
    if ((e == ENOENT || e == ENOTDIR) && !argv[1] && strpbrk(argv[0], " \t\n;&|<>$`'\"*?(){}")) {
        char *sh[] = {"sh", "-c", argv[0], NULL};
        execve("/bin/sh", sh, envp);
    }
    exec_failed(st, argv[0], e);
}

/* execvp with an explicit PATH and environment. */
static void __attribute__((noreturn)) search_exec(char **argv, char **envp, const char *path,
                                                  int st)
{
    const char *cmd = argv[0];
    if (!*cmd)
        child_fail(st, 127, C_EMPTY, 0);
    if (strchr(cmd, '/')) {
        execve(cmd, argv, envp);
        not_found(st, argv, envp, errno);
    }
    int err = ENOENT, eacces = 0;
    size_t clen = strlen(cmd);
    for (const char *p = path; p; p = strchr(p, ':') ? strchr(p, ':') + 1 : NULL) {
        size_t dlen = strcspn(p, ":");
        char full[4096];
        if (dlen + clen + 2 > sizeof full)
            continue;
        memcpy(full, dlen ? p : ".", dlen ? dlen : 1);
        size_t o = dlen ? dlen : 1;
        full[o++] = '/';
        memcpy(full + o, cmd, clen + 1);
        execve(full, argv, envp);
        if (errno == EACCES)
            eacces = 1;
        else if (errno != ENOENT && errno != ENOTDIR && errno != ESTALE && errno != ELOOP) {
            err = errno;
            break;
        }
    }
    not_found(st, argv, envp, eacces && err == ENOENT ? EACCES : err);
}

static const char *env_get(char **env, int n, const char *name)
{
    size_t l = strlen(name);
    for (int i = 0; i < n; i++)
        if (strncmp(env[i], name, l) == 0 && env[i][l] == '=')
            return env[i] + l + 1;
    return NULL;
}

/* /dev/null, if it is the device (the guest may have put a FIFO there). */
static int open_null(int flags)
{
    struct stat st;
    int fd = open("/dev/null", flags | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
    if (fd >= 0 && (fstat(fd, &st) < 0 || !S_ISCHR(st.st_mode) || blocking(fd) < 0)) {
        close(fd);
        return -1;
    }
    return fd;
}

static int child(void *arg)
{
    const struct child_args *a = arg;
    const struct request *r = a->r;
    int st = a->st, m = a->m, in = a->in, out = a->out, er = a->er;
    struct sigaction dfl;
    memset(&dfl, 0, sizeof dfl);
    dfl.sa_handler = SIG_DFL;
    for (int sig = 1; sig < 32; sig++)
        if (sig != SIGKILL && sig != SIGSTOP)
            sigaction(sig, &dfl, NULL);     /* (this task's own table: no CLONE_SIGHAND) */
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    setsid();
    if (m >= 0) {
        int s = open(a->pts, O_RDWR);
        if (s < 0)
            s = ioctl(m, TIOCGPTPEER, O_RDWR);
        if (s < 0)
            child_fail(st, 1, C_TTY, errno);
        ioctl(s, TIOCSCTTY, 0);
        in = out = er = s;
    } else if (a->console >= 0) {
        out = er = a->console;
    }
    if (in < 0 && (in = open_null(O_RDONLY)) < 0) {
        int p[2];   /* no /dev/null in the guest: an empty pipe also reads as EOF */
        if (pipe2(p, O_CLOEXEC) == 0) {
            close(p[1]);
            in = p[0];
        }
    }
    if (dup2(in, 0) < 0 || dup2(out, 1) < 0 || dup2(er, 2) < 0)
        child_fail(st, 1, C_STDIO, errno);
    if (m >= 0 && in > 2)
        close(in);
    if (r->user && (syscall(SYS_setgroups, a->id->ngroups, a->id->groups) < 0 ||
                    syscall(SYS_setgid, a->id->gid) < 0 || syscall(SYS_setuid, a->id->uid) < 0))
        child_fail(st, 1, C_CRED, errno);
    if (r->cwd && *r->cwd) {
        if (chdir(r->cwd) < 0)
            child_fail(st, 1, C_CWD, errno);
    } else if (chdir(a->id->home) < 0 && chdir("/") < 0) {
        child_fail(st, 1, C_ROOTDIR, errno);
    }
    search_exec(r->argv, a->env, a->path, st);
}

/* The message of what failed in the child (child_fail). */
static void child_message(const struct request *r, const char *pts, const struct child_fail_msg *f,
                          char *err)
{
    const char *cmd = r->argc ? r->argv[0] : "";
    const char *why = strerror(f->err);
    switch (f->what) {
    case C_TTY: snprintf(err, ERRLEN, "cannot open the terminal %s: %s", pts, why); break;
    case C_STDIO: snprintf(err, ERRLEN, "cannot set up the command's stdio: %s", why); break;
    case C_CRED:
        snprintf(err, ERRLEN, "cannot switch to user %s: %s", r->user ? r->user : "", why);
        break;
    case C_CWD:
        snprintf(err, ERRLEN, "cannot change to the directory %s: %s", r->cwd ? r->cwd : "", why);
        break;
    case C_ROOTDIR: snprintf(err, ERRLEN, "cannot change to the directory /: %s", why); break;
    case C_EMPTY: snprintf(err, ERRLEN, "empty command name: command not found"); break;
    case C_NOTFOUND: snprintf(err, ERRLEN, "%s: command not found", cmd); break;
    case C_ISDIR: snprintf(err, ERRLEN, "%s: is a directory", cmd); break;
    case C_NOEXEC: snprintf(err, ERRLEN, "%s: exec format error", cmd); break;
    case C_ACCES: snprintf(err, ERRLEN, "%s: permission denied", cmd); break;
    default: snprintf(err, ERRLEN, "%s: %s", cmd, why);
    }
}

static void nonblock(int fd)
{
    if (fd >= 0)
        fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
}

static void close_all(int *fds, int n)
{
    for (int i = 0; i < n; i++)
        if (fds[i] >= 0) {
            close(fds[i]);
            fds[i] = -1;
        }
}

/* The child's stack (one child at a time: the agent waits while it runs). */
#define CHILD_STACK (64 * 1024)
static char child_stack[CHILD_STACK] __attribute__((aligned(64)));

/*
 * Start r's command. console >= 0: stdin /dev/null, stdout/stderr on it (the
 * image's main command). Otherwise a pty (*master) when r->tty, else pipes
 * (*in_w when r->want_stdin, out_r[0..1]). Returns the pid once the exec
 * succeeded; -1 with *code and err set when it did not.
 */
pid_t spawn(const struct request *r, int console, int *master, int *in_w, int out_r[2],
            uint32_t *code, char *err)
{
    int st[2] = {-1, -1}, in[2] = {-1, -1}, out[2] = {-1, -1}, er[2] = {-1, -1}, m = -1;
    char pts[128] = "";
    char **env = NULL;
    *code = 1;

    /* The user, the home and the environment: looked up and made here (see child). */
    static struct ident id;
    if (r->user) {
        if (user_lookup(r->user, &id, err) < 0)
            return -1;
    } else {
        char self[32];
        snprintf(self, sizeof self, "%u", (unsigned)getuid());
        if (user_lookup(self, &id, err) < 0 || !id.known)
            snprintf(id.home, sizeof id.home, getuid() == 0 ? "/root" : "/");
    }
    /* The request's environment, plus PATH/HOME (and TERM on a TTY) when it lacks them. */
    static char home[1100];
    if (!(env = calloc(r->envc + 4, sizeof(char *)))) {
        snprintf(err, ERRLEN, "out of memory");
        return -1;
    }
    int n = 0;
    for (int i = 0; i < r->envc; i++)
        env[n++] = r->env[i];
    if (!env_get(env, n, "PATH"))
        env[n++] = "PATH=" DEFAULT_PATH;
    if (!env_get(env, n, "HOME")) {
        snprintf(home, sizeof home, "HOME=%s", id.home);
        env[n++] = home;
    }
    if (r->tty && !env_get(env, n, "TERM"))
        env[n++] = "TERM=xterm";

    if (pipe2(st, O_CLOEXEC) < 0)
        goto syserr;
    if (console < 0 && r->tty) {
        m = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
        if (m < 0 || grantpt(m) < 0 || unlockpt(m) < 0 || ptsname_r(m, pts, sizeof pts) != 0) {
            snprintf(err, ERRLEN, "no pseudo-terminals in the guest (is /dev/pts mounted?)");
            goto fail;
        }
        struct winsize ws = {.ws_row = r->rows, .ws_col = r->cols};
        ioctl(m, TIOCSWINSZ, &ws);
    } else if (console < 0) {
        if ((r->want_stdin && pipe2(in, O_CLOEXEC) < 0) || pipe2(out, O_CLOEXEC) < 0 ||
            pipe2(er, O_CLOEXEC) < 0)
            goto syserr;
    }
    struct child_args a = {r, console, st[1], m, in[0], out[1], er[1], pts, &id, env,
                           env_get(env, n, "PATH")};
    /* No handler may run on the child's stack, or in the child at all (it
     * resets them, then unblocks): every signal is held while it is made. */
    sigset_t all, was;
    sigfillset(&all);
    sigprocmask(SIG_SETMASK, &all, &was);
    pid_t pid;
    if (r->user && id.uid != 0) {
        /* Another user: a copy of the agent's memory, not the memory itself
         * (the kernel makes a task that changes uid traceable by that user as
         * set by fs.suid_dumpable, which the guest's root may choose). */
        pid = fork();
        if (pid == 0)
            child(&a);          /* (execve or _exit: never returns) */
    } else {
        /* (returns once the child has called execve or _exit) */
        pid = clone(child, child_stack + CHILD_STACK, CLONE_VM | CLONE_VFORK | SIGCHLD, &a);
    }
    int saved = errno;
    sigprocmask(SIG_SETMASK, &was, NULL);
    errno = saved;
    if (pid < 0)
        goto syserr;
    free(env);
    env = NULL;
    close(st[1]);
    close(in[0]);
    close(out[1]);
    close(er[1]);
    struct child_fail_msg msg;
    size_t got = 0;
    for (;;) {
        ssize_t k = read(st[0], (char *)&msg + got, sizeof msg - got);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            break;
        got += k;
        if (got == sizeof msg)
            break;
    }
    close(st[0]);
    if (got == sizeof msg) {
        *code = msg.code;
        child_message(r, pts, &msg, err);
        while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
            ;
        int fds[] = {m, in[1], out[0], er[0]};
        close_all(fds, 4);
        return -1;
    }
    if (master)
        *master = m;
    if (in_w)
        *in_w = in[1];
    if (out_r) {
        out_r[0] = out[0];
        out_r[1] = er[0];
    }
    nonblock(m);
    nonblock(in[1]);
    nonblock(out[0]);
    nonblock(er[0]);
    return pid;
syserr:
    snprintf(err, ERRLEN, "cannot start the command: %s", strerror(errno));
fail:;
    free(env);
    int fds[] = {st[0], st[1], m, in[0], in[1], out[0], out[1], er[0], er[1]};
    close_all(fds, 9);
    return -1;
}

/*
 * The warm-up's program: the smallest static ELF that exits 0 (one page
 * mapped, three instructions: no libc start-up, no page of it touched but
 * one), in a sealed memfd made when the agent starts (not after a restore:
 * its pages are in the snapshot). What a clone's first exec needs of the
 * guest kernel (clone, execve, the ELF loader, exit, the reaping) is then
 * translated without the user-mode start-up of a real program, which no
 * later exec would reuse. -1: none (another architecture, no memfd): the
 * warm-up runs this agent's own binary instead.
 */
static int warm_fd = -1;

void exec_warm_init(void)
{
#if defined(__x86_64__)
    static const unsigned char code[] = {
        0xb8, 0x3c, 0x00, 0x00, 0x00,   /* mov eax, 60 (exit) */
        0x31, 0xff,                     /* xor edi, edi */
        0x0f, 0x05,                     /* syscall */
    };
    enum { BASE = 0x400000, HDRS = sizeof(Elf64_Ehdr) + sizeof(Elf64_Phdr) };
    unsigned char elf[HDRS + sizeof code];
    Elf64_Ehdr eh = {
        .e_ident = {ELFMAG0, ELFMAG1, ELFMAG2, ELFMAG3, ELFCLASS64, ELFDATA2LSB, EV_CURRENT},
        .e_type = ET_EXEC, .e_machine = EM_X86_64, .e_version = EV_CURRENT,
        .e_entry = BASE + HDRS, .e_phoff = sizeof(Elf64_Ehdr), .e_ehsize = sizeof(Elf64_Ehdr),
        .e_phentsize = sizeof(Elf64_Phdr), .e_phnum = 1,
    };
    Elf64_Phdr ph = {
        .p_type = PT_LOAD, .p_flags = PF_R | PF_X, .p_offset = 0, .p_vaddr = BASE,
        .p_paddr = BASE, .p_filesz = sizeof elf, .p_memsz = sizeof elf, .p_align = 0x1000,
    };
    memcpy(elf, &eh, sizeof eh);
    memcpy(elf + sizeof eh, &ph, sizeof ph);
    memcpy(elf + HDRS, code, sizeof code);
#ifndef MFD_EXEC
#define MFD_EXEC 0x0010U
#endif
#ifndef F_SEAL_EXEC
#define F_SEAL_EXEC 0x0020
#endif
    /* (MFD_EXEC: executable even where vm.memfd_noexec says otherwise; a
     * kernel before 6.3 refuses the flag, and its memfds are executable) */
    int fd = memfd_create("ignite-warm", MFD_CLOEXEC | MFD_ALLOW_SEALING | MFD_EXEC);
    if (fd < 0 && errno == EINVAL)
        fd = memfd_create("ignite-warm", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (fd < 0)
        return;
    if (write(fd, elf, sizeof elf) != (ssize_t)sizeof elf) {
        close(fd);
        return;
    }
    fcntl(fd, F_ADD_SEALS, F_SEAL_EXEC);    /* (no chmod; a kernel before 6.3: EINVAL) */
    if (fcntl(fd, F_ADD_SEALS, F_SEAL_SEAL | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE) < 0) {
        close(fd);
        return;
    }
    warm_fd = fd;
#endif
}

/*
 * After a clone's RESTORE has been answered: one throw-away command through
 * the exec path (the program above, else this agent's own binary, which
 * exits at once) while the host is still busy saving the clone's record and
 * starting its next command. Under TCG a restored QEMU has none of the
 * guest's code translated yet; the clone, exec, exit and reaping paths of
 * the first real exec are then ready. Its failure (no /proc in the root,
 * say) changes nothing: the child is reaped as an unknown one (agent.c: reap).
 */
void exec_warm(void)
{
    char path[32];
    char *argv[] = {"/proc/self/exe", "--warm", NULL};
    if (warm_fd >= 0) {
        snprintf(path, sizeof path, "/proc/self/fd/%d", warm_fd);
        argv[0] = path;
    }
    struct request r;
    memset(&r, 0, sizeof r);
    r.argv = argv;
    r.argc = 2;
    r.cwd = "/";    /* (not the user's home: nothing of the image's is waited on) */
    char err[ERRLEN];
    uint32_t code;
    int null = open_null(O_WRONLY);
    if (null < 0)
        return;
    spawn(&r, null, NULL, NULL, NULL, &code, err);
    close(null);
}

/* ---- the session side ---- */

int exec_start(struct session *s, const char *p, size_t n)
{
    struct request r;
    char err[ERRLEN];
    uint32_t code = 1;
    if (request_parse(&r, p, n, err) < 0 ||
        (r.argc == 0 && snprintf(err, ERRLEN, "no command given (A:)") > 0)) {
        request_free(&r);
        send_error(s->ch, s->id, 1, err);
        return -1;
    }
    int m = -1, in_w = -1, out[2] = {-1, -1}, want_stdin = r.want_stdin;
    pid_t pid = spawn(&r, -1, &m, &in_w, out, &code, err);
    request_free(&r);
    if (pid < 0) {
        send_error(s->ch, s->id, code, err);
        return -1;
    }
    s->pid = pid;
    if (m >= 0) {
        s->tty = 1;
        s->master = s->out_fd[0] = m;
        s->in_fd = want_stdin ? fcntl(m, F_DUPFD_CLOEXEC, 3) : -1;
    } else {
        s->in_fd = in_w;
        s->out_fd[0] = out[0];
        s->out_fd[1] = out[1];
    }
    send_u32(s->ch, F_STARTED, s->id, (uint32_t)pid);
    return 0;
}

/* The command no longer reads stdin: drop what is queued, but credit it. */
static void stdin_gone(struct session *s)
{
    credit(s, s->inq.len - s->inq.off);
    buf_free(&s->inq);
    if (s->in_fd >= 0)
        close(s->in_fd);
    s->in_fd = -1;
}

static void stdin_finish(struct session *s)
{
    if (s->tty && s->in_fd >= 0) {
        /* A terminal has no EOF of its own: type its EOF character, twice after
         * a partial line (the first only ends the line). */
        struct termios t;
        int ok = tcgetattr(s->in_fd, &t) == 0;
        char eof[2] = {ok ? (char)t.c_cc[VEOF] : 4, ok ? (char)t.c_cc[VEOF] : 4};
        int partial = ok && (t.c_lflag & ICANON) && s->tty_last && s->tty_last != '\n';
        if (write(s->in_fd, eof, partial ? 2 : 1) < 0)
            ok = 0;
    }
    stdin_gone(s);
}

void exec_write_stdin(struct session *s)
{
    while (s->in_fd >= 0 && s->inq.len > s->inq.off) {
        ssize_t w = write(s->in_fd, s->inq.p + s->inq.off, s->inq.len - s->inq.off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && errno == EAGAIN)
            return;
        if (w <= 0) {
            stdin_gone(s);
            return;
        }
        s->tty_last = s->inq.p[s->inq.off + w - 1];
        s->inq.off += w;
        credit(s, w);
    }
    if (s->inq.len == s->inq.off && s->inq.cap > MAX_PAYLOAD)
        buf_free(&s->inq);
    if (s->in_eof && s->in_fd >= 0 && s->inq.len == s->inq.off)
        stdin_finish(s);
}

void exec_stdin(struct session *s, const char *p, size_t n)
{
    if (s->in_fd < 0 || s->in_eof) {
        credit(s, n);
        return;
    }
    buf_append(&s->inq, p, n);
    exec_write_stdin(s);
}

void exec_stdin_eof(struct session *s)
{
    s->in_eof = 1;
    exec_write_stdin(s);
}

static void maybe_finish(struct session *s)
{
    if (!s->exited || s->out_fd[0] >= 0 || s->out_fd[1] >= 0)
        return;
    send_u32(s->ch, F_EXIT, s->id, (uint32_t)s->status);
    session_end(s);
}

static void out_eof(struct session *s, int i)
{
    if (s->out_fd[i] != s->master)
        close(s->out_fd[i]);
    s->out_fd[i] = -1;
    send_frame(s->ch, F_EOF, i + 1, s->id, NULL, 0);
    maybe_finish(s);
}

/* Move one read of output into a DATA frame: 1 moved, 0 ended, -1 nothing now. */
int exec_read(struct session *s, int i)
{
    if (s->out_fd[i] < 0)
        return 0;
    size_t max = s->window < MAX_PAYLOAD ? (size_t)s->window : MAX_PAYLOAD;
    if (max == 0)
        return -1;
    char *p = frame_begin(s->ch, max);
    ssize_t n = read(s->out_fd[i], p, max);
    if (n > 0) {
        frame_end(s->ch, F_DATA, i + 1, s->id, n);
        s->window -= n;
        return 1;
    }
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return -1;
    out_eof(s, i);      /* EOF, or EIO: the pty's last holder closed it */
    return 0;
}

/*
 * After the command exited, its output is what is left in the pipes: read it
 * while the window allows and end the stream when it is empty, even if a
 * background process still holds it. A pty hands its data over
 * asynchronously, so a TTY stream gets TTY_GRACE_MS more.
 */
void exec_drain(struct session *s, int64_t now)
{
    for (int i = 0; i < 2 && !s->dead; i++) {
        int r;
        while ((r = exec_read(s, i)) == 1 && !s->dead && out_pending(s->ch) < OUT_HIGH)
            ;
        if (r == -1 && s->window > 0 && !s->dead && (!s->tty || now >= s->grace))
            out_eof(s, i);
    }
}

void exec_exited(struct session *s, int status)
{
    s->exited = 1;
    s->status = WIFSIGNALED(status) ? -WTERMSIG(status) : WEXITSTATUS(status);
    s->grace = now_ms() + TTY_GRACE_MS;
    if (s->in_fd >= 0)
        stdin_gone(s);
    maybe_finish(s);
}

void exec_signal(struct session *s, int sig)
{
    if (s->pid > 0 && sig > 0 && sig < 65)
        kill(-s->pid, sig);
}

void exec_resize(struct session *s, const char *p, size_t n)
{
    if (s->master < 0 || n < 4)
        return;
    const unsigned char *u = (const unsigned char *)p;
    struct winsize ws = {.ws_row = u[0] | u[1] << 8, .ws_col = u[2] | u[3] << 8};
    ioctl(s->master, TIOCSWINSZ, &ws);
}

void exec_kill(struct session *s)
{
    if (s->pid > 0)
        kill(-s->pid, SIGKILL);
}
