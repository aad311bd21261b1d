"""Container images on the host: open sources, unpack layers, build ext4 root filesystems.

``archive`` describes an image source (docker-archive, oci-archive, OCI layout
directory, plain rootfs tarball) without unpacking it; ``layers`` applies its
layers into a directory with OCI whiteout semantics; ``rootfs`` turns that
directory into the ext4 file that VMs boot from.
"""
