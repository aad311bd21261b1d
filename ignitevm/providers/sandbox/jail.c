/* ignite-jail: confine one VMM process, then exec it (with -n: only start
 * its console writer, then exec it unconfined, as any user).
 *
 * Run as root by the host CLI (so no Python runs between fork and exec). It
 * forks at once: the parent exits 0, leaving the child detached from the
 * caller (its stdin/stdout/stderr are the caller's: a log file). The child
 *   1. starts a new session and joins the VM's cgroups (-C: a cgroup.procs
 *      file, repeatable);
 *   2. enters new mount, IPC and UTS namespaces (and network with -N);
 *   3. opens every bind source while the host's tree is still visible;
 *   4. builds a read-only tmpfs root that holds only the bind mounts (-b),
 *      device nodes (-d) and symbolic links (-l) it was given, and
 *      pivots into it, detaching the host's tree;
 *   5. empties the capability bounding set, takes the VM's groups, gid and
 *      uid (-G, -g, -u; from root this clears every capability), sets
 *      no-new-privs, no core dumps and umask 077; with -P the one
 *      capability CAP_NET_BIND_SERVICE is kept (ambient, so it survives
 *      exec), for a VM that forwards host ports below 1024;
 *   6. with -c, forks the console writer (below);
 *   7. execs the program after "--" with an empty environment.
 * Any failure prints one line "ignite-jail: <step>: <reason>" and exits 125;
 * the caller learns of it when the VMM's control socket (passed as an fd)
 * closes before greeting, and reads the line in the log.
 *
 * Options (paths are absolute; each bind keeps its host path inside):
 *   -u UID -g GID -G GID[,GID...]   the identity to run as (uid/gid not 0)
 *   -C FILE                         write our pid to this cgroup.procs file
 *   -b SRC DST FLAGS                bind SRC at DST; FLAGS: r = read-only,
 *                                   w = writable, x = allow exec
 *   -d PATH c|b MAJOR MINOR MODE UID GID   a device node
 *   -l TARGET PATH                  a symbolic link
 *   -N                              a new, empty network namespace
 *   -P                              keep CAP_NET_BIND_SERVICE (low ports)
 *   -w DIR                          working folder inside (default /)
 *   -c FD MAX LOG                   the console writer: the VMM gets the write
 *                                   end of a pipe as FD; a child as confined as
 *                                   the VMM (and not dumpable, so the VMM cannot
 *                                   trace it) appends what comes to LOG, opened
 *                                   before the jail is built (the VMM never sees
 *                                   the file), and keeps it under MAX bytes as
 *                                   ignitevm/providers/vmm/consolelog.py does:
 *                                   past MAX, the first 64 KiB go to LOG.0 (once),
 *                                   the last MAX bytes to LOG.1, and LOG is
 *                                   emptied; under a lock on LOG.lock. For as
 *                                   long as it runs it holds a lock on LOG.writer
 *                                   (a command waits on it for the last lines).
 *                                   MAX: from 4096 to 2^62
 *   -s BYTES                        RLIMIT_FSIZE of the program: no file it writes
 *                                   (disk overlay, log, a file in its folder) grows
 *                                   past BYTES (the console writer is not bound by it)
 *   -i FD                           the parent writes the detached child's pid (the
 *                                   VMM's, once it execs) in decimal and a newline
 *                                   to FD (a pipe), as root, so that the host, not
 *                                   the VMM, keeps the VM's pid record; the child
 *                                   closes FD. Refused with -f (no child: FD would
 *                                   stay open into the program)
 *   -f                              foreground: no fork, no new session, and the
 *                                   program is killed when its caller dies (a
 *                                   short-lived VMM such as the KVM probe)
 *   -n                              no jail, only the console writer (-c, the one
 *                                   other option allowed): as the caller, with
 *                                   nothing confined or detached (the program
 *                                   detaches itself: QEMU's -daemonize), the writer
 *                                   is forked and the program exec'd with the
 *                                   caller's environment. For an unconfined VMM
 *                                   (--sandbox=none); it needs no privilege.
 *
 * The console writer is a child in a session of its own (no signal of the
 * caller's terminal reaches it), with no stdin, stdout or stderr (a caller
 * waiting for the program's output does not wait for it); it exits when every
 * write end of the pipe is closed, i.e. with the VMM.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/types.h>
#include <unistd.h>
#include <linux/capability.h>

#define MAX_ITEMS 64
#define MAX_GROUPS 16
#define NEWROOT "/tmp"  /* a tmpfs is mounted over it in our own namespace */

