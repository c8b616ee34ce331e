//! Client tests against tiny fake servers (tiny_http on 127.0.0.1, port 0, in a test thread).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use super::route::parse_error_body;

use parking_lot::Mutex;

use super::*;

/// A request as the fake server saw it.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    /// The raw request target, exactly as sent (still percent-encoded).
    url: String,
    body: String,
    /// The `Idempotency-Key` header, if sent.
    idempotency_key: Option<String>,
}

type Handler = dyn Fn(&Seen, usize) -> (u16, String) + Send + Sync;

/// A fake node: answers with `handler(request, n)` where `n` counts the requests so far (from 0).
struct Fake {
    addr: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Fake {
    fn start(handler: impl Fn(&Seen, usize) -> (u16, String) + Send + Sync + 'static) -> Fake {
        let server = tiny_http::Server::http("127.0.0.1:0").expect("bind fake server");
        let addr = server.server_addr().to_ip().expect("fake server has an IP address").to_string();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let handler: Box<Handler> = Box::new(handler);
        let thread = {
            let seen = Arc::clone(&seen);
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let mut request = match server.recv_timeout(Duration::from_millis(20)) {
                        Ok(Some(r)) => r,
                        Ok(None) => continue,
                        Err(_) => break,
                    };
                    let mut body = String::new();
                    let _ = request.as_reader().read_to_string(&mut body);
                    let idempotency_key = request
                        .headers()
                        .iter()
                        .find(|h| h.field.equiv("Idempotency-Key"))
                        .map(|h| h.value.to_string());
                    let s = Seen {
                        method: request.method().to_string(),
                        url: request.url().to_string(),
                        body,
                        idempotency_key,
                    };
                    let n = {
                        let mut seen = seen.lock();
                        seen.push(s.clone());
                        seen.len() - 1
                    };
                    let (status, body) = handler(&s, n);
                    let header = tiny_http::Header::from_bytes(
                        &b"Content-Type"[..],
                        &b"application/json"[..],
                    )
                    .expect("valid header");
                    let response = tiny_http::Response::from_string(body)
                        .with_status_code(status)
                        .with_header(header);
                    let _ = request.respond(response);
                }
            })
        };
        Fake { addr, seen, stop, thread: Some(thread) }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().clone()
    }

    fn count(&self) -> usize {
        self.seen.lock().len()
    }

    /// Requests other than `/status`.
    fn kv_count(&self) -> usize {
        self.seen.lock().iter().filter(|s| s.url != "/status").count()
    }
}

impl Drop for Fake {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// An address where nothing listens (bound, then released).
fn dead_addr() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("local addr").to_string();
    drop(listener);
    addr
}

fn client(servers: &[&str]) -> Client {
    Client::builder(servers.iter().map(|s| s.to_string()).collect())
        .backoff(Duration::from_millis(1), Duration::from_millis(5))
        .retry_deadline(Duration::from_secs(3))
        .request_timeout(Duration::from_secs(3))
        .discover_leader(false)
        .idempotent_writes(false)
        .build()
}

fn ok_put(s: &Seen) -> (u16, String) {
    let v: serde_json::Value = serde_json::from_str(&s.body).unwrap_or_default();
    (200, json!({"status": "ok", "key": v["key"], "index": 7, "term": 2}).to_string())
}

/// A 503 as a server sends it: `not_leader` naming the leader at `leader`, else `unavailable`.
fn unavailable(leader: Option<&str>) -> (u16, String) {
    let body = match leader {
        Some(l) => Error::NotLeader {
            leader: Some(crate::error::LeaderHint { id: "node2".into(), addr: l.into() }),
        }
        .to_json(),
        None => json!({"error": "unavailable", "message": "no leader"}),
    };
    (503, body.to_string())
}

fn outcome_unknown() -> (u16, String) {
    (504, json!({"error": "outcome_unknown", "message": "commit not seen in time"}).to_string())
}

use serde_json::json;

