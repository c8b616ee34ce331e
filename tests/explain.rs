//! Real binaries: `raftlabkv-client status` (the table, `--json`) and `status --explain`, each
//! sentence produced by a scenario on a real 3-node cluster — all healthy, a killed minority, a
//! killed majority, a partitioned leader, elections that keep happening, a lagging follower and
//! a snapshot transfer. Every wait polls with a deadline; `EXPLAIN_TRACE=1` prints every answer
//! polled.

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

mod support;

use raftlabkv::testkit::{Cluster, LinkMode, poll_every};
use serde_json::{Value, json};

const POLL: Duration = Duration::from_millis(50);

fn cluster(name: &str, extra: &[&str]) -> Cluster {
    support::cluster::three(&format!("explain-{name}"), true, extra)
}

fn servers(c: &Cluster) -> String {
    c.nodes.iter().map(|n| n.addr.clone()).collect::<Vec<_>>().join(",")
}

/// Runs `raftlabkv-client --servers … ARGS`: (exit code, stdout, stderr).
fn client(c: &Cluster, args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_raftlabkv-client"))
        .arg("--servers")
        .arg(servers(c))
        .args(["--deadline", "2"])
        .args(args)
        .output()
        .expect("run raftlabkv-client");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The sentences of `status --explain` (from `--json`, so that they are exactly the lines).
fn explain(c: &Cluster) -> Vec<String> {
    let (_, out, err) = client(c, &["--json", "status", "--explain"]);
    // With no server answering, the answer is the error (on standard error).
    let text = if out.trim().is_empty() { err } else { out };
    let v: Value = match serde_json::from_str(text.trim()) {
        Ok(v) => v,
        Err(_) => return vec![format!("(not JSON) {text}")],
    };
    let list = if v["explain"].is_array() {
        v["explain"].clone()
    } else {
        // The error's message carries the text: "no server answered:\n{json}".
        let msg = v["message"].as_str().unwrap_or_default();
        let json = msg.split_once('\n').map(|(_, j)| j).unwrap_or_default();
        serde_json::from_str::<Value>(json).map(|v| v["explain"].clone()).unwrap_or(Value::Null)
    };
    list.as_array()
        .map(|a| a.iter().filter_map(|s| s.as_str().map(str::to_string)).collect())
        .unwrap_or_else(|| vec![format!("(no sentences) {text}")])
}

/// Polls `status --explain` until one sentence satisfies `ok`; panics with the last answer.
fn wait_sentence(c: &Cluster, within: Duration, what: &str, ok: impl Fn(&str) -> bool) -> String {
    let mut last = Vec::new();
    let found = poll_every(POLL, within, || {
        last = explain(c);
        if std::env::var("EXPLAIN_TRACE").is_ok() {
            eprintln!("trace: {last:?}");
        }
        last.iter().find(|s| ok(s)).cloned()
    });
    let found =
        found.unwrap_or_else(|| panic!("no sentence saying {what}; the last answer: {last:#?}"));
    println!("explain: {found}");
    found
}

/// N in "`id` lags the leader by N entries…" (thousands separators allowed).
fn entries_behind(sentence: &str, id: &str) -> u64 {
    sentence
        .trim_start_matches(&format!("{id} lags the leader by "))
        .split_whitespace()
        .next()
        .map(|n| n.replace(',', ""))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no number in {sentence}"))
}

/// True if `sentence` names node `i` by its id or by the address it was asked at.
fn named(c: &Cluster, i: usize, sentence: &str) -> bool {
    sentence.contains(&c.nodes[i].id) || sentence.contains(&c.nodes[i].addr)
}

fn leader(c: &Cluster) -> usize {
    c.wait_leader(&c.all(), Duration::from_secs(10)).expect("a leader within 10 s")
}

#[test]
fn the_table_healthy_a_killed_minority_and_a_killed_majority() {
    let mut c = cluster("kill", &[]);
    let l = leader(&c);
    let lid = c.nodes[l].id.clone();
    let a = c.call(l, "POST", "/kv/put", Some(&json!({"key": "k", "value": "v"})));
    assert_eq!(a.status, 200, "{a:?}");

    // The table: a header and one row per server, the leader named on every row.
    let (code, table, err) = client(&c, &["status"]);
    assert_eq!(code, Some(0), "{err}");
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 4, "{table}");
    for column in ["ENDPOINT", "ID", "LEADER", "TERM", "COMMIT", "APPLIED", "LAST INDEX", "LAG"] {
        assert!(lines[0].contains(column), "no {column} column: {table}");
    }
    for (i, n) in c.nodes.iter().enumerate() {
        let row = lines.iter().find(|r| r.starts_with(&n.addr)).expect("a row per server");
        assert!(row.contains(&n.id), "row {i}: {row}");
        assert!(row.matches(&lid).count() >= 1, "row {i} names the leader {lid}: {row}");
    }
    let (code, json_out, err) = client(&c, &["--json", "status"]);
    assert_eq!(code, Some(0), "{err}");
    let rows: Value = serde_json::from_str(&json_out).expect("status --json is JSON");
    let rows = rows.as_array().expect("an array");
    assert_eq!(rows.len(), 3, "{json_out}");
    assert!(rows.iter().all(|r| r["leader"] == json!(lid)), "{json_out}");

    let healthy =
        wait_sentence(&c, Duration::from_secs(10), "all healthy", |s| s.starts_with("all healthy"));
    assert!(healthy.contains(&format!("{lid} leads term")), "{healthy}");

    // A killed follower: the cluster keeps a quorum but cannot lose another.
    let f = (l + 1) % 3;
    c.kill(f);
    let down = wait_sentence(&c, Duration::from_secs(10), "one voter down", |s| {
        s.starts_with("1 of 3 voters is down")
    });
    // Named by its id when its address is the one in the configuration (a real cluster), else
    // by the address it was asked at (here the peers talk through the harness's proxies).
    assert!(named(&c, f, &down) && down.contains("refuses connections"), "{down}");
    assert!(down.contains("cannot lose another"), "{down}");
    let (code, table, _) = client(&c, &["status"]);
    assert_eq!(code, Some(0));
    let row = table.lines().find(|r| r.starts_with(&c.nodes[f].addr)).expect("its row");
    assert!(row.contains("connection refused"), "{table}");

    // The leader killed too: no leader, and what a quorum needs.
    c.kill(l);
    let none = wait_sentence(&c, Duration::from_secs(10), "no leader without a quorum", |s| {
        s.starts_with("no leader: only 1 of 3 voters is reachable")
    });
    assert!(none.contains("a quorum needs 2"), "{none}");
    assert!(named(&c, l, &none) && named(&c, f, &none), "names both: {none}");
    assert!(none.contains("refuse connections"), "{none}");

    // Nothing at all.
    c.kill(3 - l - f);
    let nothing = wait_sentence(&c, Duration::from_secs(5), "nothing reachable", |s| {
        s.starts_with("nothing is reachable")
    });
    assert!(nothing.contains("none of the 3 servers answered"), "{nothing}");
    let (code, _, _) = client(&c, &["status", "--explain"]);
    assert_ne!(code, Some(0), "no server answering is a failure");
}

