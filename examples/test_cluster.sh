#!/usr/bin/env bash
# End-to-end check of a fresh local 3-node cluster, through the command-line client:
# put/get/delete/getall through different nodes, the hello_client example (the client library),
# kill the leader, check that a new leader is elected and the data survived, restart the killed
# node and check it catches up. The nodes share a peer secret; a forged peer request is refused.
# First, the three_nodes example (the Raft core stepped by hand).
# Exits non-zero at the first failed step. Env: BASE_PORT (18480).
set -euo pipefail
cd "$(dirname "$0")/.."
BASE=${BASE_PORT:-18480}
BIN=target/release/raftlabkv-server
CLIENT=target/release/raftlabkv-client
cargo build --release --quiet --bins --example hello_client --example three_nodes
example() { cargo run --release --quiet --example "$@"; }

WORK=$(mktemp -d -t raftlabkv-test-cluster.XXXXXX)
declare -A PID
cleanup() {
  for p in "${PID[@]:-}"; do
    [ -n "$p" ] && { kill -KILL "$p" && wait "$p"; } 2>/dev/null || true
  done
  rm -rf "$WORK"
}
trap cleanup EXIT

fail() { echo "FAIL: $*" >&2; for i in 1 2 3; do echo "--- node$i log (tail)"; tail -5 "$WORK/node$i.log" || true; done >&2; exit 1; }
ok() { echo "ok: $*"; }
addr() { echo "127.0.0.1:$((BASE + $1 - 1))"; }
ALL="$(addr 1),$(addr 2),$(addr 3)"
SECRET="$WORK/peer-secret"
(umask 077 && head -c 32 /dev/urandom | base64 >"$SECRET")

start_node() {
  local i=$1 peers="" j
  for j in 1 2 3; do [ "$j" = "$i" ] || peers="${peers:+$peers,}node$j=$(addr "$j")"; done
  "$BIN" --id "node$i" --addr "$(addr "$i")" --peers "$peers" --data-dir "$WORK/node$i" \
    --peer-secret-file "$SECRET" >>"$WORK/node$i.log" 2>&1 &
  PID[$i]=$!
}
# field JSON KEY: a top-level field of a JSON object
field() { python3 -c 'import json,sys; v=json.loads(sys.argv[1]).get(sys.argv[2]); print("" if v is None else v)' "$1" "$2"; }
leader_of() { # prints the node number that the nodes among $@ agree leads, or nothing
  local i s l=""
  for i in "$@"; do
    s=$("$CLIENT" --servers "$(addr "$i")" --json --timeout 1 status 2>/dev/null) || continue
    s=$(python3 -c 'import json,sys; print(json.dumps(json.loads(sys.argv[1])[0]["status"]))' "$s" 2>/dev/null) || continue
    [ "$(field "$s" isLeader)" = "True" ] && l=$i
  done
  echo "$l"
}
wait_leader() { local n l; for n in $(seq 1 100); do l=$(leader_of "$@"); [ -n "$l" ] && { echo "$l"; return 0; }; sleep 0.1; done; return 1; }
kv() { "$CLIENT" --servers "$1" --json "${@:2}"; }

out=$(example three_nodes) || fail "three_nodes example exited non-zero: $out"
grep -qE '^  n1@[0-9]+ leader ' <<<"$out" || fail "three_nodes shows no leader: $out"
[ "$(grep -E '^  n[123] applied [0-9]+@[0-9]+: put hello world$' <<<"$out" | cut -c3-4 | sort -u | wc -l)" = 3 ] ||
  fail "three_nodes did not apply the command on all 3 nodes: $out"
ok "three_nodes example: n1 leads, the command is applied on n1, n2, n3"

for i in 1 2 3; do start_node "$i"; done
L=$(wait_leader 1 2 3) || fail "no leader elected within 10 s"
ok "node$L leads"

