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
    // Every follower answered in this term and the leader knows where its log ends: each is in
    // `replicate`, with nothing beyond its match on the way (`replicate` alone allows entries in
    // flight, so next may run ahead of match + 1 for a moment).
    let s = poll_every(POLL, Duration::from_secs(5), || {
        let s = c.status(l)?;
        let caught_up = followers.iter().all(|&f| {
            let r = &s["replication"][&c.nodes[f].id];
            r["state"] == "replicate"
                && r["nextIndex"].as_u64().is_some()
                && r["nextIndex"].as_u64() == r["matchIndex"].as_u64().map(|m| m + 1)
        });
        caught_up.then_some(s)
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

// ----- /metrics -------------------------------------------------------------------------------

/// `GET /metrics` of node `i`: status, content type and text.
fn metrics(c: &Cluster, i: usize) -> (u16, String, String) {
    let url = format!("http://{}/metrics", c.nodes[i].addr);
    match ureq::get(&url).timeout(Duration::from_secs(5)).call() {
        Ok(r) => {
            let ct = r.content_type().to_string();
            (r.status(), ct, r.into_string().unwrap_or_default())
        }
        Err(e) => panic!("GET {url}: {e}"),
    }
}

/// The value of the sample `name{labels}` (exactly as written, labels in the order the server
/// writes them), if present.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

#[test]
fn metrics_move_with_the_work_done() {
    let c = cluster("metrics", true);
    let l = leader(&c);
    let n = 25;
    put_n(&c, l, n);
    let a = c.call(l, "GET", "/kv/get/k1", None);
    assert_eq!(a.status, 200, "{:?}", a.body);
    let a = c.call(l, "GET", "/kv/get/k2?consistency=stale", None);
    assert_eq!(a.status, 200, "{:?}", a.body);
    let (status, content_type, text) = metrics(&c, l);
    assert_eq!(status, 200);
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    let at_least = |series: &str, min: f64| {
        let v = sample(&text, series).unwrap_or_else(|| panic!("no {series} in\n{text}"));
        assert!(v >= min, "{series} = {v}, want >= {min}");
    };
    let n = n as f64;
    at_least("raftlabkv_server_proposals_committed_total", n);
    at_least("raftlabkv_server_proposals_applied_total", n);
    at_least(r#"raftlabkv_http_requests_total{route="/kv/put",code="200"}"#, n);
    at_least(r#"raftlabkv_http_request_duration_seconds_count{route="/kv/put"}"#, n);
    at_least(r#"raftlabkv_server_reads_total{kind="linearizable"}"#, 1.0);
    at_least(r#"raftlabkv_server_reads_total{kind="stale"}"#, 1.0);
    at_least("raftlabkv_disk_wal_fsync_duration_seconds_count", 1.0);
    at_least("raftlabkv_disk_wal_records_per_fsync_count", 1.0);
    at_least("raftlabkv_server_leader_changes_seen_total", 1.0);
    at_least("raftlabkv_server_commit_index", n);
    at_least("raftlabkv_server_term", 1.0);
    at_least("raftlabkv_server_keys", n);
    at_least("raftlabkv_disk_data_dir_bytes", 1.0);
    at_least("process_resident_memory_bytes", 1.0);
    at_least("process_threads", 2.0);
    at_least("process_open_fds", 3.0);
    assert_eq!(sample(&text, "raftlabkv_server_is_leader"), Some(1.0));
    assert_eq!(sample(&text, "raftlabkv_server_has_leader"), Some(1.0));
    assert_eq!(sample(&text, "raftlabkv_server_is_learner"), Some(0.0));
    for f in c.all().into_iter().filter(|&i| i != l) {
        let peer = &c.nodes[f].id;
        at_least(
            &format!(r#"raftlabkv_peer_append_entries_round_trip_seconds_count{{peer="{peer}"}}"#),
            1.0,
        );
        at_least(&format!(r#"raftlabkv_peer_sent_bytes_total{{peer="{peer}"}}"#), 1.0);
        at_least(&format!(r#"raftlabkv_peer_received_bytes_total{{peer="{peer}"}}"#), 1.0);
    }
    // Routes are labelled by pattern: no key ever appears in a label.
    assert!(!text.contains("k1"), "a key leaked into a label:\n{text}");
    let (_, _, follower) = metrics(&c, (l + 1) % 3);
    assert_eq!(sample(&follower, "raftlabkv_server_is_leader"), Some(0.0));
    assert_eq!(sample(&follower, "raftlabkv_server_has_leader"), Some(1.0));
    let a = c.call(l, "POST", "/metrics", None);
    assert_eq!((a.status, &a.body["error"]), (405, &json!("method_not_allowed")));
}

/// `promtool check metrics` on a real node's page: any complaint fails the test. Without
/// promtool: fails under CI (`.ci/run` installs it), skips elsewhere, saying why.
#[test]
fn promtool_accepts_the_metrics_page() {
    let has_promtool = std::process::Command::new("promtool")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_promtool {
        assert!(
            std::env::var_os("CI").is_none(),
            "promtool is missing under CI: install Debian's prometheus package (.ci/run does)"
        );
        println!("SKIPPED: promtool is not installed (apt-get install prometheus)");
        return;
    }
    let c = cluster("promtool", true);
    let l = leader(&c);
    put_n(&c, l, 5);
    let _ = c.call(l, "GET", "/kv/get/k1", None);
    let _ = c.call(l, "GET", "/kv/get/absent", None);
    for i in c.all() {
        let (_, _, text) = metrics(&c, i);
        let mut child = std::process::Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("run promtool");
        use std::io::Write as _;
        child.stdin.take().expect("stdin").write_all(text.as_bytes()).expect("feed promtool");
        let out = child.wait_with_output().expect("promtool's verdict");
        let complaints = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success() && complaints.trim().is_empty(),
            "promtool on node{}'s /metrics: {complaints}\n{text}",
            i + 1
        );
    }
}

// ----- health ---------------------------------------------------------------------------------

/// `GET path` on node `i`: status and text body (0 if no answer).
fn get_text(c: &Cluster, i: usize, path: &str) -> (u16, String) {
    let url = format!("http://{}{path}", c.nodes[i].addr);
    match ureq::get(&url).timeout(Duration::from_secs(5)).call() {
        Ok(r) => (r.status(), r.into_string().unwrap_or_default()),
        Err(ureq::Error::Status(s, r)) => (s, r.into_string().unwrap_or_default()),
        Err(e) => (0, e.to_string()),
    }
}

#[test]
fn health_is_ready_with_a_quorum_and_says_why_not_without() {
    let mut c = cluster("health", false);
    let l = leader(&c);
    put_n(&c, l, 3);
    for i in c.all() {
        assert_eq!(get_text(&c, i, "/livez"), (200, "ok\n".to_string()));
        // A follower that just saw the put may need a moment to apply it.
        let ready = poll_every(POLL, Duration::from_secs(5), || {
            let (status, text) = get_text(&c, i, "/readyz?verbose");
            (status == 200).then_some(text)
        })
        .unwrap_or_else(|| {
            panic!("node{} is not ready: {:?}", i + 1, get_text(&c, i, "/readyz?verbose"))
        });
        for check in ["leader", "applied", "linearizable_read"] {
            assert!(ready.contains(&format!("[+]{check} ok")), "node{}: {ready}", i + 1);
        }
        assert_eq!(get_text(&c, i, "/readyz"), (200, "ok\n".to_string()));
        let h = c.call(i, "GET", "/health", None);
        assert_eq!((h.status, h.body.clone()), (200, json!({"health": "true", "reason": ""})));
    }
    let a = c.call(l, "DELETE", "/readyz", None);
    assert_eq!((a.status, &a.body["error"]), (405, &json!("method_not_allowed")));
    // Kill two of three: the survivor has no quorum, whether it led or not.
    let survivor = (l + 1) % 3;
    for i in c.all().into_iter().filter(|&i| i != survivor) {
        c.kill(i);
    }
    let text = poll_every(POLL, Duration::from_secs(10), || {
        let (status, text) = get_text(&c, survivor, "/readyz?verbose");
        (status == 503).then_some(text)
    })
    .expect("the survivor never says it is not ready");
    assert!(text.contains("[-]linearizable_read failed: "), "{text}");
    assert!(text.ends_with("readyz check failed\n"), "{text}");
    let h = c.call(survivor, "GET", "/health", None);
    assert_eq!(h.status, 503, "{:?}", h.body);
    assert_eq!(h.body["health"], "false");
    assert!(
        h.body["reason"].as_str().is_some_and(|r| r.contains("linearizable_read")),
        "{:?}",
        h.body
    );
    assert_eq!(get_text(&c, survivor, "/livez"), (200, "ok\n".to_string()), "alive all the same");
}

// ----- snapshot transfer progress ---------------------------------------------------------------

#[test]
fn a_snapshot_transfer_shows_its_progress_on_both_sides() {
    let work_dir =
        std::env::temp_dir().join(format!("raftlabkv-test-obs-snap-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work_dir);
    let args =
        ["--snapshot-threshold", "200", "--snapshot-trailing", "10", "--rpc-timeout-ms", "10000"];
    let mut c = Cluster::start(ClusterOptions {
        nodes: 3,
        server_bin: env!("CARGO_BIN_EXE_raftlabkv-server").into(),
        work_dir,
        data_dirs: true,
        extra_args: args.iter().map(|s| s.to_string()).collect(),
        peer_secret: true,
    })
    .expect("start cluster");
    let l = leader(&c);
    let f = (l + 1) % 3;
    let fid = c.nodes[f].id.clone();
    let others: Vec<usize> = (0..3).filter(|&i| i != f).collect();
    c.kill(f);
    // Leadership may move between the two others while this runs (this machine's fsyncs stall
    // for seconds at times, and a leader that hears no answer for an election timeout steps
    // down): every step below asks who leads now, and both may send the snapshot slowly.
    // ~4 MB of state: four 1 MiB chunks.
    let value = "x".repeat(2000);
    for i in 0..2000 {
        let a =
            c.call(l, "POST", "/kv/put", Some(&json!({"key": format!("k{i}"), "value": value})));
        assert_eq!(a.status, 200, "put {i}: {:?} {}", a.body, a.error);
    }
    let first = poll_every(POLL, Duration::from_secs(10), || {
        let s = c.status(c.wait_leader(&others, Duration::from_secs(1))?)?;
        (u64_of(&s, "snapshotIndex") > 0).then(|| u64_of(&s, "firstLogIndex"))
    })
    .expect("the leader took a snapshot");
    assert!(first > 10, "the leader compacted its log (first index {first})");
    // 250 ms a message from either possible sender, so a transfer lasts over a second: a poll
    // of four endpoints on a loaded CI machine can take a good part of 240 ms.
    c.set_links_into(f, raftlabkv::testkit::LinkMode::Delay { base_ms: 250, jitter_ms: 0 });
    c.restart(f).expect("restart the follower");
    let (sending, receiving) = poll_every(POLL, Duration::from_secs(30), || {
        let l = c.wait_leader(&others, Duration::from_secs(1))?;
        let s = c.status(l)?;
        let r = &s["replication"][&fid];
        let sending = r["snapshot"].clone();
        let receiving = c.status(f)?["snapshotReceiving"].clone();
        let moving = |t: &Value| t["bytesDone"].as_u64().is_some_and(|d| d > 0);
        // The same transfer in /metrics: bytes so far and the size, on both sides.
        let (_, _, on_l) = metrics(&c, l);
        let (_, _, on_f) = metrics(&c, f);
        let peer = format!("{{peer=\"{fid}\"}}");
        let in_metrics = sample(&on_l, &format!("raftlabkv_snapshot_sending_bytes{peer}"))? > 0.0
            && sample(&on_l, &format!("raftlabkv_snapshot_sending_size_bytes{peer}"))? > 1e6
            && sample(&on_f, "raftlabkv_snapshot_receiving_bytes")? > 0.0
            && sample(&on_f, "raftlabkv_snapshot_receiving_size_bytes")? > 1e6;
        (r["state"] == "snapshot" && moving(&sending) && moving(&receiving) && in_metrics)
            .then_some((sending, receiving))
    })
    .expect("no transfer in progress seen on both sides, in /status and /metrics");
    for t in [&sending, &receiving] {
        assert!(u64_of(t, "bytesDone") <= u64_of(t, "bytesTotal"), "{t}");
        assert!(u64_of(t, "bytesTotal") > 1 << 20, "{t}");
    }
    assert_eq!(sending["index"], receiving["index"], "{sending} {receiving}");
    c.heal();
    // Once installed: counted as sent by one of the others, received and installed by f, and
    // gone from /status.
    poll_every(POLL, Duration::from_secs(30), || {
        let mut sent = 0.0;
        let mut saved = 0.0;
        for &o in &others {
            let (_, _, on_o) = metrics(&c, o);
            sent += sample(&on_o, "raftlabkv_snapshot_sent_total")?;
            saved += sample(&on_o, "raftlabkv_snapshot_save_duration_seconds_count")?;
        }
        let (_, _, on_f) = metrics(&c, f);
        let done = sent >= 1.0
            && saved >= 1.0
            && sample(&on_f, "raftlabkv_snapshot_received_total")? >= 1.0
            && sample(&on_f, "raftlabkv_snapshot_install_duration_seconds_count")? >= 1.0;
        done.then_some(())
    })
    .expect("the snapshot was not counted as sent, received and installed");
    let s = poll_every(POLL, Duration::from_secs(10), || {
        let s = c.status(c.wait_leader(&others, Duration::from_secs(1))?)?;
        (s["replication"][&fid]["state"] == "replicate").then_some(s)
    })
    .expect("the follower is replicated to again");
    assert!(s["replication"][&fid]["snapshot"].is_null(), "{s}");
    let fs = c.status(f).expect("the follower's status");
    assert!(fs["snapshotReceiving"].is_null(), "{fs}");
}
