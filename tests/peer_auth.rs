//! Authenticated peers, with real binaries (`--peer-secret-file`, `src/server/auth.rs`): forged
//! peer messages are refused before they are parsed and change no node's term; a cluster with a
//! secret elects, replicates, forwards, fails over and installs snapshots; a node of another
//! cluster is refused. And, secret or not, a term or index near the integer limit is bad input.
//!
//! Terms are compared exactly before and after: the clusters that check it run with a long
//! election timeout, so no election of their own happens in between on a loaded machine.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use raftlabkv::server::auth::{PeerAuth, PeerSecret, now_ms};
use raftlabkv::testkit::{Answer, Cluster, ClusterOptions, KillOnDrop, poll_every};
use serde_json::{Value, json};

const POLL: Duration = Duration::from_millis(20);
const QUIET: &[&str] = &["--election-timeout-ms", "1500-3000", "--heartbeat-ms", "100"];

fn cluster(name: &str, secret: bool, extra: &[&str]) -> Cluster {
    let work_dir =
        std::env::temp_dir().join(format!("raftlabkv-peerauth-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work_dir);
    Cluster::start(ClusterOptions {
        nodes: 3,
        server_bin: env!("CARGO_BIN_EXE_raftlabkv-server").into(),
        work_dir,
        data_dirs: true,
        extra_args: extra.iter().map(|s| s.to_string()).collect(),
        peer_secret: secret,
    })
    .expect("start cluster")
}

fn leader(c: &Cluster) -> usize {
    c.wait_leader(&c.all(), Duration::from_secs(20)).expect("a leader within 20 s")
}

/// Every node's term, in node order (all must answer).
fn terms(c: &Cluster) -> Vec<u64> {
    c.all().iter().map(|&i| c.node_status(i).expect("status").term).collect()
}

/// A POST to node `to` with exactly these headers.
fn send(c: &Cluster, to: usize, path: &str, body: &str, headers: &[(String, String)]) -> Answer {
    let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(10)).build();
    let mut req = agent.post(&format!("http://{}{path}", c.nodes[to].addr));
    for (name, value) in headers {
        req = req.set(name, value);
    }
    let (status, text) = match req.send_string(body) {
        Ok(r) => (r.status(), r.into_string().unwrap_or_default()),
        Err(ureq::Error::Status(s, r)) => (s, r.into_string().unwrap_or_default()),
        Err(e) => panic!("no answer from node{} for {path}: {e}", to + 1),
    };
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    Answer { status, body, error: String::new() }
}

/// The headers `auth` signs `body` with, at `time_ms`.
fn signed(auth: &PeerAuth, path: &str, body: &str, time_ms: u64) -> Vec<(String, String)> {
    let h = auth.sign_at("POST", path, body.as_bytes(), time_ms);
    h.pairs().map(|(n, v)| (n.to_string(), v.to_string())).collect()
}

fn request_vote(from: &str, to: &str, term: u64) -> String {
    json!({"from": from, "to": to, "term": term,
           "message": {"type": "RequestVote", "last_log_index": 1_000_000, "last_log_term": term}})
    .to_string()
}

fn append_entries(from: &str, to: &str, term: u64, prev: u64) -> String {
    json!({"from": from, "to": to, "term": term,
           "message": {"type": "AppendEntries", "prev_log_index": prev, "prev_log_term": 0,
                       "entries": [], "leader_commit": prev, "seq": 1}})
    .to_string()
}

fn assert_refused(a: &Answer, status: u16, code: &str, what: &str) {
    assert_eq!(a.status, status, "{what}: {:?}", a.body);
    assert_eq!(a.body["error"], code, "{what}: {:?}", a.body);
    assert!(a.body["message"].is_string(), "{what}: {:?}", a.body);
}

/// A forged request: what it is, path, body, headers, the status and error code it must get.
type Case = (&'static str, &'static str, String, Vec<(String, String)>, u16, &'static str);

fn log_text(c: &Cluster, i: usize) -> String {
    std::fs::read_to_string(c.log_path(i)).unwrap_or_default()
}

#[test]
fn forged_peer_messages_are_refused_and_change_no_term() {
    let c = cluster("forged", true, QUIET);
    let l = leader(&c);
    let before = terms(&c);
    let huge = u64::MAX - 1;
    let wrong_secret = PeerSecret::from_bytes(b"not the secret of this cluster").unwrap();
    for to in c.all() {
        let (me, peer, lead) = (&c.nodes[to].id, &c.nodes[(to + 1) % 3].id, &c.nodes[l].id);
        let real = c.peer_auth((to + 1) % 3);
        let vote = request_vote(peer, me, huge);
        let vote_path = "/raft/requestVote";
        let append = append_entries(lead, me, before[to] + 100, 0);
        let append_path = "/raft/appendEntries";
        let now = now_ms();
        let cases: Vec<Case> = vec![
            ("no headers at all", vote_path, vote.clone(), vec![], 401, "unauthorized"),
            ("AppendEntries, no headers", append_path, append.clone(), vec![], 401, "unauthorized"),
            (
                "identity headers but no MAC",
                vote_path,
                vote.clone(),
                signed(&real, vote_path, &vote, now)[..2].to_vec(),
                401,
                "unauthorized",
            ),
            (
                "a wrong secret",
                vote_path,
                vote.clone(),
                signed(
                    &PeerAuth::new(peer.clone(), c.cluster_id().into(), Some(wrong_secret.clone())),
                    vote_path,
                    &vote,
                    now,
                ),
                401,
                "unauthorized",
            ),
            (
                "AppendEntries with a wrong secret",
                append_path,
                append.clone(),
                signed(
                    &PeerAuth::new(lead.clone(), c.cluster_id().into(), Some(wrong_secret.clone())),
                    append_path,
                    &append,
                    now,
                ),
                401,
                "unauthorized",
            ),
            (
                "a stale timestamp",
                vote_path,
                vote.clone(),
                signed(&real, vote_path, &vote, now - 60_000),
                401,
                "unauthorized",
            ),
            (
                "a timestamp from the future",
                vote_path,
                vote.clone(),
                signed(&real, vote_path, &vote, now + 60_000),
                401,
                "unauthorized",
            ),
            (
                "a tampered body (signed for term 1)",
                vote_path,
                vote.clone(),
                signed(&real, vote_path, &request_vote(peer, me, 1), now),
                401,
                "unauthorized",
            ),
            (
                "signed for another path",
                append_path,
                append.clone(),
                signed(&c.peer_auth(l), vote_path, &append, now),
                401,
                "unauthorized",
            ),
            (
                "another cluster id (the right secret)",
                vote_path,
                vote.clone(),
                signed(
                    &real_with_cluster(&c, (to + 1) % 3, "0123456789abcdef"),
                    vote_path,
                    &vote,
                    now,
                ),
                403,
                "wrong_cluster",
            ),
        ];
        for (what, path, body, headers, status, code) in &cases {
            let a = send(&c, to, path, body, headers);
            assert_refused(&a, *status, code, &format!("node{}: {what}", to + 1));
        }
        // A client request marked as forwarded is a peer request too.
        let put = r#"{"key":"forged","value":"x"}"#;
        let marker = ("X-Raftlabkv-Forwarded".to_string(), peer.clone());
        let a = send(&c, to, "/kv/put", put, std::slice::from_ref(&marker));
        assert_refused(&a, 401, "unauthorized", &format!("node{}: unsigned forwarded put", to + 1));
        let mut tampered = signed(&real, "/kv/put", r#"{"key":"other","value":"y"}"#, now);
        tampered.push(marker);
        let a = send(&c, to, "/kv/put", put, &tampered);
        assert_refused(&a, 401, "unauthorized", &format!("node{}: tampered forwarded put", to + 1));
    }
    assert_eq!(c.wait_leader(&c.all(), Duration::from_secs(10)), Some(l), "leadership changed");
    assert_eq!(terms(&c), before, "a refused message changed a term");
    assert_eq!(c.call(0, "GET", "/kv/get/forged", None).status, 404, "a forged put was applied");
    // The refusals were logged (once per sender), naming the sender.
    assert!(log_text(&c, 0).contains("refusing a peer request claiming to be from"));
    assert!(log_text(&c, 0).contains("REFUSING peer requests from"));
}

/// Node `i`'s signer, but claiming cluster `cluster`.
fn real_with_cluster(c: &Cluster, i: usize, cluster: &str) -> PeerAuth {
    let secret = std::fs::read(c.work_dir().join("peer-secret")).expect("the cluster's secret");
    let secret = PeerSecret::from_bytes(&secret).expect("a valid secret");
    PeerAuth::new(c.nodes[i].id.clone(), cluster.into(), Some(secret))
}

/// Authenticated or not, a term or an index near the integer limit is refused as bad input
/// (400): nothing a peer sends may leave a node at a term it cannot increase.
#[test]
fn terms_and_indexes_near_the_limit_are_bad_input_with_or_without_a_secret() {
    for secret in [true, false] {
        let c = cluster(if secret { "limit-secret" } else { "limit-open" }, secret, QUIET);
        let l = leader(&c);
        let before = terms(&c);
        for to in c.all() {
            let from = (to + 1) % 3;
            let (me, peer) = (&c.nodes[to].id, &c.nodes[from].id);
            let auth = c.peer_auth(from);
            let bodies = [
                ("/raft/requestVote", request_vote(peer, me, u64::MAX - 1)),
                ("/raft/requestVote", request_vote(peer, me, u64::MAX / 2 + 1)),
                ("/raft/appendEntries", append_entries(peer, me, u64::MAX - 1, 0)),
                ("/raft/appendEntries", append_entries(peer, me, 1, u64::MAX - 1)),
            ];
            for (path, body) in &bodies {
                let a = send(&c, to, path, body, &signed(&auth, path, body, now_ms()));
                assert_refused(&a, 400, "bad_request", &format!("secret {secret}: {body}"));
            }
            let chunk = format!(
                "/raft/snapshotChunk?from={peer}&index={}&term=1&offset=0&total=100",
                u64::MAX - 1
            );
            let a = send(&c, to, &chunk, "xx", &signed(&auth, &chunk, "xx", now_ms()));
            assert_refused(&a, 400, "bad_request", &format!("secret {secret}: {chunk}"));
            if !secret {
                // Open endpoints still want to know who speaks, and from which cluster.
                let body = request_vote(peer, me, u64::MAX - 1);
                let a = send(&c, to, "/raft/requestVote", &body, &[]);
                assert_refused(&a, 401, "unauthorized", "no identity headers");
                let other = PeerAuth::new(peer.clone(), "another-cluster".into(), None);
                let h = signed(&other, "/raft/requestVote", &body, now_ms());
                let a = send(&c, to, "/raft/requestVote", &body, &h);
                assert_refused(&a, 403, "wrong_cluster", "another cluster, no secret");
            }
        }
        assert_eq!(c.wait_leader(&c.all(), Duration::from_secs(10)), Some(l));
        assert_eq!(terms(&c), before, "secret {secret}: a refused message changed a term");
        if !secret {
            let text = log_text(&c, 0);
            assert!(text.contains("NO PEER SECRET"), "no warning about open peer endpoints");
        }
    }
}

/// Puts `count` keys through `via` (a follower forwards them), asserting each is acknowledged.
fn put_all(c: &Cluster, via: usize, prefix: &str, count: usize) {
    for k in 0..count {
        let body = json!({"key": format!("{prefix}{k}"), "value": format!("v{k}")});
        let a = c.call(via, "POST", "/kv/put", Some(&body));
        assert_eq!(a.status, 200, "put {prefix}{k} via node{}: {:?}", via + 1, a.body);
    }
}

/// Every key of `prefix0..count` reads back from node `i` (stale read: its own state).
fn holds_all(c: &Cluster, i: usize, prefix: &str, count: usize) -> bool {
    (0..count).all(|k| {
        let a = c.call(i, "GET", &format!("/kv/get/{prefix}{k}?consistency=stale"), None);
        a.status == 200 && a.body["value"] == format!("v{k}")
    })
}

#[test]
fn a_cluster_with_a_secret_replicates_forwards_fails_over_and_installs_snapshots() {
    let mut c = cluster("works", true, &["--snapshot-threshold", "40", "--snapshot-trailing", "5"]);
    let l = leader(&c);
    let f = (l + 1) % 3;
    // Writes through a follower are forwarded (signed) to the leader; reads from every node.
    put_all(&c, f, "a", 20);
    for i in c.all() {
        let a = c.call(i, "GET", "/kv/get/a7", None);
        assert_eq!(a.status, 200, "linearizable get via node{}: {:?}", i + 1, a.body);
        assert_eq!(a.body["value"], "v7");
    }
    // Failover: kill the leader; the others elect one and take writes, forwarded too.
    c.kill(l);
    let rest: Vec<usize> = c.all().into_iter().filter(|&i| i != l).collect();
    let l2 = c.wait_leader(&rest, Duration::from_secs(20)).expect("a new leader");
    let f2 = *rest.iter().find(|&&i| i != l2).expect("a follower");
    put_all(&c, f2, "b", 20);
    c.restart(l).expect("restart the old leader");
    assert!(
        poll_every(POLL, Duration::from_secs(20), || holds_all(&c, l, "b", 20).then_some(()))
            .is_some(),
        "the old leader did not catch up"
    );
    // Snapshot install: wipe a follower, write enough for the leader to compact past it.
    c.kill(f2);
    std::fs::remove_dir_all(c.data_dir(f2)).expect("wipe the follower");
    put_all(&c, l2, "c", 100);
    c.restart(f2).expect("restart the wiped follower");
    let caught_up = poll_every(POLL, Duration::from_secs(30), || {
        (holds_all(&c, f2, "a", 20) && holds_all(&c, f2, "c", 100)).then_some(())
    });
    assert!(caught_up.is_some(), "the wiped follower did not catch up");
    let s = c.node_status(f2).expect("status");
    assert!(s.snapshot_index > 0, "caught up without a snapshot: {s:?}");
    // Nobody refused anybody on the way.
    for i in c.all() {
        let text = log_text(&c, i);
        for refusal in ["refuses our", "REFUSING", "refusing a peer request"] {
            assert!(!text.contains(refusal), "node{} logged {refusal:?}", i + 1);
        }
    }
}

/// A node started with another cluster's `--peers` (and even the same secret) is refused with
/// 403 by every member it reaches, loudly, and does not disturb them.
#[test]
fn a_node_of_another_cluster_is_refused_and_disturbs_nobody() {
    let c = cluster("stray", true, QUIET);
    let l = leader(&c);
    let before = terms(&c);
    let port = raftlabkv::testkit::cluster::free_port().expect("port");
    let addr = format!("127.0.0.1:{port}");
    // It calls itself node2 and names node1 and node3 by their real addresses: its cluster id
    // (from its own member list) is not theirs.
    let peers = format!("node1={},node3={}", c.nodes[0].addr, c.nodes[2].addr);
    let secret: PathBuf = c.work_dir().join("peer-secret");
    let log_path = c.work_dir().join("stray.log");
    let log = std::fs::File::create(&log_path).expect("log");
    let _stray = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_raftlabkv-server"))
            .args(["--id", "node2", "--addr", &addr, "--peers", &peers, "--in-memory"])
            .args(["--election-timeout-ms", "150-300", "--peer-secret-file"])
            .arg(&secret)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn the stray node"),
    );
    let refused = poll_every(POLL, Duration::from_secs(20), || {
        let stray = std::fs::read_to_string(&log_path).unwrap_or_default();
        let seen = log_text(&c, 0).contains("REFUSING peer requests from \"node2\"");
        (stray.contains("refuses our") && stray.contains("403") && seen).then_some(())
    });
    assert!(refused.is_some(), "the stray node was not refused (see {})", log_path.display());
    assert_eq!(c.wait_leader(&c.all(), Duration::from_secs(10)), Some(l), "leadership changed");
    assert_eq!(terms(&c), before, "the stray node changed a term");
    assert_eq!(c.call(l, "POST", "/kv/put", Some(&json!({"key": "k", "value": "v"}))).status, 200);
}

/// A missing, empty or short secret file stops the server before it serves anything.
#[test]
fn a_server_refuses_to_start_with_a_bad_secret_file() {
    let dir = std::env::temp_dir().join(format!("raftlabkv-peerauth-files-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("work dir");
    std::fs::write(dir.join("empty"), "\n").expect("write");
    std::fs::write(dir.join("short"), "fifteen bytes!!\n").expect("write");
    for (file, says) in
        [("missing", "cannot read"), ("empty", "is empty"), ("short", "at least 16")]
    {
        let port = raftlabkv::testkit::cluster::free_port().expect("port");
        let child = Command::new(env!("CARGO_BIN_EXE_raftlabkv-server"))
            .args(["--id", "solo", "--addr", &format!("127.0.0.1:{port}"), "--in-memory"])
            .arg("--peer-secret-file")
            .arg(dir.join(file))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn");
        let mut child = KillOnDrop(child);
        let status =
            poll_every(POLL, Duration::from_secs(10), || child.0.try_wait().ok().flatten())
                .expect("the server still runs after 10 s");
        let mut stderr = String::new();
        if let Some(mut e) = child.0.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut e, &mut stderr);
        }
        assert!(!status.success(), "{file}: exited with {status}");
        assert!(stderr.contains("invalid_config") && stderr.contains(says), "{file}: {stderr}");
    }
    // A good secret that others may read: the server starts, and says so.
    let open = dir.join("world-readable");
    std::fs::write(&open, "sixteen bytes at least\n").expect("write");
    let mode = std::os::unix::fs::PermissionsExt::from_mode(0o644);
    std::fs::set_permissions(&open, mode).expect("chmod");
    let port = raftlabkv::testkit::cluster::free_port().expect("port");
    let log_path = dir.join("server.log");
    let log = std::fs::File::create(&log_path).expect("log");
    let _server = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_raftlabkv-server"))
            .args(["--id", "solo", "--addr", &format!("127.0.0.1:{port}"), "--in-memory"])
            .arg("--peer-secret-file")
            .arg(&open)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn"),
    );
    let warned = poll_every(POLL, Duration::from_secs(10), || {
        let text = std::fs::read_to_string(&log_path).unwrap_or_default();
        (text.contains("readable by its group or by others") && text.contains("serving on"))
            .then_some(())
    });
    assert!(
        warned.is_some(),
        "no warning: {}",
        std::fs::read_to_string(&log_path).unwrap_or_default()
    );
    let _ = std::fs::remove_dir_all(&dir);
}
