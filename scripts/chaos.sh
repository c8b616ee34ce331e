#!/usr/bin/env bash
# Chaos run: a local cluster, a seeded nemesis, concurrent clients, a linearizability check.
#
#   scripts/chaos.sh [--nodes 3|5] [--time S] [--seed N] [--faults LIST] [other raftlabkv-chaos flags]
#
#   --faults: partition,pause,kill,killall,restart,oneway,delay,lossy,membership (comma-separated),
#             all (default), none
#   e.g.  scripts/chaos.sh --nodes 5 --time 600 --seed 7
#         scripts/chaos.sh --faults kill,killall --server-flag=--snapshot-threshold=100
#
# Builds the release binaries, then runs target/release/raftlabkv-chaos with these arguments.
# Prints one line, PASS ... or FAIL ..., and exits non-zero on a failure; the report, the fault
# timeline, the node logs and (on failure) the failing history are in the directory it names
# (--out DIR to choose it). See `raftlabkv::chaos` (src/chaos/mod.rs) for what is checked.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet --bin raftlabkv-server --bin raftlabkv-chaos
exec target/release/raftlabkv-chaos "$@"