#[test]
fn percent_encoding_escapes_all_but_unreserved() {
    assert_eq!(percent_encode("abcXYZ019-._~"), "abcXYZ019-._~");
    assert_eq!(percent_encode("a/b"), "a%2Fb");
    assert_eq!(percent_encode("%"), "%25");
    assert_eq!(percent_encode("100%"), "100%25");
    assert_eq!(percent_encode("a b"), "a%20b");
    assert_eq!(percent_encode("é"), "%C3%A9");
    assert_eq!(percent_encode("日本"), "%E6%97%A5%E6%9C%AC");
    assert_eq!(percent_encode("?#&=+;:@"), "%3F%23%26%3D%2B%3B%3A%40");
    assert_eq!(percent_encode("\n\0\u{7f}"), "%0A%00%7F");
    assert_eq!(percent_encode(""), "");
}

#[test]
fn odd_keys_reach_the_server_percent_encoded() {
    let fake = Fake::start(|s, _| (200, json!({"key": "k", "value": s.url}).to_string()));
    let c = client(&[&fake.addr]);
    let cases = [
        ("a/b", "/kv/get/a%2Fb"),
        ("%", "/kv/get/%25"),
        ("a b", "/kv/get/a%20b"),
        ("é/日本", "/kv/get/%C3%A9%2F%E6%97%A5%E6%9C%AC"),
        ("a/../b", "/kv/get/a%2F..%2Fb"),
        ("...", "/kv/get/..."),
        ("?x=1#y", "/kv/get/%3Fx%3D1%23y"),
    ];
    for (key, path) in cases {
        // The fake echoes the raw URL it received as the value.
        assert_eq!(c.get(key), Ok(Some(path.to_string())), "key {key:?}");
    }
    assert_eq!(c.get_stale("a/b"), Ok(Some("/kv/get/a%2Fb?consistency=stale".to_string())));
    let lease = c.get_with("a/b", crate::client::Consistency::Lease);
    assert_eq!(lease, Ok(Some("/kv/get/a%2Fb?consistency=lease".to_string())));
    c.delete("x y/z").expect("delete");
    let last = fake.seen().pop().expect("a request");
    assert_eq!((last.method.as_str(), last.url.as_str()), ("DELETE", "/kv/delete/x%20y%2Fz"));
}

#[test]
fn unaddressable_keys_are_refused_before_sending() {
    let fake = Fake::start(|_, _| (200, "{}".into()));
    let c = client(&[&fake.addr]);
    for key in ["", ".", ".."] {
        assert!(matches!(c.get(key), Err(Error::BadRequest(_))), "{key:?}");
        assert!(matches!(c.delete(key), Err(Error::BadRequest(_))), "{key:?}");
        assert!(matches!(c.put(key, "v"), Err(Error::BadRequest(_))), "{key:?}");
    }
    assert_eq!(fake.count(), 0);
}

#[test]
fn put_sends_json_and_parses_the_answer() {
    let fake = Fake::start(|s, _| ok_put(s));
    let c = client(&[&fake.addr]);
    let r = c.put("k/\"q\"", "v with \"quotes\" and é").expect("put");
    assert_eq!(r, PutResult { key: "k/\"q\"".into(), index: 7, term: 2, revision: 0 });
    let seen = fake.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!((seen[0].method.as_str(), seen[0].url.as_str()), ("POST", "/kv/put"));
    let body: serde_json::Value = serde_json::from_str(&seen[0].body).expect("json body");
    assert_eq!(body, json!({"key": "k/\"q\"", "value": "v with \"quotes\" and é"}));
}

#[test]
fn get_missing_key_is_none_and_get_all_parses() {
    let fake = Fake::start(|s, _| {
        if s.url.starts_with("/kv/all") {
            (200, json!({"a": "1", "b/c": "2"}).to_string())
        } else {
            (404, json!({"error": "not_found", "message": "no such key"}).to_string())
        }
    });
    let c = client(&[&fake.addr]);
    assert_eq!(c.get("nope"), Ok(None));
    let all = c.get_all().expect("get_all");
    assert_eq!(all.len(), 2);
    assert_eq!(all.get("b/c").map(String::as_str), Some("2"));
    c.get_all_stale().expect("get_all_stale");
    assert_eq!(
        fake.seen().last().map(|s| s.url.clone()),
        Some("/kv/all?consistency=stale".to_string())
    );
    assert_eq!(fake.count(), 3, "a 404 is an answer, not retried");
}

