#!/usr/bin/env bash
# The postgres section of bench/dispatch.sh: our dispatcher on the PostgreSQL store beside
# graphile-worker on the SAME throwaway PostgreSQL (fsync=on, synchronous_commit=on), so that
# both pay the same server's commits. One cluster serves the whole run; each step gets a fresh
# database of its own (pg_stat_database counts commits per database; WAL is the cluster's, and
# the steps run one at a time).
#
#   bash bench/dispatch-postgres.sh start WORKDIR           initdb + postgres on 127.0.0.1:PG_PORT
#   bash bench/dispatch-postgres.sh ours WORKDIR ROUND      dispatch-real throughput --store (database lc_rROUND)
#   bash bench/dispatch-postgres.sh graphile WORKDIR ROUND  graphile-worker-bench.mjs (database gw_rROUND)
#   bash bench/dispatch-postgres.sh stop WORKDIR            fast shutdown by PID, WORKDIR removed
#
# ours: the throughput section's workload (THROUGHPUT_TASKS=200000 no-op tasks submitted over
# HTTP in chunks of 10,000, 100 simulated agents × SIM_SLOTS=32 slots), printed as
# `RESULT name=dispatch-postgres ... tasks_per_s=`; graphile: PEERS (the private copy of
# ../shared/bench-peers with its node_modules) with its defaults (N=20000, 50 workers), printed
# as `RESULT name=graphile-worker-same-pg ... jobs_per_s=`. Both lines carry
# pg_commits_per_task (xact_commit of its database), pg_wal_bytes_per_task
# (pg_current_wal_lsn before/after) and the rows inserted, updated and deleted per task
# (pg_stat_user_tables). Root only: postgres runs as user postgres via runuser.
# PG_PORT=5498. PROFILE_DIR (from bench/dispatch.sh PROFILE=1) profiles our dispatcher.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
CMD=${1:?usage: dispatch-postgres.sh start|ours|graphile|stop WORKDIR [ROUND]}
W=${2:?WORKDIR}
PG_PORT=${PG_PORT:-5498}
say() { echo "[$(date +%T)] $*" >&2; }
pgbin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1; }
PGBIN=$(pgbin)
as_pg() { (cd "$W" && runuser -u postgres -- "$@"); } # postgres' tools refuse root; a cwd it can read
psqlq() { as_pg "$PGBIN/psql" -h "$W" -p "$(cat "$W/port")" -d "$1" -XAtq -v ON_ERROR_STOP=1 -c "$2"; }

start() {
  [ "$(id -u)" = 0 ] || { echo "dispatch-postgres.sh: root only (postgres runs as user postgres)" >&2; exit 1; }
  if [ -z "$PGBIN" ] || ! id postgres >/dev/null 2>&1; then
    say "installing postgresql"
    DEBIAN_FRONTEND=noninteractive apt-get install -y postgresql >"$W.apt.log" 2>&1 || { tail -5 "$W.apt.log"; exit 1; }
    PGBIN=$(pgbin)
  fi
  while ss -Hltn "sport = :$PG_PORT" | grep -q .; do PG_PORT=$((PG_PORT + 1)); done
  mkdir -p "$W" && chown postgres:postgres "$W" && chmod 700 "$W"
  echo "$PG_PORT" >"$W/port"
  # peer auth on the socket (this script), SCRAM passwords on 127.0.0.1 (the Node processes)
  head -c 24 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' >"$W/pw"
  chown postgres "$W/pw"
  as_pg "$PGBIN/initdb" -D "$W/data" -U postgres -E UTF8 --locale=C --auth-local=peer --auth-host=scram-sha-256 \
    --pwfile="$W/pw" >"$W/initdb.log" 2>&1 || { cat "$W/initdb.log" >&2; exit 1; }
  (cd "$W" && exec setsid runuser -u postgres -- "$PGBIN/postgres" -D "$W/data" -p "$PG_PORT" -c listen_addresses=127.0.0.1 \
    -c unix_socket_directories="$W" -c max_connections=200 -c fsync=on -c synchronous_commit=on \
    -c full_page_writes=on) >"$W/postgres.log" 2>&1 </dev/null &
  echo $! >"$W/runuser.pid"
  for _ in $(seq 100); do "$PGBIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT" && break; sleep 0.1; done
  "$PGBIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT" || { cat "$W/postgres.log" >&2; exit 1; }
  psqlq postgres "create role lilcluster login password '$(cat "$W/pw")'"
  say "postgres $(psqlq postgres 'show server_version') (pid $(head -1 "$W/data/postmaster.pid")) on 127.0.0.1:$PG_PORT;" \
    "$(psqlq postgres "select string_agg(name || '=' || setting, ' ' order by name) from pg_settings where name in
       ('fsync','synchronous_commit','full_page_writes','wal_sync_method','wal_level','shared_buffers','max_connections')")"
}

