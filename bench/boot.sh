#!/usr/bin/env bash
# Boot benchmarks (`make bench-boot`, issue 4 "Figures to reach and report"), side by side in
# one run:
#
#   storm50   50 cold simulated PXE clients (bootstorm: PXE DHCP, TFTP undionly.kpxe, iPXE DHCP,
#             boot script, kernel, initrd): the dispatcher vs dnsmasq no-ping + nginx, RUNS
#             alternating runs each, medians. Target: dispatcher ≤ 1.1× dnsmasq, no failed client.
#   storm300  the same with 300 clients, RUNS_300 alternating runs. Target: ≤ 0.5× dnsmasq, and no
#             DISCOVER dropped by the dispatcher's namespace (UDP RcvbufErrors before/after).
#   dhcp      the DHCP lease rate: bench/dhcp-rate.sh (perfdhcp against the dispatcher and Kea).
#   qemu      real boots: power-on (QEMU start) to the agent's hello (`agent.hello` on the boot
#             timeline), 1 and 4 machines at once, BIOS and UEFI (bench/boot-qemu.ts).
#
#   sudo bash bench/boot.sh                         # everything
#   PARTS="storm50" RUNS=7 bash bench/boot.sh       # one part, more runs
#   PARTS="qemu" QEMU_SETS="bios:1 uefi:4" bash bench/boot.sh
#
# Knobs: PARTS (storm50 storm300 dhcp qemu), RUNS (5), RUNS_300 (3), BS_SRV_NS / BS_CLI_NS
# (bs-srv / bs-cli; must not exist), BOOT_BENCH_OUT (logs; default a new /tmp/lc-bench-boot.*),
# DHCP_RATE_ENV (environment for dhcp-rate.sh, words without spaces, e.g. "PERIOD=5 GIVE_UP_AFTER=1"),
# QEMU_SETS ("bios:1 bios:4 uefi:1 uefi:4"), LC_SENDFILE=0 (the dispatcher's JS write path).
# DISPATCHER_NODE_FLAGS (Node flags for the storms' dispatcher, e.g. "--cpu-prof --cpu-prof-dir=/tmp/prof").
#
# Every figure is a line `RESULT name=<what> <key>=<value> ...`. Whatever this script starts is
# stopped by PID, and the namespaces it made are removed, on exit, error or Ctrl-C.
set -Eeuo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

PARTS=${PARTS:-"storm50 storm300 dhcp qemu"}
RUNS=${RUNS:-5}
RUNS_300=${RUNS_300:-3}
SRV_NS=${BS_SRV_NS:-bs-srv}
CLI_NS=${BS_CLI_NS:-bs-cli}
BOOTSTORM_DIR=${BOOTSTORM_DIR:-$ROOT/../shared/bench-peers/bootstorm}
BOOTSTORM=$BOOTSTORM_DIR/bootstorm
BASELINE=$BOOTSTORM_DIR/baseline-dnsmasq.sh
OUT=${BOOT_BENCH_OUT:-$(mktemp -d /tmp/lc-bench-boot.XXXXXX)}
mkdir -p "$OUT"

DISPATCHER_PID=""
CHILD_PID=""
NS_MADE=0
LINE=""

say() { echo "[$(date +%T)] $*" >&2; }
die() { say "FAIL: $*"; exit 1; }

stop_pid() { # stop_pid PID: TERM, up to 5 s, then KILL
  local pid=$1 i
  [ -n "$pid" ] || return 0
  kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
  kill -TERM "$pid" 2>/dev/null || true
  for i in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
  wait "$pid" 2>/dev/null || true
}

netns_down() {
  [ "$NS_MADE" = 1 ] || return 0
  "$BOOTSTORM" netns-down --server-ns "$SRV_NS" --client-ns "$CLI_NS" >/dev/null 2>&1 || true
  for ns in "$SRV_NS" "$CLI_NS"; do ip netns del "$ns" 2>/dev/null || true; done
  NS_MADE=0
}

cleanup() {
  local rc=$?
  set +e
  trap - EXIT INT TERM
  stop_pid "$CHILD_PID"
  stop_pid "$DISPATCHER_PID"
  netns_down
  say "logs in $OUT"
  exit "$rc"
}
trap cleanup EXIT
trap 'say "interrupted"; exit 130' INT
trap 'say "terminated"; exit 143' TERM

result() { echo "RESULT $*" | tee -a "$OUT/results.txt"; }

# Runs a command in the background (so a signal reaches it through cleanup) and waits for it.
run_child() { # run_child OUTFILE CMD...
  local out=$1 rc=0
  shift
  "$@" >"$out" 2>&1 &
  CHILD_PID=$!
  wait "$CHILD_PID" || rc=$?
  CHILD_PID=""
  return "$rc"
}