struct bind { const char *src, *dst, *flags; int fd; };
struct node { const char *path; char kind; unsigned maj, min, mode, uid, gid; };
struct link { const char *target, *path; };

static struct bind binds[MAX_ITEMS];
static struct node nodes[MAX_ITEMS];
static struct link links[MAX_ITEMS];
static const char *cgroups[8];
static int nbinds, nnodes, nlinks, ncgroups;

#define CONSOLE_HEAD (64 << 10)
struct console { int fd, pipe[2], log, reader, head, older, lock, alive; off_t max; const char *path; };

static void die(const char *step, const char *fmt, ...)
{
	va_list ap;
	int err = errno;
	fprintf(stderr, "ignite-jail: %s: ", step);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	if (err)
		fprintf(stderr, ": %s", strerror(err));
	fputc('\n', stderr);
	exit(125);
}

/* A size in bytes: any the host asks for (a console log's limit may pass 4 GiB). */
static off_t size_number(const char *s)
{
	char *end;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno || *s < '0' || *s > '9' || *end != '\0' || v > (1ULL << 62)) {
		errno = 0;
		die("usage", "bad size %s", s);
	}
	return (off_t)v;
}

static unsigned number(const char *s, int base)
{
	char *end;
	errno = 0;
	unsigned long v = strtoul(s, &end, base);
	if (errno || *s == '\0' || *end != '\0' || v > 0xffffffffUL) {
		errno = 0;
		die("usage", "bad number %s", s);
	}
	return (unsigned)v;
}

static void need(int argc, int i, int n)
{
	if (i + n >= argc) {
		errno = 0;
		die("usage", "option needs %d values", n);
	}
}

/* Make every missing folder of PATH (a path under NEWROOT), mode 0755. */
static void make_parents(char *path)
{
	for (char *p = path + strlen(NEWROOT) + 1; (p = strchr(p, '/')); p++) {
		*p = '\0';
		if (mkdir(path, 0755) != 0 && errno != EEXIST)
			die("mkdir", "%s", path);
		*p = '/';
	}
}

static void inside(char *buf, size_t size, const char *path)
{
	if (path[0] != '/' || strstr(path, "/../") || strcmp(path, "/") == 0) {
		errno = 0;
		die("usage", "not a plain absolute path: %s", path);
	}
	if ((size_t)snprintf(buf, size, "%s%s", NEWROOT, path) >= size) {
		errno = 0;
		die("usage", "path too long: %s", path);
	}
	make_parents(buf);
}

static void join_cgroup(const char *procs)
{
	char pid[32];
	int n = snprintf(pid, sizeof(pid), "%d\n", (int)getpid());
	int fd = open(procs, O_WRONLY | O_CLOEXEC);
	if (fd < 0 || write(fd, pid, (size_t)n) != n)
		die("cgroup", "%s", procs);
	close(fd);
}

