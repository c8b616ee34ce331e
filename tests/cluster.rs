//! Real binaries on loopback: a 3-node cluster of `raftlabkv-server` processes, every peer link
//! through a proxy. These tests poll with deadlines; no fixed sleeps decide anything.

use std::time::{Duration, Instant};

use raftlabkv::client::percent_encode;
use raftlabkv::raft::{AppendEntries, Entry, Envelope, Message};
use raftlabkv::server::binary;
use raftlabkv::testkit::poll_every;
use raftlabkv::testkit::{Cluster, ClusterOptions, LinkMode};
use serde_json::{Value, json};
/// How often tests poll a condition.
const POLL: Duration = Duration::from_millis(20);

fn cluster(name: &str, extra: &[&str]) -> Cluster {
    let work_dir =
        std::env::temp_dir().join(format!("raftlabkv-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work_dir);
    Cluster::start(ClusterOptions {
        nodes: 3,
        server_bin: env!("CARGO_BIN_EXE_raftlabkv-server").into(),
        work_dir,
        data_dirs: false,
        extra_args: extra.iter().map(|s| s.to_string()).collect(),
        peer_secret: true,
    })
    .expect("start cluster")
}

fn leader(c: &Cluster) -> usize {
    c.wait_leader(&c.all(), Duration::from_secs(10)).expect("a leader within 10 s")
}

fn put(c: &Cluster, node: usize, key: &str, value: &str) -> raftlabkv::testkit::Answer {
    c.call(node, "POST", "/kv/put", Some(&json!({ "key": key, "value": value })))
}

#[test]
fn operations_through_every_node() {
    let c = cluster("ops", &[]);
    leader(&c);
    let keys = ["plain", "a/b/c", "100%", "with space", "ünïcødé ✓", "?&=#"];
    for (i, key) in keys.iter().enumerate() {
        let a = put(&c, i % 3, key, &format!("value {i} with spaces"));
        assert_eq!(a.status, 200, "put {key:?} via node{}: {:?}", i % 3 + 1, a.body);
        assert_eq!(a.body["status"], "ok");
    }
    for (i, key) in keys.iter().enumerate() {
        for node in 0..3 {
            let a = c.call(node, "GET", &format!("/kv/get/{}", percent_encode(key)), None);
            assert_eq!(a.status, 200, "get {key:?} via node{}: {:?}", node + 1, a.body);
            assert_eq!(a.body["key"], *key);
            assert_eq!(a.body["value"], format!("value {i} with spaces"));
        }
    }
    let all = c.call(2, "GET", "/kv/all", None);
    assert_eq!(all.status, 200);
    assert_eq!(all.body.as_object().map(|m| m.len()), Some(keys.len()));
    let d = c.call(1, "DELETE", &format!("/kv/delete/{}", percent_encode("a/b/c")), None);
    assert_eq!(d.status, 200, "{:?}", d.body);
    let again = c.call(0, "DELETE", &format!("/kv/delete/{}", percent_encode("never-there")), None);
    assert_eq!(again.status, 200, "deleting an absent key is fine");
    for node in 0..3 {
        let g = c.call(node, "GET", &format!("/kv/get/{}", percent_encode("a/b/c")), None);
        assert_eq!(g.status, 404, "deleted key via node{}: {:?}", node + 1, g.body);
        assert_eq!(g.body["error"], "not_found");
    }
    // Every node converges on the same state (local reads, after the last write applied).
    let want = c.call(0, "GET", "/kv/all", None).body;
    for node in 0..3 {
        let same = poll_every(POLL, Duration::from_secs(5), || {
            let a = c.call(node, "GET", "/kv/all?consistency=stale", None);
            (a.body == want).then_some(())
        });
        assert!(same.is_some(), "node{} did not converge", node + 1);
    }
}

#[test]
fn status_reports_the_required_fields() {
    let c = cluster("status", &[]);
    let l = leader(&c);
    for node in 0..3 {
        let s = c.status(node).expect("status");
        for field in [
            "id",
            "isLeader",
            "term",
            "role",
            "leader",
            "leaderAddr",
            "commitIndex",
            "lastApplied",
            "lastLogIndex",
        ] {
            assert!(s.get(field).is_some(), "status lacks {field}: {s}");
        }
        // A follower knows the leader by id; its address is where this node reaches it (here,
        // through a link proxy), which forwards to the leader too.
        assert_eq!(s["leader"], c.nodes[l].id.as_str());
        assert!(s["leaderAddr"].is_string(), "leaderAddr missing: {s}");
        if node == l {
            assert_eq!(s["leaderAddr"], c.nodes[l].addr.as_str());
        }
    }
}

#[test]
fn leader_kill_elects_a_new_leader_and_data_survives() {
    let mut c = cluster("failover", &[]);
    let old = leader(&c);
    for i in 0..20 {
        assert_eq!(put(&c, i % 3, &format!("k{i}"), &format!("v{i}")).status, 200);
    }
    c.kill(old);
    let rest: Vec<usize> = c.all().into_iter().filter(|&i| i != old).collect();
    let new = c.wait_leader(&rest, Duration::from_secs(10)).expect("new leader");
    assert_ne!(new, old);
    for i in 0..20 {
        let g = c.call(rest[i % 2], "GET", &format!("/kv/get/k{i}"), None);
        assert_eq!(g.body["value"], format!("v{i}"), "k{i} lost after failover: {:?}", g.body);
    }
    assert_eq!(put(&c, rest[0], "after", "failover").status, 200);
    c.restart(old).expect("restart");
    // The restarted node (memory storage: empty) catches up from the leader.
    let caught_up = poll_every(POLL, Duration::from_secs(10), || {
        let a = c.call(old, "GET", "/kv/get/after?consistency=stale", None);
        (a.body["value"] == "failover").then_some(())
    });
    assert!(caught_up.is_some(), "restarted node did not catch up");
}

#[test]
fn minority_never_serves_stale_data_or_acknowledges_writes() {
    let c = cluster("minority", &["--request-timeout-ms", "1500"]);
    let old = leader(&c);
    assert_eq!(put(&c, old, "x", "before").status, 200);
    // Cut the leader off; the majority elects a new leader and moves on.
    c.isolate(old);
    let rest: Vec<usize> = c.all().into_iter().filter(|&i| i != old).collect();
    let new = c.wait_leader(&rest, Duration::from_secs(10)).expect("majority elects a leader");
    assert_eq!(put(&c, new, "x", "after").status, 200);
    // The old leader may still think it leads for a moment: it must never confirm a write, and a
    // linearizable read there must never return the stale "before".
    let w = put(&c, old, "x", "minority-write");
    assert!(
        w.status == 503 || w.status == 504,
        "minority write answered {} {:?}",
        w.status,
        w.body
    );
    let r = c.call(old, "GET", "/kv/get/x", None);
    assert!(r.status == 503 || r.status == 504, "minority read answered {} {:?}", r.status, r.body);
    assert_ne!(r.body["value"], "before");
    // A stale read is allowed to be stale, and says what it has.
    let s = c.call(old, "GET", "/kv/get/x?consistency=stale", None);
    assert_eq!(s.status, 200);
    c.heal();
    // After healing, the old leader's uncommitted write is gone and everyone agrees.
    let agreed = poll_every(POLL, Duration::from_secs(10), || {
        let a = c.call(old, "GET", "/kv/get/x", None);
        (a.status == 200).then_some(a.body["value"].clone())
    });
    assert_eq!(agreed, Some(Value::from("after")));
}

#[test]
fn one_way_and_black_holed_links_do_not_stall_the_leader() {
    let c = cluster("blackhole", &[]);
    let l = leader(&c);
    let slow = (l + 1) % 3;
    let term = c.status(l).expect("leader status")["term"].clone();
    // The leader's link to one follower swallows everything: its thread blocks, nobody else does.
    c.set_link(l, slow, LinkMode::Blackhole);
    let t0 = Instant::now();
    for i in 0..50 {
        assert_eq!(put(&c, l, &format!("b{i}"), "v").status, 200);
    }
    let took = t0.elapsed();
    assert!(took < Duration::from_secs(10), "50 writes took {took:?} with one black-holed peer");
    // The cut-off follower hears no heartbeats and tries to campaign, but PreVote keeps it from
    // deposing a leader the others still hear: same leader, same term.
    let s = c.status(l).expect("leader status");
    assert_eq!(s["isLeader"], true, "leadership changed: {s}");
    assert_eq!(s["term"], term, "term changed: {s}");
}

#[test]
fn bad_input_gets_clear_errors_and_every_node_keeps_serving() {
    let c = cluster("badinput", &["--max-value-bytes", "1000"]);
    leader(&c);
    let raw = |node: usize, method: &str, path: &str, body: &str| {
        let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(10)).build();
        let url = format!("http://{}{}", c.nodes[node].addr, path);
        match agent.request(method, &url).send_string(body) {
            Ok(r) => (r.status(), r.into_string().unwrap_or_default()),
            Err(ureq::Error::Status(s, r)) => (s, r.into_string().unwrap_or_default()),
            Err(e) => panic!("no answer from node{} for {method} {path}: {e}", node + 1),
        }
    };
    let cases: Vec<(&str, &str, String, u16)> = vec![
        ("POST", "/kv/put", "{not json".into(), 400),
        ("POST", "/kv/put", "".into(), 400),
        ("POST", "/kv/put", r#"{"key":"k"}"#.into(), 400),
        ("POST", "/kv/put", r#"{"value":"v"}"#.into(), 400),
        ("POST", "/kv/put", r#"{"key":5,"value":"v"}"#.into(), 400),
        ("POST", "/kv/put", r#"{"key":"","value":"v"}"#.into(), 400),
        ("POST", "/kv/put", r#"[1,2,3]"#.into(), 400),
        ("POST", "/kv/put", format!(r#"{{"key":"k","value":"{}"}}"#, "x".repeat(2000)), 413),
        ("POST", "/kv/put", format!(r#"{{"key":"{}","value":"v"}}"#, "k".repeat(5000)), 413),
        ("POST", "/kv/put", "x".repeat(10_000_000), 413),
        ("GET", "/kv/put", "".into(), 405),
        ("PUT", "/kv/put", "".into(), 405),
        ("POST", "/kv/get/k", "".into(), 405),
        ("GET", "/kv/delete/k", "".into(), 405),
        ("GET", "/kv/get/", "".into(), 400),
        ("GET", "/kv/get/bad%zzescape", "".into(), 400),
        ("GET", "/kv/get/%FF", "".into(), 400),
        ("GET", "/nope", "".into(), 404),
        ("POST", "/raft/appendEntries", "garbage".into(), 400),
        ("POST", "/raft/requestVote", r#"{"from":"x","to":"y","term":1}"#.into(), 400),
        ("POST", "/raft/appendEntries", r#"{"from":"evil","to":"node1","term":99,"message":{"type":"RequestVote","last_log_index":1,"last_log_term":1}}"#.into(), 400),
        ("GET", "/raft/appendEntries", "".into(), 405),
        // Well-formed JSON from a real member, but entries that no leader would send.
        (
            "POST",
            "/raft/appendEntries",
            r#"{"from":"PEER","to":"SELF","term":1,"message":{"type":"AppendEntries","prev_log_index":0,"prev_log_term":0,"entries":[{"index":5,"term":1,"command":""}],"leader_commit":0,"seq":1}}"#.into(),
            400,
        ),
        (
            "POST",
            "/raft/appendEntries",
            r#"{"from":"PEER","to":"SELF","term":1,"message":{"type":"AppendEntries","prev_log_index":0,"prev_log_term":0,"entries":[{"index":1,"term":7,"command":"!!"}],"leader_commit":0,"seq":1}}"#.into(),
            400,
        ),
    ];
    for node in 0..3 {
        for (method, path, body, want) in &cases {
            let peer = c.nodes[(node + 1) % 3].id.as_str();
            let body = body.replace("PEER", peer).replace("SELF", &c.nodes[node].id);
            // The peer endpoints answer only signed requests: these come from a real member.
            let (status, text) = if path.starts_with("/raft/") {
                let signer = c.peer_auth((node + 1) % 3);
                let a = c.peer_call(node, &signer, method, path, &body, &[]);
                (a.status, a.body.to_string())
            } else {
                raw(node, method, path, &body)
            };
            assert_eq!(
                status,
                *want,
                "{method} {path} via node{} answered {status} {text}",
                node + 1
            );
            let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            assert!(v["error"].is_string() && v["message"].is_string(), "not a JSON error: {text}");
        }
    }
    // The compact AppendEntries (`server::binary`): garbage, a cut body and well-formed entries
    // no leader would send are refused; a well-formed stale heartbeat is answered.
    for node in 0..3 {
        let peer = (node + 1) % 3;
        let append = |term, entries| Envelope {
            from: c.nodes[peer].id.clone(),
            to: c.nodes[node].id.clone(),
            term,
            message: Message::AppendEntries(AppendEntries {
                prev_log_index: 0,
                prev_log_term: 0,
                entries,
                leader_commit: 0,
                seq: 1,
            }),
        };
        let ascii = |b: Vec<u8>| String::from_utf8(b).expect("small numbers and ids: ASCII");
        let forged = binary::encode(&append(1, vec![Entry { index: 5, term: 1, command: vec![] }]));
        let forged = ascii(forged.expect("encoded"));
        let stale = ascii(binary::encode(&append(0, vec![])).expect("encoded"));
        let cut = forged[..forged.len() - 3].to_string();
        let signer = c.peer_auth(peer);
        for (body, want) in [("garbage".to_string(), 400), (cut, 400), (forged, 400), (stale, 200)]
        {
            let headers = [("Content-Type", binary::CONTENT_TYPE)];
            let a = c.peer_call(node, &signer, "POST", "/raft/appendEntries", &body, &headers);
            assert_eq!(a.status, want, "compact body via node{}: {}", node + 1, a.body);
            if want == 400 {
                assert!(a.body["error"].is_string() && a.body["message"].is_string(), "{}", a.body);
            }
        }
    }
    // Nothing broke: the cluster still has its leader and takes writes on every node.
    leader(&c);
    for node in 0..3 {
        assert_eq!(put(&c, node, "still", "serving").status, 200);
    }
}

#[test]
fn sigterm_stops_a_node_cleanly() {
    let mut c = cluster("sigterm", &[]);
    leader(&c);
    assert_eq!(c.terminate(1, Duration::from_secs(10)), Some(0), "exit code after SIGTERM");
}

#[test]
fn a_follower_refuses_an_already_forwarded_request_and_names_the_leader() {
    let c = cluster("notleader", &[]);
    let l = leader(&c);
    let f = (l + 1) % 3;
    let leader_addr = c.status(f).expect("follower status")["leaderAddr"].clone();
    // A forwarded request is never forwarded again: the follower answers itself. (It comes
    // from a peer, so it is signed as one.)
    let signer = c.peer_auth(l);
    let marker = [("X-Raftlabkv-Forwarded", c.nodes[l].id.as_str())];
    let put = c.peer_call(f, &signer, "POST", "/kv/put", r#"{"key":"k","value":"v"}"#, &marker);
    let get = c.peer_call(f, &signer, "GET", "/kv/get/k", "", &marker);
    for (what, a) in [("put", put), ("get", get)] {
        let (status, body) = (a.status, a.body);
        assert_eq!(status, 503, "{what}: {body}");
        assert_eq!(body["error"], "not_leader", "{what}: {body}");
        assert!(body["message"].is_string(), "{what}: {body}");
        assert_eq!(body["leader"]["id"], c.nodes[l].id.as_str(), "{what}: {body}");
        assert_eq!(body["leader"]["addr"], leader_addr, "{what}: {body}");
    }
}
