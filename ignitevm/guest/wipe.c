/* Freeing the initramfs at handover (see wipe.h). */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "wipe.h"

#include <dirent.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

void wipe(int dfd, dev_t dev)
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
    else if (dfd >= 0)
        close(dfd);
}
