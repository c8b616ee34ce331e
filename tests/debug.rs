//! Real binaries: `GET /debug/raft` (the dashboard's view of a node) and the fault lab
//! (`--enable-fault-injection`, `GET`/`POST /debug/fault`): off by default, bad requests refused,
//! and each fault doing what it says — an isolated leader is replaced and steps down once healed,
//! a paused leader is replaced, slow disks and lossy links still commit. Polls with deadlines.

use std::time::Duration;

use raftlabkv::testkit::{Cluster, ClusterOptions};
use serde_json::{Value, json};

fn cluster(name: &str, lab: bool) -> Cluster {
    let work_dir =
        std::env::temp_dir().join(format!("raftlabkv-test-debug-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work_dir);
    let extra_args = if lab { vec!["--enable-fault-injection".to_string()] } else { vec![] };
    let c = Cluster::start(ClusterOptions {
        nodes: 3,
        server_bin: env!("CARGO_BIN_EXE_raftlabkv-server").into(),
        work_dir,
        data_dirs: true,
        extra_args,
        peer_secret: true,
    })
    .expect("start cluster");
    c.wait_leader(&c.all(), Duration::from_secs(10)).expect("a leader");
    c
}

fn eventually<T>(within: Duration, f: impl FnMut() -> Option<T>) -> Option<T> {
    raftlabkv::testkit::poll_every(Duration::from_millis(20), within, f)
}

fn fault(c: &Cluster, i: usize, body: Value) -> raftlabkv::testkit::Answer {
    c.call(i, "POST", "/debug/fault", Some(&body))
}

fn put(c: &Cluster, key: &str, value: &str) -> bool {
    let body = json!({"key": key, "value": value});
    c.all().into_iter().any(|i| c.call(i, "POST", "/kv/put", Some(&body)).status == 200)
}

#[test]
fn debug_raft_shows_the_state_and_the_log_tail() {
    let c = cluster("raft", false);
    assert!(put(&c, "a", "1") && put(&c, "b/with space", "2"));
    assert_eq!(c.call(0, "DELETE", "/kv/delete/a", None).status, 200);
    let leader = c.wait_leader(&c.all(), Duration::from_secs(5)).expect("leader");
    let follower = (leader + 1) % 3;
    // Every node's tail reaches the delete (a follower learns of the commit with a heartbeat).
    for i in [leader, follower] {
        let state = eventually(Duration::from_secs(5), || {
            let a = c.call(i, "GET", "/debug/raft?tail=1000", None);
            let kinds: Vec<String> = a.body["log"]
                .as_array()?
                .iter()
                .filter_map(|e| e["kind"].as_str().map(str::to_string))
                .collect();
            (a.status == 200 && kinds.contains(&"delete".to_string())).then_some((a.body, kinds))
        });
        let (state, kinds) = state.unwrap_or_else(|| panic!("node {i}'s tail lacks the delete"));
        for kind in ["config", "noop", "put", "delete"] {
            assert!(kinds.iter().any(|k| k == kind), "node {i}: no {kind} in {kinds:?}");
        }
        let summaries: Vec<&str> = state["log"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e["summary"].as_str())
            .collect();
        assert!(summaries.contains(&"put b/with space=2"), "{summaries:?}");
        for field in [
            "term",
            "commitIndex",
            "lastApplied",
            "lastLogIndex",
            "lastLogTerm",
            "electionTimeoutMs",
            "heartbeatMs",
            "nowMs",
        ] {
            assert!(state[field].is_u64(), "node {i}: {field} in {state}");
        }
        assert_eq!(state["voters"].as_object().map(|v| v.len()), Some(3));
        assert!(state["faults"].is_null(), "the lab is off: {}", state["faults"]);
        let role = if i == leader { "leader" } else { "follower" };
        assert_eq!(state["role"], role, "node {i}");
    }
    let on_leader = c.call(leader, "GET", "/debug/raft", None).body;
    let progress = on_leader["progress"].as_object().expect("the leader's progress");
    assert_eq!(progress.len(), 2, "{on_leader}");
    assert!(progress.values().all(|p| p["state"] == "replicate" && p["matchIndex"].is_u64()));
    assert_eq!(
        c.call(leader, "GET", "/debug/raft?tail=2", None).body["log"].as_array().map(Vec::len),
        Some(2)
    );
    for bad in ["tail=0", "tail=1001", "tail=x"] {
        let a = c.call(leader, "GET", &format!("/debug/raft?{bad}"), None);
        assert_eq!((a.status, a.body["error"].as_str()), (400, Some("bad_request")), "{bad}");
    }
    assert_eq!(c.call(leader, "POST", "/debug/raft", Some(&json!({}))).status, 405);
    // The fault lab is off without the flag: 404 whatever the body.
    for (method, body) in [("GET", None), ("POST", Some(json!({"action": "heal"})))] {
        let a = c.call(leader, method, "/debug/fault", body.as_ref());
        assert_eq!((a.status, a.body["error"].as_str()), (404, Some("not_found")), "{method}");
    }
}

#[test]
fn the_fault_lab_refuses_bad_requests() {
    let c = cluster("bad", true);
    for bad in [
        json!({"action": "meteor"}),
        json!({"action": "cut"}),
        json!({"action": "cut", "peer": "nobody"}),
        json!({"action": "cut", "peer": "node2", "direction": "sideways"}),
        json!({"action": "drop", "peer": "node2", "share": 1.5}),
        json!({"action": "delay", "peer": "*", "ms": 1_000_000}),
        json!({"action": "pause", "seconds": 0}),
        json!({"action": "pause", "seconds": 99999}),
        json!({"action": "slow_fsync", "ms": -1}),
        json!([1, 2]),
    ] {
        let a = fault(&c, 0, bad.clone());
        assert_eq!((a.status, a.body["error"].as_str()), (400, Some("bad_request")), "{bad}");
    }
    let garbage = c.call(0, "PUT", "/debug/fault", Some(&json!({})));
    assert_eq!(garbage.status, 405);
    // Accepted faults are reported, then healed.
    let a = fault(&c, 0, json!({"action": "delay", "peer": "node2", "ms": 20}));
    assert_eq!(a.status, 200, "{:?}", a.body);
    let a = fault(&c, 0, json!({"action": "drop", "peer": "*", "share": 0.2}));
    assert_eq!(a.body["drops"][0]["share"], 0.2);
    let a = fault(&c, 0, json!({"action": "slow_fsync", "ms": 30}));
    assert_eq!(a.body["slowFsyncMs"], 30);
    assert!(put(&c, "slow", "but durable"), "writes commit on a slow, lossy node");
    let got = c.call(0, "GET", "/debug/fault", None);
    assert_eq!(got.body["delays"][0], json!({"peer": "node2", "ms": 20}));
    let healed = fault(&c, 0, json!({"action": "heal"}));
    assert_eq!(
        healed.body,
        json!({"cuts": [], "drops": [], "delays": [], "pausedForMs": 0, "slowFsyncMs": 0})
    );
    assert_eq!(c.call(0, "GET", "/debug/raft", None).body["faults"], healed.body);
}

/// Isolating the leader from the lab: the others elect a leader of a higher term; after the
/// heal, the old leader follows it. Pausing a leader does the same.
#[test]
fn an_isolated_or_paused_leader_is_replaced() {
    let c = cluster("isolate", true);
    for how in [
        json!({"action": "cut", "peer": "*", "direction": "both"}),
        json!({"action": "pause", "seconds": 3}),
    ] {
        let old = c.wait_leader(&c.all(), Duration::from_secs(10)).expect("a leader");
        let term = c.node_status(old).expect("status").term;
        assert_eq!(fault(&c, old, how.clone()).status, 200, "{how}");
        let others: Vec<usize> = c.all().into_iter().filter(|&i| i != old).collect();
        let new = eventually(Duration::from_secs(10), || {
            others
                .iter()
                .copied()
                .find(|&i| c.node_status(i).is_some_and(|s| s.is_leader && s.term > term))
        });
        let new = new.unwrap_or_else(|| panic!("no new leader after {how}"));
        assert!(put(&c, "during", "fault"), "the majority commits meanwhile");
        assert_eq!(fault(&c, old, json!({"action": "heal"})).status, 200);
        let follows = eventually(Duration::from_secs(10), || {
            c.node_status(old)
                .filter(|s| !s.is_leader && s.leader.as_deref() == Some(c.nodes[new].id.as_str()))
        });
        assert!(
            follows.is_some(),
            "the old leader does not follow {} after {how}: {:?}",
            c.nodes[new].id,
            c.node_status(old)
        );
    }
}