#[test]
fn a_partitioned_leader_and_elections_that_keep_happening() {
    let c = cluster("partition", &[]);
    let mut l = leader(&c);
    let old = c.nodes[l].id.clone();
    c.isolate(l);
    let cut = wait_sentence(&c, Duration::from_secs(15), "the old leader is cut off", |s| {
        s.starts_with(&format!("{old} is cut off:"))
    });
    assert!(cut.contains("check its network"), "{cut}");
    c.heal();
    // Keep moving the leadership by partitioning each new leader: leader changes pile up.
    for _ in 0..3 {
        let others: Vec<usize> = c.all().into_iter().filter(|&n| n != l).collect();
        l = c.wait_leader(&others, Duration::from_secs(15)).expect("a new leader among the others");
        c.isolate(l);
        let others: Vec<usize> = c.all().into_iter().filter(|&n| n != l).collect();
        c.wait_leader(&others, Duration::from_secs(15)).expect("a new leader after the partition");
        c.heal();
    }
    let storm = wait_sentence(&c, Duration::from_secs(10), "elections keep happening", |s| {
        s.starts_with("elections keep happening:")
    });
    assert!(storm.contains("leader changes in the last minute"), "{storm}");
    assert!(storm.contains("the slowest fsync p99 is"), "{storm}");
}

