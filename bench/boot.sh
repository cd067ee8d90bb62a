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
#   wire      storms over a rate-limited link (`make bench-boot-wire`, issue 15): tc on the veth
#             between the namespaces, WIRE_SETS of rate:clients, RUNS_WIRE alternating runs each;
#             completion (first DISCOVER to the last client's initrd) against the wire limit
#             (clients x bytes per boot / rate) and each server's CPU seconds per boot. Not part
#             of the default PARTS (about 20 minutes at 1 Gbit/s). Targets: <= 1.1x the wire
#             limit and no slower than dnsmasq + nginx in the same run.
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
# DISPATCHER_MJS (the dispatcher bundle; default dist/bin/dispatcher.mjs). WIRE_SETS ("1gbit:50
# 1gbit:300 10gbit:50 10gbit:300"; rates in tc's words: 100mbit, 1gbit, 2.5gbit, 10gbit),
# RUNS_WIRE (3), WIRE_OVERHEAD (24: bytes per frame a real Ethernet wire adds to what tc counts;
# 0 shapes the frames at the nominal rate).
#
# Every figure is a line `RESULT name=<what> <key>=<value> ...`. Whatever this script starts is
# stopped by PID, and the namespaces it made are removed, on exit, error or Ctrl-C.
set -Eeuo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

PARTS=${PARTS:-"storm50 storm300 dhcp qemu"}
RUNS=${RUNS:-5}
RUNS_300=${RUNS_300:-3}
RUNS_WIRE=${RUNS_WIRE:-3}
WIRE_SETS=${WIRE_SETS:-"1gbit:50 1gbit:300 10gbit:50 10gbit:300"}
WIRE_OVERHEAD=${WIRE_OVERHEAD:-24}
WIRE_RATE=""   # the rate of the storm being run (tc words), empty: the link is not shaped
DISPATCHER_MJS=${DISPATCHER_MJS:-dist/bin/dispatcher.mjs}
SRV_NS=${BS_SRV_NS:-bs-srv}
CLI_NS=${BS_CLI_NS:-bs-cli}
BOOTSTORM_DIR=${BOOTSTORM_DIR:-$ROOT/../shared/bench-peers/bootstorm}
BOOTSTORM=$BOOTSTORM_DIR/bootstorm
BASELINE=$BOOTSTORM_DIR/baseline-dnsmasq.sh
OUT=${BOOT_BENCH_OUT:-$(mktemp -d /tmp/lc-bench-boot.XXXXXX)}
mkdir -p "$OUT"

DISPATCHER_PID=""
CHILD_PID=""
WATCH_PID=""
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
  stop_pid "$WATCH_PID"
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

# A process's CPU time so far, utime + stime in clock ticks (all its threads), from
# /proc/PID/stat or /proc/PID/task/TID/stat; 0 when it is gone. Builtins only: the baseline's
# watcher calls it in a loop during the storm and must not fork there.
PROC_TICKS=0
proc_ticks() { # proc_ticks STATFILE: sets PROC_TICKS
  local line
  local -a f
  PROC_TICKS=0
  { read -r line <"$1"; } 2>/dev/null || return 0
  read -r -a f <<<"${line##*) }" # the fields after the command name, from field 3 (state)
  PROC_TICKS=$((f[11] + f[12]))  # fields 14 and 15
}
CLK_TCK=$(getconf CLK_TCK)
ticks_s() { awk -v t="$1" -v hz="$CLK_TCK" 'BEGIN { printf "%.2f", t / hz }'; }
calc() { awk "BEGIN { printf \"%.${2:-3}f\", $1 }"; } # calc EXPRESSION [DECIMALS]

# A tc rate word (100mbit, 1gbit, 2.5gbit, 10gbit) in bits per second.
rate_bps() {
  awk -v r="$1" 'BEGIN { n = r + 0; u = tolower(substr(r, length(n "") + 1));
    m = (u == "gbit") ? 1e9 : (u == "mbit") ? 1e6 : (u == "kbit") ? 1e3 : (u == "bit") ? 1 : 0;
    if (n <= 0 || m == 0) exit 1; printf "%.0f", n * m }' || die "rate $1: not a tc rate such as 1gbit or 10gbit"
}