#[test]
fn retries_503_then_succeeds() {
    let fake = Fake::start(|s, n| if n < 2 { unavailable(None) } else { ok_put(s) });
    let c = client(&[&fake.addr]);
    let r = c.put("k", "v").expect("put after two 503s");
    assert_eq!(r.index, 7);
    assert_eq!(fake.count(), 3);

    let fake = Fake::start(|_, n| {
        if n < 2 { unavailable(None) } else { (200, json!({"key": "k", "value": "v"}).to_string()) }
    });
    let c = client(&[&fake.addr]);
    assert_eq!(c.get("k"), Ok(Some("v".into())));
    assert_eq!(fake.count(), 3);
}

#[test]
fn write_504_is_outcome_unknown_and_not_retried() {
    let fake = Fake::start(|_, _| outcome_unknown());
    let c = client(&[&fake.addr]);
    match c.put("k", "v") {
        Err(Error::OutcomeUnknown(m)) => assert_eq!(m, "commit not seen in time"),
        other => panic!("expected OutcomeUnknown, got {other:?}"),
    }
    assert_eq!(fake.count(), 1, "a 504 must not be retried");
    assert!(matches!(c.delete("k"), Err(Error::OutcomeUnknown(_))));
    assert_eq!(fake.count(), 2, "a 504 on delete must not be retried either");
}

#[test]
fn read_504_is_retried() {
    let fake = Fake::start(|_, n| {
        if n == 0 {
            outcome_unknown()
        } else {
            (200, json!({"key": "k", "value": "v"}).to_string())
        }
    });
    let c = client(&[&fake.addr]);
    assert_eq!(c.get("k"), Ok(Some("v".into())));
    assert_eq!(fake.count(), 2);
}

#[test]
fn lost_answer_on_a_write_is_outcome_unknown_but_a_read_is_retried() {
    // The fake takes longer than the client's timeout: the request was sent, the answer is lost.
    let slow = Fake::start(|_, _| {
        std::thread::sleep(Duration::from_millis(400));
        (200, "{}".into())
    });
    let fast = Fake::start(|s, _| {
        if s.method == "GET" {
            (200, json!({"key": "k", "value": "v"}).to_string())
        } else {
            ok_put(s)
        }
    });
    let c = Client::builder(vec![slow.addr.clone(), fast.addr.clone()])
        .request_timeout(Duration::from_millis(100))
        .backoff(Duration::from_millis(1), Duration::from_millis(5))
        .discover_leader(false)
        .idempotent_writes(false)
        .build();
    assert!(matches!(c.put("k", "v"), Err(Error::OutcomeUnknown(_))));
    assert_eq!(fast.count(), 0, "the write must not be re-sent elsewhere");
    assert_eq!(slow.count(), 1);

    // The rotation moved past the slow server; put it first again for the read.
    let c = Client::builder(vec![slow.addr.clone(), fast.addr.clone()])
        .request_timeout(Duration::from_millis(100))
        .backoff(Duration::from_millis(1), Duration::from_millis(5))
        .discover_leader(false)
        .build();
    assert_eq!(c.get("k"), Ok(Some("v".into())));
    assert_eq!(fast.count(), 1);
}

/// A raw HTTP/1.1 server (keep-alive) that answers every request 200, except the first DELETE
/// it ever reads: for that one it closes the connection without answering. Counts DELETEs.
fn drop_first_delete_server() -> (String, Arc<std::sync::atomic::AtomicUsize>) {
    use std::io::{BufRead, BufReader, Write};
    use std::sync::atomic::AtomicUsize;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let deletes = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&deletes);
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let counter = Arc::clone(&counter);
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().expect("clone"));
                let mut writer = stream;
                loop {
                    let mut head = Vec::new();
                    let mut line = String::new();
                    loop {
                        line.clear();
                        match reader.read_line(&mut line) {
                            Ok(0) | Err(_) => return,
                            Ok(_) if line == "\r\n" => break,
                            Ok(_) => head.push(line.clone()),
                        }
                    }
                    let length = head
                        .iter()
                        .find_map(|h| {
                            h.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                        })
                        .unwrap_or(0);
                    let mut body = vec![0; length];
                    if std::io::Read::read_exact(&mut reader, &mut body).is_err() {
                        return;
                    }
                    if head.first().is_some_and(|h| h.starts_with("DELETE"))
                        && counter.fetch_add(1, Ordering::SeqCst) == 0
                    {
                        return; // the first DELETE: received, never answered
                    }
                    let body = json!({"key": "k", "value": "v12345"}).to_string();
                    let answer = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    if writer.write_all(answer.as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, deletes)
}

