#!/usr/bin/env bash
# Start a local 3-node RaftLabKV cluster on loopback.
#
#   examples/start_cluster.sh [BASE_PORT]     (default 8080: nodes on 8080, 8081, 8082)
#
# Builds the release binaries if needed, starts node1..node3 (node1..nodeN with NODES=N) with
# data dirs under ./data/,
# prints their URLs and PIDs, and stops every node on Ctrl-C, on SIGTERM, or when the shell that
# started it goes away. The cluster's peer secret is $DATA_DIR/peer-secret (made on first start,
# mode 600, kept for restarts): only its nodes can speak Raft to each other.
# Env: DATA_DIR (./data), EXTRA_FLAGS (passed to every node), NODES (3; 1 to 9).
set -euo pipefail
cd "$(dirname "$0")/.."
BASE=${1:-8080}
DATA_DIR=${DATA_DIR:-./data}
NODES=${NODES:-3}
case "$NODES" in [1-9]) ;; *) echo "NODES must be 1 to 9, not '$NODES'" >&2; exit 2 ;; esac
BIN=target/release/raftlabkv-server
CLIENT=target/release/raftlabkv-client

if [ ! -x "$BIN" ] || [ ! -x "$CLIENT" ] || [ -n "$(find src Cargo.toml -newer "$BIN" -print -quit)" ]; then
  echo "building release binaries..."
  cargo build --release --quiet
fi

PIDS=()
stop_all() {
  trap - EXIT INT TERM
  for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill -TERM "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]:-}"; do [ -n "$p" ] && wait "$p" 2>/dev/null || true; done
  echo "cluster stopped"
}
trap stop_all EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

mkdir -p "$DATA_DIR"
SECRET="$DATA_DIR/peer-secret"
if [ ! -s "$SECRET" ]; then
  (umask 077 && head -c 32 /dev/urandom | base64 >"$SECRET")
  echo "made the cluster's peer secret: $SECRET"
fi
chmod 600 "$SECRET"
SERVERS=""
for i in $(seq 1 "$NODES"); do
  peers=""
  for j in $(seq 1 "$NODES"); do
    [ "$j" = "$i" ] || peers="${peers:+$peers,}node$j=127.0.0.1:$((BASE + j - 1))"
  done
  # shellcheck disable=SC2086
  "$BIN" --id "node$i" --addr "127.0.0.1:$((BASE + i - 1))" --peers "$peers" \
    --data-dir "$DATA_DIR/node$i" --peer-secret-file "$SECRET" ${EXTRA_FLAGS:-} >"$DATA_DIR/node$i.log" 2>&1 &
  PIDS+=("$!")
  SERVERS="${SERVERS:+$SERVERS,}127.0.0.1:$((BASE + i - 1))"
  echo "node$i  http://127.0.0.1:$((BASE + i - 1))  pid $!  log $DATA_DIR/node$i.log"
done

# Wait for a leader, so the cluster is usable when we say so.
for _ in $(seq 1 100); do
  for i in $(seq 1 "$NODES"); do
    if "$CLIENT" --servers "127.0.0.1:$((BASE + i - 1))" --json --timeout 1 status 2>/dev/null |
      grep -q '"isLeader":true'; then
      echo "leader: node$i. Try: target/release/raftlabkv-client --servers $SERVERS"
      echo "Ctrl-C stops the cluster."
      PARENT=$PPID
      # Stay up while every node runs and our parent lives (we are not re-parented).
      while kill -0 "$PARENT" 2>/dev/null && [ "$(awk '{print $4}' /proc/$$/stat)" = "$PARENT" ]; do
        for p in "${PIDS[@]}"; do
          kill -0 "$p" 2>/dev/null || { echo "a node exited (pid $p); stopping"; exit 1; }
        done
        sleep 1
      done
      exit 0
    fi
  done
  sleep 0.1
done
echo "no leader elected within 10 s; see $DATA_DIR/node*.log" >&2
exit 1
