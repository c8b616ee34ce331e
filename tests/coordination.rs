//! Real binaries: the coordination API (issue 12) through every node — ranges, transactions,
//! conditional puts, range deletes, exactly-once writes with `Idempotency-Key` (also across a
//! restart and a snapshot), the consistency evidence headers, and bad input on every new route.
//! Polls with deadlines; no fixed sleeps.

use std::collections::BTreeMap;
use std::time::Duration;

mod support;

use raftlabkv::testkit::{Cluster, poll_every};
use serde_json::{Value, json};

const POLL: Duration = Duration::from_millis(20);

/// What a node answered: status, the headers that matter here, the JSON body.
#[derive(Debug)]
struct Got {
    status: u16,
    headers: BTreeMap<String, String>,
    body: Value,
}

impl Got {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
}

fn send(
    c: &Cluster,
    i: usize,
    method: &str,
    path: &str,
    body: Option<&str>,
    key: Option<&str>,
) -> Got {
    let url = format!("http://{}{path}", c.nodes[i].addr);
    let mut req = ureq::request(method, &url).timeout(Duration::from_secs(8));
    if let Some(k) = key {
        req = req.set("Idempotency-Key", k);
    }
    let result = match body {
        Some(b) => req.set("Content-Type", "application/json").send_string(b),
        None => req.call(),
    };
    let r = match result {
        Ok(r) | Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("{method} {url}: {e}"),
    };
    let names = [
        "X-Raft-Term",
        "X-Raft-Index",
        "X-Raft-Leader",
        "X-Revision",
        "X-Consistency",
        "Idempotent-Replayed",
    ];
    let headers =
        names.iter().filter_map(|n| r.header(n).map(|v| (n.to_string(), v.to_string()))).collect();
    let status = r.status();
    let text = r.into_string().unwrap_or_default();
    Got { status, headers, body: serde_json::from_str(&text).unwrap_or(Value::String(text)) }
}

fn json_call(c: &Cluster, i: usize, method: &str, path: &str, body: &Value) -> Got {
    send(c, i, method, path, Some(&body.to_string()), None)
}

fn put(c: &Cluster, i: usize, key: &str, value: &str) -> Value {
    let g = json_call(c, i, "POST", "/kv/put", &json!({"key": key, "value": value}));
    assert_eq!(g.status, 200, "put {key}: {g:?}");
    g.body
}

fn leader_and_followers(c: &Cluster) -> (usize, usize, usize) {
    let l = c.wait_leader(&c.all(), Duration::from_secs(10)).expect("a leader");
    (l, (l + 1) % 3, (l + 2) % 3)
}

fn commit_index(c: &Cluster, i: usize) -> u64 {
    c.status(i).and_then(|s| s["commitIndex"].as_u64()).expect("commitIndex in /status")
}

