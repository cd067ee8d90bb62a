#!/usr/bin/env bash
# DHCP lease rate: ISC perfdhcp (Debian kea-admin) against the dispatcher in full mode and
# against ISC Kea 4 with its memfile lease store, side by side in one run. Each server lives in
# its own network namespace behind a veth; perfdhcp runs in a third namespace and acts as a
# relay (giaddr = its address), as it always does for DHCPv4. Rates are interleaved (dispatcher
# at R, Kea at R, then the next R) so load from elsewhere on the machine hits both alike.
#
# For each rate, perfdhcp runs for PERIOD seconds; a 4-way exchange counts as dropped when its
# ACK did not come back within perfdhcp's 1 s drop time: drops_pct = 100 × (1 − ACKs / DISCOVERs).
# The figure is the highest rate with drops_pct < 1 (MAX_DROPS_PCT). Both servers keep their
# leases across rates (the lease table grows as in a real storm); the dispatcher fsyncs every
# lease before its ACK (SQLite WAL, group commit, the WAL fsynced off the event loop); Kea's memfile appends to a
# CSV without fsync.
#
#   sudo bash bench/dhcp-rate.sh                       # defaults below
#   RATES="2000 4000 8000" PERIOD=5 bash bench/dhcp-rate.sh
#   SERVERS=dispatcher bash bench/dhcp-rate.sh         # only one of them
#   RETRY=0 ...                                         # no second try of a rate over the limit
#
# Prints one line per measurement and, per server:
#   RESULT name=dhcp-rate server=<dispatcher|kea> rate=<exchanges/s> drops_pct=<p> cpu_us_per_exchange=<n>
# (the server's own CPU time per completed exchange at that rate, from /proc: a figure other
# load on the machine inflates far less than the rate)
# Installs kea-admin (perfdhcp) and kea-dhcp4-server if missing (benches may install their own peers; CI does not run this).
set -euo pipefail
cd "$(dirname "$0")/.."

RATES=${RATES:-"1000 2000 4000 6000 8000 10000 12000 14000 16000 20000 24000"}
PERIOD=${PERIOD:-10}
CLIENTS=${CLIENTS:-50000}
MAX_DROPS_PCT=${MAX_DROPS_PCT:-1}
SERVERS=${SERVERS:-"dispatcher kea"}
# Stop raising the rate for a server after this many consecutive rates over the drop limit.
GIVE_UP_AFTER=${GIVE_UP_AFTER:-2}

[ "$(id -u)" = 0 ] || { echo "dhcp-rate: run as root (namespaces, port 67)" >&2; exit 2; }
if ! command -v perfdhcp >/dev/null; then
  echo "== installing kea-admin (perfdhcp, the load generator of this benchmark)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends kea-admin >/dev/null ||
    { echo "dhcp-rate: perfdhcp missing and apt-get install kea-admin failed" >&2; exit 2; }
fi
if [[ " $SERVERS " == *" kea "* ]] && ! command -v kea-dhcp4 >/dev/null; then
  echo "== installing kea-dhcp4-server (peer for this benchmark)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends kea-dhcp4-server >/dev/null
fi
[ -f dist/bin/dispatcher.mjs ] || make build >/dev/null

ID=lc-dhcprate-$$
WORK=$(mktemp -d /tmp/lc-dhcp-rate.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
  sleep 0.5
  for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill -9 "$p" 2>/dev/null || true; done
  for ns in "$ID-cli" "$ID-disp" "$ID-kea"; do ip netns del "$ns" 2>/dev/null || true; done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Namespaces: cli ── c0 10.70.0.2/16 ═ s0 10.70.0.1/16 ── disp (dispatcher)
#                 └─ c1 10.71.0.2/16 ═ s0 10.71.0.1/16 ── kea  (kea-dhcp4)
ip netns add "$ID-cli"
ip -n "$ID-cli" link set lo up
net_of() { case $1 in dispatcher) echo 10.70;; kea) echo 10.71;; esac; }
ns_of() { case $1 in dispatcher) echo "$ID-disp";; kea) echo "$ID-kea";; esac; }
cif_of() { case $1 in dispatcher) echo c0;; kea) echo c1;; esac; }
for s in $SERVERS; do
  ns=$(ns_of "$s"); net=$(net_of "$s"); cif=$(cif_of "$s")
  ip netns add "$ns"
  ip -n "$ns" link set lo up
  ip -n "$ns" link add s0 type veth peer name "$cif" netns "$ID-cli"
  ip -n "$ns" addr add "$net.0.1/16" dev s0
  ip -n "$ns" link set s0 up
  ip -n "$ID-cli" addr add "$net.0.2/16" dev "$cif"
  ip -n "$ID-cli" link set "$cif" up
done

declare -A SERVER_PID
# CPU time (user + system) of a process, in ms: a figure the machine's other load does not inflate much.
cpu_ms() { awk -v hz="$(getconf CLK_TCK)" '{ print int(($14 + $15) * 1000 / hz) }' "/proc/$1/stat"; }

start_dispatcher() {
  local ns; ns=$(ns_of dispatcher)
  ip netns exec "$ns" node dist/bin/dispatcher.mjs --interface s0 --dhcp full --range 10.70.1.0-10.70.255.254 \
    --data-dir "$WORK/dispatcher-data" --http-port 0 --no-tftp --log-level info >"$WORK/dispatcher.log" 2>&1 &
  PIDS+=($!)
  SERVER_PID[dispatcher]=$!
  for _ in $(seq 100); do
    ip netns exec "$ns" ss -lun 2>/dev/null | grep -q ':67 ' && return 0
    sleep 0.1
  done
  echo "dhcp-rate: dispatcher did not start:" >&2; cat "$WORK/dispatcher.log" >&2; exit 1
}