#[test]
fn a_delete_whose_answer_is_lost_is_not_sent_again() {
    let (addr, deletes) = drop_first_delete_server();
    let c = client(&[&addr]);
    // A read leaves a kept-alive connection in the pool...
    assert_eq!(c.get("k"), Ok(Some("v12345".into())));
    // ...and a delete whose answer never comes must be reported, not quietly re-sent.
    assert!(matches!(c.delete("k"), Err(Error::OutcomeUnknown(_))));
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(deletes.load(Ordering::SeqCst), 1, "the DELETE reached the server twice");
}

#[test]
fn connection_refused_moves_to_the_next_server() {
    let dead = dead_addr();
    let live = Fake::start(|s, _| ok_put(s));
    let c = client(&[&dead, &live.addr]);
    c.put("k", "v").expect("put via the second server");
    assert_eq!(live.count(), 1);
    // The rotation now starts at the live server: no more refused connections.
    c.put("k2", "v").expect("second put");
    assert_eq!(live.count(), 2);
}

#[test]
fn nothing_reachable_gives_unavailable_after_the_deadline() {
    let c = Client::builder(vec![dead_addr(), dead_addr()])
        .retry_deadline(Duration::from_millis(200))
        .backoff(Duration::from_millis(5), Duration::from_millis(20))
        .discover_leader(false)
        .build();
    let started = Instant::now();
    assert!(matches!(c.put("k", "v"), Err(Error::Unavailable(_))));
    assert!(started.elapsed() >= Duration::from_millis(200));
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(matches!(Client::new(vec![]).get("k"), Err(Error::Unavailable(_))));
}

#[test]
fn persistent_503_gives_up_at_the_deadline() {
    let fake = Fake::start(|_, _| unavailable(None));
    let c = Client::builder(vec![fake.addr.clone()])
        .retry_deadline(Duration::from_millis(150))
        .backoff(Duration::from_millis(5), Duration::from_millis(20))
        .discover_leader(false)
        .build();
    assert!(matches!(c.put("k", "v"), Err(Error::Unavailable(_))));
    assert!(fake.count() >= 3, "retried until the deadline: {}", fake.count());
}

#[test]
fn leader_hint_is_followed_and_cached() {
    let leader = Fake::start(|s, _| ok_put(s));
    let hint = leader.addr.clone();
    let follower = Fake::start(move |_, _| unavailable(Some(&hint)));
    let c = client(&[&follower.addr, &leader.addr]);
    c.put("k", "v").expect("put via the hinted leader");
    assert_eq!((follower.count(), leader.count()), (1, 1));
    assert_eq!(c.cached_leader(), Some(leader.addr.clone()));
    c.put("k2", "v").expect("second put goes straight to the leader");
    assert_eq!((follower.count(), leader.count()), (1, 2));
}

#[test]
fn dead_cached_leader_is_forgotten() {
    let live = Fake::start(|s, _| ok_put(s));
    let dead = dead_addr();
    let hint = dead.clone();
    // The only configured server points at a leader that is gone, then recovers.
    let follower =
        Fake::start(move |s, n| if n == 0 { unavailable(Some(&hint)) } else { ok_put(s) });
    let c = client(&[&follower.addr, &live.addr]);
    c.put("k", "v").expect("put");
    assert_eq!(c.cached_leader(), None);
    assert_eq!(follower.count() + live.count(), 2);
}

fn status_json(id: &str, is_leader: bool, leader_addr: Option<&str>) -> String {
    json!({
        "id": id, "isLeader": is_leader, "term": 3,
        "role": if is_leader { "leader" } else { "follower" },
        "leader": leader_addr.map(|_| "node2"), "leaderAddr": leader_addr,
        "commitIndex": 10, "lastApplied": 9, "lastLogIndex": 11
    })
    .to_string()
}

