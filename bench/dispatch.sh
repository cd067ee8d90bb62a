#!/usr/bin/env bash
# Dispatch benchmarks side by side with the peers (`make bench-dispatch`), issue 5's figures:
#
#   throughput  the real dispatcher process + 100 simulated agents answering at once over the
#               WebSocket protocol (dispatch-real.ts throughput), the engine in process
#               (dispatch-engine.ts), submit → durable result latency; peers: BullMQ no-op,
#               graphile-worker, their one-add-per-job latency variants, the ws echo floor
#   e2e         real agents running `true` per task (bench/agents.mjs e2e); peers: the Slurm job
#               array, BullMQ with PROCESSOR=spawn
#   idle        1,000 simulated agents heartbeating: dispatcher RSS and CPU (bench/agents.mjs idle)
#   depth       hand-out rate and p99 with 10,000 vs 1,000,000 queued through the real dispatcher;
#               a 1,000,000-row params file through `dispatcherctl submit --params`; kill -9 with
#               1,000,000 queued and restart: exec → first task to a waiting agent
#   lost        a frozen agent's tasks handed out again (in heartbeat intervals)
#   busy        (once, after the rounds) a real agent at 100 % CPU on every core for a minute: never lost
#   postgres    (not in the default set) one throwaway PostgreSQL (fsync on) for the run: the
#               throughput workload on `dispatcher --store postgres://…` beside graphile-worker
#               on the same server (bench/dispatch-postgres.sh), with our SQLite throughput step
#               in the same rounds; PostgreSQL commits and WAL bytes per task for both
#
# Each section runs RUNS times (default 3), ours and the peers' steps alternating, the order
# reversed every other round so the machine's load falls on both sides alike; every RESULT line
# gets the round and the load average before/after its step. At the end bench/dispatch-report.mjs
# prints medians, ratios against the peers of the same run and which targets are met.
#
#   bash bench/dispatch.sh                       # everything (root: the peers install Slurm, Redis, PostgreSQL)
#   bash bench/dispatch.sh throughput depth      # some sections
#   SKIP_PEERS=1 bash bench/dispatch.sh          # ours only
#   PROFILE=1 bash bench/dispatch.sh throughput  # dispatcher CPU profiles (--cpu-prof) in the output dir
#   bash bench/dispatch.sh engine [throughput|latency|depth|submit|recovery|e2e|all]   # engine in process only
#
# Knobs: RUNS=3, THROUGHPUT_TASKS=200000, SIM_SLOTS=32, E2E_TASKS=10000, DEPTH_SECONDS=10,
# HEARTBEAT=1 (lost/busy), BUSY_SECONDS=60, PEERS_SRC (../shared/bench-peers), PEERS_WORK
# (/var/tmp/lc-bench-peers: a copy of the peer scripts with their node_modules, so the shared
# folder stays untouched). Output: dist/bench/dispatch-<time>/{run.log,results.txt,summary.md}.
# Every process started here is stopped by PID on exit, Ctrl-C included.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
ESB=(node_modules/.bin/esbuild --bundle --platform=node --format=esm --target=node24 --packages=external --log-level=warning)
mkdir -p dist/bench

if [ "${1:-}" = engine ]; then
  "${ESB[@]}" bench/dispatch-engine.ts --outfile=dist/bench/dispatch-engine.mjs || exit 1
  exec node dist/bench/dispatch-engine.mjs "${2:-all}"
fi