median() { # median NUMBERS...
  printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) print "nan"; else if (NR % 2) print v[(NR + 1) / 2]; else printf "%.3f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
field() { # field KEY RESULT_LINE
  sed -n "s/.*[ ]$1=\([^ ]*\).*/\1/p" <<<"$2"
}
load_avg() { cut -d' ' -f1-3 /proc/loadavg; }
rcvbuf_errors() { # the namespace's UDP RcvbufErrors (/proc/net/snmp, the Udp: line)
  ip netns exec "$SRV_NS" cat /proc/net/snmp | awk '/^Udp:/ { if (!h) { for (i = 1; i <= NF; i++) col[$i] = i; h = 1 } else print $col["RcvbufErrors"] }'
}

[ "$(id -u)" = 0 ] || die "run as root (namespaces, ports 67/69, QEMU taps)"

# ---------------------------------------------------------------------------------- storms
storm_prereqs() {
  [ -x "$BOOTSTORM" ] || die "bootstorm not found at $BOOTSTORM (BOOTSTORM_DIR=)"
  command -v nginx >/dev/null || {
    say "installing nginx-light (the baseline's HTTP server)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nginx-light >/dev/null
  }
  command -v dnsmasq >/dev/null || die "dnsmasq missing: apt-get install dnsmasq-base"
  for f in dist/bin/dispatcher.mjs dist/image/vmlinuz dist/image/initrd.img pxe/bin/undionly.kpxe; do
    [ -f "$f" ] || die "$f missing: make build image pxe"
  done
  for ns in "$SRV_NS" "$CLI_NS"; do
    [ -e "/run/netns/$ns" ] && die "namespace $ns already exists (a killed run? ip netns del $ns), or set BS_SRV_NS/BS_CLI_NS"
  done
  return 0
}

# One storm against the dispatcher: fresh namespaces and data dir (cold clients). Sets LINE to
# bootstorm's RESULT line with the namespace's RcvbufErrors delta appended. (Not run in $(...):
# the PIDs and namespaces it makes must be known to cleanup.)
storm_dispatcher() { # storm_dispatcher CLIENTS TAG
  local n=$1 tag=$2 data="$OUT/data-$2" before after line rc=0 i
  rm -rf "$data"
  "$BOOTSTORM" netns-up --server-ns "$SRV_NS" --client-ns "$CLI_NS" >/dev/null
  NS_MADE=1
  ip netns exec "$SRV_NS" node ${DISPATCHER_NODE_FLAGS:-} dist/bin/dispatcher.mjs --interface bs-br0 --dhcp full --range 10.88.1.1-10.88.15.254 \
    --data-dir "$data" --image dist/image --pxe-dir pxe/bin --http-port 8080 >"$OUT/dispatcher-$tag.log" 2>&1 &
  DISPATCHER_PID=$!
  for i in $(seq 300); do
    grep -q '"dispatcher started"' "$OUT/dispatcher-$tag.log" && break
    kill -0 "$DISPATCHER_PID" 2>/dev/null || { cat "$OUT/dispatcher-$tag.log" >&2; die "dispatcher exited"; }
    sleep 0.1
  done
  grep -q '"dispatcher started"' "$OUT/dispatcher-$tag.log" || die "dispatcher did not start in 30 s"
  # DHCP is the last service to start and drops what arrives in the 50 ms after its bind (see
  # dispatcher/src/dhcp/server.ts): a storm sent at once would lose every first DISCOVER.
  sleep 0.5
  before=$(rcvbuf_errors)
  run_child "$OUT/storm-$tag.txt" "$BOOTSTORM" run --client-ns "$CLI_NS" --server-ns "$SRV_NS" --clients "$n" \
    --json "$OUT/storm-$tag.json" || rc=$?
  after=$(rcvbuf_errors)
  kill -0 "$DISPATCHER_PID" 2>/dev/null || die "the dispatcher died during the $n-client storm (see $OUT/dispatcher-$tag.log)"
  stop_pid "$DISPATCHER_PID"
  DISPATCHER_PID=""
  netns_down
  line=$(grep '^RESULT ' "$OUT/storm-$tag.txt" | tail -1 || true)
  [ -n "$line" ] || die "bootstorm printed no RESULT line (exit $rc): $(tail -3 "$OUT/storm-$tag.txt")"
  LINE="$line rcvbuf_errors=$((after - before))"
}

# One storm against dnsmasq no-ping + nginx, through the peer's own baseline script. Sets LINE.
storm_dnsmasq() { # storm_dnsmasq CLIENTS TAG
  local n=$1 tag=$2 line rc=0
  run_child "$OUT/baseline-$tag.txt" env BS_SRV_NS="$SRV_NS" BS_CLI_NS="$CLI_NS" BS_CLIENTS="$n" BS_DNSMASQ_OPTS=no-ping \
    BS_KERNEL="$ROOT/dist/image/vmlinuz" BS_INITRD="$ROOT/dist/image/initrd.img" BS_OUT="$OUT/baseline-$tag" \
    bash "$BASELINE" || rc=$?
  line=$(grep '^RESULT ' "$OUT/baseline-$tag.txt" | tail -1 || true)
  [ -n "$line" ] || die "baseline printed no RESULT line (exit $rc): $(tail -3 "$OUT/baseline-$tag.txt")"
  LINE=$line
}