# Kea with the dispatcher's lease caching (dhcp.leaseCacheThreshold 0.25), so that a repeated
# client costs both servers the same kind of work.
start_kea() {
  local ns; ns=$(ns_of kea)
  cat >"$WORK/kea-dhcp4.json" <<EOF
{ "Dhcp4": {
    "interfaces-config": { "interfaces": [ "s0" ], "dhcp-socket-type": "udp" },
    "lease-database": { "type": "memfile", "persist": true, "name": "$WORK/kea-leases4.csv", "lfc-interval": 0 },
    "valid-lifetime": 3600, "renew-timer": 1800, "rebind-timer": 3150,
    "cache-threshold": 0.25,
    "subnet4": [ { "id": 1, "subnet": "10.71.0.0/16", "pools": [ { "pool": "10.71.1.0 - 10.71.255.254" } ] } ],
    "loggers": [ { "name": "kea-dhcp4", "output_options": [ { "output": "$WORK/kea.log" } ], "severity": "WARN" } ]
} }
EOF
  KEA_PIDFILE_DIR=$WORK KEA_LOCKFILE_DIR=$WORK ip netns exec "$ns" kea-dhcp4 -c "$WORK/kea-dhcp4.json" >"$WORK/kea.out" 2>&1 &
  PIDS+=($!)
  SERVER_PID[kea]=$!
  for _ in $(seq 100); do
    ip netns exec "$ns" ss -lun 2>/dev/null | grep -q ':67 ' && return 0
    sleep 0.1
  done
  echo "dhcp-rate: kea-dhcp4 did not start:" >&2; cat "$WORK/kea.out" "$WORK/kea.log" >&2 2>/dev/null; exit 1
}

# perfdhcp at one rate against one server; prints "<rate_achieved> <discovers> <acks> <drops_pct> <server_cpu_us_per_ack>".
measure() { # server rate period
  local s=$1 rate=$2 period=$3 out cpu0 cpu1
  cpu0=$(cpu_ms "${SERVER_PID[$s]}")
  out=$(ip netns exec "$ID-cli" perfdhcp -4 -l "$(cif_of "$s")" -r "$rate" -R "$CLIENTS" -p "$period" -W 1000000 "$(net_of "$s").0.1" 2>&1 || true)
  cpu1=$(cpu_ms "${SERVER_PID[$s]}")
  echo "$out" >>"$WORK/perfdhcp-$s.log"
  echo "$out" | awk -v cpu=$((cpu1 - cpu0)) '
    /^Rate:/ { achieved = $2 }
    /Statistics for: DISCOVER-OFFER/ { sec = "do" }
    /Statistics for: REQUEST-ACK/ { sec = "ra" }
    /^sent packets:/ { if (sec == "do") sent = $3 }
    /^received packets:/ { if (sec == "ra") acks = $3 }
    END { if (sent > 0) printf "%.0f %d %d %.3f %.0f\n", achieved, sent, acks, 100 * (1 - acks / sent), (acks > 0 ? cpu * 1000 / acks : 0); else print "0 0 0 100 0" }'
}

echo "== dhcp-rate: servers [$SERVERS], rates [$RATES], ${PERIOD}s each, $CLIENTS distinct clients, limit ${MAX_DROPS_PCT}% drops (logs in $WORK)"
for s in $SERVERS; do "start_$s"; done
for s in $SERVERS; do measure "$s" 200 2 >/dev/null; done # warm-up: sockets, caches, first leases

declare -A best_rate best_drops best_cpu bad_streak done_with
for s in $SERVERS; do best_rate[$s]=0; best_drops[$s]=100; best_cpu[$s]=0; bad_streak[$s]=0; done_with[$s]=0; done
for rate in $RATES; do
  for s in $SERVERS; do
    [ "${done_with[$s]}" = 1 ] && continue
    read -r achieved sent acks drops cpu_us < <(measure "$s" "$rate" "$PERIOD")
    # One retry over the limit: a burst of load from elsewhere on the machine should not end the climb.
    if ! awk -v d="$drops" -v m="$MAX_DROPS_PCT" 'BEGIN { exit !(d < m) }' && [ "${RETRY:-1}" = 1 ]; then
      printf '%-10s rate %6d/s  drops %7.3f %% — measuring again\n' "$s" "$rate" "$drops"
      read -r achieved sent acks drops cpu_us < <(measure "$s" "$rate" "$PERIOD")
    fi
    printf '%-10s rate %6d/s  achieved %6d/s  discovers %7d  acks %7d  drops %7.3f %%  server CPU %4d µs/exchange\n' "$s" "$rate" "$achieved" "$sent" "$acks" "$drops" "$cpu_us"
    if awk -v d="$drops" -v m="$MAX_DROPS_PCT" 'BEGIN { exit !(d < m) }'; then
      best_rate[$s]=$rate; best_drops[$s]=$drops; best_cpu[$s]=$cpu_us; bad_streak[$s]=0
    else
      bad_streak[$s]=$((bad_streak[$s] + 1))
      [ "${bad_streak[$s]}" -ge "$GIVE_UP_AFTER" ] && done_with[$s]=1
    fi
  done
done

# Stop the servers (the dispatcher logs its counters and store commit figures on the way out).
for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
PIDS=()
grep -h '"msg":"DHCP stopped"' "$WORK/dispatcher.log" 2>/dev/null || true
for s in $SERVERS; do
  echo "RESULT name=dhcp-rate server=$s rate=${best_rate[$s]} drops_pct=${best_drops[$s]} cpu_us_per_exchange=${best_cpu[$s]}"
done
