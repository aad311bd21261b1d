#!/bin/sh
# ignitevm initramfs init: load the virtio drivers, mount the VM disk, apply
# the per-VM config the host handed in, then hand over to the image's init.
# Runs under busybox; every step that fails says so on the console and powers
# the VM off (the host then reports the VM as stopped).
export PATH=/bin:/sbin:/usr/bin:/usr/sbin

say() { echo "ignitevm-init: $*"; }
die() {
    say "error: $*"
    sync
    poweroff -f
    sleep 5
}

# /dev, /proc and /sys in one process (under TCG each fork costs ~10-20 ms).
mount -a -T /etc/fstab

read -r cmdline < /proc/cmdline  # (a builtin: under TCG each fork costs ~10-20 ms)
for arg in $cmdline; do
    case "$arg" in
        ignite.probe=1) say "probe ok"; poweroff -f; sleep 5 ;;
        ignite.debug=1) set -x ;;
    esac
done

# All in one process (busybox insmod would be a fork and exec per module).
# Those that fail say so; what they drive then does not appear below.
/bin/ignite-modload /lib/modules

ROOT= CFG= n=0
while [ -z "$ROOT" ] || [ -z "$CFG" ]; do
    for d in /sys/block/vd*; do
        [ -e "$d/serial" ] || continue
        read -r serial < "$d/serial"
        case "$serial" in
            ignite-root) ROOT=/dev/${d##*/} ;;
            ignite-cfg) CFG=/dev/${d##*/} ;;
        esac
    done
    n=$((n + 1))
    [ $n -gt 500 ] && die "the VM disks did not appear (root=${ROOT:-none} config=${CFG:-none})"
    [ -z "$ROOT" ] || [ -z "$CFG" ] && usleep 10000
done

# (devtmpfs is one instance: /dev/pts made here is there in /newroot/dev too)
mkdir -p /dev/pts
tar -xf "$CFG" -C /cfg || die "cannot read the VM config disk $CFG"
. /cfg/vm.env

mount -t ext4 -o rw "$ROOT" /newroot || die "cannot mount the VM disk $ROOT"
/bin/ignite-resize /newroot "$ROOT" || say "warning: could not grow the root filesystem"

# Per-VM files: hostname, copied files, keys. The shared image is never written:
# these land in the VM's own copy-on-write layer.
if [ -d /cfg/files ]; then
    cp -a /cfg/files/. /newroot/ || die "cannot copy the VM files into place"
fi
if [ -f /cfg/hosts ] && [ ! -s /newroot/etc/hosts ]; then
    cp /cfg/hosts /newroot/etc/hosts
fi
[ -n "$IGNITE_HOSTNAME" ] && echo "$IGNITE_HOSTNAME" > /proc/sys/kernel/hostname

# SSH: the VM's own host key (made on the host), and root's authorized key.
if [ -d /cfg/ssh ] && [ -d /newroot/etc/ssh ]; then
    cp /cfg/ssh/ssh_host_ed25519_key /cfg/ssh/ssh_host_ed25519_key.pub /newroot/etc/ssh/
    chmod 600 /newroot/etc/ssh/ssh_host_ed25519_key
fi
if [ -f /cfg/ssh/authorized_keys ]; then
    mkdir -p /newroot/root/.ssh && chmod 700 /newroot/root/.ssh
    cp /cfg/ssh/authorized_keys /newroot/root/.ssh/authorized_keys
    chmod 600 /newroot/root/.ssh/authorized_keys
fi

# Volumes: host block devices, mounted where the VM spec says.
for vol in $IGNITE_VOLUMES; do
    name=${vol%%:*} path=${vol#*:} dev= n=0
    while [ -z "$dev" ] && [ $n -lt 300 ]; do
        for d in /sys/block/vd*; do
            # (the serial file has no trailing newline: read fails but still sets s)
            s=; [ -e "$d/serial" ] && read -r s < "$d/serial"
            [ "$s" = "ignite-vol-$name" ] && dev=/dev/${d##*/}
        done
        [ -z "$dev" ] && usleep 10000
        n=$((n + 1))
    done
    if [ -z "$dev" ]; then
        say "warning: volume $name did not appear"
    elif ! { mkdir -p "/newroot$path" && mount "$dev" "/newroot$path"; }; then
        say "warning: could not mount volume $name on $path"
    fi
done

# Network: the address, route and name servers the host chose (user mode, or
# the ones CNI gave; the kernel has no ip= autoconfiguration).
if [ -n "$IGNITE_IP" ]; then
    ip link set lo up
    [ -n "$IGNITE_MTU" ] && ip link set eth0 mtu "$IGNITE_MTU"
    { ip link set eth0 up && ip addr add "$IGNITE_IP" dev eth0 &&
      { [ -z "$IGNITE_GW" ] || ip route add default via "$IGNITE_GW"; }; } ||
        say "warning: could not configure eth0"
    # One packet out at once: the host side learns the guest's MAC before
    # anyone connects in (passt answers nothing until it has seen one).
    [ -n "$IGNITE_GW" ] && { ping -c 1 -W 1 "$IGNITE_GW" >/dev/null 2>&1 & }
    for nic in $IGNITE_MORE_NICS; do  # eth1=10.77.0.5/24 … (no default route)
        { ip link set "${nic%%=*}" up && ip addr add "${nic#*=}" dev "${nic%%=*}"; } ||
            say "warning: could not configure ${nic%%=*}"
    done
    if [ ! -L /newroot/etc/resolv.conf ] && [ -d /newroot/etc ] &&
        { [ -n "$IGNITE_DNS" ] || [ -n "$IGNITE_DNS_SEARCH" ]; }; then
        {
            [ -n "$IGNITE_DNS_SEARCH" ] && echo "search $IGNITE_DNS_SEARCH"
            for ns in $IGNITE_DNS; do echo "nameserver $ns"; done
        } > /newroot/etc/resolv.conf
    fi
fi

# devtmpfs in the new root too; the initramfs keeps its own /dev mount (the
# agent holds its virtio ports open there). Pseudo-terminals from the first
# moment: `exec -t` may come before the image's init mounts its own (systemd
# then keeps this one). /proc and /sys too, for the same reason (an image's
# init that mounts its own mounts over them; systemd keeps these). All in one
# mount process.
[ -d /newroot/dev ] || mkdir -p /newroot/dev/pts
{
    [ -d /newroot/dev ] && echo "devtmpfs /newroot/dev devtmpfs mode=0755,nosuid 0 0"
    echo "devpts /newroot/dev/pts devpts nosuid,noexec,gid=5,mode=620,ptmxmode=0666 0 0"
    [ -d /newroot/proc ] && echo "proc /newroot/proc proc nosuid,noexec,nodev 0 0"
    [ -d /newroot/sys ] && echo "sysfs /newroot/sys sysfs nosuid,noexec,nodev 0 0"
} > /run/fstab.newroot
mount -a -T /run/fstab.newroot

if [ -n "$IGNITE_INIT" ] && { [ -x "/newroot$IGNITE_INIT" ] || [ -L "/newroot$IGNITE_INIT" ]; }; then
    # The agent serves exec/cp/shutdown from the image's root, beside its init.
    /bin/ignite-agent --chroot /newroot || say "warning: the guest agent did not start"
    umount -l /sys /proc /dev 2>/dev/null
    say "starting $IGNITE_INIT"
    exec switch_root /newroot "$IGNITE_INIT"
fi
if [ -f /cfg/entrypoint ]; then
    # No init in the image: the agent is PID 1 and runs its Entrypoint/Cmd.
    say "no init in the image, the agent runs its command"
    exec /bin/ignite-agent --init /newroot /cfg/entrypoint
fi
die "the image has no ${IGNITE_INIT:-init} and no command to run"
