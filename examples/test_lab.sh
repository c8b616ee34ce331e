#!/usr/bin/env bash
# Checks examples/lab.sh end to end: it starts a cluster whose nodes serve the dashboard and
# accept fault-lab requests (cut the leader off, a new leader appears, heal), then stops it.
# Run by scripts/test.sh. Five nodes (lab.sh --nodes 5) on ports 18480-18484, data in a temporary
# directory.
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=$(mktemp -d)
DATA_DIR="$DIR" bash examples/lab.sh --nodes 5 18480 >"$DIR/lab.out" 2>&1 &
LAB=$!
trap 'kill -TERM $LAB 2>/dev/null || true; wait $LAB 2>/dev/null || true; rm -rf "$DIR"' EXIT
python3 - <<'PY'
import json, time, urllib.request, urllib.error
nodes = [f"127.0.0.1:{18480 + i}" for i in range(5)]
def get(addr, path):
    with urllib.request.urlopen(f"http://{addr}{path}", timeout=2) as r:
        return r.status, r.read()
def post(addr, path, body):
    req = urllib.request.Request(f"http://{addr}{path}", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=2) as r:
        return r.status, json.loads(r.read())
def state(addr):
    try:
        return json.loads(get(addr, "/debug/raft")[1])
    except (OSError, ValueError):
        return None
def poll(what, f, within=20):
    deadline = time.time() + within
    while time.time() < deadline:
        v = f()
        if v:
            return v
        time.sleep(0.1)
    raise SystemExit(f"FAIL: {what} within {within} s")
# (generous: lab.sh builds the binaries first when the sources are newer)
leader = poll("a leader", lambda: next((a for a in nodes if (state(a) or {}).get("role") == "leader"), None), within=300)
voters = (state(leader) or {}).get("voters", {})
assert len(voters) == 5, f"five voters: {voters}"
print("ok: five voters")
status, page = get(leader, "/dashboard")
assert status == 200 and b"RaftLabKV" in page, "the dashboard is served"
print("ok: the dashboard is served; leader", leader)
term = state(leader)["term"]
status, faults = post(leader, "/debug/fault", {"action": "cut", "peer": "*", "direction": "both"})
assert status == 200 and faults["cuts"], faults
others = [a for a in nodes if a != leader]
poll("a new leader of a higher term", lambda: any(
    (s := state(a)) and s["role"] == "leader" and s["term"] > term for a in others))
print("ok: the isolated leader was replaced")
post(leader, "/debug/fault", {"action": "heal"})
poll("the old leader following", lambda: (s := state(leader)) and s["role"] == "follower")
print("ok: healed; the old leader follows. examples/lab.sh: all checks passed")
PY
