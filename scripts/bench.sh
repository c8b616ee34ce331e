#!/usr/bin/env bash
# The README's speed table, RaftLabKV beside etcd 3.4 in the same run, plus the CPU one put costs.
#
#   scripts/bench.sh [--secs S] [--reps N] [--quick]
#
# Needs ../shared/bench/compare.sh (or COMPARE=path): it runs 3 RaftLabKV nodes and a 3-member
# etcd on this machine under the same wrk load (fsync on, 100-byte values, 10,000 keys). Rows:
# put at 1, 16 and 64 connections, linearizable get at 64. Then a 3-node cluster of its own
# under 64 put connections, for the CPU per acknowledged put: utime + stime of the three server
# processes (/proc/PID/stat) over the run, divided by the puts wrk saw acknowledged.
# --quick: 1 rep of 3 s each (a smoke run; the figures are not worth quoting).
# Prints a Markdown table with the date and the machine. Loopback only.
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=10; REPS=3
while [ $# -gt 0 ]; do
  case "$1" in
    --secs) SECS=$2; shift 2 ;;
    --reps) REPS=$2; shift 2 ;;
    --quick) SECS=3; REPS=1; shift ;;
    *) echo "usage: scripts/bench.sh [--secs S] [--reps N] [--quick]" >&2; exit 2 ;;
  esac
done
COMPARE=${COMPARE:-../shared/bench/compare.sh}
[ -x "$COMPARE" ] || { echo "bench.sh: no $COMPARE (set COMPARE=path/to/compare.sh)" >&2; exit 2; }
KV_LUA=${KV_LUA:-$(dirname "$COMPARE")/kv.lua}
cargo build --release --quiet --bin raftlabkv-server
BIN=$PWD/target/release/raftlabkv-server
OUT=$(mktemp -d -t raftlabkv-bench.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill -TERM "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$OUT"
}
trap cleanup EXIT

field() { tr ' ' '\n' <<<"$1" | sed -n "s/^$2=//p" | head -1; }
median() { sort -n | awk '{a[NR]=$1} END {if (NR == 0) print 0; else print a[int((NR + 1) / 2)]}'; }
ms() { awk -v us="$1" 'BEGIN {printf "%.2f ms", us / 1000}'; }
num() { awk -v n="$1" 'BEGIN {s = sprintf("%d", n); r = ""; while (length(s) > 3) {r = "," substr(s, length(s) - 2) r; s = substr(s, 1, length(s) - 3)} print s r}'; }

ROWS=()
row() { # LABEL WORKLOAD CONNS
  local log="$OUT/$2-$3.log"
  REPS=$REPS "$COMPARE" "$BIN" "$2" "$3" "$SECS" >"$log" 2>&1 || { echo "compare.sh $2 $3 failed: $log" >&2; cat "$log" >&2; exit 1; }
  local ratio rl etcd p50r p50e
  ratio=$(grep '^RATIO' "$log" | tail -1)
  rl=$(field "$ratio" raftlabkv_rps); etcd=$(field "$ratio" etcd_rps)
  p50r=$(grep '^raftlabkv.*RESULT' "$log" | while read -r l; do field "$l" p50_us; done | median)
  p50e=$(grep '^etcd.*RESULT' "$log" | while read -r l; do field "$l" p50_us; done | median)
  ROWS+=("| $1 | $(num "$rl")/s, p50 $(ms "$p50r"), p99 $(ms "$(field "$ratio" raftlabkv_p99_us)") | $(num "$etcd")/s, p50 $(ms "$p50e"), p99 $(ms "$(field "$ratio" etcd_p99_us)") | $(field "$ratio" ratio) |")
  echo "  done: $1" >&2
}
echo "bench.sh: $REPS rep(s) of ${SECS} s per system and row; this takes a while" >&2
row "put, 1 connection" put 1
row "put, 16 connections" put 16
row "put, 64 connections" put 64
row "linearizable get, 64" get 64

# CPU per put: our own 3 nodes, wrk's kv-put at 64 connections, /proc before and after.
BASE=28470
mkdir -p "$OUT/cpu"
# shellcheck source=scripts/three_nodes.sh
. scripts/three_nodes.sh
start_three_nodes "$BIN" "$BASE" "$OUT/cpu" || { echo "bench.sh: no leader for the CPU run" >&2; exit 1; }
cpu_ticks() { local t=0 p; for p in "${PIDS[@]}"; do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done; echo "$t"; }
before=$(cpu_ticks)
result=$(MODE=kv-put NKEYS=10000 VSIZE=100 wrk -t2 -c64 -d"${SECS}s" -s "$KV_LUA" "http://127.0.0.1:$((BASE + LEADER))" 2>&1 | grep '^RESULT' || true)
after=$(cpu_ticks)
puts=$(field "$result" requests)
hz=$(getconf CLK_TCK)
cpu_us=$(awk -v d=$((after - before)) -v hz="$hz" -v n="${puts:-0}" 'BEGIN {if (n > 0) printf "%.0f", d * 1e6 / hz / n; else print "?"}')

echo
echo "Measured $(date -u +%Y-%m-%d) on $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'); $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo)), loopback, fsync on, 100-byte values, $REPS rep(s) of ${SECS} s, medians:"
echo
echo "| load | RaftLabKV | etcd 3.4 | ratio |"
echo "|---|---|---|---|"
printf '%s\n' "${ROWS[@]}"
echo
echo "CPU per acknowledged put (3 nodes together, 64 connections): ${cpu_us} µs ($(num "${puts:-0}") puts in ${SECS} s)"
