#!/usr/bin/env bash
# The fault lab: a local 3-node cluster with --enable-fault-injection, and the dashboard's URL.
#
#   examples/lab.sh [BASE_PORT]      (default 8080: nodes on 8080, 8081, 8082)
#
# Open the printed URL in a browser; README "Watch Raft work" lists five experiments. The lab
# lets anyone who can reach the ports cut, slow or pause the nodes: for learning only.
# Env: DATA_DIR (default ./data-lab), EXTRA_FLAGS (passed to every node). Ctrl-C stops it.
# (Three nodes only for now: examples/start_cluster.sh starts three.)
set -euo pipefail
cd "$(dirname "$0")/.."
BASE=${1:-8080}
export DATA_DIR=${DATA_DIR:-./data-lab}
export EXTRA_FLAGS="--enable-fault-injection ${EXTRA_FLAGS:-}"
echo "dashboard: http://127.0.0.1:$BASE/dashboard  (any node's /dashboard shows the whole cluster)"
exec bash examples/start_cluster.sh "$BASE"
