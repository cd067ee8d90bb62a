#!/usr/bin/env bash
# Installs what a fresh Debian 12 machine lacks for this project — the Debian packages, then
# `npm ci` with a check that the native modules really built — and does nothing (in about a
# second) when everything is there. Used by `make test`, `make demo` and .ci/run.
#
#   bash test/lab/deps.sh test    everything the build and every test tier need (default)
#   bash test/lab/deps.sh demo    what `make demo` needs
set -euo pipefail
cd "$(dirname "$0")/../.."
what=${1:-test}

# Keep this list in step with README.md ("Tests").
DEMO_PACKAGES=(ca-certificates make g++ python3 busybox-static cpio zstd binutils file kmod
  qemu-system-x86 ipxe ipxe-qemu ovmf iproute2)
TEST_PACKAGES=("${DEMO_PACKAGES[@]}" qemu-utils udhcpc dnsmasq-base tftp-hpa atftp chromium)
case "$what" in
  demo) packages=("${DEMO_PACKAGES[@]}") ;;
  test) packages=("${TEST_PACKAGES[@]}") ;;
  *) echo "usage: $0 [test|demo]" >&2; exit 2 ;;
esac

major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
if [ "$major" -lt 20 ]; then
  echo "Node.js 20 or newer is needed (found: $(node --version 2>/dev/null || echo none)); on Debian 12: the NodeSource nodejs package" >&2
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

# npm ci when node_modules is missing or older than the lock file.
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "== npm ci"
  npm ci --no-audit --no-fund
fi
# npm 11 warns about install scripts; make sure the native builds really exist.
if [ ! -f node_modules/better-sqlite3/build/Release/better_sqlite3.node ]; then
  echo "== better-sqlite3: building the native module"
  (cd node_modules/better-sqlite3 && npx --yes node-gyp rebuild --release)
fi
node -e "require('better-sqlite3')(':memory:').prepare('select 1').get(); require('sockopt')" \
  || { echo "native modules did not build (better-sqlite3 or sockopt): rm -rf node_modules and run this again; g++ and python3 are needed" >&2; exit 1; }
