/*
 * A test driver for the guest's network module (ignitevm/guest/net.c,
 * tests/unit/test_guest_net.py), run on the host in a network namespace of
 * its own that it made itself (anywhere else it would change a real one):
 *   net_harness run SCRIPT     sh -c SCRIPT in a new network namespace
 *   net_harness FILE ETC       (in SCRIPT) the key=value lines of FILE applied
 *                              as the init and the agent apply them;
 *                              resolv.conf written in the folder ETC; each
 *                              warning printed as "warn: ..."
 */
#define _GNU_SOURCE
#include <sched.h>
#include "net.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static void warn(void *ctx, const char *fmt, ...)
{
    va_list ap;
    (void)ctx;
    va_start(ap, fmt);
    printf("warn: ");
    vprintf(fmt, ap);
    printf("\n");
    va_end(ap);
}

int main(int argc, char **argv)
{
    static char text[8192];
    static struct net_cfg net;
    struct stat ns;
    char mine[32];
    if (argc != 3)
        return 2;
    if (strcmp(argv[1], "run") == 0) {
        if (unshare(CLONE_NEWNET) < 0 || stat("/proc/self/ns/net", &ns) < 0) {
            printf("no network namespace: %s\n", strerror(errno));
            return 3;
        }
        snprintf(mine, sizeof mine, "%lu", (unsigned long)ns.st_ino);
        setenv("NET_HARNESS_NS", mine, 1);
        execl("/bin/sh", "sh", "-c", argv[2], (char *)NULL);
        return 2;
    }
    const char *made = getenv("NET_HARNESS_NS");
    if (stat("/proc/self/ns/net", &ns) < 0 || !made ||
        strtoul(made, NULL, 10) != (unsigned long)ns.st_ino) {
        printf("refused: not in the network namespace that net_harness run made\n");
        return 2;
    }
    int fd = open(argv[1], O_RDONLY);
    ssize_t n = fd < 0 ? -1 : read(fd, text, sizeof text - 1);
    if (n < 0)
        return 2;
    text[n] = '\0';
    net_parse(&net, text, warn, NULL);
    net_apply(&net, warn, NULL);
    int etc = open(argv[2], O_PATH | O_DIRECTORY);
    if (net.dns_given && net_resolv(etc, "resolv.conf", net.dns, net.search) < 0)
        printf("warn: resolv.conf: %s\n", strerror(errno));
    return 0;
}