# An unsigned RequestVote with a huge term: refused (401) before it is parsed; nobody's term moves.
term_of() { field "$(python3 -c 'import json,sys; print(json.dumps(json.loads(sys.argv[1])[0]["status"]))' "$("$CLIENT" --servers "$(addr "$1")" --json status)")" term; }
before=$(term_of "$L")
forged='{"from":"node2","to":"node1","term":9223372036854775000,"message":{"type":"RequestVote","last_log_index":99,"last_log_term":1}}'
# The right cluster id (cluster_id_for: SHA-256 of the sorted id=addr lines), but no MAC.
code=$(python3 - "$forged" "$(addr 1)" "$(addr 2)" "$(addr 3)" <<'PY'
import hashlib, sys, urllib.request, urllib.error
lines = sorted(f"node{i}={a}\n" for i, a in enumerate(sys.argv[2:], 1))
cluster = hashlib.sha256("".join(lines).encode()).hexdigest()[:16]
req = urllib.request.Request(f"http://{sys.argv[2]}/raft/requestVote", data=sys.argv[1].encode(),
                             headers={"X-Raft-From": "node2", "X-Raft-Cluster": cluster})
try:
    print(urllib.request.urlopen(req, timeout=5).status)
except urllib.error.HTTPError as e:
    print(e.code, e.read().decode())
PY
) || fail "could not send the forged request"
[[ "$code" == "401 "*'"error":"unauthorized"'* ]] || fail "a forged, unsigned RequestVote got $code"
[ "$(wait_leader 1 2 3)" = "$L" ] && [ "$(term_of "$L")" = "$before" ] || fail "the forged RequestVote moved the term"
ok "an unsigned peer request is refused (401) and changes no term"

out=$(kv "$(addr 1)" put "greeting" "hello raft world") || fail "put via node1: $out"
[ "$(field "$out" status)" = ok ] || fail "put answered $out"
out=$(kv "$(addr 2)" put "dir/with space/ü" "odd key") || fail "put odd key via node2"
out=$(kv "$(addr 3)" put "doomed" "x") || fail "put via node3"
ok "puts through node1, node2, node3"

out=$(kv "$(addr 3)" get "greeting") || fail "get via node3"
[ "$(field "$out" value)" = "hello raft world" ] || fail "get greeting answered $out"
out=$(kv "$(addr 1)" get "dir/with space/ü") || fail "get odd key via node1"
[ "$(field "$out" value)" = "odd key" ] || fail "get odd key answered $out"
ok "gets through other nodes see the writes"

kv "$(addr 2)" delete "doomed" >/dev/null || fail "delete via node2"
if out=$(kv "$(addr 1)" get "doomed" 2>&1); then fail "deleted key still readable: $out"; fi
ok "delete through node2, gone via node1"

out=$(kv "$(addr 1)" getall) || fail "getall"
python3 -c 'import json,sys; d=json.loads(sys.argv[1]); assert d=={"greeting":"hello raft world","dir/with space/ü":"odd key"}, d' "$out" ||
  fail "getall answered $out"
ok "getall has exactly the two live keys"

out=$(example hello_client "$ALL" 2>&1) || fail "hello_client example failed: $out"
grep -qE '^get hello = "world, from process [0-9]+": the value we wrote$' <<<"$out" ||
  fail "hello_client did not read its write back: $out"
grep -qxE "leader: ($(addr 1)|$(addr 2)|$(addr 3))" <<<"$out" || fail "hello_client names no leader: $out"
out=$(kv "$(addr 3)" get "hello") || fail "get hello via node3"
[[ "$(field "$out" value)" == "world, from process "* ]] || fail "hello_client's write reads as $out"
# Nothing listens there: the client retries for its 10 s deadline, then the example must fail.
if out=$(example hello_client "127.0.0.1:$((BASE + 9))" 2>&1); then fail "hello_client succeeded without a cluster: $out"; fi
grep -q "cannot write to the cluster" <<<"$out" || fail "hello_client without a cluster said: $out"
ok "hello_client example: put, linearizable get, leader; fails clearly without a cluster"

{ kill -KILL "${PID[$L]}" && wait "${PID[$L]}"; } 2>/dev/null || true; PID[$L]=""
REST=(); for i in 1 2 3; do [ "$i" = "$L" ] || REST+=("$i"); done
N=$(wait_leader "${REST[@]}") || fail "no new leader after killing node$L"
[ "$N" != "$L" ] || fail "killed node still leads"
ok "killed leader node$L; node$N leads now"

out=$(kv "$(addr "${REST[0]}"),$(addr "${REST[1]}")" get "greeting") || fail "get after failover"
[ "$(field "$out" value)" = "hello raft world" ] || fail "data lost after failover: $out"
kv "$(addr "$N")" put "after" "failover" >/dev/null || fail "write after failover"
ok "data survived and writes go on"

start_node "$L"
for n in $(seq 1 100); do
  out=$(kv "$(addr "$L")" --stale get "after" 2>/dev/null) && [ "$(field "$out" value)" = failover ] && break
  [ "$n" = 100 ] && fail "restarted node$L did not catch up"
  sleep 0.1
done
out=$(kv "$(addr "$L")" --stale get "greeting") || fail "restarted node lost its data"
[ "$(field "$out" value)" = "hello raft world" ] || fail "restarted node has $out"
ok "restarted node$L recovered from its data dir and caught up"
echo "test_cluster: all checks passed"