static void do_bind(struct bind *b)
{
	char dst[4096], src[64];
	struct stat st;
	if (fstat(b->fd, &st) != 0)
		die("bind", "%s", b->src);
	inside(dst, sizeof(dst), b->dst);
	if (S_ISDIR(st.st_mode)) {
		if (mkdir(dst, 0755) != 0 && errno != EEXIST)
			die("bind", "mkdir %s", dst);
	} else {
		int fd = open(dst, O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
		if (fd < 0)
			die("bind", "create %s", dst);
		close(fd);
	}
	snprintf(src, sizeof(src), "/proc/self/fd/%d", b->fd);
	if (mount(src, dst, NULL, MS_BIND, NULL) != 0)
		die("bind", "%s on %s", b->src, b->dst);
	unsigned long flags = MS_BIND | MS_REMOUNT | MS_NOSUID | MS_NODEV;
	if (!strchr(b->flags, 'w'))
		flags |= MS_RDONLY;
	if (!strchr(b->flags, 'x'))
		flags |= MS_NOEXEC;
	if (mount(NULL, dst, NULL, flags, NULL) != 0)
		die("bind", "remount %s", b->dst);
	close(b->fd);
}

static void do_node(struct node *n)
{
	char dst[4096];
	inside(dst, sizeof(dst), n->path);
	mode_t type = n->kind == 'b' ? S_IFBLK : S_IFCHR;
	if (mknod(dst, type | (n->mode & 07777), makedev(n->maj, n->min)) != 0)
		die("mknod", "%s", n->path);
	if (chown(dst, n->uid, n->gid) != 0 || chmod(dst, n->mode & 07777) != 0)
		die("mknod", "chown %s", n->path);
}

static void do_link(struct link *l)
{
	char dst[4096];
	inside(dst, sizeof(dst), l->path);
	if (symlink(l->target, dst) != 0)
		die("symlink", "%s", l->path);
}

static int open_beside(const char *log, const char *suffix, int flags)
{
	char path[4096];
	if ((size_t)snprintf(path, sizeof(path), "%s%s", log, suffix) >= sizeof(path)) {
		errno = 0;
		die("usage", "path too long: %s", log);
	}
	int fd = open(path, flags | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0)
		die("console", "%s", path);
	return fd;
}

/* Open the console files as root, while the host's tree is visible. */
static void console_open(struct console *c)
{
	c->log = open_beside(c->path, "", O_WRONLY | O_APPEND | O_CREAT);
	c->reader = open_beside(c->path, "", O_RDONLY);
	c->head = open_beside(c->path, ".0", O_RDWR | O_CREAT);
	c->older = open_beside(c->path, ".1", O_RDWR | O_CREAT);
	c->lock = open_beside(c->path, ".lock", O_RDWR | O_CREAT);
	c->alive = open_beside(c->path, ".writer", O_RDONLY | O_CREAT);
	/* Taken before the writer is forked (it shares the open file, and so the
	 * lock, which goes when it exits). Not taken: a writer of the VM's last
	 * run still drains; a command then does not wait for this one. */
	flock(c->alive, LOCK_EX | LOCK_NB);
	if (pipe2(c->pipe, O_CLOEXEC) != 0)
		die("console", "pipe");
}

static int write_all(int fd, const char *buf, size_t n, off_t at)
{
	while (n > 0) {
		ssize_t w = at < 0 ? write(fd, buf, n) : pwrite(fd, buf, n, at);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return -1;
		buf += w;
		n -= (size_t)w;
		if (at >= 0)
			at += w;
	}
	return 0;
}

/* Copy N bytes of IN from FROM to OUT at 0 (for files opened without O_APPEND). */
static void copy_range(int in, off_t from, off_t n, int out)
{
	char buf[65536];
	off_t done = 0;
	while (done < n) {
		size_t want = (size_t)(n - done < (off_t)sizeof(buf) ? n - done : (off_t)sizeof(buf));
		ssize_t r = pread(in, buf, want, from + done);
		if (r <= 0 || write_all(out, buf, (size_t)r, done) != 0)
			break;
		done += r;
	}
	if (ftruncate(out, done) != 0)
		return;
}

static void console_trim(struct console *c, off_t size)
{
	struct stat st;
	if (fstat(c->head, &st) == 0 && st.st_size == 0)
		copy_range(c->reader, 0, size < CONSOLE_HEAD ? size : CONSOLE_HEAD, c->head);
	off_t from = size - c->max;
	char buf[4096];
	ssize_t r = pread(c->reader, buf, sizeof(buf), from);
	char *nl = r > 0 ? memchr(buf, '\n', (size_t)r) : NULL;
	if (nl)
		from += nl - buf + 1;  /* start the older part at a line */
	copy_range(c->reader, from, size - from, c->older);
	if (ftruncate(c->log, 0) != 0)
		return;
}

/* Close every fd from 3 up but the N in KEEP. */
static void keep_only(int *keep, int n)
{
	for (int i = 1; i < n; i++)  /* sort (a handful) */
		for (int j = i; j > 0 && keep[j - 1] > keep[j]; j--) {
			int t = keep[j];
			keep[j] = keep[j - 1];
			keep[j - 1] = t;
		}
	unsigned from = 3;
	for (int i = 0; i <= n; i++) {
		unsigned to = i < n ? (unsigned)keep[i] : ~0U;
		if (to > from && syscall(SYS_close_range, from, to - 1, 0) != 0)
			for (unsigned fd = from; fd < to && fd < 65536; fd++)
				close((int)fd);  /* (no close_range: before Linux 5.9) */
		if (i < n)
			from = (unsigned)keep[i] + 1;
	}
}

/* The console writer's loop: until every write end of the pipe is closed. */
static void console_drain(struct console *c)
{
	char buf[65536];
	for (;;) {
		ssize_t n = read(c->pipe[0], buf, sizeof(buf));
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		if (flock(c->lock, LOCK_EX) != 0)
			break;
		int ok = write_all(c->log, buf, (size_t)n, -1) == 0;
		struct stat st;
		if (ok && fstat(c->log, &st) == 0 && st.st_size > c->max)
			console_trim(c, st.st_size);
		flock(c->lock, LOCK_UN);
		if (!ok)
			break;  /* the disk is full or the log is gone: drop the rest */
	}
	_exit(0);
}

/* Fork the console writer (-c) and give the program the pipe's write end as
 * C->fd (the console files stay the writer's alone). */
static void console_start(struct console *c, int argc, char **argv)
{
	pid_t writer = fork();
	if (writer < 0)
		die("fork", "console writer");
	if (writer == 0) {
		if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0 || setsid() < 0)
			_exit(125);
		/* Not to be taken for the VMM by its command line (it is ours, copied). */
		char *end = argv[argc - 1] + strlen(argv[argc - 1]);
		memset(argv[0], 0, (size_t)(end - argv[0]));
		snprintf(argv[0], (size_t)(end - argv[0]) + 1, "ignite-console-writer");
		prctl(PR_SET_NAME, "ignite-console", 0, 0, 0);
		/* Only its own files: not the caller's stdio, the VMM's sockets, taps
		 * or the pipe's write end. */
		close(0);
		close(1);
		close(2);
		keep_only((int[]){c->pipe[0], c->log, c->reader, c->head, c->older, c->lock,
			   c->alive}, 7);
		console_drain(c);
	}
	close(c->pipe[0]);
	close(c->log);
	close(c->reader);
	close(c->head);
	close(c->older);
	close(c->lock);
	close(c->alive);
	if (c->pipe[1] == c->fd ? fcntl(c->fd, F_SETFD, 0) != 0
	    : dup2(c->pipe[1], c->fd) != c->fd)
		die("console", "pipe to fd %d", c->fd);
	if (c->pipe[1] != c->fd)
		close(c->pipe[1]);
}

