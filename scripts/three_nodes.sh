# Sourced by scripts/bench.sh and scripts/profile.sh: starts a 3-node cluster on loopback and
# finds its leader.
#
#   start_three_nodes BIN BASE DIR    nodes on 127.0.0.1:BASE+1..3, data in DIR/node1..3, logs in
#                                     DIR/node1..3.log; appends their PIDs to PIDS (the caller
#                                     stops them) and sets LEADER to 1, 2 or 3 (returns 1 if no
#                                     leader is elected within ~10 s). THREE_NODES_FLAGS (env):
#                                     more server flags for every node.
start_three_nodes() {
  local bin=$1 base=$2 dir=$3 i j peers
  for i in 1 2 3; do
    peers=""
    for j in 1 2 3; do [ "$j" = "$i" ] || peers="${peers:+$peers,}node$j=127.0.0.1:$((base + j))"; done
    rm -rf "$dir/node$i"
    "$bin" --id "node$i" --addr "127.0.0.1:$((base + i))" --peers "$peers" --data-dir "$dir/node$i" \
      --log-level warn ${THREE_NODES_FLAGS:-} >"$dir/node$i.log" 2>&1 &
    PIDS+=("$!")
  done
  LEADER=""
  for _ in $(seq 1 200); do
    for i in 1 2 3; do
      if curl -fsS "http://127.0.0.1:$((base + i))/status" 2>/dev/null | grep -q '"role":"leader"'; then LEADER=$i; fi
    done
    [ -n "$LEADER" ] && return 0
    sleep 0.05
  done
  return 1
}
