#!/usr/bin/env bash
# Fresh Debian 12 to a running VM: install what is missing, import Debian's
# cloud kernel, build the base image, boot it, and show it working.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"

ignite kernel import debian
if ! ignite inspect image base:latest >/dev/null 2>&1; then
  ignite image build base
fi
ignite image ls
ignite kernel ls

name=quickstart
if ignite inspect vm "$name" >/dev/null 2>&1; then
  ignite rm -f "$name"
fi
ignite run base:latest --name "$name" --cpus 2 --memory 512MB --size 4GB
echo "Waiting for the guest to reach multi-user..."
for _ in $(seq 1 600); do
  if ignite logs "$name" | grep -q "Reached target.*Multi-User"; then break; fi
  sleep 0.1
done
ignite ps
echo "--- last lines of 'ignite logs $name' ---"
ignite logs "$name" | tail -n 8
echo "--- ignite exec $name -- uname -a; systemctl is-system-running ---"
ignite exec "$name" -- uname -a
ignite exec "$name" -- systemctl is-system-running --wait || true
cat <<MSG

The VM '$name' is running. Try:
  .venv/bin/ignite exec -t $name -- bash   # a shell through the guest agent
  .venv/bin/ignite attach $name     # serial console (detach: Ctrl+P Ctrl+Q)
  .venv/bin/ignite stop $name       # graceful power-off
  .venv/bin/ignite rm -f $name
MSG