# Shapes both directions of the veth between the namespaces to WIRE_RATE: the server's port
# bs-srv0 (server -> clients, the image bytes) and the clients' bs-cli0 (which the macvlans
# send through). Only ever in the namespaces this bench made, never on a host interface.
# A head machine's NIC is the bottleneck of a storm, and there systemd's fq_codel serves sparse
# flows (DHCP, lock-step TFTP, ARP) before the downloads' backlog. This kernel has htb and tbf
# but no fq_codel, so: htb, one class at the rate (the link), two leaves under it sharing it,
# everything but TCP first (prio 0), TCP (the HTTP downloads) in a FIFO behind. The bucket is
# exact on average at any rate as long as it holds what the link sends between two dequeues:
# the burst is 10 ms at the rate (1.25 MB at 1 Gbit/s, 12.5 MB at 10 Gbit/s; at least 128 KiB,
# more than a 64 KiB GSO packet), so a dequeue that comes late because the CPUs are busy (the
# softirq waits its turn on a loaded machine) catches up, as a NIC's transmit ring keeps the
# wire busy while the CPU is elsewhere. (tc's default burst is rate / timer frequency + one
# MTU: about one MTU on a high-resolution kernel, which under-shapes at 10 Gbit/s.)
# tc counts a frame from its Ethernet header; a real wire also carries preamble, FCS and the
# inter-frame gap (WIRE_OVERHEAD, 24 bytes), so full-size frames get RATE x 1514 / 1538.
shape_link() {
  local bps shaped burst ns dev prio
  bps=$(rate_bps "$WIRE_RATE")
  shaped=$(awk -v b="$bps" -v o="$WIRE_OVERHEAD" 'BEGIN { printf "%.0f", b * 1514 / (1514 + o) }')
  burst=$(awk -v b="$shaped" 'BEGIN { x = b / 8 / 100; printf "%.0f", (x < 131072) ? 131072 : x }')
  prio=$((shaped / 100))
  for ns in "$SRV_NS:bs-srv0" "$CLI_NS:bs-cli0"; do
    dev=${ns#*:}
    ns=${ns%%:*}
    ip netns exec "$ns" tc qdisc replace dev "$dev" root handle 1: htb default 10 r2q 10000
    ip netns exec "$ns" tc class add dev "$dev" parent 1: classid 1:1 htb rate "${shaped}bit" burst "$burst" cburst "$burst"
    ip netns exec "$ns" tc class add dev "$dev" parent 1:1 classid 1:10 htb rate "${prio}bit" ceil "${shaped}bit" \
      burst "$burst" cburst "$burst" prio 0 quantum 200000
    ip netns exec "$ns" tc class add dev "$dev" parent 1:1 classid 1:20 htb rate "$((shaped - prio))bit" ceil "${shaped}bit" \
      burst "$burst" cburst "$burst" prio 1 quantum 200000
    ip netns exec "$ns" tc filter add dev "$dev" parent 1: protocol ip prio 1 u32 match ip protocol 6 0xff flowid 1:20
  done
}
# The dispatcher's event-loop delay over the storm, p50 and p99 in ms (its /metrics, since the
# previous scrape: monitorEventLoopDelay), as key=value words.
loop_delay() {
  ip netns exec "$SRV_NS" curl -s --max-time 5 http://127.0.0.1:8080/metrics 2>/dev/null |
    awk -F'[ "]' '/^nodejs_eventloop_delay_seconds\{quantile="0.5"\}/ { p50 = $NF * 1000 }
      /^nodejs_eventloop_delay_seconds\{quantile="0.99"\}/ { p99 = $NF * 1000 }
      END { printf "loop_delay_p50_ms=%.1f loop_delay_p99_ms=%.1f", p50, p99 }'
}
qdisc_drops() { # qdisc_drops NS DEV: packets the shaped link's queues dropped
  ip netns exec "$1" tc -s qdisc show dev "$2" 2>/dev/null | awk '/^qdisc htb/ { q = 1 } q && /dropped/ { sub(/,/, "", $7); print $7; exit }'
}

# Bytes per completed boot (the median over the clients that completed: TFTP + boot script +
# kernel + initrd payload as the clients counted it) and the clients' retransmissions per kind
# (dhcp = a DISCOVER or REQUEST sent again), from bootstorm's --json file.
storm_json() { # storm_json FILE: prints key=value words
  python3 - "$1" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
per = sorted(sum(c["bytes"].values()) for c in d["clients"] if c["ok"])
rtx = {}
for c in d["clients"]:
    for k, v in c["retransmits"].items():
        rtx[k] = rtx.get(k, 0) + v
print(f"bytes_per_boot={per[len(per) // 2] if per else 0} retx={','.join(f'{k}:{v}' for k, v in sorted(rtx.items())) or 'none'}")
PY
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
  local n=$1 tag=$2 data="$OUT/data-$2" before after line rc=0 i cpu0 cpu1 loop0 loop1 drops="" delay
  rm -rf "$data"
  # A storm is many machines new to the dispatcher at once: the auto-enrolment caps (60 a minute
  # by default) are raised as a site booting a new rack would, or clients past the 60th get no offer.
  printf 'enrollment: auto\nautoEnroll: {perMinute: 100000, total: 100000}\n' >"$OUT/cluster.yaml"
  "$BOOTSTORM" netns-up --server-ns "$SRV_NS" --client-ns "$CLI_NS" >/dev/null
  NS_MADE=1
  [ -z "$WIRE_RATE" ] || shape_link
  ip netns exec "$SRV_NS" node ${DISPATCHER_NODE_FLAGS:-} "$DISPATCHER_MJS" --interface bs-br0 --dhcp full --range 10.88.1.1-10.88.15.254 \
    --data-dir "$data" --cluster "$OUT/cluster.yaml" --image dist/image --pxe-dir pxe/bin --http-port 8080 >"$OUT/dispatcher-$tag.log" 2>&1 &
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
  # CPU of the whole process (its sendfile threads, libuv's pool) and of its main thread alone,
  # the event loop: the main thread's CPU over the storm's seconds is how busy the loop was.
  loop_delay >/dev/null # starts the event-loop delay window (each scrape resets it)
  proc_ticks "/proc/$DISPATCHER_PID/stat"; cpu0=$PROC_TICKS
  proc_ticks "/proc/$DISPATCHER_PID/task/$DISPATCHER_PID/stat"; loop0=$PROC_TICKS
  run_child "$OUT/storm-$tag.txt" "$BOOTSTORM" run --client-ns "$CLI_NS" --server-ns "$SRV_NS" --clients "$n" \
    --json "$OUT/storm-$tag.json" || rc=$?
  proc_ticks "/proc/$DISPATCHER_PID/stat"; cpu1=$PROC_TICKS
  proc_ticks "/proc/$DISPATCHER_PID/task/$DISPATCHER_PID/stat"; loop1=$PROC_TICKS
  delay=$(loop_delay)
  after=$(rcvbuf_errors)
  [ -z "$WIRE_RATE" ] || drops=$(qdisc_drops "$SRV_NS" bs-srv0)
  kill -0 "$DISPATCHER_PID" 2>/dev/null || die "the dispatcher died during the $n-client storm (see $OUT/dispatcher-$tag.log)"
  stop_pid "$DISPATCHER_PID"
  DISPATCHER_PID=""
  netns_down
  line=$(grep '^RESULT ' "$OUT/storm-$tag.txt" | tail -1 || true)
  [ -n "$line" ] || die "bootstorm printed no RESULT line (exit $rc): $(tail -3 "$OUT/storm-$tag.txt")"
  LINE="$line rcvbuf_errors=$((after - before)) cpu_s=$(ticks_s $((cpu1 - cpu0))) loop_cpu_s=$(ticks_s $((loop1 - loop0))) $delay"
  LINE+=" qdisc_drops=${drops:-none} $(storm_json "$OUT/storm-$tag.json")"
}

# Runs beside baseline-dnsmasq.sh (which makes its own namespaces and servers) and measures
# what the dispatcher's storms measure: it shapes the link with shape_link as soon as the
# veths exist (refusing the run if the storm had already started), then, from the moment the
# storm's bootstorm process appears in the client namespace until it exits, the CPU of every
# dnsmasq and nginx process (master and workers) of the server namespace, sampled every
# 0.1 s with builtins (the last sample of a process that exits first counts), the server
# namespace's UDP RcvbufErrors and the shaped queue's drops. Prints key=value words, or
# error=... when it could not.
baseline_watch() { # baseline_watch (in the background)
  set +e
  local deadline=$((SECONDS + 300)) gen="" p comm k srv_pid="" rb rb0 dn=0 ng=0 tick=0 d drops="" i
  local -A first=() last=() name=()
  if [ -n "$WIRE_RATE" ]; then
    until ip -n "$SRV_NS" link show bs-srv0 >/dev/null 2>&1 && ip -n "$CLI_NS" link show bs-cli0 >/dev/null 2>&1; do
      [ "$SECONDS" -lt "$deadline" ] || { echo "error=no-veth-to-shape"; return; }
      sleep 0.02
    done
    shape_link || { echo "error=tc-failed"; return; }
  fi
  storm_pid() { # the bootstorm process in the client namespace (not netns-up's sysctl), or none
    gen=""
    for p in $(ip netns pids "$CLI_NS" 2>/dev/null); do
      grep -qa bootstorm "/proc/$p/cmdline" 2>/dev/null && gen=$p
    done
  }
  if [ -n "$WIRE_RATE" ]; then
    storm_pid
    [ -z "$gen" ] || { echo "error=storm-started-before-the-link-was-shaped"; return; }
  fi
  while [ -z "$gen" ]; do
    [ "$SECONDS" -lt "$deadline" ] || { echo "error=no-storm-seen"; return; }
    storm_pid
    [ -n "$gen" ] || sleep 0.02
  done
  for p in $(ip netns pids "$SRV_NS" 2>/dev/null); do
    comm=$(cat "/proc/$p/comm" 2>/dev/null)
    case $comm in dnsmasq | nginx) name[$p]=$comm; proc_ticks "/proc/$p/stat"; first[$p]=$PROC_TICKS; last[$p]=$PROC_TICKS ;; esac
    [ "$comm" = dnsmasq ] && srv_pid=$p
  done
  [ -n "$srv_pid" ] || { echo "error=no-dnsmasq-in-$SRV_NS"; return; }
  # The sample: each process's CPU, the namespace's RcvbufErrors (through dnsmasq's /proc/PID/net)
  # and, each second (tc forks), the queue's drops; what was read last before a process or the
  # namespace went away counts.
  rb=""
  sample() {
    local l h=""
    local -a a=() b=()
    for p in "${!name[@]}"; do
      proc_ticks "/proc/$p/stat"
      [ "$PROC_TICKS" -gt 0 ] && last[$p]=$PROC_TICKS
    done
    { while read -r -a l; do
      [ "${l[0]:-}" = Udp: ] || continue
      if [ -z "$h" ]; then h=1; a=("${l[@]}"); else b=("${l[@]}"); fi
    done <"/proc/$srv_pid/net/snmp"; } 2>/dev/null
    for i in "${!a[@]}"; do [ "${a[i]}" = RcvbufErrors ] && [ -n "${b[i]:-}" ] && rb=${b[i]}; done
    if [ -n "$WIRE_RATE" ] && [ $((tick % 10)) = 0 ]; then
      d=$(qdisc_drops "$SRV_NS" bs-srv0) && [ -n "$d" ] && drops=$d
    fi
    tick=$((tick + 1))
  }
  sample
  rb0=$rb
  while [ -d "/proc/$gen" ] && [ -e "/run/netns/$CLI_NS" ]; do
    sample
    sleep 0.1
  done
  tick=0
  sample
  for p in "${!name[@]}"; do
    k=$((last[$p] - first[$p]))
    if [ "${name[$p]}" = dnsmasq ]; then dn=$((dn + k)); else ng=$((ng + k)); fi
  done
  echo "cpu_s=$(ticks_s $((dn + ng))) dnsmasq_cpu_s=$(ticks_s "$dn") nginx_cpu_s=$(ticks_s "$ng") nginx_processes=$(($(printf '%s\n' "${name[@]}" | grep -c nginx))) rcvbuf_errors=$((rb - rb0)) qdisc_drops=${drops:-none}"
}

