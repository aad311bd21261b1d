/*
 * A test driver for the parsing parts of ignite-init (tests/unit/test_guest_init.py),
 * linked with init_env.c, init_cfg.c and init_fs.c:
 *   init_harness env FILE               vm.env as the init reads it: KEY=<hex of value> lines
 *   init_harness unpack DISK ROOT CFG   the config disk unpacked; prints rc=N
 */
#include "init.h"

#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int debug;

void say(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    printf("say: ");
    vprintf(fmt, ap);
    printf("\n");
    va_end(ap);
}

void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    printf("die: ");
    vprintf(fmt, ap);
    printf("\n");
    va_end(ap);
    exit(3);
}

void trace(const char *fmt, ...)
{
    (void)fmt;
}

int main(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[1], "env") == 0) {
        static char text[65536];
        static struct env e;
        char err[160];
        int fd = open(argv[2], O_RDONLY);
        ssize_t n = fd < 0 ? -1 : read(fd, text, sizeof text);
        if (n < 0)
            return 2;
        if (env_parse(&e, text, (size_t)n, err, sizeof err) < 0) {
            printf("error: %s\n", err);
            return 1;
        }
        for (int i = 0; i < e.n; i++) {
            printf("%s=", e.key[i]);
            for (const char *p = e.val[i]; *p; p++)
                printf("%02x", (unsigned char)*p);
            printf("\n");
        }
        return 0;
    }
    if (argc == 5 && strcmp(argv[1], "unpack") == 0) {
        int root = open(argv[3], O_RDONLY | O_DIRECTORY);
        int cfg = open(argv[4], O_RDONLY | O_DIRECTORY);
        if (root < 0 || cfg < 0)
            return 2;
        printf("rc=%d\n", cfg_unpack(argv[2], root, cfg));
        return 0;
    }
    fprintf(stderr, "usage: init_harness env FILE | unpack DISK ROOT CFG\n");
    return 2;
}
