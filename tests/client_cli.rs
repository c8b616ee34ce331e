//! The `raftlabkv-client` binary against an in-process fake node (tiny_http on 127.0.0.1:0) that
//! keeps a real map, so one-shot commands, the shell and exit codes can be checked end to end.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::json;

struct FakeNode {
    addr: String,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

impl FakeNode {
    fn start() -> FakeNode {
        let server = tiny_http::Server::http("127.0.0.1:0").expect("bind");
        let addr = server.server_addr().to_ip().expect("ip").to_string();
        let stop = Arc::new(AtomicBool::new(false));
        let me = addr.clone();
        let thread = {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let mut store = BTreeMap::<String, String>::new();
                let mut index = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let mut req = match server.recv_timeout(Duration::from_millis(20)) {
                        Ok(Some(r)) => r,
                        Ok(None) => continue,
                        Err(_) => break,
                    };
                    let mut body = String::new();
                    let _ = req.as_reader().read_to_string(&mut body);
                    let url = req.url().to_string();
                    let path = url.split('?').next().unwrap_or("").to_string();
                    let (status, answer) = match (req.method().as_str(), path.as_str()) {
                        ("GET", "/status") => (
                            200,
                            json!({"id": "node1", "isLeader": true, "term": 1, "role": "leader",
                                   "leader": "node1", "leaderAddr": me, "commitIndex": index,
                                   "lastApplied": index, "lastLogIndex": index}),
                        ),
                        ("GET", "/kv/all") => (200, json!(store)),
                        ("POST", "/kv/put") => {
                            let v: serde_json::Value =
                                serde_json::from_str(&body).unwrap_or_default();
                            match (v["key"].as_str(), v["value"].as_str()) {
                                (Some(k), Some(val)) => {
                                    index += 1;
                                    store.insert(k.to_string(), val.to_string());
                                    (
                                        200,
                                        json!({"status": "ok", "key": k, "index": index, "term": 1}),
                                    )
                                }
                                _ => (400, json!({"error": "bad_request", "message": "bad body"})),
                            }
                        }
                        (m, p) if p.starts_with("/kv/get/") || p.starts_with("/kv/delete/") => {
                            let raw = p.trim_start_matches("/kv/get/");
                            let raw = raw.trim_start_matches("/kv/delete/");
                            match (m, percent_decode(raw)) {
                                ("GET", Some(k)) => match store.get(&k) {
                                    Some(v) => (200, json!({"key": k, "value": v})),
                                    None => (
                                        404,
                                        json!({"error": "not_found", "message": "key not found"}),
                                    ),
                                },
                                ("DELETE", Some(k)) => {
                                    index += 1;
                                    store.remove(&k);
                                    (200, json!({"status": "ok", "key": k, "index": index}))
                                }
                                _ => (400, json!({"error": "bad_request", "message": "bad key"})),
                            }
                        }
                        _ => (404, json!({"error": "not_found", "message": "no route"})),
                    };
                    let response = tiny_http::Response::from_string(answer.to_string())
                        .with_status_code(status);
                    let _ = req.respond(response);
                }
            })
        };
        FakeNode { addr, stop, thread: Some(thread) }
    }
}

impl Drop for FakeNode {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn cli(servers: &str, args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_raftlabkv-client"))
        .arg("--servers")
        .arg(servers)
        .args(["--deadline", "2"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run raftlabkv-client");
    if let Some(mut input) = child.stdin.take() {
        input.write_all(stdin.as_bytes()).expect("write stdin");
    }
    child.wait_with_output().expect("wait")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn one_shot_commands_and_exit_codes() {
    let node = FakeNode::start();
    let s = node.addr.as_str();

    let out = cli(s, &["put", "a/b c", "hello", "world"], "");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "OK (index 1, term 1)\n");

    let out = cli(s, &["get", "a/b c"], "");
    assert!(out.status.success());
    assert_eq!(text(&out.stdout), "hello world\n");

    let out = cli(s, &["--json", "get", "a/b c"], "");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v, json!({"key": "a/b c", "value": "hello world"}));

    let out = cli(s, &["get", "missing"], "");
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    assert!(text(&out.stderr).contains("no such key"), "{}", text(&out.stderr));

    let out = cli(s, &["--json", "get", "missing"], "");
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stderr).expect("json error");
    assert_eq!(v["error"], "not_found");

    let out = cli(s, &["getall"], "");
    assert_eq!(text(&out.stdout), "a/b c = hello world\n");

    let out = cli(s, &["delete", "a/b c"], "");
    assert!(out.status.success());
    let out = cli(s, &["--json", "getall"], "");
    assert_eq!(text(&out.stdout).trim(), "{}");

    let out = cli(s, &["status"], "");
    assert!(out.status.success());
    assert!(text(&out.stdout).contains("leader"), "{}", text(&out.stdout));

    // Usage errors exit 2 (clap); an unreachable cluster exits 1, without a panic.
    assert_eq!(cli(s, &["put", "k"], "").status.code(), Some(2));
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").to_string()
    };
    let out = cli(&dead, &["--deadline", "0.2", "get", "k"], "");
    assert_eq!(out.status.code(), Some(1));
    assert!(!text(&out.stderr).contains("panicked"));
}

#[test]
fn interactive_shell_reads_commands_until_eof() {
    let node = FakeNode::start();
    let input = "put k  spaced   value \nget k\nget\nbogus\ngetall\ndelete k\nget k\nhelp\n";
    let out = cli(&node.addr, &[], input);
    assert!(out.status.success(), "EOF exits 0");
    let stdout = text(&out.stdout);
    let stderr = text(&out.stderr);
    assert!(stdout.starts_with("OK (index 1, term 1)\nspaced   value\nk = spaced   value\nOK\n"));
    assert!(stdout.contains("put <key> <value...>"), "help is printed");
    assert!(stderr.contains("usage: get <key>"), "{stderr}");
    assert!(stderr.contains("unknown command `bogus`"), "{stderr}");
    assert!(stderr.contains("no such key"), "{stderr}");

    let out = cli(&node.addr, &[], "exit\nput never reached\n");
    assert!(out.status.success());
    assert!(out.stdout.is_empty());
}