#[test]
fn ranges_transactions_and_conditional_puts_through_every_node() {
    let c = support::cluster::three("coordination", false, &[]);
    let (l, f1, f2) = leader_and_followers(&c);
    for (i, (k, v)) in
        [("cfg/a", "1"), ("cfg/b", "2"), ("cfg/ü c", "3"), ("other", "x")].iter().enumerate()
    {
        put(&c, [l, f1, f2][i % 3], k, v);
    }
    // Ranges, from every node: a prefix, limits, keys only, count only, descending, stale.
    for i in [l, f1, f2] {
        let g = send(&c, i, "GET", "/kv/range?prefix=cfg%2F", None, None);
        assert_eq!(g.status, 200, "{g:?}");
        assert_eq!((g.body["count"].as_u64(), g.body["more"].as_bool()), (Some(3), Some(false)));
        let keys: Vec<&str> = g.body["kvs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|kv| kv["key"].as_str().unwrap())
            .collect();
        assert_eq!(keys, ["cfg/a", "cfg/b", "cfg/ü c"]);
        assert_eq!(g.body["kvs"][0]["version"], 1);
        assert_eq!(g.header("X-Consistency"), Some("linearizable"));
        let g = send(&c, i, "GET", "/kv/range?prefix=cfg/&limit=1&keys_only=true", None, None);
        assert_eq!((g.body["count"].as_u64(), g.body["more"].as_bool()), (Some(3), Some(true)));
        assert_eq!(g.body["next"], "cfg/b");
        assert!(g.body["kvs"][0].get("value").is_none(), "{}", g.body);
        let g = send(&c, i, "GET", "/kv/range?start=cfg/b&end=other&order=desc", None, None);
        let keys: Vec<&str> = g.body["kvs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|kv| kv["key"].as_str().unwrap())
            .collect();
        assert_eq!(keys, ["cfg/ü c", "cfg/b"]);
        let g =
            send(&c, i, "GET", "/kv/range?prefix=&count_only=true&consistency=stale", None, None);
        assert_eq!(g.header("X-Consistency"), Some("stale"));
        assert!(g.body["kvs"].as_array().unwrap().is_empty());
    }
    // A transaction through a follower: the compares hold, both writes apply at one revision.
    let rev_a =
        send(&c, l, "GET", "/kv/get/cfg%2Fa", None, None).body["mod_revision"].as_u64().unwrap();
    let before =
        send(&c, l, "GET", "/kv/range?prefix=&count_only=true", None, None).body["revision"]
            .as_u64()
            .unwrap();
    let txn = json!({
        "compare": [{"key": "cfg/a", "target": "mod_revision", "op": "==", "value": rev_a},
                    {"key": "cfg/lock", "target": "version", "op": "==", "value": 0}],
        "success": [{"put": {"key": "cfg/a", "value": "new"}}, {"delete": {"key": "cfg/b"}},
                    {"get": {"key": "cfg/a"}}, {"range": {"prefix": "cfg/"}}],
        "failure": [{"get": {"key": "cfg/a"}}]
    });
    let g = json_call(&c, f1, "POST", "/kv/txn", &txn);
    assert_eq!(g.status, 200, "{g:?}");
    assert_eq!(g.body["succeeded"], true);
    assert_eq!(g.body["revision"].as_u64(), Some(before + 1), "one revision for the transaction");
    assert_eq!(g.body["responses"][2]["get"]["kv"]["value"], "new");
    assert_eq!(g.body["responses"][3]["range"]["count"], 2);
    assert_eq!(g.header("X-Revision").map(|r| r.parse::<u64>().ok()), Some(Some(before + 1)));
    // Again: mod_revision moved on, so the failure branch runs and nothing changes.
    let g = json_call(&c, f2, "POST", "/kv/txn", &txn);
    assert_eq!(
        (g.body["succeeded"].as_bool(), g.body["revision"].as_u64()),
        (Some(false), Some(before + 1))
    );
    assert_eq!(g.body["responses"][0]["get"]["kv"]["value"], "new");
    // Every node applied the same: read each one's own state.
    for i in [l, f1, f2] {
        let same = poll_every(POLL, Duration::from_secs(5), || {
            let a = send(&c, i, "GET", "/kv/get/cfg%2Fa?consistency=stale", None, None);
            let b = send(&c, i, "GET", "/kv/get/cfg%2Fb?consistency=stale", None, None);
            (a.body["value"] == "new"
                && a.body["mod_revision"].as_u64() == Some(before + 1)
                && b.status == 404)
                .then_some(())
        });
        assert!(same.is_some(), "node {i} did not apply the transaction");
    }
    // A read-only transaction is a linearizable read: no log entry.
    let ci = commit_index(&c, l);
    let g = json_call(
        &c,
        f2,
        "POST",
        "/kv/txn",
        &json!({"compare": [{"key": "cfg/a", "target": "value", "op": "==", "value": "new"}], "success": [{"range": {"prefix": "cfg/", "count_only": true}}]}),
    );
    assert_eq!((g.status, g.body["succeeded"].as_bool()), (200, Some(true)), "{g:?}");
    assert_eq!(g.header("X-Consistency"), Some("linearizable"));
    assert_eq!(commit_index(&c, l), ci, "a read-only transaction must not append an entry");
    // Conditional puts: if_revision, 0 for "only if absent", 412 with the current key.
    let cur =
        send(&c, l, "GET", "/kv/get/cfg%2Fa", None, None).body["mod_revision"].as_u64().unwrap();
    let g = json_call(
        &c,
        f1,
        "POST",
        "/kv/put",
        &json!({"key": "cfg/a", "value": "v3", "if_revision": cur}),
    );
    assert_eq!(g.status, 200, "{g:?}");
    let g = json_call(
        &c,
        f2,
        "POST",
        "/kv/put",
        &json!({"key": "cfg/a", "value": "v4", "if_revision": cur}),
    );
    assert_eq!(g.status, 412, "{g:?}");
    assert_eq!(
        (g.body["error"].as_str(), g.body["current"]["value"].as_str()),
        (Some("precondition_failed"), Some("v3"))
    );
    let g = json_call(
        &c,
        l,
        "POST",
        "/kv/put",
        &json!({"key": "fresh", "value": "1", "if_revision": 0}),
    );
    assert_eq!(g.status, 200);
    let g = json_call(
        &c,
        l,
        "POST",
        "/kv/put",
        &json!({"key": "fresh", "value": "2", "if_revision": 0}),
    );
    assert_eq!((g.status, g.body["current"]["value"].as_str()), (412, Some("1")));
    let g = json_call(
        &c,
        l,
        "POST",
        "/kv/put",
        &json!({"key": "missing", "value": "2", "if_revision": 5}),
    );
    assert_eq!(
        (g.status, g.body["current"].clone()),
        (412, Value::Null),
        "if_revision on a missing key"
    );
    // A range delete through a follower.
    let g = send(&c, f1, "DELETE", "/kv/range?prefix=cfg%2F", None, None);
    assert_eq!((g.status, g.body["deleted"].as_u64()), (200, Some(2)), "{g:?}");
    let g = send(&c, f2, "GET", "/kv/range?prefix=cfg/", None, None);
    assert_eq!(g.body["count"], 0);
    // The v1 API is unchanged.
    let all = send(&c, f2, "GET", "/kv/all", None, None);
    assert_eq!(all.body, json!({"fresh": "1", "other": "x"}));
}

#[test]
fn an_idempotency_key_applies_a_write_once_across_nodes_restarts_and_snapshots() {
    let mut c = support::cluster::three(
        "idempotency",
        true,
        &["--snapshot-threshold", "20", "--snapshot-trailing", "5"],
    );
    let (l, f1, f2) = leader_and_followers(&c);
    put(&c, l, "n", "0");
    // An increment by transaction, sent three times with one key through three nodes.
    let incr = json!({"compare": [{"key": "n", "target": "value", "op": "==", "value": "0"}],
                      "success": [{"put": {"key": "n", "value": "1"}}],
                      "failure": [{"get": {"key": "n"}}]})
    .to_string();
    let first = send(&c, f1, "POST", "/kv/txn", Some(&incr), Some("incr-1"));
    assert_eq!((first.status, first.body["succeeded"].as_bool()), (200, Some(true)), "{first:?}");
    assert_eq!(first.header("Idempotent-Replayed"), None);
    for i in [l, f2, f1] {
        let again = send(&c, i, "POST", "/kv/txn", Some(&incr), Some("incr-1"));
        assert_eq!(again.status, 200, "{again:?}");
        assert_eq!(again.body, first.body, "node {i}: the first answer, not a new evaluation");
        assert_eq!(again.header("Idempotent-Replayed"), Some("true"));
    }
    let n = send(&c, l, "GET", "/kv/get/n", None, None);
    assert_eq!((n.body["value"].as_str(), n.body["version"].as_u64()), (Some("1"), Some(2)));
    // The same key with another write: 422, nothing applied.
    let other = send(
        &c,
        f2,
        "POST",
        "/kv/put",
        Some(&json!({"key": "n", "value": "9"}).to_string()),
        Some("incr-1"),
    );
    assert_eq!(
        (other.status, other.body["error"].as_str()),
        (422, Some("idempotency_key_reused")),
        "{other:?}"
    );
    assert_eq!(send(&c, l, "GET", "/kv/get/n", None, None).body["value"], "1");
    // A put and a delete with keys.
    let p = send(
        &c,
        l,
        "POST",
        "/kv/put",
        Some(&json!({"key": "p", "value": "v"}).to_string()),
        Some("put-1"),
    );
    let d = send(&c, f1, "DELETE", "/kv/delete/p", None, Some("del-1"));
    assert_eq!((p.status, d.status), (200, 200));
    // Enough writes for snapshots and log compaction, then the whole cluster restarts: the
    // table comes back from the snapshot (and the log after it) on every node.
    for i in 0..60 {
        put(&c, l, &format!("fill/{i}"), "x");
    }
    for i in 0..3 {
        c.kill(i);
    }
    for i in 0..3 {
        c.restart(i).expect("restart");
    }
    let (l, f1, f2) = leader_and_followers(&c);
    for i in [l, f1, f2] {
        let again = poll_every(POLL, Duration::from_secs(10), || {
            let g = send(&c, i, "POST", "/kv/txn", Some(&incr), Some("incr-1"));
            (g.status == 200).then_some(g)
        })
        .expect("the retry is answered");
        assert_eq!(again.body, first.body, "node {i} after the restart");
        let p2 = send(
            &c,
            i,
            "POST",
            "/kv/put",
            Some(&json!({"key": "p", "value": "v"}).to_string()),
            Some("put-1"),
        );
        assert_eq!(
            (p2.body["index"].clone(), p2.header("Idempotent-Replayed")),
            (p.body["index"].clone(), Some("true"))
        );
    }
    // The replayed put did not resurrect the deleted key.
    assert_eq!(send(&c, l, "GET", "/kv/get/p", None, None).status, 404);
    assert!(
        c.status(l).and_then(|s| s["snapshotIndex"].as_u64()).unwrap_or(0) > 0,
        "a snapshot was taken"
    );
}

#[test]
fn every_kv_answer_carries_its_consistency_evidence() {
    let c = support::cluster::three("evidence", false, &[]);
    let (l, f, _) = leader_and_followers(&c);
    let lid = c.nodes[l].id.clone();
    let g = json_call(&c, l, "POST", "/kv/put", &json!({"key": "e", "value": "1"}));
    assert_eq!(g.status, 200, "{g:?}");
    assert_eq!(g.header("X-Raft-Index"), Some(g.body["index"].to_string().as_str()));
    assert_eq!(g.header("X-Raft-Term"), Some(g.body["term"].to_string().as_str()));
    assert_eq!(g.header("X-Revision"), Some(g.body["revision"].to_string().as_str()));
    assert_eq!(g.header("X-Raft-Leader"), Some(lid.as_str()));
    assert_eq!(g.header("X-Consistency"), Some("linearizable"));
    let write_index = g.body["index"].as_u64().expect("index");
    // Forwarded from a follower: the leader's evidence comes back.
    let g = json_call(&c, f, "POST", "/kv/put", &json!({"key": "e", "value": "2"}));
    assert_eq!(
        (g.status, g.header("X-Raft-Leader"), g.header("X-Revision")),
        (200, Some(lid.as_str()), Some("3")),
        "{g:?}"
    );
    for (i, path, consistency) in [
        (l, "/kv/get/e", "linearizable"),
        (f, "/kv/get/e", "linearizable"),
        (f, "/kv/get/e?consistency=stale", "stale"),
        (l, "/kv/get/missing", "linearizable"),
        (l, "/kv/all", "linearizable"),
        (f, "/kv/all?consistency=stale", "stale"),
        (f, "/kv/range?prefix=e", "linearizable"),
    ] {
        let g = send(&c, i, "GET", path, None, None);
        assert!(g.status == 200 || (g.status == 404 && path.ends_with("missing")), "{path}: {g:?}");
        assert_eq!(g.header("X-Consistency"), Some(consistency), "{path}: {g:?}");
        let index: u64 = g.header("X-Raft-Index").and_then(|v| v.parse().ok()).unwrap_or(0);
        if consistency == "linearizable" {
            assert!(index > write_index, "{path}: served at {index}, the second write was later");
            assert_eq!(g.header("X-Revision"), Some("3"), "{path}");
        }
        // A follower learns the leader from its first AppendEntries; poll for a stale read.
        assert_eq!(g.header("X-Raft-Leader"), Some(lid.as_str()), "{path}: {g:?}");
        assert!(g.header("X-Raft-Term").is_some_and(|t| t.parse::<u64>().is_ok()), "{path}");
    }
    let g = send(&c, l, "DELETE", "/kv/delete/e", None, None);
    assert_eq!((g.status, g.header("X-Revision")), (200, Some("4")));
}

/// method, path, body, idempotency key, expected status, expected error code.
type Case<'a> = (&'a str, &'a str, Option<String>, Option<&'a str>, u16, &'a str);

#[test]
fn bad_input_on_the_new_routes_gets_clear_errors_and_every_node_keeps_serving() {
    let c = support::cluster::three(
        "coordination-bad",
        false,
        &["--max-txn-ops", "8", "--max-value-bytes", "1000"],
    );
    let (l, f, _) = leader_and_followers(&c);
    put(&c, l, "k", "v");
    let long_key = "x".repeat(300);
    let many: Vec<Value> = (0..9).map(|i| json!({"get": {"key": format!("k{i}")}})).collect();
    let cases: Vec<Case> = vec![
        ("POST", "/kv/txn", Some("{not json".into()), None, 400, "bad_request"),
        ("POST", "/kv/txn", Some("[]".into()), None, 400, "bad_request"),
        ("POST", "/kv/txn", Some(json!({"compare": [{"key": "k", "target": "size", "op": "==", "value": 1}]}).to_string()), None, 400, "bad_request"),
        ("POST", "/kv/txn", Some(json!({"compare": [{"key": "k", "target": "value", "op": "=~", "value": "v"}]}).to_string()), None, 400, "bad_request"),
        ("POST", "/kv/txn", Some(json!({"compare": [{"key": "k", "target": "version", "op": "==", "value": "1"}]}).to_string()), None, 400, "bad_request"),
        ("POST", "/kv/txn", Some(json!({"compare": [{"key": "k", "target": "value", "op": "==", "value": 1}]}).to_string()), None, 400, "bad_request"),
        ("POST", "/kv/txn", Some(json!({"compare": [{"key": "k", "target": "version", "op": "==", "value": -1}]}).to_string()), None, 400, "bad_request"),
        ("POST", "/kv/txn", Some(json!({"success": [{"put": {"key": "a", "value": "1"}}, {"put": {"key": "a", "value": "2"}}]}).to_string()), None, 400, "bad_request"),
        ("POST", "/kv/txn", Some(json!({"success": many}).to_string()), None, 400, "bad_request"),
        ("POST", "/kv/txn", Some(json!({"success": [{"put": {"key": "a", "value": "x".repeat(2000)}}]}).to_string()), None, 413, "too_large"),
        ("POST", "/kv/txn", Some(json!({"success": [{"launch": {"key": "a"}}]}).to_string()), None, 400, "bad_request"),
        ("POST", "/kv/txn", Some(json!({"success": [{"range": {"start": "b", "end": "a"}}]}).to_string()), None, 400, "bad_request"),
        ("POST", "/kv/txn", Some(json!({"extra": 1}).to_string()), None, 400, "bad_request"),
        ("GET", "/kv/txn", None, None, 405, "method_not_allowed"),
        ("PUT", "/kv/range?prefix=a", None, None, 405, "method_not_allowed"),
        ("GET", "/kv/range", None, None, 400, "bad_request"),
        ("GET", "/kv/range?prefix=a&start=b", None, None, 400, "bad_request"),
        ("GET", "/kv/range?start=b&end=a", None, None, 400, "bad_request"),
        ("GET", "/kv/range?prefix=a&limit=-3", None, None, 400, "bad_request"),
        ("GET", "/kv/range?prefix=a&limit=99999999999999999999999", None, None, 400, "bad_request"),
        ("GET", "/kv/range?prefix=a&order=sideways", None, None, 400, "bad_request"),
        ("GET", "/kv/range?prefix=a&colour=red", None, None, 400, "bad_request"),
        ("GET", "/kv/range?prefix=%zz", None, None, 400, "bad_request"),
        ("GET", "/kv/range?prefix=%FF", None, None, 400, "bad_request"),
        ("DELETE", "/kv/range?prefix=a&limit=3", None, None, 400, "bad_request"),
        ("DELETE", "/kv/range", None, None, 400, "bad_request"),
        ("POST", "/kv/put", Some(json!({"key": "k", "value": "v", "if_revision": "3"}).to_string()), None, 400, "bad_request"),
        ("POST", "/kv/put", Some(json!({"key": "k", "value": "v", "if_revision": -1}).to_string()), None, 400, "bad_request"),
        ("POST", "/kv/put", Some(json!({"key": "k", "value": "v"}).to_string()), Some(""), 400, "bad_request"),
        ("POST", "/kv/put", Some(json!({"key": "k", "value": "v"}).to_string()), Some(long_key.as_str()), 400, "bad_request"),
        ("POST", "/kv/put", Some(json!({"key": "k", "value": "v"}).to_string()), Some("a key"), 400, "bad_request"),
    ];
    for (n, (method, path, body, key, status, code)) in cases.iter().enumerate() {
        for i in [l, f] {
            let g = send(&c, i, method, path, body.as_deref(), *key);
            assert_eq!(g.status, *status, "case {n} ({method} {path}) on node {i}: {g:?}");
            assert_eq!(g.body["error"], *code, "case {n} on node {i}: {g:?}");
            assert!(g.body["message"].as_str().is_some_and(|m| !m.is_empty()), "case {n}: {g:?}");
        }
    }
    // Nothing was applied by any of it, and every node still serves.
    for i in 0..3 {
        let g = send(&c, i, "GET", "/kv/range?prefix=&consistency=stale", None, None);
        assert_eq!(g.status, 200, "node {i}");
    }
    let g = send(&c, f, "GET", "/kv/range?prefix=", None, None);
    assert_eq!(
        (g.body["count"].as_u64(), g.body["kvs"][0]["value"].as_str()),
        (Some(1), Some("v"))
    );
}

/// Runs the client binary against the cluster: (exit code, stdout, stderr).
fn cli(c: &Cluster, args: &[&str], stdin: Option<&str>) -> (i32, String, String) {
    use std::io::Write;
    let servers: Vec<String> = c.nodes.iter().map(|n| n.addr.clone()).collect();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_raftlabkv-client"))
        .arg("--servers")
        .arg(servers.join(","))
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run raftlabkv-client");
    if let Some(mut input) = child.stdin.take() {
        let _ = input.write_all(stdin.unwrap_or("").as_bytes());
    }
    let out = child.wait_with_output().expect("client output");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_cli_speaks_ranges_conditional_puts_cas_and_transactions() {
    let c = support::cluster::three("coordination-cli", false, &[]);
    leader_and_followers(&c);
    for (k, v) in [("cfg/a", "1"), ("cfg/b", "2"), ("cfg/c d", "3"), ("zz", "4")] {
        assert_eq!(cli(&c, &["put", k, v], None).0, 0);
    }
    let (code, out, _) = cli(&c, &["get", "--prefix", "cfg/"], None);
    assert_eq!((code, out.as_str()), (0, "cfg/a\n1\ncfg/b\n2\ncfg/c d\n3\n"));
    let (code, out, _) = cli(&c, &["get", "--prefix", "cfg/", "--limit", "1", "-w", "json"], None);
    let v: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(
        (code, v["count"].as_u64(), v["more"].as_bool(), v["next"].as_str()),
        (0, Some(3), Some(true), Some("cfg/b"))
    );
    let (_, out, _) = cli(&c, &["get", "--prefix", "cfg/", "--keys-only", "-w", "table"], None);
    assert!(
        out.starts_with("KEY") && out.contains("cfg/c d") && out.contains("3 keys at revision"),
        "{out}"
    );
    // Conditional puts: the right revision writes, a stale one exits 1 naming the current.
    let rev =
        send(&c, 0, "GET", "/kv/get/cfg%2Fa", None, None).body["mod_revision"].as_u64().unwrap();
    let (code, out, _) = cli(&c, &["put", "--if-revision", &rev.to_string(), "cfg/a", "10"], None);
    assert_eq!(code, 0, "{out}");
    let (code, out, _) = cli(&c, &["put", "--if-revision", &rev.to_string(), "cfg/a", "11"], None);
    assert!(
        code == 1 && out.contains("not written") && out.contains("mod_revision"),
        "{code} {out}"
    );
    let (code, out, _) = cli(&c, &["put", "--if-absent", "cfg/a", "12"], None);
    assert_eq!(code, 1, "{out}");
    assert_eq!(cli(&c, &["put", "--if-absent", "cfg/new", "1"], None).0, 0);
    // cas on the value.
    assert_eq!(cli(&c, &["cas", "cfg/a", "10", "20"], None).0, 0);
    let (code, out, _) = cli(&c, &["cas", "cfg/a", "10", "30"], None);
    assert!(code == 1 && out.contains("\"20\""), "{code} {out}");
    // A transaction from standard input in the text format, then from a JSON file.
    let text = "value(cfg/a) == \"20\"\nversion(\"cfg/lock\") == 0\n\nput cfg/a \"twenty one\"\ndel cfg/b\nget cfg/a\nrange cfg/\n\nget cfg/a\n";
    let (code, out, err) = cli(&c, &["txn"], Some(text));
    assert_eq!(code, 0, "{out} {err}");
    assert!(
        out.starts_with("SUCCESS")
            && out.contains("get cfg/a: twenty one")
            && out.contains("del: 1 deleted"),
        "{out}"
    );
    let (_, out, _) = cli(&c, &["txn"], Some(text));
    assert!(out.starts_with("FAILURE") && out.contains("get cfg/a: twenty one"), "{out}");
    let (code, _, err) = cli(&c, &["txn"], Some("size(a) == 1\n"));
    assert!(code == 1 && err.contains("line 1"), "{err}");
    let file = std::env::temp_dir().join(format!("raftlabkv-txn-{}.json", std::process::id()));
    std::fs::write(&file, json!({"success": [{"get": {"key": "zz"}}]}).to_string()).unwrap();
    let (code, out, _) = cli(&c, &["-w", "json", "txn", "--file", file.to_str().unwrap()], None);
    let v: Value = serde_json::from_str(&out).expect("json");
    assert_eq!((code, v["responses"][0]["get"]["kv"]["value"].as_str()), (0, Some("4")));
    let _ = std::fs::remove_file(&file);
    // del --prefix prints the count.
    let (code, out, _) = cli(&c, &["del", "--prefix", "cfg/"], None);
    assert_eq!((code, out.trim()), (0, "3"));
    let (_, out, _) = cli(&c, &["get", "--prefix", "cfg/", "--count-only"], None);
    assert_eq!(out.trim(), "(0 keys)");
}
