"""Kernels: import from Debian's packages or files, and the generated initramfs."""
