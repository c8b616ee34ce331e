#!/usr/bin/env bash
# Where a put's CPU goes: a 3-node cluster under wrk's put load, accounted two ways.
#
#   scripts/profile.sh [--get] [--conns N] [--secs S] [--no-perf] [--out DIR]
#
# --get: linearizable gets instead of puts (after the 2 s warm-up of puts, which fills the keys).
#
# 1. Per thread, from /proc/PID/task/*/stat (utime + stime over the load, no profiler in the way):
#    the HTTP workers, the peer replication threads, sync, apply, ticker, the pool kicker...
#    given in microseconds per acknowledged put, per node role (leader, followers).
# 2. Per kind of work, from `perf record` (Debian's linux-perf; software cpu-clock samples with
#    DWARF call graphs, since this machine has no hardware counters): each sample is put in the
#    first bucket (in the order of scripts/profile_buckets.py) one of its frames matches: fsync,
#    JSON, base64, the peer MAC, HTTP parsing, allocation, thread hand-offs (futex, channel),
#    socket I/O, ... Run with --no-perf for the first part alone.
#
# SERVER_BIN=path: profile that server binary instead of building this checkout.
# Needs wrk (Debian's wrk) and ../shared/bench/kv.lua (or KV_LUA=path). Loopback only; every
# process it starts is stopped by PID. Prints a Markdown report; raw files stay in --out.
set -euo pipefail
cd "$(dirname "$0")/.."
CONNS=64; SECS=10; PERF=1; OUT=""; WORKLOAD=put
while [ $# -gt 0 ]; do
  case "$1" in
    --conns) CONNS=$2; shift 2 ;;
    --secs) SECS=$2; shift 2 ;;
    --no-perf) PERF=0; shift ;;
    --get) WORKLOAD=get; shift ;;
    --out) OUT=$2; shift 2 ;;
    *) echo "usage: scripts/profile.sh [--get] [--conns N] [--secs S] [--no-perf] [--out DIR]" >&2; exit 2 ;;
  esac
done
KV_LUA=${KV_LUA:-../shared/bench/kv.lua}
[ -f "$KV_LUA" ] || { echo "profile.sh: no $KV_LUA (set KV_LUA=path/to/kv.lua)" >&2; exit 2; }
command -v wrk >/dev/null || { echo "profile.sh: needs wrk (apt-get install wrk)" >&2; exit 2; }
if [ "$PERF" = 1 ] && ! command -v perf >/dev/null; then
  echo "profile.sh: needs perf (apt-get install linux-perf), or run with --no-perf" >&2; exit 2
fi
# SERVER_BIN=path profiles that binary instead of building this checkout's.
if [ -n "${SERVER_BIN:-}" ]; then
  BIN=$(realpath "$SERVER_BIN")
else
  cargo build --release --quiet --bin raftlabkv-server
  BIN=$PWD/target/release/raftlabkv-server
