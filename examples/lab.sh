#!/usr/bin/env bash
# The fault lab: a local 3-node cluster with --enable-fault-injection, and the dashboard's URL.
#
#   examples/lab.sh [--nodes N] [BASE_PORT]   (default 3 nodes from port 8080: 8080, 8081, 8082)
#
# Open the printed URL in a browser; README "Watch Raft work" lists five experiments. The lab
# lets anyone who can reach the ports cut, slow or pause the nodes: for learning only.
# Env: DATA_DIR (default ./data-lab), EXTRA_FLAGS (passed to every node). Ctrl-C stops it.
# Five nodes (--nodes 5) make the experiments with two failures and split votes possible.
set -euo pipefail
cd "$(dirname "$0")/.."
export NODES=${NODES:-3}
if [ "${1:-}" = "--nodes" ]; then
  NODES=${2:?"--nodes needs a number (1 to 9)"}
  shift 2
fi
BASE=${1:-8080}
export DATA_DIR=${DATA_DIR:-./data-lab}
export EXTRA_FLAGS="--enable-fault-injection ${EXTRA_FLAGS:-}"
echo "dashboard: http://127.0.0.1:$BASE/dashboard  (any node's /dashboard shows the whole cluster)"
exec bash examples/start_cluster.sh "$BASE"
