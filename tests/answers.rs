//! Puts and gets answered by answer threads (`src/server/answers.rs`) on real
//! `raftlabkv-server`s: a pipelining client gets every answer in order, a put that cannot commit
//! is answered 504 and a get that cannot be confirmed 503 at their deadline, and a client that
//! stops reading its answers does not stop another client's.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use raftlabkv::testkit::KillOnDrop;
use raftlabkv::testkit::cluster::free_port;
use serde_json::{Value, json};

mod support;

/// A one-node server (its own leader) with `args`; its address.
fn solo(args: &[&str]) -> (KillOnDrop, String) {
    let port = free_port().expect("port");
    let addr = format!("127.0.0.1:{port}");
    let server = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_raftlabkv-server"))
            .args(["--id", "solo", "--addr", &addr, "--in-memory", "--log-level", "warn"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn server"),
    );
    let agent = ureq::AgentBuilder::new().timeout(Duration::from_millis(500)).build();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = agent.get(&format!("http://{addr}/status")).call().ok();
        let leads = status
            .and_then(|r| r.into_string().ok())
            .and_then(|t| serde_json::from_str::<Value>(&t).ok())
            .is_some_and(|s| s["isLeader"] == json!(true));
        if leads {
            return (server, addr);
        }
        assert!(Instant::now() < deadline, "the server did not become its own leader");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `raftlabkv_http_puts_handed_over_total` of the node at `addr`.
fn handed_over(addr: &str) -> u64 {
    metric(addr, "raftlabkv_http_puts_handed_over_total")
}

/// The value of the metric `name` of the node at `addr` (0 if absent).
fn metric(addr: &str, name: &str) -> u64 {
    let prefix = format!("{name} ");
    let text = ureq::get(&format!("http://{addr}/metrics"))
        .call()
        .ok()
        .and_then(|r| r.into_string().ok())
        .unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

fn put_request(key: &str, value: &str) -> Vec<u8> {
    let body = json!({"key": key, "value": value}).to_string();
    format!(
        "POST /kv/put HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn get_request(key: &str) -> Vec<u8> {
    format!("GET /kv/get/{key} HTTP/1.1\r\nHost: x\r\n\r\n").into_bytes()
}

/// Reads one HTTP response: (status, body as JSON).
fn read_response(r: &mut BufReader<TcpStream>) -> std::io::Result<(u16, Value)> {
    let mut line = String::new();
    r.read_line(&mut line)?;
    let status = line.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let mut length = 0;
    loop {
        line.clear();
        r.read_line(&mut line)?;
        if line.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0; length];
    r.read_exact(&mut body)?;
    Ok((status, serde_json::from_slice(&body).unwrap_or(Value::Null)))
}

#[test]
fn a_pipelining_client_gets_every_answer_in_order() {
    // One answer thread: a put of a connection handed over while an earlier one still waits
    // there would deadlock it (tiny_http writes a connection's answers in order).
    let (_server, addr) = solo(&["--answer-threads", "1"]);
    let before = handed_over(&addr);
    let gets_before = metric(&addr, "raftlabkv_http_gets_handed_over_total");
    for round in 0..5 {
        let stream = TcpStream::connect(&addr).expect("connect");
        stream.set_read_timeout(Some(Duration::from_secs(20))).expect("timeout");
        let mut writer = stream.try_clone().expect("clone");
        let mut reader = BufReader::new(stream);
        // Puts, with a get now and then, all sent before any answer is read. (A get of a key put
        // in the same pipeline is concurrent with that put: it may see it or not.)
        let base = format!("base-{round}");
        let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(10)).build();
        let a = raftlabkv::testkit::cluster::call(
            &agent,
            "POST",
            &format!("http://{addr}/kv/put"),
            Some(&json!({"key": base, "value": "before"})),
        );
        assert_eq!(a.status, 200, "{a:?}");
        let n = 300;
        let mut all = Vec::new();
        for i in 0..n {
            if i % 3 == 2 {
                all.extend(get_request(&base));
            } else {
                all.extend(put_request(&format!("r{round}-{i}"), &format!("v{i}")));
            }
        }
        writer.write_all(&all).expect("send");
        for i in 0..n {
            let (status, body) = read_response(&mut reader)
                .unwrap_or_else(|e| panic!("round {round}: answer {i} of {n} never came: {e}"));
            assert_eq!(status, 200, "round {round}, request {i}: {body}");
            if i % 3 == 2 {
                assert_eq!(body["value"], json!("before"), "round {round}: {i}");
            } else {
                assert_eq!(body["key"], json!(format!("r{round}-{i}")), "out of order at {i}");
            }
        }
    }
    let after = handed_over(&addr);
    let gets = metric(&addr, "raftlabkv_http_gets_handed_over_total") - gets_before;
    println!(
        "{} of 1,005 puts and {gets} of 500 gets answered by the answer thread",
        after - before
    );
    assert!(after > before, "no put was answered by an answer thread: the test tests nothing");
    // Gets one at a time (a connection with nothing waiting): each goes through the answer
    // thread, and each sees the put before it.
    let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(10)).build();
    let gets_before = metric(&addr, "raftlabkv_http_gets_handed_over_total");
    for i in 0..20 {
        let url = format!("http://{addr}/kv/put");
        let body = json!({"key": "seq", "value": format!("v{i}")});
        let a = raftlabkv::testkit::cluster::call(&agent, "POST", &url, Some(&body));
        assert_eq!(a.status, 200, "{a:?}");
        let url = format!("http://{addr}/kv/get/seq");
        let g = raftlabkv::testkit::cluster::call(&agent, "GET", &url, None);
        assert_eq!((g.status, &g.body["value"]), (200, &json!(format!("v{i}"))), "{g:?}");
    }
    let gets = metric(&addr, "raftlabkv_http_gets_handed_over_total") - gets_before;
    assert_eq!(gets, 20, "every get of a connection with nothing waiting is handed over");
    // Had a put been handed over behind another of its connection's, the answer thread would
    // have waited for it forever, and the ticker would have started another to go on.
    assert_eq!(metric(&addr, "raftlabkv_http_answer_threads"), 1, "an answer thread got stuck");
}

#[test]
fn a_put_that_cannot_commit_is_answered_504_and_a_get_503_at_their_deadline() {
    // A long election timeout keeps the leader leading (check quorum waits that long) while its
    // followers are stopped, so its put is handed over and can only end by its deadline.
    let mut c = support::cluster::three(
        "answers-deadline",
        false,
        &["--election-timeout-ms", "4000-5000", "--request-timeout-ms", "800"],
    );
    let leader = c.wait_leader(&c.all(), Duration::from_secs(30)).expect("a leader");
    let addr = c.nodes[leader].addr.clone();
    let ok = c.call(leader, "POST", "/kv/put", Some(&json!({"key": "a", "value": "1"})));
    assert_eq!(ok.status, 200, "{:?}", ok.body);
    for i in c.all() {
        if i != leader {
            c.pause(i);
        }
    }
    let before = handed_over(&addr);
    let t = Instant::now();
    let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(30)).build();
    let a = raftlabkv::testkit::cluster::call(
        &agent,
        "POST",
        &format!("http://{addr}/kv/put"),
        Some(&json!({"key": "b", "value": "2"})),
    );
    let took = t.elapsed();
    println!("answered {} after {took:?}: {}", a.status, a.body);
    assert_eq!(a.status, 504, "{a:?}");
    assert_eq!(a.body["error"], json!("outcome_unknown"), "{a:?}");
    assert_eq!(handed_over(&addr), before + 1, "the put went through an answer thread");
    // A linearizable get cannot be confirmed by a majority either: 503 at its deadline (its
    // leader is this node, so it is not forwarded).
    let gets_before = metric(&addr, "raftlabkv_http_gets_handed_over_total");
    let t = Instant::now();
    let g =
        raftlabkv::testkit::cluster::call(&agent, "GET", &format!("http://{addr}/kv/get/a"), None);
    println!("get answered {} after {:?}: {}", g.status, t.elapsed(), g.body);
    assert_eq!(g.status, 503, "{g:?}");
    assert_eq!(g.body["error"], json!("unavailable"), "{g:?}");
    // Answered at its deadline, not when the leader stepped down (check quorum) seconds later.
    let message = g.body["message"].as_str().unwrap_or_default();
    assert!(message.contains("in time"), "{g:?}");
    assert_eq!(
        metric(&addr, "raftlabkv_http_gets_handed_over_total"),
        gets_before + 1,
        "the get went through an answer thread"
    );
    for i in c.all() {
        if i != leader {
            c.resume(i);
        }
    }
}

#[test]
fn a_client_that_stops_reading_does_not_stop_other_clients_puts() {
    let (_server, addr) = solo(&["--answer-threads", "1"]);
    let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(20)).build();
    let big = "x".repeat(1 << 20);
    let a = raftlabkv::testkit::cluster::call(
        &agent,
        "POST",
        &format!("http://{addr}/kv/put"),
        Some(&json!({"key": "big", "value": big})),
    );
    assert_eq!(a.status, 200, "{}", a.error);
    // 40 MB of answers (a 1 MB get, then a put, 40 times) that are never read: the server's
    // socket buffer fills, and the writer of some answer, a put's among them, blocks.
    let mut bad = TcpStream::connect(&addr).expect("connect");
    let mut all = Vec::new();
    for i in 0..40 {
        all.extend(get_request("big"));
        all.extend(put_request(&format!("stuck-{i}"), "v"));
    }
    bad.write_all(&all).expect("send");
    // Another client goes on putting, each answered. (If the answer thread gets stuck on that
    // connection, new puts go to their workers after a second and queued answers to a new
    // answer thread; on this machine tiny_http's buffers let it finish instead.)
    let deadline = Instant::now() + Duration::from_secs(60);
    for i in 0..30 {
        let a = raftlabkv::testkit::cluster::call(
            &agent,
            "POST",
            &format!("http://{addr}/kv/put"),
            Some(&json!({"key": format!("good-{i}"), "value": "v"})),
        );
        assert_eq!(a.status, 200, "put {i} of the reading client: {}", a.error);
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(50));
    }
    println!("answer threads: {}", metric(&addr, "raftlabkv_http_answer_threads"));
    drop(bad);
}
