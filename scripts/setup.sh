#!/usr/bin/env bash
# Install everything ignitevm needs on Debian 12: the host packages and a
# Python virtual environment (.venv) with the project and its dependencies.
# Idempotent, and quiet when everything is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(
  qemu-system-x86 qemu-utils      # the VMM and qemu-img (qcow2 overlays)
  busybox-static kmod             # the generated initramfs; depmod for kernel modules
  lz4 xz-utils zstd               # unpacking kernels (bzImage payloads; zstd layers: the zstandard library)
  e2fsprogs                       # mkfs.ext4 -d: image rootfs without mounting
  mmdebstrap                      # `ignite image build base`
  gcc libc6-dev                   # static guest helpers, built from source
  openssh-client                  # ignite ssh
  containernetworking-plugins     # CNI networking: bridge, host-local, portmap, firewall
  iptables iproute2               # what the CNI plugins drive; netns and links
  passt                           # rootless networking
  iperf3                          # bench/network.py
  python3 python3-venv python3-pip
  git file cpio ca-certificates
  docker-registry skopeo umoci    # tests and benches: a loopback registry, pushes, layouts
  containerd                      # tests: a private containerd (and ctr) for --runtime containerd
)

missing=()
for pkg in "${PACKAGES[@]}"; do
  [[ $pkg == \#* ]] && continue
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" \
    || missing+=("$pkg")
done

# Kernel import uses `apt-get download`, which needs package lists.
lists=$(find /var/lib/apt/lists -maxdepth 1 -name '*_Packages*' 2>/dev/null | head -n 1)
if (( ${#missing[@]} )) || [[ -z $lists ]]; then
  if (( EUID != 0 )); then
    echo "setup: need root to install: ${missing[*]:-apt package lists}" >&2
    exit 1
  fi
  echo "setup: apt-get update"
  apt-get update -qq
fi
if (( ${#missing[@]} )); then
  echo "setup: installing ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null
fi

# The virtual environment is built from Debian's own python3, the one users
# have (a newer python3 earlier on PATH, e.g. pyenv's, would hide what breaks on
# 3.11.2); one built by another interpreter is rebuilt.
PYTHON=${IGNITE_PYTHON:-/usr/bin/python3}
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "setup: error: ignitevm needs Python 3.11 or newer; $PYTHON is" \
    "$("$PYTHON" -V 2>&1 || echo missing)" >&2
  echo "setup: hint: run on Debian 12 (python3 3.11), or set IGNITE_PYTHON to a python3 >= 3.11" >&2
  exit 1
fi
want_home=$(dirname "$(readlink -f "$PYTHON")")
have_home=$(sed -n 's/^home = //p' .venv/pyvenv.cfg 2>/dev/null || true)
have_version=$(.venv/bin/python -c 'import sys; print(sys.version)' 2>/dev/null || true)
if [[ ! -x .venv/bin/python || $have_home != "$want_home" \
      || $have_version != "$("$PYTHON" -c 'import sys; print(sys.version)')" ]]; then
  [[ -e .venv ]] && echo "setup: .venv was built by another Python, rebuilding it"
  rm -rf .venv
  echo "setup: creating .venv with $PYTHON ($("$PYTHON" -V 2>&1))"
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.ignitevm-installed
# (compat: the project folder on sys.path by a .pth line, no import hook to
# cost every CLI start-up ~10 ms; bin/ignite is copied into .venv/bin at install,
# so a change to it installs again, as one to pyproject.toml does)
pipargs=(-q --disable-pip-version-check -e '.[test]' --config-settings editable_mode=compat)
want=$( { cat pyproject.toml bin/ignite; echo "${pipargs[*]}"; } | sha256sum | cut -d' ' -f1)
if [[ ! -f $stamp || $(cat "$stamp") != "$want" ]]; then
  echo "setup: installing Python dependencies into .venv"
  .venv/bin/python -m pip install "${pipargs[@]}"
  echo "$want" > "$stamp"
fi
# setuptools only builds the project (pip brings its own copy for that); left in
# .venv, its distutils-precedence.pth runs at every Python start-up (~1 ms of
# each command)
if .venv/bin/python -c 'import importlib.util as u, sys; sys.exit(not u.find_spec("setuptools"))'; then
  .venv/bin/python -m pip uninstall -q -y --disable-pip-version-check setuptools
fi
# Byte-compiled once here: with PYTHONDONTWRITEBYTECODE set, every start-up
# would compile the sources again
.venv/bin/python -m compileall -q -j0 ignitevm
