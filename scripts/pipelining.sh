#!/usr/bin/env bash
# Pipelining (--max-inflight) measured: put throughput and latency of a 3-node cluster with a
# window of 1 and of 4 AppendEntries per follower, on loopback and with each peer call delayed
# (the fault lab's `delay`, which stands for a slower network between the nodes).
#
#   scripts/pipelining.sh [--secs S] [--clients C] [--delays "0 2 5"] [--windows "1 4"]
#
# The delay is put on the leader's links to both followers, so every AppendEntries round trip
# takes at least that long. Prints one Markdown row per (delay, window). Loopback only; needs curl
# and python3.
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=8; CLIENTS=16; DELAYS="0 2 5"; WINDOWS="1 4"
while [ $# -gt 0 ]; do
  case "$1" in
    --secs) SECS=$2; shift 2 ;;
    --clients) CLIENTS=$2; shift 2 ;;
    --delays) DELAYS=$2; shift 2 ;;
    --windows) WINDOWS=$2; shift 2 ;;
    *) echo "usage: scripts/pipelining.sh [--secs S] [--clients C] [--delays LIST] [--windows LIST]" >&2; exit 2 ;;
  esac
done
cargo build --release --quiet --bin raftlabkv-server --bin raftlabkv-client
BIN=$PWD/target/release/raftlabkv-server
CLIENT=$PWD/target/release/raftlabkv-client
OUT=$(mktemp -d -t raftlabkv-pipelining.XXXXXX)
BASE=${BASE:-19400}
PIDS=()
stop_nodes() {
  for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill -TERM "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  PIDS=()
}
trap 'stop_nodes; rm -rf "$OUT"' EXIT
# shellcheck source=scripts/three_nodes.sh
source scripts/three_nodes.sh
# AppendEntries answered so far, to both followers together (the leader's round-trip histogram).
appends() {
  curl -fsS "http://$1/metrics" |
    awk '$1 ~ /^raftlabkv_peer_append_entries_round_trip_seconds_count/ {s += $2} END {print s + 0}'
}
json_field() { python3 -c "import json,sys; print(json.load(sys.stdin)$1)"; }

echo "| peer delay | window | puts/s | p50 | p99 | AppendEntries answered per put (both followers, heartbeats included) |"
echo "|---|---|---|---|---|---|"
for delay in $DELAYS; do
  for window in $WINDOWS; do
    THREE_NODES_FLAGS="--enable-fault-injection --max-inflight $window" \
      start_three_nodes "$BIN" "$BASE" "$OUT" || { echo "no leader" >&2; exit 1; }
    leader="127.0.0.1:$((BASE + LEADER))"
    if [ "$delay" != 0 ]; then
      curl -fsS -X POST "http://$leader/debug/fault" \
        -d "{\"action\":\"delay\",\"peer\":\"*\",\"ms\":$delay}" >/dev/null
    fi
    rpcs0=$(appends "$leader")
    result=$("$CLIENT" bench --servers "$leader" --target "$leader" --clients "$CLIENTS" \
      --duration "$SECS" --json 2>/dev/null)
    rpcs1=$(appends "$leader")
    ok=$(json_field "['ok']" <<<"$result")
    rps=$(json_field "['throughput_ops_per_sec']" <<<"$result")
    p50=$(json_field "['latency_us']['p50_us'] / 1000" <<<"$result")
    p99=$(json_field "['latency_us']['p99_us'] / 1000" <<<"$result")
    per_put=$(awk -v a="$rpcs0" -v b="$rpcs1" -v n="$ok" 'BEGIN {printf "%.2f", n ? (b - a) / n : 0}')
    printf "| %s ms | %s | %.0f | %.2f ms | %.2f ms | %s |\n" "$delay" "$window" "$rps" "$p50" "$p99" "$per_put"
    stop_nodes
  done
done
