#!/usr/bin/env bash
# Replace a dead node, end to end, with the command-line tools, asserting each step (thesis §4.2;
# README "Operate a cluster"):
#   1. a 3-node cluster (node1..node3, peer secret) takes 100 writes;
#   2. node3 dies and its disk is lost (kill -9, data dir wiped);
#   3. `member add node4=... --learner`; node4 starts with an empty data dir and --join;
#   4. node4 catches up as a learner (it never votes), then `member promote node4`;
#   5. `member remove node3`; the members are node1, node2, node4;
#   6. node1 dies too: node2 and node4 still commit, and every acknowledged write is there.
# Runs on its own ports in a temporary directory (CI runs it). Env: BASE_PORT (18580).
set -euo pipefail
cd "$(dirname "$0")/.."
BASE=${BASE_PORT:-18580}
BIN=target/release/raftlabkv-server
CLIENT=target/release/raftlabkv-client
cargo build --release --quiet --bins

WORK=$(mktemp -d -t raftlabkv-replace.XXXXXX)
declare -A PID
cleanup() {
  for p in "${PID[@]:-}"; do
    [ -n "$p" ] && { kill -KILL "$p" && wait "$p"; } 2>/dev/null || true
  done
  rm -rf "$WORK"
}
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; for i in 1 2 3 4; do echo "--- node$i log (tail)"; tail -5 "$WORK/node$i.log" 2>/dev/null || true; done >&2; exit 1; }
ok() { echo "ok: $*"; }
addr() { echo "127.0.0.1:$((BASE + $1 - 1))"; }
SECRET="$WORK/peer-secret"
(umask 077 && head -c 32 /dev/urandom | base64 >"$SECRET")
cli() { "$CLIENT" --servers "$1" --json "${@:2}"; }
# json EXPR JSON: evaluates a Python expression over the parsed JSON `d`
json() { python3 -c 'import json,sys; d=json.loads(sys.argv[2]); print(eval(sys.argv[1]))' "$1" "$2"; }
# retry SECONDS CMD...: runs CMD every 0.2 s until it succeeds or SECONDS pass
retry() { local end=$((SECONDS + $1)); shift; until "$@"; do [ $SECONDS -lt $end ] || return 1; sleep 0.2; done; }

for i in 1 2 3; do
  peers=""
  for j in 1 2 3; do [ "$j" = "$i" ] || peers="${peers:+$peers,}node$j=$(addr "$j")"; done
  "$BIN" --id "node$i" --addr "$(addr "$i")" --peers "$peers" --data-dir "$WORK/node$i" \
    --peer-secret-file "$SECRET" >>"$WORK/node$i.log" 2>&1 &
  PID[$i]=$!
done
ALL="$(addr 1),$(addr 2),$(addr 3)"
for k in $(seq 1 100); do cli "$ALL" put "key$k" "value $k" >/dev/null || fail "put key$k"; done
ok "3 nodes took 100 writes"

kill -KILL "${PID[3]}" && wait "${PID[3]}" 2>/dev/null || true
unset 'PID[3]'
rm -rf "$WORK/node3"
ok "node3 is dead and its data dir is gone"

LIVE="$(addr 1),$(addr 2)"
out=$(cli "$LIVE" member add "node4=$(addr 4)" --learner) || fail "member add: $out"
[ "$(json '[m["role"] for m in d["members"] if m["id"]=="node4"]' "$out")" = "['learner']" ] ||
  fail "node4 is not a learner: $out"
"$BIN" --id node4 --addr "$(addr 4)" --join "$LIVE" --data-dir "$WORK/node4" \
  --peer-secret-file "$SECRET" >>"$WORK/node4.log" 2>&1 &
PID[4]=$!
ok "node4 was added as a learner and started with --join"

caught_up() {
  local s
  s=$(cli "$(addr 4)" --timeout 1 status 2>/dev/null) || return 1
  [ "$(json 'd[0]["status"]["memberState"]+" "+str(d[0]["status"]["lastApplied"]>=101)' "$s")" = "learner True" ]
}
retry 30 caught_up || fail "node4 did not catch up as a learner"
ok "node4 caught up as a learner"
retry 30 cli "$LIVE" member promote node4 >/dev/null || fail "promote node4"
ok "node4 was promoted"
out=$(cli "$LIVE" member remove node3) || fail "member remove node3: $out"
[ "$(json '[m["id"] for m in d["members"]]' "$out")" = "['node1', 'node2', 'node4']" ] ||
  fail "members after the removal: $out"
out=$("$CLIENT" --servers "$LIVE" member list) || fail "member list"
grep -qE '^node4 +127\.0\.0\.1:[0-9]+ +voter' <<<"$out" || fail "member list shows no voter node4: $out"
ok "node3 was removed; the voters are node1, node2, node4"

kill -KILL "${PID[1]}" && wait "${PID[1]}" 2>/dev/null || true
unset 'PID[1]'
REST="$(addr 2),$(addr 4)"
cli "$REST" put after "node1 died" >/dev/null || fail "node2 and node4 do not commit"
for k in $(seq 1 100); do
  out=$(cli "$REST" get "key$k") || fail "get key$k"
  [ "$(json 'd["value"]' "$out")" = "value $k" ] || fail "key$k reads $out"
done
ok "with node1 dead too, node2 and node4 commit and every acknowledged write is there"
echo "replace_node: all checks passed"