stop() {
  [ -f "$W/runuser.pid" ] || { rm -rf "$W"; return 0; }
  local pg ru
  pg=$(head -1 "$W/data/postmaster.pid" 2>/dev/null || true)
  ru=$(cat "$W/runuser.pid")
  if [ -n "$pg" ]; then # postmaster: SIGINT = fast shutdown; SIGQUIT = immediate
    kill -INT "$pg" 2>/dev/null || true
    for _ in $(seq 60); do kill -0 "$pg" 2>/dev/null || break; sleep 0.25; done
    kill -QUIT "$pg" 2>/dev/null || true
  fi
  for _ in $(seq 20); do kill -0 "$ru" 2>/dev/null || break; sleep 0.25; done
  kill -KILL "$ru" 2>/dev/null || true
  if [ -n "${KEEP:-}" ]; then say "postgres work dir kept: $W"; else rm -rf "$W"; fi
}

# Rows inserted, updated, deleted in the database's tables (their statistics, as of now).
TUPLES="(select coalesce(sum(n_tup_ins), 0) i, coalesce(sum(n_tup_upd), 0) u, coalesce(sum(n_tup_del), 0) d from pg_stat_user_tables) t"
# pg_stats DB: "xact_commit wal_lsn inserted updated deleted" now
pg_stats() {
  psqlq "$1" "select xact_commit || ' ' || pg_current_wal_lsn() || ' ' || i || ' ' || u || ' ' || d
    from pg_stat_database, $TUPLES where datname = '$1'"
}
# pg_fields DB BEFORE TASKS: the RESULT fields of PostgreSQL's side of a step
pg_fields() {
  local db=$1 n=$3 x0 l0 i0 u0 d0
  read -r x0 l0 i0 u0 d0 <<<"$2"
  psqlq "$db" "select 'pg_commits=' || (xact_commit - $x0) || ' pg_commits_per_task=' ||
      round((xact_commit - $x0)::numeric / $n, 4) || ' pg_wal_bytes=' || pg_wal_lsn_diff(pg_current_wal_lsn(), '$l0') ||
      ' pg_wal_bytes_per_task=' || round(pg_wal_lsn_diff(pg_current_wal_lsn(), '$l0') / $n) ||
      ' pg_rows_inserted_per_task=' || round((i - $i0)::numeric / $n, 2) || ' pg_rows_updated_per_task=' ||
      round((u - $u0)::numeric / $n, 2) || ' pg_rows_deleted_per_task=' || round((d - $d0)::numeric / $n, 2)
    from pg_stat_database, $TUPLES where datname = '$db'"
}

# step DB TASKS NAME CMD...: runs CMD, prints its RESULT line renamed to NAME with PostgreSQL's fields
step() {
  local db=$1 n=$2 name=$3 before out rc=0
  shift 3
  before=$(pg_stats "$db")
  # in the background, stopped by PID if we are (bench/dispatch.sh stops its step with TERM)
  "$@" >"$W/step.out" 2>&1 &
  STEP_PID=$!
  wait "$STEP_PID" || rc=$?
  STEP_PID=
  out=$(cat "$W/step.out")
  grep -v '^RESULT ' <<<"$out" || true
  # the backends' statistics reach pg_stat_database when their sessions end (the steps have ended)
  local line
  line=$(grep '^RESULT ' <<<"$out" | head -1 || true)
  [ -n "$line" ] || { echo "no RESULT line (rc $rc)" >&2; return 1; }
  line=$(sed -E "s/^RESULT name=[^ ]+/RESULT name=$name/" <<<"$line")
  [ "$name" = graphile-worker-same-pg ] && line=$(sed -E 's/ tasks_per_s=([0-9.]+)/ jobs_per_s=\1 tasks_per_s=\1/' <<<"$line")
  echo "$line $(pg_fields "$db" "$before" "$n")"
  return "$rc"
}

ours() {
  local round=$1 db=lc_r$1 tasks=${THROUGHPUT_TASKS:-200000}
  psqlq postgres "create database $db owner lilcluster"
  step "$db" "$tasks" dispatch-postgres node "$ROOT/dist/bench/dispatch-real.mjs" throughput --tasks "$tasks" \
    --slots "${SIM_SLOTS:-32}" --store "postgres://lilcluster:$(cat "$W/pw")@127.0.0.1:$(cat "$W/port")/$db"
  psqlq postgres "drop database $db"
}

graphile() {
  local round=$1 db=gw_r$1 peers=${PEERS:-/var/tmp/lc-bench-peers}
  [ -d "$peers/node_modules/graphile-worker" ] || { echo "no graphile-worker in $peers/node_modules" >&2; exit 1; }
  psqlq postgres "create database $db"
  export DATABASE_URL="postgres://postgres:$(cat "$W/pw")@127.0.0.1:$(cat "$W/port")/$db" # env: not in ps
  (cd "$peers" && node node_modules/graphile-worker/dist/cli.js --schema-only) >"$W/migrate-$db.log" 2>&1 \
    || { cat "$W/migrate-$db.log" >&2; exit 1; }
  step "$db" "${N:-20000}" graphile-worker-same-pg env -C "$peers" node graphile-worker-bench.mjs
  psqlq postgres "drop database $db"
}

STEP_PID=
trap '[ -n "$STEP_PID" ] && kill -TERM "$STEP_PID" 2>/dev/null; exit 143' TERM INT
case $CMD in
  start) start ;;
  stop) stop ;;
  ours) ours "${3:?ROUND}" ;;
  graphile) graphile "${3:?ROUND}" ;;
  *) echo "unknown command $CMD" >&2; exit 2 ;;
esac
