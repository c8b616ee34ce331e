//! Real binaries: `GET /debug/events`, the dashboard's live feed (Server-Sent Events). A viewer
//! sees its node's messages, role, vote, commits and faults as they happen; viewers do not hold
//! HTTP workers (16 streams open on a node with 4 workers, and it still answers); the 17th is
//! refused with 429, and a viewer that leaves frees its place. Polls with deadlines.

use std::time::Duration;

use raftlabkv::testkit::sse::{Stream, open};
use raftlabkv::testkit::{Cluster, ClusterOptions};
use serde_json::{Value, json};

fn cluster(name: &str) -> Cluster {
    let work_dir =
        std::env::temp_dir().join(format!("raftlabkv-test-events-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work_dir);
    let extra_args = ["--enable-fault-injection", "--http-threads", "4"];
    let c = Cluster::start(ClusterOptions {
        nodes: 3,
        server_bin: env!("CARGO_BIN_EXE_raftlabkv-server").into(),
        work_dir,
        data_dirs: true,
        extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
        peer_secret: true,
    })
    .expect("start cluster");
    c.wait_leader(&c.all(), Duration::from_secs(10)).expect("a leader");
    c
}

#[test]
fn a_viewer_sees_messages_roles_votes_commits_and_faults() {
    let c = cluster("feed");
    let leader = c.wait_leader(&c.all(), Duration::from_secs(5)).expect("leader");
    let lid = c.nodes[leader].id.clone();
    let follower = (leader + 1) % 3;
    let on_leader = open(&c.nodes[leader].addr);
    let on_follower = open(&c.nodes[follower].addr);
    assert!(on_leader.status.contains("200"), "{}", on_leader.status);
    let secs = Duration::from_secs(5);
    let hello = on_leader.wait(secs, "hello", |_| true).expect("hello first");
    assert_eq!(hello["role"], "leader");
    let term = hello["term"].as_u64().expect("term");
    // Heartbeats go out (sampled), and the answers come back.
    let hb = on_leader.wait(secs, "message", |m| m["type"] == "Heartbeat" && m["dir"] == "send");
    assert_eq!(hb.as_ref().map(|m| m["from"].clone()), Some(json!(lid)), "{hb:?}");
    assert!(
        on_follower.wait(secs, "message", |m| m["dir"] == "recv" && m["from"] == lid).is_some()
    );

    // A write: AppendEntries with entries leaves the leader, and the commit is published.
    let put = c.call(leader, "POST", "/kv/put", Some(&json!({"key": "watched", "value": "1"})));
    assert_eq!(put.status, 200, "{:?}", put.body);
    let index = put.body["index"].as_u64().expect("index");
    let sent = on_leader.wait(secs, "message", |m| {
        m["type"] == "AppendEntries" && m["entries"].as_u64().is_some_and(|n| n >= 1)
    });
    assert!(sent.is_some(), "no AppendEntries with entries");
    let committed =
        on_leader.wait(secs, "commit", |m| m["commitIndex"].as_u64().is_some_and(|i| i >= index));
    assert!(committed.is_some(), "commit {index} not published");

    // Isolate the leader: the follower's feed shows its vote and a new role in a higher term,
    // and the leader's feed shows the fault.
    let cut = json!({"action": "cut", "peer": "*", "direction": "both"});
    assert_eq!(c.call(leader, "POST", "/debug/fault", Some(&cut)).status, 200);
    let fault = on_leader
        .wait(secs, "fault", |f| f["faults"]["cuts"].as_array().is_some_and(|a| !a.is_empty()));
    assert!(fault.is_some(), "no fault event");
    let newer = |m: &Value| m["term"].as_u64().is_some_and(|t| t > term);
    assert!(on_follower.wait(Duration::from_secs(10), "vote", newer).is_some(), "no vote");
    let role =
        on_follower.wait(Duration::from_secs(10), "role", |m| newer(m) && !m["leader"].is_null());
    let role = role.expect("the follower names a new leader of a higher term");
    assert_ne!(role["leader"], json!(lid));
    assert_eq!(
        c.call(leader, "POST", "/debug/fault", Some(&json!({"action": "heal"}))).status,
        200
    );
    // Healed, the old leader learns of the higher term and follows.
    let follows =
        on_leader.wait(Duration::from_secs(10), "role", |m| m["role"] == "follower" && newer(m));
    assert!(follows.is_some(), "the old leader never stepped down on its feed");
}

#[test]
fn viewers_hold_no_worker_and_are_limited_to_sixteen() {
    let c = cluster("limit");
    let node = 0;
    // 16 streams on a node with 4 HTTP workers: each gets its hello, and the node still answers.
    let streams: Vec<Stream> = (0..16).map(|_| open(&c.nodes[node].addr)).collect();
    for (i, s) in streams.iter().enumerate() {
        assert!(s.status.contains("200"), "stream {i}: {}", s.status);
        assert!(s.wait(Duration::from_secs(5), "hello", |_| true).is_some(), "stream {i}");
    }
    let status = c.call(node, "GET", "/status", None);
    assert_eq!(status.status, 200, "the node stopped answering: {}", status.error);
    let refused = c.call(node, "GET", "/debug/events", None);
    assert_eq!(refused.status, 429, "{:?}", refused.body);
    assert_eq!(refused.body["error"], "too_many_requests");
    // Another method is refused as such.
    assert_eq!(c.call(node, "POST", "/debug/events", None).status, 405);
    // A viewer that leaves frees its place (noticed at its next write: heartbeats, within 1 s).
    drop(streams);
    let again =
        raftlabkv::testkit::poll_every(Duration::from_millis(50), Duration::from_secs(10), || {
            let s = open(&c.nodes[node].addr);
            s.status.contains("200").then_some(s)
        });
    assert!(again.is_some(), "no place freed up");
}