# One storm against dnsmasq no-ping + nginx, through the peer's own baseline script. Sets LINE.
storm_dnsmasq() { # storm_dnsmasq CLIENTS TAG
  local n=$1 tag=$2 line rc=0
  baseline_watch >"$OUT/watch-$tag.txt" 2>&1 &
  WATCH_PID=$!
  run_child "$OUT/baseline-$tag.txt" env BS_SRV_NS="$SRV_NS" BS_CLI_NS="$CLI_NS" BS_CLIENTS="$n" BS_DNSMASQ_OPTS=no-ping \
    BS_KERNEL="$ROOT/dist/image/vmlinuz" BS_INITRD="$ROOT/dist/image/initrd.img" BS_OUT="$OUT/baseline-$tag" \
    bash "$BASELINE" || rc=$?
  wait "$WATCH_PID" || true
  WATCH_PID=""
  line=$(grep '^RESULT ' "$OUT/baseline-$tag.txt" | tail -1 || true)
  [ -n "$line" ] || die "baseline printed no RESULT line (exit $rc): $(tail -3 "$OUT/baseline-$tag.txt")"
  LINE="$line $(tail -1 "$OUT/watch-$tag.txt") $(storm_json "$OUT/baseline-$tag/result-$n.json")"
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

# Storms over the shaped link: RUNS_WIRE alternating runs of CLIENTS cold clients at RATE, each
# side's completion against its wire limit (clients x its measured bytes per boot / rate), its
# CPU seconds per boot, and the two side by side.
wire_part() { # wire_part RATE CLIENTS RUNS
  local rate=$1 n=$2 runs=$3 name="wire-$1-$2" bps r ours theirs side line ok secs bpb limit cpu err
  local -a our_s=() their_s=() our_cpb=() their_cpb=() our_lu=() our_lim=() their_lim=() drops=() their_drops=()
  local our_failed=0 their_failed=0
  bps=$(rate_bps "$rate")
  command -v tc >/dev/null || die "tc missing: apt-get install iproute2"
  WIRE_RATE=$rate
  say "wire $rate: $n cold clients, $runs alternating runs (load $(load_avg))"
  for r in $(seq "$runs"); do
    storm_dispatcher "$n" "$name-$r"; ours="$LINE load=$(load_avg | tr ' ' ,)"
    storm_dnsmasq "$n" "$name-$r"; theirs="$LINE load=$(load_avg | tr ' ' ,)"
    err=$(field error "$theirs")
    [ -z "$err" ] || die "baseline run $r: $err (see $OUT/watch-$name-$r.txt)"
    echo "  run $r dispatcher: $ours" >&2
    echo "  run $r dnsmasq:    $theirs" >&2
    for side in dispatcher dnsmasq-nginx; do
      if [ "$side" = dispatcher ]; then line=$ours; else line=$theirs; fi
      ok=$(field ok "$line"); secs=$(field seconds "$line"); bpb=$(field bytes_per_boot "$line"); cpu=$(field cpu_s "$line")
      limit=$(calc "$n * $bpb * 8 / $bps")
      local extra="cpu_s=$cpu cpu_s_per_boot=$(calc "$cpu / ($ok > 0 ? $ok : 1)" 4)"
      if [ "$side" = dispatcher ]; then
        extra+=" loop_cpu_s=$(field loop_cpu_s "$line") loop_util=$(calc "$(field loop_cpu_s "$line") / $secs" 2)"
        extra+=" loop_delay_p99_ms=$(field loop_delay_p99_ms "$line")"
        our_s+=("$secs"); our_lim+=("$limit"); our_cpb+=("$(calc "$cpu / ($ok > 0 ? $ok : 1)" 4)")
        our_lu+=("$(calc "$(field loop_cpu_s "$line") / $secs" 2)"); drops+=("$(field rcvbuf_errors "$line")")
        our_failed=$((our_failed + n - ok))
      else
        extra+=" dnsmasq_cpu_s=$(field dnsmasq_cpu_s "$line") nginx_cpu_s=$(field nginx_cpu_s "$line")"
        their_s+=("$secs"); their_lim+=("$limit"); their_cpb+=("$(calc "$cpu / ($ok > 0 ? $ok : 1)" 4)")
        their_drops+=("$(field rcvbuf_errors "$line")")
        their_failed=$((their_failed + n - ok))
      fi
      result "name=$name run=$r server=$side seconds=$secs wire_limit_s=$limit to_wire=$(calc "$secs / $limit" 2) bytes_per_boot=$bpb ok=$ok failed=$((n - ok)) $extra rcvbuf_errors=$(field rcvbuf_errors "$line") qdisc_drops=$(field qdisc_drops "$line") retx=$(field retx "$line") p95_s=$(field p95_s "$line") mb_per_s=$(field mb_per_s "$line") load=$(field load "$line")"
    done
  done
  local ms mt lo lt
  ms=$(median "${our_s[@]}"); mt=$(median "${their_s[@]}")
  lo=$(median "${our_lim[@]}"); lt=$(median "${their_lim[@]}")
  result "name=$name runs=$runs server=dispatcher median_s=$ms wire_limit_s=$lo to_wire=$(calc "$ms / $lo" 2) cpu_s_per_boot=$(median "${our_cpb[@]}") loop_util=$(median "${our_lu[@]}") failed_clients=$our_failed rcvbuf_errors_max=$(printf '%s\n' "${drops[@]}" | sort -g | tail -1)"
  result "name=$name runs=$runs server=dnsmasq-nginx median_s=$mt wire_limit_s=$lt to_wire=$(calc "$mt / $lt" 2) cpu_s_per_boot=$(median "${their_cpb[@]}") failed_clients=$their_failed rcvbuf_errors_max=$(printf '%s\n' "${their_drops[@]}" | sort -g | tail -1)"
  result "name=$name ours_to_dnsmasq=$(calc "$ms / $mt" 2) to_wire_ours=$(calc "$ms / $lo" 2) to_wire_dnsmasq=$(calc "$mt / $lt" 2) met_wire=$(awk -v a="$ms" -v l="$lo" -v f="$our_failed" 'BEGIN { print (a <= 1.1 * l && f == 0) ? "yes" : "no" }') met_dnsmasq=$(awk -v a="$ms" -v b="$mt" -v f="$our_failed" 'BEGIN { print (a <= b && f == 0) ? "yes" : "no" }') cpu_per_boot_ours_to_dnsmasq=$(calc "$(median "${our_cpb[@]}") / $(median "${their_cpb[@]}")" 2) load=\"$(load_avg)\""
  WIRE_RATE=""
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
    wire) storm_prereqs
      for ws in $WIRE_SETS; do wire_part "${ws%%:*}" "${ws##*:}" "$RUNS_WIRE"; done ;;
    *) die "unknown part $part (storm50 storm300 dhcp qemu wire)" ;;
  esac
done
echo "== all figures (also in $OUT/results.txt)"
cat "$OUT/results.txt"
