//! Real binaries: revisions (issue 12, part 1). Writes answer with the store's revision, reads
//! with each key's create and mod revision and version; every node agrees, including one that
//! restarts and one that catches up from a snapshot after losing its data. Polls with deadlines.

use std::time::Duration;

mod support;

use raftlabkv::testkit::{Cluster, poll_every};
use serde_json::{Value, json};

const POLL: Duration = Duration::from_millis(20);

fn put(c: &Cluster, l: usize, key: &str, value: &str) -> Value {
    let a = c.call(l, "POST", "/kv/put", Some(&json!({"key": key, "value": value})));
    assert_eq!(a.status, 200, "put {key}: {a:?}");
    a.body
}

fn delete(c: &Cluster, l: usize, key: &str) -> Value {
    let a = c.call(l, "DELETE", &format!("/kv/delete/{key}"), None);
    assert_eq!(a.status, 200, "delete {key}: {a:?}");
    a.body
}

/// `(create_revision, mod_revision, version, value)` of `key` on node `i` (stale: its own state).
fn revs(c: &Cluster, i: usize, key: &str) -> Option<(u64, u64, u64, String)> {
    let a = c.call(i, "GET", &format!("/kv/get/{key}?consistency=stale"), None);
    if a.status != 200 {
        return None;
    }
    let n = |f: &str| a.body[f].as_u64();
    Some((
        n("create_revision")?,
        n("mod_revision")?,
        n("version")?,
        a.body["value"].as_str()?.into(),
    ))
}

#[test]
fn revisions_are_returned_agreed_on_and_kept_across_restarts_and_snapshots() {
    let mut c = support::cluster::three(
        "revisions",
        true,
        &["--snapshot-threshold", "50", "--snapshot-trailing", "5"],
    );
    let l = c.wait_leader(&c.all(), Duration::from_secs(10)).expect("a leader");
    // An empty store is at revision 1: the first put makes 2.
    assert_eq!(put(&c, l, "a", "1")["revision"], 2);
    assert_eq!(put(&c, l, "b", "1")["revision"], 3);
    assert_eq!(put(&c, l, "a", "2")["revision"], 4);
    assert_eq!(delete(&c, l, "nobody")["revision"], 4, "deleting an absent key changes nothing");
    assert_eq!(delete(&c, l, "a")["revision"], 5);
    assert_eq!(put(&c, l, "a", "3")["revision"], 6, "a new life for a");
    assert_eq!(put(&c, l, "odd%2Fkey é", "x")["revision"], 7);
    let want_a = (6, 6, 1, "3".to_string());
    let want_b = (3, 3, 1, "1".to_string());
    // The linearizable read through the leader carries them too.
    let a = c.call(l, "GET", "/kv/get/a", None);
    assert_eq!(
        (a.body["create_revision"].clone(), a.body["version"].clone()),
        (json!(6), json!(1))
    );
    for i in c.all() {
        let agreed = poll_every(POLL, Duration::from_secs(5), || {
            (revs(&c, i, "a")? == want_a && revs(&c, i, "b")? == want_b).then_some(())
        });
        assert!(agreed.is_some(), "node {i}: a {:?}, b {:?}", revs(&c, i, "a"), revs(&c, i, "b"));
    }
    // v1's /kv/all keeps its shape: values only.
    let all = c.call(l, "GET", "/kv/all", None);
    assert_eq!(all.body["a"], "3", "{:?}", all.body);

    // A follower restarts (replaying its WAL, or loading its snapshot): the same revisions.
    let f = (l + 1) % 3;
    c.restart(f).expect("restart a follower");
    let back =
        poll_every(POLL, Duration::from_secs(10), || (revs(&c, f, "a")? == want_a).then_some(()));
    assert!(back.is_some(), "after restart: {:?}", revs(&c, f, "a"));

    // Another loses its data and catches up from the leader's snapshot (100 puts > threshold).
    let g = (l + 2) % 3;
    c.kill(g);
    for i in 0..100 {
        put(&c, l, &format!("k{i}"), "v");
    }
    let _ = std::fs::remove_dir_all(c.data_dir(g));
    c.restart(g).expect("restart the wiped follower");
    let want_k99 = (107, 107, 1, "v".to_string());
    let caught = poll_every(POLL, Duration::from_secs(20), || {
        (revs(&c, g, "k99")? == want_k99 && revs(&c, g, "a")? == want_a).then_some(())
    });
    assert!(caught.is_some(), "wiped node: k99 {:?}, a {:?}", revs(&c, g, "k99"), revs(&c, g, "a"));
    assert_eq!(put(&c, l, "a", "4")["revision"], 108);
    for i in c.all() {
        let agreed = poll_every(POLL, Duration::from_secs(5), || {
            (revs(&c, i, "a")? == (6, 108, 2, "4".to_string())).then_some(())
        });
        assert!(agreed.is_some(), "node {i}: {:?}", revs(&c, i, "a"));
    }
}
