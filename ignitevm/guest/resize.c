/*
 * ignite-resize: grow a mounted ext4 filesystem to the size of its block
 * device, online, with the EXT4_IOC_RESIZE_FS ioctl. Used by the initramfs
 * init so that a VM's --size shows inside the guest while the shared image
 * file stays small. Usage: ignite-resize <mountpoint> <device>
 */
#include <fcntl.h>
#include <linux/fs.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <errno.h>
#include <sys/ioctl.h>
#include <sys/statvfs.h>
#include <unistd.h>

#define EXT4_IOC_RESIZE_FS _IOW('f', 16, uint64_t)

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: ignite-resize <mountpoint> <device>\n");
        return 2;
    }
    int dev = open(argv[2], O_RDONLY | O_CLOEXEC);
    if (dev < 0) {
        fprintf(stderr, "ignite-resize: %s: %s\n", argv[2], strerror(errno));
        return 1;
    }
    uint64_t bytes = 0;
    if (ioctl(dev, BLKGETSIZE64, &bytes) < 0) {
        fprintf(stderr, "ignite-resize: size of %s: %s\n", argv[2], strerror(errno));
        return 1;
    }
    close(dev);
    int fd = open(argv[1], O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) {
        fprintf(stderr, "ignite-resize: %s: %s\n", argv[1], strerror(errno));
        return 1;
    }
    struct statvfs st;
    if (fstatvfs(fd, &st) < 0) {
        fprintf(stderr, "ignite-resize: statvfs %s: %s\n", argv[1], strerror(errno));
        return 1;
    }
    uint64_t blocks = bytes / st.f_frsize;
    if (blocks <= st.f_blocks)
        return 0;
    if (ioctl(fd, EXT4_IOC_RESIZE_FS, &blocks) < 0) {
        fprintf(stderr, "ignite-resize: resize %s: %s\n", argv[1], strerror(errno));
        return 1;
    }
    return 0;
}
