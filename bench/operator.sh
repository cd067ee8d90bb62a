#!/usr/bin/env bash
# Operator-surface figures (see bench/operator.ts): GET /api/v1/nodes with 1,000 nodes, the
# page's live feed, reboot → agent acknowledgement with real agents on simulated machines.
#   bash bench/operator.sh                      # NODES=1000 REQUESTS=200 REBOOTS=20 MACHINES=3
# Prints `RESULT name=... median_ms=...` lines. Run as root for the control figures.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -f dist/bin/dispatcher.mjs ] && [ -f dist/bin/node-agent.mjs ] || make build >/dev/null
mkdir -p dist/bench
node_modules/.bin/esbuild bench/operator.ts --bundle --platform=node --format=esm --target=node24 --packages=external --log-level=warning --outfile=dist/bench/operator.mjs
# Imported rather than run as the main script: sim-agents.ts (bundled in) runs its own CLI when it
# is the main script.
exec node --input-type=module -e "await import('$PWD/dist/bench/operator.mjs')"