#[test]
fn a_lagging_follower_is_named_with_its_lag() {
    let c = cluster("lag", &[]);
    let l = leader(&c);
    let f = (l + 1) % 3;
    let fid = c.nodes[f].id.clone();
    // Every byte to and from the follower waits 300 ms: it answers (no silence), but the
    // leader's log runs ahead of it while writes keep coming through the other follower. Both
    // others' links to it are slowed: leadership may move between them (on this machine's
    // multi-second fsync stalls a leader can step down on check quorum), and whichever leads
    // must find it lagging.
    c.set_links_into(f, LinkMode::Delay { base_ms: 300, jitter_ms: 0 });
    c.set_links_out_of(f, LinkMode::Delay { base_ms: 300, jitter_ms: 0 });
    let stop = Arc::new(AtomicBool::new(false));
    let addr = c.nodes[l].addr.clone();
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let stop = stop.clone();
            let addr = addr.clone();
            std::thread::spawn(move || {
                let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(5)).build();
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let body = json!({"key": format!("w{w}/{i}"), "value": "v"});
                    let _ = agent
                        .post(&format!("http://{addr}/kv/put"))
                        .set("Content-Type", "application/json")
                        .send_string(&body.to_string());
                    i += 1;
                }
            })
        })
        .collect();
    let lag = wait_sentence(&c, Duration::from_secs(30), "the follower lags", |s| {
        s.starts_with(&format!("{fid} lags the leader by "))
    });
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        let _ = w.join();
    }
    assert!(lag.contains("entries"), "{lag}");
    let n = entries_behind(&lag, &fid);
    assert!(n >= 100, "{lag}");
    c.heal();
    wait_sentence(&c, Duration::from_secs(20), "all healthy once the link is fast again", |s| {
        s.starts_with("all healthy")
    });
}

#[test]
fn a_snapshot_transfer_is_explained_with_its_progress() {
    let args =
        ["--snapshot-threshold", "200", "--snapshot-trailing", "10", "--rpc-timeout-ms", "10000"];
    let mut c = cluster("snap", &args);
    let l = leader(&c);
    let f = (l + 1) % 3;
    let fid = c.nodes[f].id.clone();
    c.kill(f);
    // ~4 MB of state, so that the transfer takes several slowed chunks.
    let value = "x".repeat(2000);
    for i in 0..2000 {
        let a =
            c.call(l, "POST", "/kv/put", Some(&json!({"key": format!("k{i}"), "value": value})));
        assert_eq!(a.status, 200, "put {i}: {:?} {}", a.body, a.error);
    }
    // Whoever leads now (leadership may have moved between the two others): it snapshotted,
    // and both of them send to f slowly.
    let others: Vec<usize> = (0..3).filter(|&o| o != f).collect();
    poll_every(POLL, Duration::from_secs(10), || {
        let s = c.status(c.wait_leader(&others, Duration::from_secs(1))?)?;
        (s["snapshotIndex"].as_u64()? > 0).then_some(())
    })
    .expect("the leader took a snapshot");
    c.set_links_into(f, LinkMode::Delay { base_ms: 80, jitter_ms: 0 });
    c.restart(f).expect("restart the follower");
    let sentence = wait_sentence(&c, Duration::from_secs(30), "a snapshot on its way", |s| {
        s.starts_with(&format!("{fid} lags the leader by "))
            && s.contains("is being sent a snapshot (")
    });
    let pct: u64 = sentence
        .split("snapshot (")
        .nth(1)
        .and_then(|r| r.split('%').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no percentage in {sentence}"));
    assert!(pct < 100, "caught mid-transfer: {sentence}");
    let lag = entries_behind(&sentence, &fid);
    assert!(lag >= 1000, "it missed the 2,000 writes: {sentence}");
    c.heal();
    wait_sentence(&c, Duration::from_secs(30), "all healthy after the transfer", |s| {
        s.starts_with("all healthy")
    });
}
