#!/usr/bin/env bash
# Dispatch benchmarks (`make bench-dispatch`). Today: the dispatch engine in process
# (bench/dispatch-engine.ts: throughput with 100 simulated agents answering at once, every
# result durable before its acknowledgement; submit → result latency; hand-out rate with
# 10,000 vs 1,000,000 tasks queued; a 1,000,000-row params file; recovery after kill -9 with
# 1,000,000 queued). Each figure is the median of RUNS runs (default 3).
# The side-by-side run against the peers (../shared/bench-peers: BullMQ, Slurm,
# graphile-worker) and the end-to-end figures with real agents are added here by the lead.
#
#   bash bench/dispatch.sh                 # every engine figure
#   RUNS=5 bash bench/dispatch.sh depth    # one of: throughput latency depth submit recovery
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p dist/bench
node_modules/.bin/esbuild bench/dispatch-engine.ts --bundle --platform=node --format=esm --target=node20 \
  --packages=external --log-level=warning --outfile=dist/bench/dispatch-engine.mjs
node dist/bench/dispatch-engine.mjs "${1:-all}"
