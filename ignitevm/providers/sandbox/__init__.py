"""Confinement of each VM's VMM process (Firecracker's jailer is the model).

``jail`` (the default): the VMM runs under its own unprivileged uid and gid
(allocated per VM, ``ids``), with no capabilities, no-new-privs and the VMM's
own seccomp filter, in a private mount namespace whose read-only tmpfs root
holds only the VM's files, the VMM binary, its libraries and firmware and a
few device nodes (``jail.c``, built once with the host's gcc), and in
cgroups that cap its memory, CPU and processes (``cgroups``).

``none``: the VMM runs as the caller (root), as before; for debugging only.
"""

from __future__ import annotations

MODES = ("jail", "none")
DEFAULT = "jail"