# Alternating runs (dispatcher first, then dnsmasq, RUNS times), then medians and the ratio.
storm_part() { # storm_part CLIENTS RUNS TARGET_RATIO
  local n=$1 runs=$2 target=$3 r ours theirs
  local -a our_s=() their_s=() our_p95=() their_p95=() our_failed=() drops=()
  say "storm: $n cold clients, $runs alternating runs (load $(load_avg))"
  for r in $(seq "$runs"); do
    storm_dispatcher "$n" "$n-$r"; ours=$LINE
    storm_dnsmasq "$n" "$n-$r"; theirs=$LINE
    echo "  run $r dispatcher: $ours" >&2
    echo "  run $r dnsmasq:    $theirs" >&2
    our_s+=("$(field seconds "$ours")"); their_s+=("$(field seconds "$theirs")")
    our_p95+=("$(field p95_s "$ours")"); their_p95+=("$(field p95_s "$theirs")")
    our_failed+=($(($(field clients "$ours") - $(field ok "$ours"))))
    drops+=("$(field rcvbuf_errors "$ours")")
    result "name=storm-run clients=$n run=$r server=dispatcher seconds=$(field seconds "$ours") p95_s=$(field p95_s "$ours") ok=$(field ok "$ours") rcvbuf_errors=$(field rcvbuf_errors "$ours") mb_per_s=$(field mb_per_s "$ours")"
    result "name=storm-run clients=$n run=$r server=dnsmasq-no-ping seconds=$(field seconds "$theirs") p95_s=$(field p95_s "$theirs") ok=$(field ok "$theirs") mb_per_s=$(field mb_per_s "$theirs")"
  done
  local ms mt failed maxdrops ratio ok
  ms=$(median "${our_s[@]}"); mt=$(median "${their_s[@]}")
  failed=$(printf '%s\n' "${our_failed[@]}" | awk '{ s += $1 } END { print s + 0 }')
  maxdrops=$(printf '%s\n' "${drops[@]}" | sort -g | tail -1)
  ratio=$(awk -v a="$ms" -v b="$mt" 'BEGIN { printf "%.2f", a / b }')
  ok=$(awk -v r="$ratio" -v t="$target" -v f="$failed" -v d="$maxdrops" 'BEGIN { print (r <= t && f == 0 && d == 0) ? "yes" : "no" }')
  result "name=storm clients=$n runs=$runs server=dispatcher median_s=$ms p95_s_median=$(median "${our_p95[@]}") failed_clients=$failed rcvbuf_errors_max=$maxdrops"
  result "name=storm clients=$n runs=$runs server=dnsmasq-no-ping median_s=$mt p95_s_median=$(median "${their_p95[@]}")"
  result "name=storm-ratio clients=$n ratio=$ratio target=$target met=$ok load=\"$(load_avg)\""
}

for part in $PARTS; do
  case $part in
    storm50) storm_prereqs; storm_part 50 "$RUNS" 1.1 ;;
    storm300) storm_prereqs; storm_part 300 "$RUNS_300" 0.5 ;;
    dhcp) say "DHCP lease rate (bench/dhcp-rate.sh)"
      run_child "$OUT/dhcp-rate.txt" env ${DHCP_RATE_ENV:-} bash bench/dhcp-rate.sh || die "dhcp-rate.sh failed: $(tail -5 "$OUT/dhcp-rate.txt")"
      grep '^RESULT ' "$OUT/dhcp-rate.txt" | tee -a "$OUT/results.txt" ;;
    qemu) say "real boots in QEMU (bench/boot-qemu.ts)"
      node_modules/.bin/esbuild bench/boot-qemu.ts --bundle --platform=node --format=esm --target=node24 \
        --packages=external --log-level=warning --outfile=dist/bench/boot-qemu.mjs
      run_child "$OUT/qemu.txt" env QEMU_SETS="${QEMU_SETS:-bios:1 bios:4 uefi:1 uefi:4}" BOOT_BENCH_OUT="$OUT" node dist/bench/boot-qemu.mjs \
        || die "boot-qemu failed: $(tail -20 "$OUT/qemu.txt")"
      grep '^RESULT ' "$OUT/qemu.txt" | tee -a "$OUT/results.txt" ;;
    *) die "unknown part $part (storm50 storm300 dhcp qemu)" ;;
  esac
done
echo "== all figures (also in $OUT/results.txt)"
cat "$OUT/results.txt"