#[test]
fn leader_is_discovered_through_status() {
    let leader = Fake::start(|s, _| {
        if s.url == "/status" { (200, status_json("node2", true, None)) } else { ok_put(s) }
    });
    let hint = leader.addr.clone();
    let follower = Fake::start(move |s, _| {
        if s.url == "/status" { (200, status_json("node1", false, Some(&hint))) } else { ok_put(s) }
    });
    let c = Client::builder(vec![follower.addr.clone(), leader.addr.clone()])
        .backoff(Duration::from_millis(1), Duration::from_millis(5))
        .build();
    c.put("k", "v").expect("put");
    assert_eq!(follower.kv_count(), 0, "the put went straight to the leader");
    assert_eq!(leader.kv_count(), 1);
    assert_eq!(c.cached_leader(), Some(leader.addr.clone()));

    // `leader()` on a fresh client: asks the follower, which names the leader.
    let c = client(&[&follower.addr]);
    assert_eq!(c.leader(), Ok(leader.addr.clone()));
    // A leader that names no leaderAddr is its own address.
    let c = client(&[&leader.addr]);
    assert_eq!(c.refresh_leader(), Ok(leader.addr.clone()));
}

#[test]
fn status_parses_and_reports_unreachable_servers() {
    let fake = Fake::start(|_, _| (200, status_json("node1", false, Some("127.0.0.1:9"))));
    let dead = dead_addr();
    let c = client(&[&fake.addr, &dead]);
    let s = c.status(&format!("http://{}/", fake.addr)).expect("status");
    assert_eq!(s.id, "node1");
    assert!(!s.is_leader);
    assert_eq!(s.leader_addr.as_deref(), Some("127.0.0.1:9"));
    assert_eq!((s.commit_index, s.last_applied, s.last_log_index), (10, 9, 11));
    let all = c.cluster_status();
    assert_eq!(all.len(), 2);
    assert!(all[0].1.is_ok());
    assert!(matches!(all[1].1, Err(Error::Unavailable(_))));
}