fi
[ -n "$OUT" ] || OUT=$(mktemp -d -t raftlabkv-profile.XXXXXX)
mkdir -p "$OUT"
PIDS=()
cleanup() {
  for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill -TERM "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT

BASE=28490
# shellcheck source=scripts/three_nodes.sh
. scripts/three_nodes.sh
start_three_nodes "$BIN" "$BASE" "$OUT" || { echo "profile.sh: no leader" >&2; exit 1; }
URL="http://127.0.0.1:$((BASE + LEADER))"
# Warm up (connections, pool threads, the first snapshot's worth of log) before measuring.
MODE=kv-put NKEYS=10000 VSIZE=100 wrk -t2 -c"$CONNS" -d2s -s "$KV_LUA" "$URL" >/dev/null 2>&1

# Thread name and utime+stime ticks of every thread of every node: "node thread ticks".
threads() {
  local i p t
  for i in 1 2 3; do
    p=${PIDS[$((i - 1))]}
    for t in /proc/"$p"/task/*; do
      # A thread may end between the listing and the read (a tiny_http pool thread): skip it.
      # comm may hold spaces; stat's fields after ")" are fixed.
      local comm stat
      comm=$(tr ' ' '_' <"$t/comm" 2>/dev/null) || continue
      stat=$(sed 's/.*) //' "$t/stat" 2>/dev/null) || continue
      [ -n "$comm" ] && [ -n "$stat" ] || continue
      printf 'node%s %s %s\n' "$i" "$comm" "$(awk '{print $12 + $13}' <<<"$stat")"
    done
  done
}
threads >"$OUT/before.txt"
PERF_PIDS=""
if [ "$PERF" = 1 ]; then
  PERF_PIDS=$(IFS=,; echo "${PIDS[*]}")
  perf record -q -e cpu-clock -F 499 --call-graph dwarf,8192 -p "$PERF_PIDS" -o "$OUT/perf.data" \
    -- sleep "$SECS" >/dev/null 2>&1 &
  PERF_PID=$!
fi
result=$(MODE=kv-$WORKLOAD NKEYS=10000 VSIZE=100 wrk -t"$(( CONNS < 2 ? 1 : 2 ))" -c"$CONNS" -d"${SECS}s" \
  -s "$KV_LUA" "$URL" 2>&1 | grep '^RESULT' || true)
threads >"$OUT/after.txt"
[ "$PERF" = 1 ] && wait "$PERF_PID" 2>/dev/null || true
puts=$(tr ' ' '\n' <<<"$result" | sed -n 's/^requests=//p')
[ -n "$puts" ] && [ "$puts" -gt 0 ] || { echo "profile.sh: wrk had no ${WORKLOAD}s answered: $result" >&2; exit 1; }
hz=$(getconf CLK_TCK)

echo "# Where a $WORKLOAD's CPU goes ($(date -u +%Y-%m-%d), $(nproc) cores, $CONNS connections, ${SECS} s)"
echo
echo "wrk: $result"
echo
echo "## By thread (µs of CPU per answered $WORKLOAD; /proc utime + stime)"
echo
python3 - "$OUT/before.txt" "$OUT/after.txt" "$puts" "$hz" "node$LEADER" <<'PY'
import collections, re, sys
before_f, after_f, puts, hz, leader = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
def load(path):
    d = collections.defaultdict(int)
    for line in open(path):
        node, name, ticks = line.split()
        d[(node, name)] += int(ticks)  # threads sharing a name are summed
    return d
b, a = load(before_f), load(after_f)
def group(name):
    # tiny_http's pool threads are unnamed (they inherit the process name).
    if name.startswith("raftlabkv-serv"):
        return "HTTP workers (tiny_http pool)"
    return re.sub(r"\d+$", "N", name)
rows = collections.defaultdict(lambda: [0, 0])  # group -> [leader, followers]
for key, after in a.items():
    node, name = key
    d = after - b.get(key, 0)
    rows[group(name)][0 if node == leader else 1] += d
us = lambda t: t * 1e6 / hz / puts
total = [sum(r[0] for r in rows.values()), sum(r[1] for r in rows.values())]
print("| thread | leader | 2 followers | all |")
print("|---|---|---|---|")
for g, (l, f) in sorted(rows.items(), key=lambda kv: -(kv[1][0] + kv[1][1])):
    if l + f == 0:
        continue
    print(f"| {g} | {us(l):.1f} | {us(f):.1f} | {us(l + f):.1f} |")
print(f"| **all** | **{us(total[0]):.1f}** | **{us(total[1]):.1f}** | **{us(sum(total)):.1f}** |")
PY
if [ "$PERF" = 1 ]; then
  echo
  echo "## By kind of work (share of perf samples, all three nodes)"
  echo
  perf script -i "$OUT/perf.data" -F comm,tid,ip,sym 2>/dev/null >"$OUT/perf.script" || true
  python3 scripts/profile_buckets.py "$OUT/perf.script"
fi
echo
echo "raw files: $OUT"
