/* Shared by ignite-init and ignite-agent: freeing the initramfs at handover. */
#ifndef IGNITE_WIPE_H
#define IGNITE_WIPE_H

#include <sys/types.h>

/* Delete what is on device ``dev`` below the folder ``dfd`` (as switch_root
 * does to the initramfs), never following a link; closes ``dfd``. */
void wipe(int dfd, dev_t dev);

#endif
