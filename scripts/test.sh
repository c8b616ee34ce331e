#!/usr/bin/env bash
# The project's test command (README "Run the tests"; CI runs exactly this through .ci/run):
#   1. every Rust test (unit, simulated-cluster, real-binary) in release mode, one build for all;
#   2. the end-to-end cluster scripts (test_cluster.sh, replace_node.sh, test_lab.sh).
# Needs the Rust toolchain and python3; tests/observability.rs and tests/dashboard.rs also want
# promtool, chromium and chromedriver (.ci/run installs them; elsewhere they skip, saying so).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --bins --quiet
cargo test --release 2>&1
bash examples/test_cluster.sh
bash examples/replace_node.sh
bash examples/test_lab.sh