int main(int argc, char **argv)
{
	long uid = -1, gid = -1;
	gid_t groups[MAX_GROUPS];
	int ngroups = 0, newnet = 0, lowports = 0, ownproc = 0, foreground = 0, pidfd = -1, bare = 0, i;
	unsigned long long fsize = 0;
	const char *workdir = "/";
	struct console con = {.fd = -1};

	for (i = 1; i < argc && strcmp(argv[i], "--") != 0; i++) {
		const char *o = argv[i];
		errno = 0;
		if (!strcmp(o, "-u")) {
			need(argc, i, 1);
			uid = number(argv[++i], 10);
		} else if (!strcmp(o, "-g")) {
			need(argc, i, 1);
			gid = number(argv[++i], 10);
		} else if (!strcmp(o, "-G")) {
			need(argc, i, 1);
			char *list = argv[++i], *tok, *save = NULL;
			for (tok = strtok_r(list, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
				if (ngroups == MAX_GROUPS)
					die("usage", "too many groups");
				groups[ngroups++] = number(tok, 10);
			}
		} else if (!strcmp(o, "-C") && ncgroups < 8) {
			need(argc, i, 1);
			cgroups[ncgroups++] = argv[++i];
		} else if (!strcmp(o, "-b") && nbinds < MAX_ITEMS) {
			need(argc, i, 3);
			binds[nbinds++] = (struct bind){argv[i + 1], argv[i + 2], argv[i + 3], -1};
			i += 3;
		} else if (!strcmp(o, "-d") && nnodes < MAX_ITEMS) {
			need(argc, i, 7);
			nodes[nnodes++] = (struct node){
				argv[i + 1], argv[i + 2][0], number(argv[i + 3], 10),
				number(argv[i + 4], 10), number(argv[i + 5], 8),
				number(argv[i + 6], 10), number(argv[i + 7], 10)};
			i += 7;
		} else if (!strcmp(o, "-l") && nlinks < MAX_ITEMS) {
			need(argc, i, 2);
			links[nlinks++] = (struct link){argv[i + 1], argv[i + 2]};
			i += 2;
		} else if (!strcmp(o, "-N")) {
			newnet = 1;
		} else if (!strcmp(o, "-P")) {
			lowports = 1;
		} else if (!strcmp(o, "-p")) {
			ownproc = 1;
		} else if (!strcmp(o, "-s")) {
			need(argc, i, 1);
			char *end;
			errno = 0;
			fsize = strtoull(argv[++i], &end, 10);
			if (errno || *end || fsize < 4096)
				die("usage", "-s needs a size of at least 4096");
		} else if (!strcmp(o, "-f")) {
			foreground = 1;
		} else if (!strcmp(o, "-n")) {
			bare = 1;
		} else if (!strcmp(o, "-i") && pidfd < 0) {
			need(argc, i, 1);
			pidfd = (int)number(argv[++i], 10);
			if (pidfd < 3)
				die("usage", "-i needs an fd above 2");
		} else if (!strcmp(o, "-c") && con.fd < 0) {
			need(argc, i, 3);
			con.fd = (int)number(argv[i + 1], 10);
			con.max = size_number(argv[i + 2]);
			con.path = argv[i + 3];
			if (con.fd < 3 || con.max < 4096)
				die("usage", "-c needs an fd above 2 and a size of at least 4096");
			i += 3;
		} else if (!strcmp(o, "-w")) {
			need(argc, i, 1);
			workdir = argv[++i];
		} else {
			die("usage", "unknown or repeated too often: %s", o);
		}
	}
	errno = 0;
	if (i + 1 >= argc || argv[i + 1][0] != '/')
		die("usage", "ignite-jail OPTIONS -- /absolute/program [ARGS...]");
	char **program = argv + i + 1;
	if (bare) {
		if (con.fd < 0 || uid >= 0 || gid >= 0 || ngroups || ncgroups || nbinds || nnodes ||
		    nlinks || newnet || lowports || ownproc || fsize || foreground || pidfd >= 0 ||
		    strcmp(workdir, "/") != 0)
			die("usage", "-n takes -c and no other option");
		console_open(&con);
		console_start(&con, argc, argv);
		execv(program[0], program);
		die("exec", "%s", program[0]);
	}
	if (uid <= 0 || gid <= 0)
		die("usage", "-u and -g must name an unprivileged uid and gid");
	if (foreground && pidfd >= 0)  /* no parent to write it: FD would reach the program */
		die("usage", "-i reports a detached child's pid: it cannot be combined with -f");

	pid_t parent = getppid();
	if (!foreground) {
		pid_t child = fork();
		if (child < 0)
			die("fork", "detach");
		if (child > 0) {
			if (pidfd >= 0) {
				char text[32];
				int n = snprintf(text, sizeof(text), "%d\n", (int)child);
				if (write_all(pidfd, text, (size_t)n, -1) != 0)
					die("pid", "write to fd %d", pidfd);
			}
			return 0;
		}
		if (pidfd >= 0)
			close(pidfd);
		if (setsid() < 0)
			die("setsid", "new session");
	}
	for (int k = 0; k < ncgroups; k++)
		join_cgroup(cgroups[k]);
	if (con.fd >= 0)
		console_open(&con);

	int flags = CLONE_NEWNS | CLONE_NEWIPC | CLONE_NEWUTS | (newnet ? CLONE_NEWNET : 0);
	if (unshare(flags) != 0)
		die("unshare", "new namespaces");
	if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0)
		die("mount", "make / private");
	/* Opened in the new namespace (a bind source must be one of its mounts),
	 * before the tmpfs may hide them. */
	for (int k = 0; k < nbinds; k++) {
		binds[k].fd = open(binds[k].src, O_PATH | O_CLOEXEC);
		if (binds[k].fd < 0)
			die("open", "%s", binds[k].src);
	}
	if (mount("ignite-jail", NEWROOT, "tmpfs", MS_NOSUID | MS_NOEXEC,
		  "mode=0755,size=1m,nr_inodes=4096") != 0)
		die("mount", "tmpfs root");
	umask(0);
	for (int k = 0; k < nbinds; k++)
		do_bind(&binds[k]);
	for (int k = 0; k < nnodes; k++)
		do_node(&nodes[k]);
	for (int k = 0; k < nlinks; k++)
		do_link(&links[k]);
	if (ownproc) {
		/* Only the jailed process's own /proc/<pid> (and /proc/self): no
		 * other process is visible to its uid, no system-wide file. For a
		 * file QEMU may only reach through a descriptor it was given. */
		char dst[4096];
		inside(dst, sizeof(dst), "/proc");
		if (mkdir(dst, 0555) != 0 ||
		    mount("proc", dst, "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC,
			  "hidepid=invisible,subset=pid") != 0)
			die("mount", "its own /proc");
	}
	if (mount(NULL, NEWROOT, NULL, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NOEXEC, NULL) != 0)
		die("mount", "read-only root");
	if (chdir(NEWROOT) != 0 || syscall(SYS_pivot_root, ".", ".") != 0)
		die("pivot_root", "%s", NEWROOT);
	if (umount2(".", MNT_DETACH) != 0 || chdir("/") != 0)
		die("pivot_root", "detach the host's tree");

	for (int cap = 0; cap < 64; cap++)
		if (!(lowports && cap == CAP_NET_BIND_SERVICE) &&
		    prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 && errno != EINVAL)
			die("prctl", "drop capability %d", cap);
	if (lowports && prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0) != 0)
		die("prctl", "keep capabilities");
	errno = 0;
	if (setgroups((size_t)ngroups, groups) != 0)
		die("setgroups", "%d groups", ngroups);
	if (setresgid((gid_t)gid, (gid_t)gid, (gid_t)gid) != 0)
		die("setresgid", "%ld", gid);
	if (setresuid((uid_t)uid, (uid_t)uid, (uid_t)uid) != 0)
		die("setresuid", "%ld", uid);
	if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) != 0 && errno != EINVAL)
		die("prctl", "clear ambient capabilities");
	if (lowports) {
		struct __user_cap_header_struct head = {_LINUX_CAPABILITY_VERSION_3, 0};
		struct __user_cap_data_struct data[2] = {{0, 0, 0}, {0, 0, 0}};
		unsigned bit = 1U << CAP_NET_BIND_SERVICE;
		data[0].effective = data[0].permitted = data[0].inheritable = bit;
		if (syscall(SYS_capset, &head, data) != 0)
			die("capset", "CAP_NET_BIND_SERVICE only");
		if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, CAP_NET_BIND_SERVICE, 0, 0) != 0)
			die("prctl", "ambient CAP_NET_BIND_SERVICE");
		if (prctl(PR_SET_KEEPCAPS, 0, 0, 0, 0) != 0)
			die("prctl", "keep capabilities off");
	}
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
		die("prctl", "no-new-privs");
	if (setuid(0) == 0 || getuid() != (uid_t)uid) {
		errno = 0;
		die("setresuid", "root could be regained");
	}
	struct rlimit none = {0, 0};
	if (setrlimit(RLIMIT_CORE, &none) != 0)
		die("setrlimit", "core");
	umask(077);
	if (chdir(workdir) != 0)
		die("chdir", "%s", workdir);
	/* (changing uid cleared the death signal: set it again, as the new uid) */
	if (foreground && (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) != 0 || getppid() != parent))
		die("prctl", "die with the caller");
	if (con.fd >= 0)
		console_start(&con, argc, argv);
	if (fsize) {
		struct rlimit most = {(rlim_t)fsize, (rlim_t)fsize};
		if (setrlimit(RLIMIT_FSIZE, &most) != 0)
			die("setrlimit", "file size");
	}

	char *env[] = {"PATH=/usr/bin:/bin", NULL};
	execve(program[0], program, env);
	die("exec", "%s", program[0]);
	return 125;
}