#[test]
fn non_json_error_bodies_still_give_sensible_errors() {
    let fake = Fake::start(|s, _| match s.url.as_str() {
        "/kv/get/text" => (400, "plain text oops\n".into()),
        "/kv/get/empty" => (500, String::new()),
        "/kv/get/storage" => {
            (500, json!({"error": "storage", "message": "disk on fire"}).to_string())
        }
        "/kv/get/big" => (413, "x".repeat(10_000)),
        _ => (405, json!({"error": "method_not_allowed"}).to_string()),
    });
    let c = Client::builder(vec![fake.addr.clone()])
        .retry_deadline(Duration::ZERO)
        .discover_leader(false)
        .build();
    assert_eq!(c.get("text"), Err(Error::BadRequest("plain text oops".into())));
    match c.get("empty") {
        // A read's 500 is retried; with no time left it ends as Unavailable naming the cause.
        Err(Error::Unavailable(m)) => assert!(m.contains("HTTP 500"), "{m}"),
        other => panic!("unexpected {other:?}"),
    }
    match c.put("x", "y") {
        Err(Error::MethodNotAllowed(m)) => assert_eq!(m, "method_not_allowed"),
        other => panic!("unexpected {other:?}"),
    }
    match c.get("big") {
        Err(Error::TooLarge(m)) => assert!(m.chars().count() <= 201, "shortened"),
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(
        parse_error_body(500, r#"{"error":"storage","message":"disk on fire"}"#).0,
        Error::Storage("disk on fire".into())
    );
    assert_eq!(
        parse_error_body(503, r#"{"error":"unavailable","message":"m","leaderAddr":"h:1"}"#),
        (Error::Unavailable("m".into()), Some("h:1".into()))
    );
}

#[test]
fn a_not_leader_body_names_the_leader() {
    let body = r#"{"error":"not_leader","message":"m","leader":{"id":"node2","addr":"h:2"}}"#;
    let hint = crate::error::LeaderHint { id: "node2".into(), addr: "h:2".into() };
    assert_eq!(
        parse_error_body(503, body),
        (Error::NotLeader { leader: Some(hint) }, Some("h:2".into()))
    );
    assert_eq!(
        parse_error_body(503, r#"{"error":"not_leader","message":"m"}"#),
        (Error::NotLeader { leader: None }, None)
    );
}

#[test]
fn unreadable_success_bodies_are_errors_not_panics() {
    let fake = Fake::start(|_, _| (200, "not json".into()));
    let c = client(&[&fake.addr]);
    assert!(matches!(c.put("k", "v"), Err(Error::Internal(_))));
    assert!(matches!(c.get("k"), Err(Error::Internal(_))));
    assert!(matches!(c.get_all(), Err(Error::Internal(_))));
    assert!(matches!(c.status(&fake.addr), Err(Error::Internal(_))));
}

#[test]
fn a_bad_server_address_fails_fast() {
    let c = client(&["not a host:port"]);
    let started = Instant::now();
    assert!(c.get("k").is_err());
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[test]
fn shell_commands_run_against_a_fake() {
    use super::shell::{Command, RunOptions, run};
    let fake = Fake::start(|s, _| match (s.method.as_str(), s.url.as_str()) {
        ("POST", _) => ok_put(s),
        ("GET", "/kv/get/there") => (200, json!({"key": "there", "value": "v v"}).to_string()),
        ("GET", "/kv/all") => (200, json!({"a": "1"}).to_string()),
        ("GET", "/status") => (200, status_json("node1", true, None)),
        ("DELETE", _) => (200, json!({"status": "ok", "key": "k", "index": 3}).to_string()),
        _ => (404, json!({"error": "not_found", "message": "no"}).to_string()),
    });
    let c = client(&[&fake.addr]);
    let text = RunOptions::default();
    let js = RunOptions { json: true, stale: false, lease: false };
    let put = Command::Put { key: "k".into(), value: "a b".into() };
    assert_eq!(run(&c, &put, text), Ok("OK (index 7, term 2)".into()));
    let get = |k: &str| Command::Get { key: k.into() };
    assert_eq!(run(&c, &get("there"), text), Ok("v v".into()));
    assert_eq!(run(&c, &get("there"), js), Ok(json!({"key": "there", "value": "v v"}).to_string()));
    assert!(matches!(run(&c, &get("missing"), text), Err(Error::NotFound(_))));
    assert_eq!(run(&c, &Command::Delete { key: "k".into() }, text), Ok("OK".into()));
    assert_eq!(run(&c, &Command::GetAll, text), Ok("a = 1".into()));
    let status = run(&c, &Command::Status { explain: false }, text).expect("status");
    assert!(status.contains("node1") && status.contains("leader"), "{status}");
    let status = run(&c, &Command::Status { explain: false }, js).expect("status json");
    let v: serde_json::Value = serde_json::from_str(&status).expect("json");
    assert_eq!(v[0]["status"]["id"], "node1");
}

/// Why `.` and `..` are refused: the URL library resolves them (even percent-encoded) as path
/// steps, so the server would see another path entirely.
#[test]
fn dot_segments_are_resolved_by_the_url_library() {
    let fake = Fake::start(|s, _| (200, json!({"key": "k", "value": s.url}).to_string()));
    let agent = ureq::agent();
    for (segment, arrives_as) in [("..", "/kv/"), ("%2E%2E", "/kv/"), (".", "/kv/get/")] {
        let url = format!("http://{}/kv/get/{segment}", fake.addr);
        let body = agent.get(&url).call().expect("fake answers").into_string().expect("body");
        let v: serde_json::Value = serde_json::from_str(&body).expect("json");
        assert_eq!(v["value"], arrives_as, "{segment}");
    }
}

#[test]
fn bench_runs_a_mixed_workload_against_a_fake() {
    use super::bench::{BenchConfig, Workload, run};
    let fake = Fake::start(|s, _| match (s.method.as_str(), s.url.as_str()) {
        ("GET", "/status") => (200, status_json("node1", true, None)),
        ("POST", _) => ok_put(s),
        _ => (200, json!({"key": "k", "value": "v"}).to_string()),
    });
    let config = BenchConfig {
        servers: vec![fake.addr.clone()],
        clients: 2,
        ops: Some(200),
        workload: Workload::Mixed,
        read_ratio: 0.5,
        value_size: 16,
        keys: 20,
        ..BenchConfig::default()
    };
    let report = run(&config).expect("bench");
    assert_eq!(report.target, fake.addr);
    assert_eq!((report.requests, report.ok), (200, 200));
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(report.populate_errors, 0);
    assert_eq!(report.latency_us.samples, 200);
    assert!(report.latency_us.p50_us <= report.latency_us.p99_us);
    assert!(report.latency_us.p99_us <= report.latency_us.max_us);
    let seen = fake.seen();
    // 1 status (leader discovery) + 20 populating puts + 200 measured requests.
    assert_eq!(seen.len(), 221);
    let body = seen.iter().find(|s| s.method == "POST").map(|s| s.body.clone()).unwrap_or_default();
    let v: serde_json::Value = serde_json::from_str(&body).expect("bench put body is JSON");
    assert_eq!(v["value"].as_str().map(str::len), Some(16));
    let json = serde_json::to_value(&report).expect("report serializes");
    assert_eq!(json["latency_us"]["samples"], 200);

    // Errors are counted by kind, not retried.
    let failing = Fake::start(|_, _| unavailable(None));
    let config = BenchConfig {
        target: Some(failing.addr.clone()),
        clients: 1,
        ops: Some(5),
        populate: Some(false),
        ..BenchConfig::default()
    };
    let report = run(&config).expect("bench");
    assert_eq!(report.ok, 0);
    assert_eq!(report.errors.get("unavailable"), Some(&5));
    assert_eq!(failing.count(), 5);
}

#[test]
fn bench_reports_progress_while_it_runs() {
    use super::bench::{BenchConfig, run_with_progress};
    let fake = Fake::start(|s, _| match (s.method.as_str(), s.url.as_str()) {
        ("GET", "/status") => (200, status_json("node1", true, None)),
        _ => ok_put(s),
    });
    let config = BenchConfig {
        servers: vec![fake.addr.clone()],
        clients: 2,
        duration: Some(Duration::from_millis(1000)),
        populate: Some(false),
        ..BenchConfig::default()
    };
    let mut seen = Vec::new();
    let report =
        run_with_progress(&config, Duration::from_millis(100), |p| seen.push(*p)).expect("bench");
    assert!(seen.len() >= 2, "progress reported {} times in 1 s at 100 ms", seen.len());
    assert!(seen.windows(2).all(|w| w[0].ok <= w[1].ok && w[0].elapsed < w[1].elapsed), "{seen:?}");
    let last = seen.last().copied().expect("a report");
    assert!(last.ok > 0 && last.ok <= report.ok, "{last:?} vs {}", report.ok);
    assert_eq!(last.errors, 0);
    assert!(last.p99_us.is_some_and(|us| us > 0), "{last:?}");
    assert!(last.line().contains("ops/s"), "{}", last.line());
}

#[test]
fn discovery_skips_a_dead_server() {
    let live = Fake::start(|s, _| {
        if s.url == "/status" { (200, status_json("node2", false, None)) } else { ok_put(s) }
    });
    let c = Client::builder(vec![dead_addr(), live.addr.clone()])
        .backoff(Duration::from_millis(1), Duration::from_millis(5))
        .build();
    c.put("k", "v").expect("put");
    // One /status (knows no leader) and one put: the dead server was tried once, by discovery.
    assert_eq!((live.count(), live.kv_count()), (2, 1));
    assert_eq!(c.cached_leader(), None);
}

fn idempotent_client(servers: &[&str], deadline: Duration) -> Client {
    Client::builder(servers.iter().map(|s| s.to_string()).collect())
        .backoff(Duration::from_millis(1), Duration::from_millis(5))
        .retry_deadline(deadline)
        .request_timeout(Duration::from_millis(200))
        .discover_leader(false)
        .build()
}

#[test]
fn an_idempotent_write_is_retried_after_a_504_with_the_same_key() {
    let fake = Fake::start(|s, n| if n == 0 { outcome_unknown() } else { ok_put(s) });
    let c = idempotent_client(&[&fake.addr], Duration::from_secs(3));
    assert_eq!(c.put("k", "v").map(|r| r.index), Ok(7));
    let seen = fake.seen();
    assert_eq!(seen.len(), 2, "retried once");
    let key = seen[0].idempotency_key.clone().expect("an Idempotency-Key on the first attempt");
    assert_eq!(seen[1].idempotency_key.as_deref(), Some(key.as_str()), "the same key");
    assert_eq!(seen[0].body, seen[1].body, "the same body");
    // The next write is another write: another key.
    c.put("k", "w").unwrap();
    assert_ne!(fake.seen()[2].idempotency_key.as_deref(), Some(key.as_str()));
}

#[test]
fn an_idempotent_write_whose_answer_was_lost_is_resent_elsewhere_with_its_key() {
    let slow = Fake::start(|_, _| {
        std::thread::sleep(Duration::from_millis(400));
        (200, "{}".into())
    });
    let fast = Fake::start(|s, _| ok_put(s));
    let c = idempotent_client(&[&slow.addr, &fast.addr], Duration::from_secs(3));
    assert_eq!(c.delete("k"), Ok(()));
    let (first, second) = (slow.seen(), fast.seen());
    assert_eq!((first.len(), second.len()), (1, 1));
    assert!(first[0].idempotency_key.is_some());
    assert_eq!(first[0].idempotency_key, second[0].idempotency_key);
}

#[test]
fn an_idempotent_write_still_unknown_at_the_deadline_is_outcome_unknown() {
    let fake = Fake::start(|_, _| outcome_unknown());
    let c = idempotent_client(&[&fake.addr], Duration::from_millis(300));
    match c.put("k", "v") {
        Err(Error::OutcomeUnknown(m)) => assert!(m.contains("may have been applied"), "{m}"),
        other => panic!("expected OutcomeUnknown, got {other:?}"),
    }
    assert!(fake.count() > 1, "retried until the deadline");
    let keys: std::collections::BTreeSet<_> =
        fake.seen().into_iter().map(|s| s.idempotency_key).collect();
    assert_eq!(keys.len(), 1, "every retry carries the same key: {keys:?}");
}

#[test]
fn a_write_refused_with_503_before_any_attempt_was_maybe_applied_is_unavailable() {
    let fake = Fake::start(|_, _| unavailable(None));
    let c = idempotent_client(&[&fake.addr], Duration::from_millis(200));
    assert!(matches!(c.put("k", "v"), Err(Error::Unavailable(_))));
}

#[test]
fn conditional_puts_and_transactions_parse_their_answers() {
    let fake = Fake::start(|s, _| {
        let v: serde_json::Value = serde_json::from_str(&s.body).unwrap_or_default();
        match s.url.as_str() {
            "/kv/put" if v["if_revision"] == 0 => (
                412,
                json!({"error": "precondition_failed", "message": "m", "revision": 9,
                       "current": {"key": "k", "value": "x", "create_revision": 3,
                                   "mod_revision": 8, "version": 2}})
                .to_string(),
            ),
            "/kv/put" => (
                200,
                json!({"status": "ok", "key": "k", "index": 11, "term": 2,
                                      "revision": 10})
                .to_string(),
            ),
            "/kv/txn" => (
                200,
                json!({"succeeded": false, "revision": 9, "index": 12,
                "responses": [{"get": {"key": "k", "kv": {"key": "k", "value": "x",
                "create_revision": 3, "mod_revision": 8, "version": 2}}}]})
                .to_string(),
            ),
            _ => (
                200,
                json!({"revision": 9, "count": 1, "more": false, "kvs": [
                {"key": "p/1", "value": "v", "create_revision": 2, "mod_revision": 2,
                 "version": 1}]})
                .to_string(),
            ),
        }
    });
    let c = client(&[&fake.addr]);
    match c.put_if("k", "v", 0).unwrap() {
        PutIf::Refused { current: Some(kv) } => assert_eq!(kv.mod_revision, 8),
        other => panic!("{other:?}"),
    }
    assert_eq!(c.put_if("k", "v", 8), Ok(PutIf::Written { index: 11, term: 2, revision: 10 }));
    let cas = c.cas("k", Some("old"), "new").unwrap();
    assert!(!cas.succeeded);
    assert_eq!(cas.current.and_then(|kv| kv.value).as_deref(), Some("x"));
    let txn_body: serde_json::Value = serde_json::from_str(&fake.seen()[2].body).unwrap();
    assert_eq!(txn_body["compare"][0]["target"], "value");
    assert_eq!(txn_body["success"][0]["put"]["value"], "new");
    let r = c.range_prefix("p/ é").unwrap();
    assert_eq!((r.count, r.kvs[0].key.as_str()), (1, "p/1"));
    assert_eq!(fake.seen()[3].url, "/kv/range?prefix=p%2F%20%C3%A9");
    assert!(TxnBuilder::new().when_value("k", "~", "x").try_build().is_err());
}