RUNS=${RUNS:-3}
THROUGHPUT_TASKS=${THROUGHPUT_TASKS:-200000}
SIM_SLOTS=${SIM_SLOTS:-32}
E2E_TASKS=${E2E_TASKS:-10000}
DEPTH_SECONDS=${DEPTH_SECONDS:-10}
HEARTBEAT=${HEARTBEAT:-1}
BUSY_SECONDS=${BUSY_SECONDS:-60}
PEERS_SRC=${PEERS_SRC:-$ROOT/../shared/bench-peers}
PEERS=${PEERS_WORK:-/var/tmp/lc-bench-peers}
SECTIONS=("$@")
[ ${#SECTIONS[@]} -gt 0 ] || SECTIONS=(throughput e2e idle depth lost busy)
want() { local s; for s in "${SECTIONS[@]}"; do [ "$s" = "$1" ] && return 0; done; return 1; }

OUT=$ROOT/dist/bench/dispatch-$(date +%Y%m%d-%H%M%S)
mkdir -p "$OUT"
LOG=$OUT/run.log
RES=$OUT/results.txt
: >"$RES"
say() { echo "[$(date +%T)] $*" | tee -a "$LOG" >&2; }

# --- the one child running at a time, stopped by PID (its own trap stops its children) -------
CHILD=
cleanup() {
  if [ -n "$CHILD" ] && kill -0 "$CHILD" 2>/dev/null; then
    kill -TERM "$CHILD" 2>/dev/null
    for _ in $(seq 40); do kill -0 "$CHILD" 2>/dev/null || break; sleep 0.25; done
    kill -KILL "$CHILD" 2>/dev/null || true
  fi
  CHILD=
}
trap cleanup EXIT
trap 'say "interrupted"; cleanup; exit 130' INT TERM

# --- build ---------------------------------------------------------------------------------
make -s build >>"$LOG" 2>&1 || { say "make build failed (see $LOG)"; exit 1; }
for b in dispatch-engine dispatch-real; do
  "${ESB[@]}" "bench/$b.ts" --outfile="dist/bench/$b.mjs" || exit 1
done
PROFILE_ENV=()
if [ -n "${PROFILE:-}" ]; then
  mkdir -p "$OUT/profiles"
  PROFILE_ENV=(PROFILE_DIR="$OUT/profiles")
fi

# --- peers: a private copy of the shared scripts (they install into their own folder) -------
PEERS_OK=
if [ -z "${SKIP_PEERS:-}" ]; then
  if [ "$(id -u)" != 0 ]; then
    say "not root: the peers (Slurm, Redis, PostgreSQL) are skipped"
  elif [ ! -f "$PEERS_SRC/bullmq.sh" ]; then
    say "no peer scripts in $PEERS_SRC: the peers are skipped"
  else
    mkdir -p "$PEERS"
    cp "$PEERS_SRC"/*.sh "$PEERS_SRC"/*.mjs "$PEERS_SRC"/package.json "$PEERS_SRC"/package-lock.json "$PEERS/"
    chmod u+w "$PEERS"/*
    PEERS_OK=1
  fi
fi

# step LABEL SIDE VARIANT CMD... : runs CMD in the background (so a signal reaches us at once),
# its output to the log; its RESULT lines, tagged, to results.txt and the terminal.
ROUND=0
step() {
  local label=$1 side=$2 variant=$3; shift 3
  if [ "$side" = peer ] && [ -z "$PEERS_OK" ]; then return 0; fi
  local l0 l1 rc t0
  l0=$(cut -d' ' -f1 /proc/loadavg)
  t0=$(date +%s)
  echo "=== round $ROUND $label ($side) $(date +%T) load1=$l0: $*" >>"$LOG"
  "$@" >"$OUT/step.out" 2>&1 &
  CHILD=$!
  wait "$CHILD"
  rc=$?
  CHILD=
  l1=$(cut -d' ' -f1 /proc/loadavg)
  cat "$OUT/step.out" >>"$LOG"
  local tag="round=$ROUND side=$side variant=$variant load1_before=$l0 load1_after=$l1"
  grep '^RESULT ' "$OUT/step.out" | sed "s/\$/ $tag/" | tee -a "$RES"
  if [ "$rc" != 0 ]; then
    echo "RESULT name=step_failed step=$label rc=$rc $tag" | tee -a "$RES"
    tail -5 "$OUT/step.out" | sed 's/^/    /' >&2
  fi
  echo "    ($label: $(($(date +%s) - t0)) s)" >&2
}

# Runs the given step commands (one per argument, each "label side variant cmd...") in order,
# reversed on even rounds.
steps() {
  local list=("$@") i
  if [ $((ROUND % 2)) = 0 ]; then for ((i = ${#list[@]} - 1; i >= 0; i--)); do eval "step ${list[i]}"; done
  else for i in "${list[@]}"; do eval "step $i"; done; fi
}

REAL="env ${PROFILE_ENV[*]} node dist/bench/dispatch-real.mjs"
AGENTS_ENV=
[ -n "${PROFILE:-}" ] && AGENTS_ENV="NODE_OPTIONS=--cpu-prof\\ --cpu-prof-dir=$OUT/profiles/agents"
say "dispatch bench: sections ${SECTIONS[*]}, RUNS=$RUNS, peers $([ -n "$PEERS_OK" ] && echo on || echo off); $(nproc) cores; uptime:$(uptime | sed 's/.*load/ load/'); output $OUT"

# --- postgres: one throwaway PostgreSQL for the whole run, stopped by PID on exit ------------
PGW=
if want postgres; then
  if [ "$(id -u)" != 0 ]; then
    say "not root: the postgres section is skipped (postgres runs as user postgres)"
  else
    PGW=$(mktemp -d /tmp/lc-bench-pg.XXXXXX)
    trap 'cleanup; bash bench/dispatch-postgres.sh stop "$PGW"' EXIT
    bash bench/dispatch-postgres.sh start "$PGW" 2>&1 | tee -a "$LOG" >&2
    [ "${PIPESTATUS[0]}" = 0 ] || { say "PostgreSQL did not start: the postgres section is skipped"; PGW=; }
  fi
fi
PG="env ${PROFILE_ENV[*]} THROUGHPUT_TASKS=$THROUGHPUT_TASKS SIM_SLOTS=$SIM_SLOTS PEERS=$PEERS bash bench/dispatch-postgres.sh"

for ROUND in $(seq "$RUNS"); do
  say "round $ROUND of $RUNS"
  if want throughput; then
    steps \
      "real-throughput ours default $REAL throughput --tasks $THROUGHPUT_TASKS --slots $SIM_SLOTS" \
      "bullmq peer default bash $PEERS/bullmq.sh" \
      "real-throughput-4slots ours slots4 $REAL throughput --tasks $((THROUGHPUT_TASKS / 2)) --slots 4" \
      "engine-throughput ours default env RUNS=1 BENCH_TASKS=$THROUGHPUT_TASKS node dist/bench/dispatch-engine.mjs throughput" \
      "graphile-worker peer default bash $PEERS/graphile-worker.sh" \
      "real-latency ours default $REAL latency" \
      "bullmq-add1 peer latency env CHUNK=1 N=2000 bash $PEERS/bullmq.sh" \
      "graphile-worker-add1 peer latency env CHUNK=1 N=1000 bash $PEERS/graphile-worker.sh" \
      "ws-echo peer default bash $PEERS/ws-echo.sh"
  fi
  if want postgres && [ -n "$PGW" ]; then
    steps \
      "real-throughput ours default $REAL throughput --tasks $THROUGHPUT_TASKS --slots $SIM_SLOTS" \
      "dispatch-postgres ours postgres $PG ours $PGW $ROUND" \
      "graphile-worker-same-pg peer postgres $PG graphile $PGW $ROUND"
  fi
  if want e2e; then
    steps \
      "agents-e2e ours default env $AGENTS_ENV node bench/agents.mjs e2e --runs 1 --tasks $E2E_TASKS" \
      "slurm peer default env SINGLE_N=0 bash $PEERS/slurm.sh" \
      "bullmq-spawn peer spawn env PROCESSOR=spawn N=$E2E_TASKS bash $PEERS/bullmq.sh"
  fi
  if want idle; then
    steps "idle-1000 ours default node bench/agents.mjs idle --runs 1"
  fi
  if want depth; then
    # The two depths in turn, the first one alternating between rounds.
    depths=10000,1000000
    [ $((ROUND % 2)) = 0 ] && depths=1000000,10000
    steps "depth ours default $REAL depth --depths $depths --seconds $DEPTH_SECONDS --slots $SIM_SLOTS --recovery"
  fi
  if want lost; then
    steps "lost ours default $REAL lost --heartbeat $HEARTBEAT --repeats 3"
  fi
done
if want busy; then
  ROUND=1
  steps "busy ours default $REAL busy --heartbeat $HEARTBEAT --seconds $BUSY_SECONDS"
fi

say "done; uptime:$(uptime | sed 's/.*load/ load/')"
node bench/dispatch-report.mjs "$RES" "$OUT/summary.md" | tee -a "$LOG"
echo "full log: $LOG; summary: $OUT/summary.md" >&2
