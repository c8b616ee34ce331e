//! Real binaries: lease reads (`--lease-reads`, `?consistency=lease`, thesis §6.4.1). The leader
//! serves them without a ReadIndex round while its lease holds and says so in `X-Consistency`;
//! a follower forwards them; a bad `consistency` is refused; without the flag they are ordinary
//! linearizable reads. And the case leases exist to get right: a leader frozen (SIGSTOP, as a
//! long GC pause or a stalled VM) while the others elect a new leader and commit a write must
//! not, once it runs again, answer a lease read from its old state.
//! Polls with deadlines; no fixed sleep decides anything.

use std::time::{Duration, Instant};

mod support;

use raftlabkv::testkit::{Cluster, poll_every};
use serde_json::{Value, json};

const POLL: Duration = Duration::from_millis(20);

/// Status, `X-Consistency` and the JSON body of a GET (status 0: no answer).
fn get(c: &Cluster, i: usize, path: &str) -> (u16, Option<String>, Value) {
    let url = format!("http://{}{path}", c.nodes[i].addr);
    match ureq::get(&url).timeout(Duration::from_secs(10)).call() {
        Ok(r) | Err(ureq::Error::Status(_, r)) => {
            let status = r.status();
            let kind = r.header("X-Consistency").map(str::to_string);
            (status, kind, json_of(r))
        }
        Err(_) => (0, None, Value::Null),
    }
}

fn json_of(r: ureq::Response) -> Value {
    r.into_string().ok().and_then(|t| serde_json::from_str(&t).ok()).unwrap_or(Value::Null)
}

fn put(c: &Cluster, i: usize, key: &str, value: &str) {
    let a = c.call(i, "POST", "/kv/put", Some(&json!({"key": key, "value": value})));
    assert_eq!(a.status, 200, "put {key}={value} through node {i}: {a:?}");
}

#[test]
fn the_leader_serves_lease_reads_and_says_so() {
    let c = support::cluster::three("lease-basic", false, &["--lease-reads"]);
    let leader = c.wait_leader(&c.all(), Duration::from_secs(10)).expect("a leader");
    put(&c, leader, "x", "1");
    // The lease holds once a majority answered a request of this term: soon after the put.
    let by_lease = poll_every(POLL, Duration::from_secs(5), || {
        let (status, kind, body) = get(&c, leader, "/kv/get/x?consistency=lease");
        (status == 200 && kind.as_deref() == Some("lease")).then_some(body)
    });
    assert_eq!(by_lease.expect("a lease read at the leader")["value"], "1");
    // Through a follower: forwarded to the leader, whose evidence is relayed.
    let follower = (0..3).find(|&i| i != leader).expect("a follower");
    let through = poll_every(POLL, Duration::from_secs(5), || {
        let (status, kind, body) = get(&c, follower, "/kv/get/x?consistency=lease");
        (status == 200 && kind.as_deref() == Some("lease")).then_some(body)
    });
    assert_eq!(through.expect("a lease read through a follower")["value"], "1");
    // Ranges take it too; the default stays ReadIndex.
    let (status, kind, body) = get(&c, leader, "/kv/range?prefix=&consistency=lease");
    assert_eq!((status, body["count"].as_u64()), (200, Some(1)), "{body}");
    assert!(matches!(kind.as_deref(), Some("lease" | "linearizable")), "{kind:?}");
    let (_, kind, _) = get(&c, leader, "/kv/get/x");
    assert_eq!(kind.as_deref(), Some("linearizable"));
    // A bad value is refused on every read route, with the JSON error shape.
    for path in [
        "/kv/get/x?consistency=fast",
        "/kv/all?consistency=",
        "/kv/range?prefix=&consistency=LEASE",
    ] {
        let (status, _, body) = get(&c, follower, path);
        assert_eq!(status, 400, "{path}: {body}");
        assert_eq!(body["error"], "bad_request", "{path}: {body}");
        assert!(body["message"].as_str().is_some_and(|m| m.contains("consistency")), "{body}");
    }
    // Counted apart in /metrics.
    let url = format!("http://{}/metrics", c.nodes[leader].addr);
    let text = ureq::get(&url).call().expect("metrics").into_string().expect("text");
    assert!(
        text.lines().any(|l| l.starts_with("raftlabkv_server_reads_total{kind=\"lease\"}")),
        "no lease reads counted in /metrics"
    );
}

#[test]
fn without_the_flag_a_lease_read_is_a_readindex_read() {
    let c = support::cluster::three("lease-off", false, &[]);
    let leader = c.wait_leader(&c.all(), Duration::from_secs(10)).expect("a leader");
    put(&c, leader, "x", "1");
    let (status, kind, body) = get(&c, leader, "/kv/get/x?consistency=lease");
    assert_eq!((status, kind.as_deref()), (200, Some("linearizable")), "{body}");
    assert_eq!(body["value"], "1");
}

#[test]
fn a_frozen_leader_serves_no_stale_lease_read_when_it_wakes() {
    let mut c = support::cluster::three("lease-pause", false, &["--lease-reads"]);
    let old = c.wait_leader(&c.all(), Duration::from_secs(10)).expect("a leader");
    put(&c, old, "x", "1");
    poll_every(POLL, Duration::from_secs(5), || {
        let (_, kind, _) = get(&c, old, "/kv/get/x?consistency=lease");
        (kind.as_deref() == Some("lease")).then_some(())
    })
    .expect("the leader holds a lease");
    // Freeze the leader inside its lease; the others elect a new one and commit x=2.
    c.pause(old);
    let others: Vec<usize> = (0..3).filter(|&i| i != old).collect();
    let new = c.wait_leader(&others, Duration::from_secs(10)).expect("a new leader");
    put(&c, new, "x", "2");
    // Reads sent to the frozen leader wait in its socket; it answers them when it wakes.
    let addr = c.nodes[old].addr.clone();
    let waiting: Vec<_> = (0..4)
        .map(|_| {
            let url = format!("http://{addr}/kv/get/x?consistency=lease");
            std::thread::spawn(move || {
                match ureq::get(&url).timeout(Duration::from_secs(15)).call() {
                    Ok(r) => {
                        let kind = r.header("X-Consistency").map(str::to_string);
                        (200, kind, json_of(r))
                    }
                    Err(ureq::Error::Status(s, _)) => (s, None, Value::Null),
                    Err(_) => (0, None, Value::Null),
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300)); // let the requests reach its socket
    c.resume(old);
    let mut answers = Vec::new();
    for t in waiting {
        answers.push(t.join().expect("reader thread"));
    }
    // And for a while after it woke: every answer is an error or the new value, never x=1.
    let until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < until {
        answers.push(get(&c, old, "/kv/get/x?consistency=lease"));
    }
    for (status, kind, body) in &answers {
        if *status == 200 {
            assert_eq!(body["value"], "2", "a stale lease read ({kind:?}) after the pause");
        }
    }
    assert!(
        answers.iter().any(|(s, _, _)| *s == 200),
        "the old leader never answered after it woke: {answers:?}"
    );
}
