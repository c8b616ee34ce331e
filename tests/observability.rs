//! Real binaries: what a node tells about itself — the richer `/status`, `/metrics` in the
//! Prometheus text format, and the health endpoints (`/livez`, `/readyz`, `/health`). These
//! tests poll with deadlines; no fixed sleep decides anything.

use std::time::Duration;

use raftlabkv::testkit::poll_every;
use raftlabkv::testkit::{Cluster, ClusterOptions};
use serde_json::{Value, json};

/// How often tests poll a condition.
const POLL: Duration = Duration::from_millis(20);

fn cluster(name: &str, data_dirs: bool) -> Cluster {
    let work_dir =
        std::env::temp_dir().join(format!("raftlabkv-test-obs-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work_dir);
    Cluster::start(ClusterOptions {
        nodes: 3,
        server_bin: env!("CARGO_BIN_EXE_raftlabkv-server").into(),
        work_dir,
        data_dirs,
        extra_args: Vec::new(),
        peer_secret: true,
    })
    .expect("start cluster")
}

fn leader(c: &Cluster) -> usize {
    c.wait_leader(&c.all(), Duration::from_secs(10)).expect("a leader within 10 s")
}

fn put_n(c: &Cluster, node: usize, n: usize) {
    for i in 0..n {
        let a =
            c.call(node, "POST", "/kv/put", Some(&json!({"key": format!("k{i}"), "value": "v"})));
        assert_eq!(a.status, 200, "put {i}: {:?} {}", a.body, a.error);
    }
}

fn u64_of(v: &Value, field: &str) -> u64 {
    v[field].as_u64().unwrap_or_else(|| panic!("{field} is not a number in {v}"))
}

#[test]
fn status_shows_replication_disk_use_version_and_leader_changes() {
    let c = cluster("status", true);
    let l = leader(&c);
    put_n(&c, l, 20);
    let followers: Vec<usize> = c.all().into_iter().filter(|&i| i != l).collect();
    // Every follower answered in this term and the leader knows where its log ends.
    let s = poll_every(POLL, Duration::from_secs(5), || {
        let s = c.status(l)?;
        let all_replicate =
            followers.iter().all(|&f| s["replication"][&c.nodes[f].id]["state"] == "replicate");
        all_replicate.then_some(s)
    })
    .unwrap_or_else(|| {
        panic!("the leader does not replicate to both followers: {:?}", c.status(l))
    });
    let last = u64_of(&s, "lastLogIndex");
    for &f in &followers {
        let r = &s["replication"][&c.nodes[f].id];
        let (matched, next) = (u64_of(r, "matchIndex"), u64_of(r, "nextIndex"));
        assert_eq!(next, matched + 1, "{r}");
        assert!(matched <= last && matched >= 20, "{r} (last {last})");
        assert!(u64_of(r, "inflight") <= 1, "{r}");
        assert!(u64_of(r, "lastContactMs") < 5_000, "{r}");
        assert!(r["snapshot"].is_null(), "{r}");
    }
    assert_eq!(s["replication"].as_object().map(|m| m.len()), Some(2), "{s}");
    assert!(!s["version"].as_str().unwrap_or("").is_empty(), "{s}");
    assert!(u64_of(&s, "walBytes") > 0, "{s}");
    assert!(u64_of(&s, "dataDirBytes") >= u64_of(&s, "walBytes"), "{s}");
    assert!(u64_of(&s, "leaderChangesSeen") >= 1, "{s}");
    assert!(u64_of(&s, "leaderChangesLastMinute") >= 1, "{s}");
    assert!(u64_of(&s, "lastLogTerm") >= 1 && u64_of(&s, "lastLogTerm") <= u64_of(&s, "term"));
    assert_eq!(s["votedFor"], json!(c.nodes[l].id), "a leader voted for itself: {s}");
    assert!(s["fsyncP99Us"].as_u64().is_some_and(|us| us > 0), "the leader fsynced: {s}");
    assert_eq!(u64_of(&s, "snapshotTerm"), 0, "no snapshot yet: {s}");
    assert!(s["snapshotReceiving"].is_null(), "{s}");
    for &f in &followers {
        let fs = c.status(f).expect("a follower's status");
        assert_eq!(fs["replication"], json!({}), "only a leader has replication: {fs}");
        assert!(u64_of(&fs, "leaderChangesSeen") >= 1, "{fs}");
        assert!(u64_of(&fs, "dataDirBytes") > 0, "{fs}");
    }
}

#[test]
fn status_in_memory_has_no_disk_use() {
    let c = cluster("status-mem", false);
    let l = leader(&c);
    put_n(&c, l, 3);
    let s = c.status(l).expect("status");
    assert_eq!((u64_of(&s, "walBytes"), u64_of(&s, "dataDirBytes")), (0, 0), "{s}");
    assert!(s["fsyncP99Us"].is_null(), "nothing is fsynced in memory: {s}");
}
